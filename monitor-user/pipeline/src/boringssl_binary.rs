//! Bun executables: where their statically linked BoringSSL hands over
//! plaintext, found without a symbol table.
//!
//! Bun (and every program built on it: Claude Code, `bun build --compile`
//! output) links BoringSSL into one stripped executable: no `SSL_read` or
//! `SSL_write` symbol is left. What is left is BoringSSL's error
//! reporting: each `OPENSSL_PUT_ERROR(SSL, reason)` compiles to a call of
//! `ERR_put_error(ERR_LIB_SSL, 0, reason, "…/ssl/ssl_lib.cc", line)`, and
//! the reason codes are part of BoringSSL's public headers (stable across
//! versions; line numbers are not). The two functions are recognised by
//! the reasons they report, in the shape their source gives them:
//!
//! - `SSL_write` is the one function of `ssl_lib.cc` that reports
//!   `SSL_R_BAD_LENGTH`; it starts with a test of `ssl->quic_method`
//!   (`ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED`) and reports
//!   `SSL_R_UNINITIALIZED` on the way.
//! - `SSL_read` starts with the same test of the same field, then calls
//!   (or inlines) `ssl_read_impl`, which reports `SSL_R_UNINITIALIZED` and
//!   `SSL_R_SSL_HANDSHAKE_FAILURE`; it is not `SSL_write`.
//!
//! A function's start is the aligned address after the padding before it
//! from which the machine code decodes, instruction by instruction, onto
//! the error call; it must open like a compiled function. Anything less
//! than exactly one candidate for each function is refused, never
//! guessed: a probe in the wrong place would read the wrong registers, and
//! one in the middle of an instruction would corrupt the program.
//!
//! The input is an untrusted file: every offset is checked, and a damaged
//! file gives an error, never a panic (fuzz target `boringssl_binary`).

use crate::elf::{self, Elf, ElfError, EM_X86_64};
use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

/// Where to probe one Bun executable, as offsets in the file (what a uprobe
/// takes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoringSslProbes {
    /// `SSL_read(SSL *ssl, void *buf, int num)`: entry and return probes.
    pub read: u64,
    /// `SSL_write(SSL *ssl, const void *buf, int num)`: entry and return.
    pub write: u64,
    /// The GNU build id, when the file has one: the cache key, since the
    /// same executable is often installed many times (one per container or
    /// per version directory).
    pub build_id: Option<String>,
}

