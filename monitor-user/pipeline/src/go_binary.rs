//! Go executables: where `crypto/tls` hands over plaintext, found without a
//! symbol table.
//!
//! Go binaries are usually built with `-s -w` (no `.symtab`, no DWARF), but
//! the runtime needs its own function table, `.gopclntab`, which stays and
//! names every function. From it this module takes the entry and the end of
//! `crypto/tls.(*Conn).Read`, `.Write` and `.Close`, and decodes the
//! machine code of `Read` and `Write` to find each `RET` (return probes go
//! there, as uretprobes are unsafe on Go's movable stacks) and the end of
//! the prologue's stack check. The Go version
//! comes from the build information (`.go.buildinfo`); the kernel programs
//! read registers of the register ABI (Go 1.17 and later, amd64) and fields
//! of `net.netFD` whose layout is known up to [`NEWEST_KNOWN`], so any
//! other version, or another architecture, is refused, never guessed.
//!
//! The input is an untrusted file: every offset is checked, and a damaged
//! file gives an error, never a panic (fuzz target `go_binary`).

use crate::elf::{self, u16_at, u32_at, u64_at, Elf, ElfError, EM_X86_64};
use iced_x86::{Code, Decoder, DecoderOptions, Mnemonic};

/// The newest Go release (major, minor) whose layout the probes are known
/// to match; newer ones are refused until checked.
pub const NEWEST_KNOWN: (u32, u32) = (1, 25);

/// The oldest: Go 1.17 introduced the register ABI on amd64.
pub const OLDEST_KNOWN: (u32, u32) = (1, 17);

/// Where to probe one function, as offsets in the file (what a uprobe takes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionProbes {
    /// The first instruction.
    pub entry: u64,
    /// The first instruction after the stack-growth check of the prologue
    /// (the entry itself when the function has none): when the stack must
    /// grow, the runtime calls `morestack` and jumps back to the entry, so
    /// a probe at the entry may fire twice for one call, a probe here once.
    /// The arguments are still in their registers. (Functions with frames
    /// over 4 KiB check twice; the body is then after the first check.
    /// `Write`'s frame is small.)
    pub body: u64,
    /// Each `RET` instruction.
    pub returns: Vec<u64>,
}

/// The probe points of `crypto/tls` in one Go executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoTlsProbes {
    /// As the build information gives it (`go1.24.4`).
    pub version: String,
    /// `crypto/tls.(*Conn).Read`.
    pub read: FunctionProbes,
    /// `crypto/tls.(*Conn).Write`.
    pub write: FunctionProbes,
    /// `crypto/tls.(*Conn).Close` (entry only), when the program has it.
    pub close: Option<u64>,
    /// Whether the program's strings hold one of MCP's names
    /// ([`names_mcp`]): a Go program that holds none does not handle MCP itself, and
    /// the agent leaves its TLS unprobed unless told otherwise
    /// (`capture.tls_go`).
    pub names_mcp: bool,
}

/// Why an executable gets no Go TLS probes.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum GoBinaryError {
    /// Not a 64-bit little-endian ELF file.
    #[error("not a 64-bit little-endian ELF executable")]
    NotElf,
    /// An ELF file without Go build information.
    #[error("not a Go program")]
    NotGo,
    /// A Go program that does not link `crypto/tls`.
    #[error("a Go program without crypto/tls")]
    NoTls,
    /// Built for another architecture than x86-64.
    #[error("a Go program for another architecture than x86-64 (only x86-64 is probed)")]
    Architecture,
    /// A Go version whose layout is not known to the probes.
    #[error("built with {0}, whose crypto/tls and net layout is not known to the probes (known: go1.17 to go1.25)")]
    UnknownVersion(String),
    /// A table or the code is not what a Go linker writes.
    #[error("damaged or unusual Go executable: {0}")]
    Malformed(&'static str),
}

const READ: &[u8] = b"crypto/tls.(*Conn).Read";
const WRITE: &[u8] = b"crypto/tls.(*Conn).Write";
const CLOSE: &[u8] = b"crypto/tls.(*Conn).Close";