/// Why an executable gets no BoringSSL probes.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum BoringSslError {
    /// Not a 64-bit little-endian ELF file.
    #[error("not a 64-bit little-endian ELF executable")]
    NotElf,
    /// No BoringSSL inside (its `ssl_lib.cc` is never named).
    #[error("no BoringSSL inside")]
    NoBoringSsl,
    /// Built for another architecture than x86-64.
    #[error("BoringSSL for another architecture than x86-64 (only x86-64 is probed)")]
    Architecture,
    /// The function's signature was not found.
    #[error("BoringSSL's {0} was not recognised in the machine code (another compiler or BoringSSL version)")]
    NotFound(&'static str),
    /// More than one function matches.
    #[error("more than one function looks like BoringSSL's {0}")]
    Ambiguous(&'static str),
    /// Headers or code that are not what a linker writes.
    #[error("damaged or unusual executable: {0}")]
    Malformed(&'static str),
}

/// BoringSSL's `ERR_LIB_SSL`.
const ERR_LIB_SSL: u32 = 16;
/// `ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED`: the QUIC test both functions open
/// with.
const R_SHOULD_NOT_HAVE_BEEN_CALLED: u32 = 66;
/// `SSL_R_BAD_LENGTH`: `SSL_write` with a negative length.
const R_BAD_LENGTH: u32 = 111;
/// `SSL_R_SSL_HANDSHAKE_FAILURE`.
const R_HANDSHAKE_FAILURE: u32 = 215;
/// `SSL_R_UNINITIALIZED`: no handshake function set.
const R_UNINITIALIZED: u32 = 226;

/// The source file whose error calls are looked for.
const SSL_LIB: &[u8] = b"ssl/ssl_lib.cc\0";
/// Copies of that name looked at, at most (one per BoringSSL linked in).
const MAX_NAMES: usize = 4;
/// Error calls looked at, at most (`ssl_lib.cc` has about forty).
const MAX_SITES: usize = 4096;
/// How far before its first error call a function may start.
const MAX_PROLOGUE: u64 = 192;
/// How far a function body is followed.
const MAX_BODY: u64 = 16 << 10;

/// Whether an executable may be a Bun program, from its section names only
/// (read through `read_at(offset, len)`): Bun writes its own `.bun`
/// sections. The agent reads only such files in full.
pub fn may_be_bun(read_at: &mut dyn FnMut(u64, usize) -> Option<Vec<u8>>) -> bool {
    matches!(elf::section_names(read_at), Some(Some(names)) if memchr::memmem::find(&names, b".bun\0").is_some())
}

/// The GNU build id of an executable (hex), read from its headers only.
pub fn build_id(bytes: &[u8]) -> Option<String> {
    Elf::parse(bytes).ok()?.build_id()
}

/// Reads `bytes` (the whole executable) and finds `SSL_read` and
/// `SSL_write`.
pub fn inspect(bytes: &[u8]) -> Result<BoringSslProbes, BoringSslError> {
    let elf = Elf::parse(bytes).map_err(|e| match e {
        ElfError::NotElf => BoringSslError::NotElf,
        ElfError::Malformed => BoringSslError::Malformed("ELF headers"),
    })?;
    let names = file_names(&elf);
    if names.is_empty() {
        return Err(BoringSslError::NoBoringSsl);
    }
    if elf.machine != EM_X86_64 {
        return Err(BoringSslError::Architecture);
    }
    let code = Code_::new(&elf);
    let sites = error_sites(&code, &names);
    let mut bodies = Bodies::default();
    let write = find_write(&code, &sites, &mut bodies)?;
    let read = find_read(&code, &sites, &write, &mut bodies)?;
    let offset = |va: u64| {
        code.file_offset(va)
            .ok_or(BoringSslError::Malformed("function outside the file"))
    };
    Ok(BoringSslProbes {
        read: offset(read)?,
        write: offset(write.start)?,
        build_id: elf.build_id(),
    })
}

/// Virtual addresses of the strings ending in `ssl/ssl_lib.cc` (the path
/// before it depends on the build).
fn file_names(elf: &Elf) -> Vec<u64> {
    let mut out = Vec::new();
    for at in memchr::memmem::find_iter(elf.bytes, SSL_LIB).take(MAX_NAMES) {
        // The string starts after the previous NUL (paths are short).
        let floor = at.saturating_sub(512);
        let start = memchr::memrchr(0, &elf.bytes[floor..at]).map_or(floor, |p| floor + p + 1);
        if let Some(va) = elf.vaddr_of(start as u64) {
            out.push(va);
        }
    }
    out
}

/// The executable segments: bytes, virtual address, file offset.
struct Code_<'a> {
    segments: Vec<(&'a [u8], u64, u64)>,
}

impl<'a> Code_<'a> {
    fn new(elf: &Elf<'a>) -> Self {
        Self {
            segments: elf.code().collect(),
        }
    }

    /// The file offset of code at `va` (through the segment it was read
    /// from, so always inside the file).
    fn file_offset(&self, va: u64) -> Option<u64> {
        self.segments.iter().find_map(|&(bytes, base, offset)| {
            let off = va.checked_sub(base)?;
            (off < bytes.len() as u64).then_some(offset + off)
        })
    }

    /// Up to `len` bytes of code from `va`.
    fn at(&self, va: u64, len: u64) -> Option<&'a [u8]> {
        self.segments.iter().find_map(|&(bytes, base, _)| {
            let off = usize::try_from(va.checked_sub(base)?).ok()?;
            let rest = bytes.get(off..)?;
            Some(&rest[..rest.len().min(usize::try_from(len).ok()?)])
        })
    }

    /// Decodes from `va` for at most `len` bytes.
    fn decode(&self, va: u64, len: u64) -> Option<Decoder<'a>> {
        Some(Decoder::with_ip(64, self.at(va, len)?, va, DecoderOptions::NONE))
    }
}