/// Reads `bytes` (the whole executable) and finds the probe points. Only a
/// Go program that links `crypto/tls` is refused (an unknown version or
/// architecture, damaged tables); others are `NotGo` or `NoTls`.
pub fn inspect(bytes: &[u8]) -> Result<GoTlsProbes, GoBinaryError> {
    let elf = Elf::parse(bytes).map_err(|e| match e {
        ElfError::NotElf => GoBinaryError::NotElf,
        ElfError::Malformed => GoBinaryError::Malformed("ELF headers"),
    })?;
    let version = build_version(&elf).ok_or(GoBinaryError::NotGo)?;
    let known = parse_version(&version).is_some_and(|v| (OLDEST_KNOWN..=NEWEST_KNOWN).contains(&v));
    let found = FuncTable::find(&elf).map(|t| t.lookup([READ, WRITE, CLOSE]));
    let [read, write, close] = match found {
        Ok([Some(read), Some(write), close]) => [Some(read), Some(write), close],
        Ok(_) => return Err(GoBinaryError::NoTls),
        // A table this module cannot read (another layout): refused only
        // where the program names crypto/tls at all.
        Err(_) if memchr::memmem::find(bytes, READ).is_none() => return Err(GoBinaryError::NoTls),
        Err(_) if !known => return Err(GoBinaryError::UnknownVersion(version)),
        Err(e) => return Err(e),
    };
    if elf.machine != EM_X86_64 {
        return Err(GoBinaryError::Architecture);
    }
    if !known {
        return Err(GoBinaryError::UnknownVersion(version));
    }
    let (Some(read), Some(write)) = (read, write) else {
        return Err(GoBinaryError::NoTls);
    };
    let probes = |(start, end): (u64, u64)| -> Result<FunctionProbes, GoBinaryError> {
        let entry = elf
            .file_offset(start)
            .ok_or(GoBinaryError::Malformed("function outside the file"))?;
        let len = end
            .checked_sub(start)
            .filter(|l| *l > 0 && *l < 1 << 20)
            .ok_or(GoBinaryError::Malformed("function bounds"))?;
        let code = elf
            .bytes_at(entry, len)
            .ok_or(GoBinaryError::Malformed("function outside the file"))?;
        let (body, returns) = scan(code, start)?;
        let returns = returns.into_iter().map(|va| va - start + entry).collect::<Vec<_>>();
        if returns.is_empty() {
            return Err(GoBinaryError::Malformed("a function without RET"));
        }
        Ok(FunctionProbes {
            entry,
            body: body - start + entry,
            returns,
        })
    };
    Ok(GoTlsProbes {
        version,
        read: probes(read)?,
        write: probes(write)?,
        close: close
            .and_then(|(start, _)| elf.file_offset(start))
            .filter(|&o| elf.bytes_at(o, 1).is_some()),
        names_mcp: program_names_mcp(&elf, bytes),
    })
}

/// Names one of which every MCP client and server holds among its
/// strings. `protocolVersion` is a key of both the client's `initialize`
/// request and the server's answer, so a Go program that writes either
/// holds it (a map key or string constant, kept in `.rodata`, or a struct
/// tag, kept with the type data: `.rodata` too, `.data.rel.ro` in
/// position-independent builds; stripped or not). The method names catch
/// the rest; alone they would not do, as the compiler turns a `switch` on
/// short strings into compares of integers and keeps no bytes of them.
pub const MCP_NAMES: [&str; 6] = [
    "protocolVersion",
    "notifications/initialized",
    "tools/call",
    "tools/list",
    "resources/read",
    "prompts/get",
];

/// Whether a Go program holds one of [`MCP_NAMES`]: in its read-only data
/// (`.rodata`, `.data.rel.ro`), or anywhere in the file when it has
/// neither section.
fn program_names_mcp(elf: &Elf, bytes: &[u8]) -> bool {
    let sections: Vec<&[u8]> = [&b".rodata"[..], b".data.rel.ro"]
        .into_iter()
        .filter_map(|name| elf.section_bytes(name).map(|(b, _)| b))
        .collect();
    if sections.is_empty() {
        return names_mcp(bytes);
    }
    sections.into_iter().any(names_mcp)
}

/// Whether `bytes` hold one of [`MCP_NAMES`]. A program that builds them
/// at run time (from pieces, or from compressed data) would be missed:
/// none of the Go MCP libraries does.
pub fn names_mcp(bytes: &[u8]) -> bool {
    // One pass over the bytes, whatever their size (a Go program may
    // have hundreds of megabytes), for all the names.
    static NAMES: std::sync::LazyLock<Option<aho_corasick::AhoCorasick>> =
        std::sync::LazyLock::new(|| aho_corasick::AhoCorasick::new(MCP_NAMES).ok());
    // Should the automaton not build, probe rather than miss MCP.
    NAMES.as_ref().is_none_or(|ac| ac.is_match(bytes))
}