/// One `ERR_put_error(ERR_LIB_SSL, 0, reason, "…ssl_lib.cc", line)` call:
/// where the file name is loaded, and the reason.
#[derive(Clone, Copy, Debug)]
struct Site {
    at: u64,
    reason: u32,
}

/// The error calls naming one of `names`, sorted by address. The name is
/// the fourth argument (RCX): `mov ecx, imm32` in position-dependent code,
/// `lea rcx, [rip+disp32]` in position-independent code.
fn error_sites(code: &Code_, names: &[u64]) -> Vec<Site> {
    // (Segments were kept only where base + length does not wrap.)
    let mut loads = Vec::new();
    'segments: for &(bytes, base, _) in &code.segments {
        for &name in names {
            if let Ok(imm) = u32::try_from(name) {
                let mut pattern = [0xb9u8; 5];
                pattern[1..].copy_from_slice(&imm.to_le_bytes());
                for p in memchr::memmem::find_iter(bytes, &pattern) {
                    if loads.len() >= MAX_SITES {
                        break 'segments;
                    }
                    loads.push(base + p as u64);
                }
            }
        }
        for p in memchr::memmem::find_iter(bytes, b"\x48\x8d\x0d") {
            let Some(disp) = elf::u32_at(bytes, p + 3) else {
                continue;
            };
            let next = (base + p as u64).wrapping_add(7);
            let target = next.wrapping_add(disp as i32 as i64 as u64);
            if names.contains(&target) {
                if loads.len() >= MAX_SITES {
                    break 'segments;
                }
                loads.push(base + p as u64);
            }
        }
    }
    let mut sites: Vec<Site> = loads
        .into_iter()
        .filter_map(|at| {
            Some(Site {
                at,
                reason: ssl_reason(code, at)?,
            })
        })
        .collect();
    sites.sort_by_key(|s| s.at);
    sites
}

/// The reason of the error call whose file name is loaded at `at`, when
/// the library is `ERR_LIB_SSL`: the arguments set just before (found by
/// decoding from a little earlier onto `at`) and after it, up to the call
/// (or the jump to a call shared by several reports).
fn ssl_reason(code: &Code_, at: u64) -> Option<u32> {
    let (mut lib, mut reason) = (None, None);
    // Arguments set before the file name: the longest run of whole
    // instructions that ends exactly at `at`.
    for back in (1..=24u64).rev() {
        let Some(mut d) = at.checked_sub(back).and_then(|s| code.decode(s, back)) else {
            continue;
        };
        let mut run = Vec::new();
        while d.can_decode() {
            run.push(d.decode());
        }
        if run
            .last()
            .is_some_and(|i| i.next_ip() == at && i.code() != Code::INVALID)
            && run
                .iter()
                .all(|i| i.code() != Code::INVALID && i.flow_control() == iced_x86::FlowControl::Next)
        {
            for i in &run {
                note_argument(i, &mut lib, &mut reason);
            }
            break;
        }
    }
    let mut d = code.decode(at, 64)?;
    for _ in 0..10 {
        let i = d.decode();
        if i.code() == Code::INVALID {
            return None;
        }
        // The call, or a jump to the call the function's reports share.
        let calls = i.mnemonic() == Mnemonic::Call
            || (i.mnemonic() == Mnemonic::Jmp
                && i.op0_kind() == OpKind::NearBranch64
                && code
                    .decode(i.near_branch_target(), 16)
                    .is_some_and(|mut t| t.decode().mnemonic() == Mnemonic::Call));
        if calls {
            return (lib == Some(ERR_LIB_SSL)).then_some(reason?);
        }
        if i.flow_control() != iced_x86::FlowControl::Next {
            return None;
        }
        note_argument(&i, &mut lib, &mut reason);
    }
    None
}

/// `mov edi, imm` (the library) and `mov edx, imm` (the reason).
fn note_argument(i: &Instruction, lib: &mut Option<u32>, reason: &mut Option<u32>) {
    if i.op_count() == 2 && i.op1_kind() == OpKind::Immediate32 && i.mnemonic() == Mnemonic::Mov {
        match i.op0_register() {
            Register::EDI => *lib = Some(i.immediate32()),
            Register::EDX => *reason = Some(i.immediate32()),
            _ => {}
        }
    } else if i.op_count() >= 1 {
        // Anything else written to those registers clears what we knew.
        match i.op0_register() {
            Register::EDI | Register::RDI => *lib = None,
            Register::EDX | Register::RDX => *reason = None,
            _ => {}
        }
    }
}

/// A function found: its start, and the field its QUIC test reads.
struct Function {
    start: u64,
    quic_field: i64,
}

/// The start of the function whose first error call is `site`: the
/// lowest 16-byte-aligned address at most [`MAX_PROLOGUE`] bytes before it
/// that follows padding (int3, as clang and lld lay functions out) or a
/// return, opens like a compiled function, and decodes straight onto
/// `site` (no return, jump or padding in between). The lowest, not the
/// nearest: an aligned address inside the function (a loop target after a
/// one-byte NOP) may pass the same test, an address in the function before
/// cannot (its code reaches a return first). Also the field of the last
/// `cmp qword [reg + d], 0` on the way: the QUIC test.
fn function_of(code: &Code_, site: u64) -> Option<Function> {
    let mut start = site.saturating_sub(MAX_PROLOGUE).max(1).next_multiple_of(16);
    while start < site {
        let before = code.at(start - 1, 1).and_then(|b| b.first().copied());
        if matches!(before, Some(0xcc | 0xc3 | 0x90)) {
            if let Some(quic_field) = straight_to(code, start, site) {
                return Some(Function { start, quic_field });
            }
        }
        start += 16;
    }
    None
}

/// Whether code from `start` decodes straight onto `site`, opening like a
/// function; the displacement of its last `cmp qword [reg+d], 0`.
fn straight_to(code: &Code_, start: u64, site: u64) -> Option<i64> {
    let mut d = code.decode(start, site - start)?;
    let mut quic = None;
    let mut first = true;
    while d.can_decode() {
        let i = d.decode();
        if i.code() == Code::INVALID || matches!(i.mnemonic(), Mnemonic::Ret | Mnemonic::Int3 | Mnemonic::Jmp) {
            return None;
        }
        if first {
            if !opens_function(&i) {
                return None;
            }
            first = false;
        }
        if i.mnemonic() == Mnemonic::Cmp
            && i.op0_kind() == OpKind::Memory
            && i.memory_size().size() == 8
            && i.op1_kind() == OpKind::Immediate8to64
            && i.immediate(1) == 0
        {
            quic = Some(i.memory_displacement64() as i64);
        }
        if i.next_ip() == site {
            return quic;
        }
    }
    None
}

/// How compiled functions open: `endbr64`, a register pushed, or the stack
/// pointer lowered.
fn opens_function(i: &Instruction) -> bool {
    i.mnemonic() == Mnemonic::Endbr64
        || (i.mnemonic() == Mnemonic::Push && i.op0_kind() == OpKind::Register)
        || (i.mnemonic() == Mnemonic::Sub && i.op0_register() == Register::RSP)
}

/// The reasons reported along a function's body from `start` (linear
/// decoding up to the padding and opening of the next function), and the
/// targets of its direct calls.
fn body(code: &Code_, start: u64, sites: &[Site]) -> Body {
    let (mut reasons, mut calls) = (Vec::new(), Vec::new());
    let Some(mut d) = code.decode(start, MAX_BODY) else {
        return (reasons, calls);
    };
    let mut i = Instruction::default();
    let mut after_int3 = false;
    while d.can_decode() {
        d.decode_out(&mut i);
        if i.code() == Code::INVALID {
            break;
        }
        if i.mnemonic() == Mnemonic::Int3 {
            after_int3 = true;
            continue;
        }
        // Padding then an aligned function opening: the next function. (A
        // lone int3 also follows calls that do not return.)
        if after_int3 && i.ip() % 16 == 0 && opens_function(&i) {
            break;
        }
        after_int3 = false;
        if let Ok(k) = sites.binary_search_by_key(&i.ip(), |s| s.at) {
            reasons.push(sites[k].reason);
        }
        if i.mnemonic() == Mnemonic::Call && i.op0_kind() == OpKind::NearBranch64 {
            calls.push(i.near_branch_target());
        }
    }
    (reasons, calls)
}

/// The reasons a function body reports and the targets of its direct
/// calls (see [`body`]).
type Body = (Vec<u32>, Vec<u64>);