/// Whether an executable may be a Go program, from its ELF header and
/// section names only, read through `read_at(offset, len)`: a
/// `.go.buildinfo` or `.gopclntab` section, or no section headers at all.
/// The agent reads only such files in full.
pub fn may_be_go(read_at: &mut dyn FnMut(u64, usize) -> Option<Vec<u8>>) -> bool {
    match elf::section_names(read_at) {
        Some(None) => true,
        Some(Some(names)) => {
            memchr::memmem::find(&names, b".go.buildinfo\0").is_some()
                || memchr::memmem::find(&names, b".gopclntab\0").is_some()
        }
        None => false,
    }
}

/// `go1.24.4` → (1, 24); `go1.17` → (1, 17); anything else (`devel …`) →
/// None.
pub fn parse_version(v: &str) -> Option<(u32, u32)> {
    let rest = v.strip_prefix("go")?;
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The virtual address of the instruction after the prologue's
/// stack-growth check, and those of the `RET` instructions, of the code at
/// `code` (loaded at `start`). The check is a compare of the stack pointer
/// with the goroutine's stack guard followed, within the first few
/// instructions, by a conditional jump forward to the `morestack` call at
/// the function's end. Code that does not decode (a table pointing into
/// data) is refused: a probe in the middle of an instruction would corrupt
/// the program.
fn scan(code: &[u8], start: u64) -> Result<(u64, Vec<u64>), GoBinaryError> {
    let end = start + code.len() as u64;
    let mut decoder = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
    let mut body = None;
    let mut returns = Vec::new();
    let mut n = 0;
    while decoder.can_decode() {
        let ins = decoder.decode();
        if ins.code() == Code::INVALID {
            return Err(GoBinaryError::Malformed("code that does not decode"));
        }
        n += 1;
        if body.is_none()
            && n <= 4
            && ins.is_jcc_short_or_near()
            && (ins.next_ip()..end).contains(&ins.near_branch_target())
        {
            body = Some(ins.next_ip());
        }
        if ins.mnemonic() == Mnemonic::Ret {
            returns.push(ins.ip());
        }
    }
    Ok((body.unwrap_or(start), returns))
}

const BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";

/// The Go version in the build information: `.go.buildinfo`, or (where
/// section headers were removed) the magic searched for in the file.
fn build_version(elf: &Elf) -> Option<String> {
    let data = match elf.section_bytes(b".go.buildinfo") {
        Some((b, _)) => b,
        // Only where section headers were removed: every other executable
        // on the host comes here, and most are not Go.
        None if elf.sections.is_empty() => {
            let at = memchr::memmem::find(elf.bytes, BUILDINFO_MAGIC)?;
            &elf.bytes[at..]
        }
        None => return None,
    };
    if !data.starts_with(BUILDINFO_MAGIC) || data.len() < 32 {
        return None;
    }
    let ptr_size = data[14];
    let flags = data[15];
    let version = if flags & 2 != 0 {
        // Go 1.18 and later: the strings follow inline, length-prefixed
        // (uvarint).
        let (len, n) = uvarint(&data[32..])?;
        let start = 32 + n;
        data.get(start..start.checked_add(usize::try_from(len).ok()?)?)?
    } else {
        // Go 1.17: pointers to Go string headers (pointer, length).
        if ptr_size != 8 || flags & 1 != 0 {
            return None;
        }
        let header = u64_at(data, 16)?;
        let h = elf.bytes_at_va(header, 16)?;
        let (ptr, len) = (u64_at(h, 0)?, u64_at(h, 8)?);
        if len > 256 {
            return None;
        }
        elf.bytes_at_va(ptr, len)?
    };
    let v = std::str::from_utf8(version).ok()?;
    (v.starts_with("go") || v.starts_with("devel")).then(|| v.to_owned())
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// The function table of `.gopclntab`, formats of Go 1.16/1.17
/// (`0xfffffffa`) and 1.18 and later (`0xfffffff0`, `0xfffffff1`).
struct FuncTable<'a> {
    table: &'a [u8],
    /// Number of functions.
    nfunc: usize,
    /// Start of the names (`funcnametab`).
    names: usize,
    /// Start of `functab` (and of the `_func` records, relative to it).
    pcln: usize,
    /// Go 1.18+: entries are 32-bit offsets from `text_start`; before,
    /// 64-bit addresses.
    text_start: Option<u64>,
}

impl<'a> FuncTable<'a> {
    fn find(elf: &Elf<'a>) -> Result<Self, GoBinaryError> {
        if let Some((table, _)) = elf.section_bytes(b".gopclntab") {
            return Self::parse(table);
        }
        // Section headers stripped or the table inside `.data.rel.ro`
        // (position-independent builds): try each place the magic occurs.
        // At most 8 candidates per magic are looked through: a crafted file
        // cannot make the scan long.
        for magic in [0xfffffff1u32, 0xfffffff0, 0xfffffffa] {
            let pattern = magic.to_le_bytes();
            for at in memchr::memmem::find_iter(elf.bytes, &pattern).take(8) {
                if let Ok(t) = Self::parse(&elf.bytes[at..]) {
                    if t.lookup([b"runtime.main"])[0].is_some() {
                        return Ok(t);
                    }
                }
            }
        }
        Err(GoBinaryError::Malformed("no function table (.gopclntab)"))
    }

    fn parse(table: &'a [u8]) -> Result<Self, GoBinaryError> {
        let bad = GoBinaryError::Malformed("function table header");
        let magic = u32_at(table, 0).ok_or(bad)?;
        let (pad, min_lc, ptr_size) = (u16_at(table, 4), table.get(6), table.get(7));
        if pad != Some(0) || !matches!(min_lc, Some(1 | 2 | 4)) || ptr_size != Some(&8) {
            return Err(GoBinaryError::Malformed("function table header"));
        }
        let word = |i: usize| u64_at(table, 8 + 8 * i).and_then(|v| usize::try_from(v).ok());
        let (nfunc, names, pcln, text_start) = match magic {
            0xfffffff0 | 0xfffffff1 => {
                let text = u64_at(table, 24).ok_or(GoBinaryError::Malformed("function table header"))?;
                // Position-independent builds leave the field to a dynamic
                // relocation; `.text` may start before `runtime.text`
                // (external linking), so no address is guessed.
                if text == 0 {
                    return Err(GoBinaryError::Malformed(
                        "text start not in the file (position-independent build)",
                    ));
                }
                (word(0), word(3), word(7), Some(text))
            }
            0xfffffffa => (word(0), word(2), word(6), None),
            _ => return Err(GoBinaryError::Malformed("function table header")),
        };
        let (Some(nfunc), Some(names), Some(pcln)) = (nfunc, names, pcln) else {
            return Err(GoBinaryError::Malformed("function table header"));
        };
        let entry = if text_start.is_some() { 8 } else { 16 };
        let fits = nfunc
            .checked_add(1)
            .and_then(|n| n.checked_mul(entry))
            .and_then(|n| n.checked_add(pcln))
            .is_some_and(|end| end <= table.len());
        if nfunc == 0 || names >= table.len() || !fits {
            return Err(GoBinaryError::Malformed("function table header"));
        }
        Ok(FuncTable {
            table,
            nfunc,
            names,
            pcln,
            text_start,
        })
    }

    /// (entry, record offset) of function `i` (`i == nfunc`: the end).
    fn entry(&self, i: usize) -> Option<(u64, usize)> {
        match self.text_start {
            Some(text) => {
                let at = self.pcln + 8 * i;
                let off = u32_at(self.table, at)?;
                let rec = u32_at(self.table, at + 4)? as usize;
                Some((text.checked_add(u64::from(off))?, rec))
            }
            None => {
                let at = self.pcln + 16 * i;
                let pc = u64_at(self.table, at)?;
                let rec = usize::try_from(u64_at(self.table, at + 8)?).ok()?;
                Some((pc, rec))
            }
        }
    }

    /// Whether the name of record `rec` is `name` (compared in place: a
    /// damaged table with names missing their terminator costs no more).
    fn name_is(&self, rec: usize, name: &[u8]) -> bool {
        // `_func`: entry (4 bytes from 1.18, 8 before), then nameOff (i32).
        let name_field = if self.text_start.is_some() { 4 } else { 8 };
        let Some(at) = self.pcln.checked_add(rec).and_then(|a| a.checked_add(name_field)) else {
            return false;
        };
        let Some(off) = u32_at(self.table, at).and_then(|o| usize::try_from(o as i32).ok()) else {
            return false;
        };
        let Some(start) = self.names.checked_add(off) else {
            return false;
        };
        let end = start.saturating_add(name.len());
        self.table.get(start..end) == Some(name) && self.table.get(end) == Some(&0)
    }

    /// The [start, end) addresses of the functions named `names`, in one
    /// pass over the table.
    fn lookup<const N: usize>(&self, names: [&[u8]; N]) -> [Option<(u64, u64)>; N] {
        let mut out = [None; N];
        for i in 0..self.nfunc {
            let Some((start, rec)) = self.entry(i) else { break };
            for (slot, name) in out.iter_mut().zip(names) {
                if slot.is_none() && self.name_is(rec, name) {
                    *slot = self.entry(i + 1).map(|(end, _)| (start, end));
                }
            }
            if out.iter().all(Option::is_some) {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