/// Function bodies decoded so far (by start), and the number decoded: a
/// crafted file with thousands of error calls costs a bounded amount of
/// work.
#[derive(Default)]
struct Bodies {
    seen: std::collections::HashMap<u64, Option<Body>>,
}

/// Bodies decoded per file, at most (each up to [`MAX_BODY`] bytes).
const MAX_BODIES: usize = 256;

impl Bodies {
    /// [`body`] of the function at `start`, None once the budget is spent.
    fn of(&mut self, code: &Code_, start: u64, sites: &[Site]) -> Option<&Body> {
        if !self.seen.contains_key(&start) {
            let value = (self.seen.len() < MAX_BODIES).then(|| body(code, start, sites));
            self.seen.insert(start, value);
        }
        self.seen.get(&start).and_then(Option::as_ref)
    }
}

/// `SSL_write`: the function around the only `SSL_R_BAD_LENGTH` report,
/// opening with the QUIC test and reporting `SSL_R_UNINITIALIZED`.
fn find_write(code: &Code_, sites: &[Site], bodies: &mut Bodies) -> Result<Function, BoringSslError> {
    let mut found: Vec<Function> = Vec::new();
    for bad in sites.iter().filter(|s| s.reason == R_BAD_LENGTH) {
        let Some(quic) = sites
            .iter()
            .rev()
            .find(|s| s.at < bad.at && bad.at - s.at < 2048 && s.reason == R_SHOULD_NOT_HAVE_BEEN_CALLED)
        else {
            continue;
        };
        let Some(f) = function_of(code, quic.at) else { continue };
        if found.iter().any(|g| g.start == f.start) {
            continue;
        }
        let Some((reasons, _)) = bodies.of(code, f.start, sites) else {
            break;
        };
        let has = |r| reasons.contains(&r);
        if has(R_BAD_LENGTH) && has(R_UNINITIALIZED) && reasons.first() == Some(&R_SHOULD_NOT_HAVE_BEEN_CALLED) {
            found.push(f);
            if found.len() > 1 {
                return Err(BoringSslError::Ambiguous("SSL_write"));
            }
        }
    }
    found.pop().ok_or(BoringSslError::NotFound("SSL_write"))
}

/// `SSL_read`: a function opening with the same QUIC test as `SSL_write`
/// (same field), that is not `SSL_write`, and whose body or a function it
/// calls reports `SSL_R_UNINITIALIZED` and `SSL_R_SSL_HANDSHAKE_FAILURE`
/// (`ssl_read_impl`). (Where BoringSSL's `SSL_peek` is a function of its
/// own, it has the same shape: two candidates are refused.)
fn find_read(code: &Code_, sites: &[Site], write: &Function, bodies: &mut Bodies) -> Result<u64, BoringSslError> {
    let mut found: Vec<u64> = Vec::new();
    let mut looked_at: Vec<u64> = Vec::new();
    let reads = |reasons: &[u32]| reasons.contains(&R_UNINITIALIZED) && reasons.contains(&R_HANDSHAKE_FAILURE);
    for quic in sites.iter().filter(|s| s.reason == R_SHOULD_NOT_HAVE_BEEN_CALLED) {
        let Some(f) = function_of(code, quic.at) else { continue };
        if f.start == write.start || f.quic_field != write.quic_field || looked_at.contains(&f.start) {
            continue;
        }
        looked_at.push(f.start);
        let Some((reasons, calls)) = bodies.of(code, f.start, sites).cloned() else {
            break;
        };
        if reasons.first() != Some(&R_SHOULD_NOT_HAVE_BEEN_CALLED) || reasons.contains(&R_BAD_LENGTH) {
            continue;
        }
        let is_read = reads(&reasons)
            || calls
                .iter()
                .take(16)
                .any(|&c| c != f.start && c != write.start && bodies.of(code, c, sites).is_some_and(|(r, _)| reads(r)));
        if is_read {
            found.push(f.start);
            if found.len() > 1 {
                return Err(BoringSslError::Ambiguous("SSL_read"));
            }
        }
    }
    found.pop().ok_or(BoringSslError::NotFound("SSL_read"))
}

#[cfg(test)]
mod tests;
