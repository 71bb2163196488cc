//! Synthetic Go executables: an ELF file with a `.text`, a `.gopclntab` in
//! the layout of Go 1.18+ (or 1.16/1.17) and a `.go.buildinfo`.

use super::*;
use crate::elf::PT_LOAD;
use proptest::prelude::*;

const BASE: u64 = 0x400000;

/// `mov eax, 0xc3; ret; int3; xor eax, eax; ret`: a byte 0xc3 inside an
/// instruction, which is not a return.
const READ_CODE: &[u8] = &[0xb8, 0xc3, 0x00, 0x00, 0x00, 0xc3, 0xcc, 0x31, 0xc0, 0xc3];
/// Go's prologue: `cmp rsp, [r14+0x10]; jbe +6` (to the `morestack` call
/// at the end), then `push rbp; mov rbp, rsp; pop rbp; ret`, then
/// `call rel32; jmp` back to the entry.
const WRITE_CODE: &[u8] = &[
    0x49, 0x3b, 0x66, 0x10, 0x76, 0x06, 0x55, 0x48, 0x89, 0xe5, 0x5d, 0xc3, 0xe8, 0x00, 0x00, 0x00, 0x00, 0xeb, 0xec,
];

#[derive(Clone, Copy, PartialEq)]
enum Layout {
    /// Go 1.18 and later (magic 0xfffffff1, 32-bit entries).
    Modern,
    /// Go 1.16/1.17 (magic 0xfffffffa, 64-bit entries, pointer build info).
    Go117,
}

struct Spec {
    version: &'static str,
    layout: Layout,
    functions: Vec<(&'static str, Vec<u8>)>,
    section_headers: bool,
    machine: u16,
}

impl Spec {
    fn new(version: &'static str) -> Self {
        Spec {
            version,
            layout: Layout::Modern,
            functions: vec![
                ("runtime.main", vec![0xc3]),
                ("crypto/tls.(*Conn).Read", READ_CODE.to_vec()),
                ("crypto/tls.(*Conn).Write", WRITE_CODE.to_vec()),
                ("crypto/tls.(*Conn).Close", vec![0x90, 0xc3]),
                ("main.main", vec![0xc3]),
            ],
            section_headers: true,
            machine: EM_X86_64,
        }
    }
}

fn put_u32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn put_u64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn pad_to(v: &mut Vec<u8>, align: usize) {
    while !v.len().is_multiple_of(align) {
        v.push(0);
    }
}

/// The file, and the file offsets of each function's start.
fn build(spec: &Spec) -> (Vec<u8>, Vec<u64>) {
    let mut file = vec![0u8; 64];
    // .text
    pad_to(&mut file, 16);
    let text_off = file.len();
    let mut starts = Vec::new();
    for (_, code) in &spec.functions {
        starts.push(file.len() as u64);
        file.extend_from_slice(code);
        // Go's linker pads functions with INT3.
        while !file.len().is_multiple_of(16) {
            file.push(0xcc);
        }
    }
    let text_end = file.len();
    // .gopclntab
    let tab_off = file.len();
    let mut names = Vec::new();
    let mut name_offs = Vec::new();
    for (n, _) in &spec.functions {
        name_offs.push(names.len() as u32);
        names.extend_from_slice(n.as_bytes());
        names.push(0);
    }
    let nfunc = spec.functions.len();
    let mut tab = Vec::new();
    let header_len = match spec.layout {
        Layout::Modern => 72,
        Layout::Go117 => 64,
    };
    let names_at = header_len;
    let pcln_at = header_len + names.len().next_multiple_of(8);
    let entry = if spec.layout == Layout::Modern { 8 } else { 16 };
    let funcs_at = (nfunc + 1) * entry; // relative to pcln
    let rec_len = 16;
    match spec.layout {
        Layout::Modern => {
            put_u32(&mut tab, 0xfffffff1);
            tab.extend_from_slice(&[0, 0, 1, 8]);
            put_u64(&mut tab, nfunc as u64);
            put_u64(&mut tab, 0); // nfiles
            put_u64(&mut tab, BASE + text_off as u64); // textStart
            put_u64(&mut tab, names_at as u64);
            for _ in 0..3 {
                put_u64(&mut tab, 0); // cu, filetab, pctab
            }
            put_u64(&mut tab, pcln_at as u64);
        }
        Layout::Go117 => {
            put_u32(&mut tab, 0xfffffffa);
            tab.extend_from_slice(&[0, 0, 1, 8]);
            put_u64(&mut tab, nfunc as u64);
            put_u64(&mut tab, 0);
            put_u64(&mut tab, names_at as u64);
            for _ in 0..3 {
                put_u64(&mut tab, 0);
            }
            put_u64(&mut tab, pcln_at as u64);
        }
    }
    assert_eq!(tab.len(), header_len);
    tab.extend_from_slice(&names);
    pad_to(&mut tab, 8);
    let ends = starts.iter().copied().chain([text_end as u64]);
    for (i, pc) in ends.enumerate() {
        let rec = funcs_at + rec_len * i.min(nfunc - 1);
        match spec.layout {
            Layout::Modern => {
                put_u32(&mut tab, (pc - text_off as u64) as u32);
                put_u32(&mut tab, rec as u32);
            }
            Layout::Go117 => {
                put_u64(&mut tab, BASE + pc);
                put_u64(&mut tab, rec as u64);
            }
        }
    }
    for (i, start) in starts.iter().enumerate() {
        match spec.layout {
            Layout::Modern => {
                put_u32(&mut tab, (start - text_off as u64) as u32);
                put_u32(&mut tab, name_offs[i]);
                put_u64(&mut tab, 0);
            }
            Layout::Go117 => {
                put_u64(&mut tab, BASE + start);
                put_u32(&mut tab, name_offs[i]);
                put_u32(&mut tab, 0);
            }
        }
    }
    file.extend_from_slice(&tab);
    pad_to(&mut file, 16);
    // .go.buildinfo
    let info_off = file.len();
    file.extend_from_slice(BUILDINFO_MAGIC);
    match spec.layout {
        Layout::Modern => {
            file.extend_from_slice(&[8, 2]);
            file.resize(info_off + 32, 0);
            file.push(spec.version.len() as u8);
            file.extend_from_slice(spec.version.as_bytes());
        }
        Layout::Go117 => {
            file.extend_from_slice(&[8, 0]);
            let header_va = BASE + info_off as u64 + 32;
            put_u64(&mut file, header_va);
            put_u64(&mut file, 0);
            put_u64(&mut file, BASE + info_off as u64 + 48);
            put_u64(&mut file, spec.version.len() as u64);
            file.extend_from_slice(spec.version.as_bytes());
        }
    }
    let info_end = file.len();
    // .shstrtab
    pad_to(&mut file, 8);
    let strtab_off = file.len();
    let section_names = [".text", ".gopclntab", ".go.buildinfo", ".shstrtab"];
    let mut name_at = Vec::new();
    file.push(0);
    for n in section_names {
        name_at.push((file.len() - strtab_off) as u32);
        file.extend_from_slice(n.as_bytes());
        file.push(0);
    }
    let strtab_end = file.len();
    // Program header: one loadable segment covering the file.
    pad_to(&mut file, 8);
    let phoff = file.len();
    let total_guess = phoff + 56 + 64 * 5;
    put_u32(&mut file, PT_LOAD);
    put_u32(&mut file, 5);
    put_u64(&mut file, 0);
    put_u64(&mut file, BASE);
    put_u64(&mut file, BASE);
    put_u64(&mut file, total_guess as u64);
    put_u64(&mut file, total_guess as u64);
    put_u64(&mut file, 0x1000);
    let shoff = file.len();
    let sections = [
        (0u32, 0u32, 0u64, 0usize, 0usize),
        (name_at[0], 1, BASE + text_off as u64, text_off, text_end - text_off),
        (name_at[1], 1, BASE + tab_off as u64, tab_off, tab.len()),
        (name_at[2], 1, BASE + info_off as u64, info_off, info_end - info_off),
        (name_at[3], 3, 0, strtab_off, strtab_end - strtab_off),
    ];
    if spec.section_headers {
        for (name, kind, addr, off, size) in sections {
            put_u32(&mut file, name);
            put_u32(&mut file, kind);
            put_u64(&mut file, 0);
            put_u64(&mut file, addr);
            put_u64(&mut file, off as u64);
            put_u64(&mut file, size as u64);
            file.extend_from_slice(&[0u8; 24]);
        }
    }
    // ELF header.
    file[..4].copy_from_slice(b"\x7fELF");
    file[4] = 2;
    file[5] = 1;
    file[6] = 1;
    file[16..18].copy_from_slice(&2u16.to_le_bytes());
    file[18..20].copy_from_slice(&spec.machine.to_le_bytes());
    file[32..40].copy_from_slice(&(phoff as u64).to_le_bytes());
    file[40..48].copy_from_slice(&(if spec.section_headers { shoff } else { 0 } as u64).to_le_bytes());
    file[52..54].copy_from_slice(&64u16.to_le_bytes());
    file[54..56].copy_from_slice(&56u16.to_le_bytes());
    file[56..58].copy_from_slice(&1u16.to_le_bytes());
    file[58..60].copy_from_slice(&64u16.to_le_bytes());
    let shnum: u16 = if spec.section_headers { 5 } else { 0 };
    file[60..62].copy_from_slice(&shnum.to_le_bytes());
    file[62..64].copy_from_slice(&(if spec.section_headers { 4u16 } else { 0 }).to_le_bytes());
    (file, starts)
}

#[test]
fn finds_entries_and_each_return_on_instruction_boundaries() {
    for layout in [Layout::Modern, Layout::Go117] {
        let mut spec = Spec::new(if layout == Layout::Modern {
            "go1.24.4"
        } else {
            "go1.17.13"
        });
        spec.layout = layout;
        let (file, starts) = build(&spec);
        let p = inspect(&file).unwrap();
        assert_eq!(p.version, spec.version);
        let read = starts[1];
        // The 0xc3 inside `mov eax, 0xc3` (read + 1) is not a return; no
        // stack check: the body starts at the entry.
        assert_eq!(
            p.read,
            FunctionProbes {
                entry: read,
                body: read,
                returns: vec![read + 5, read + 9]
            }
        );
        // The body starts after the stack check's jump.
        assert_eq!(
            p.write,
            FunctionProbes {
                entry: starts[2],
                body: starts[2] + 6,
                returns: vec![starts[2] + 11]
            }
        );
        assert_eq!(p.close, Some(starts[3]));
    }
}

#[test]
fn finds_the_tables_without_section_headers() {
    let mut spec = Spec::new("go1.22.1");
    spec.section_headers = false;
    let (file, starts) = build(&spec);
    let p = inspect(&file).unwrap();
    assert_eq!(p.read.entry, starts[1]);
    assert_eq!(p.version, "go1.22.1");
}

#[test]
fn refuses_what_it_does_not_know() {
    for v in ["go1.16.15", "go1.26.0", "go2.0", "devel go1.25-abcdef"] {
        let (file, _) = build(&Spec::new(v));
        assert_eq!(inspect(&file), Err(GoBinaryError::UnknownVersion(v.into())), "{v}");
    }
    for v in ["go1.17", "go1.25.3", "go1.19.8"] {
        assert!(inspect(&build(&Spec::new(v)).0).is_ok(), "{v}");
    }
    let mut arm = Spec::new("go1.24.4");
    arm.machine = 183;
    assert_eq!(inspect(&build(&arm).0), Err(GoBinaryError::Architecture));
    let mut no_tls = Spec::new("go1.24.4");
    no_tls.functions.retain(|(n, _)| !n.starts_with("crypto/tls"));
    assert_eq!(inspect(&build(&no_tls).0), Err(GoBinaryError::NoTls));
    // Code that does not decode is refused, not probed at a guessed byte.
    let mut junk = Spec::new("go1.24.4");
    junk.functions[1].1 = vec![0x48, 0x8b, 0x04, 0xc3, 0x06];
    assert!(matches!(inspect(&build(&junk).0), Err(GoBinaryError::Malformed(_))));
    assert_eq!(inspect(b"#!/bin/sh\necho hi\n"), Err(GoBinaryError::NotElf));
    // A text start left to a relocation (position-independent build) is
    // not guessed from the `.text` section.
    let (mut pie, _) = build(&Spec::new("go1.24.4"));
    let tab = memchr::memmem::find(&pie, &0xfffffff1u32.to_le_bytes()).unwrap();
    pie[tab + 24..tab + 32].fill(0);
    assert!(matches!(inspect(&pie), Err(GoBinaryError::Malformed(_))));
    // An ELF file without Go build information.
    let (mut file, _) = build(&Spec::new("go1.24.4"));
    let at = memchr::memmem::find(&file, BUILDINFO_MAGIC).unwrap();
    file[at] = 0;
    assert_eq!(inspect(&file), Err(GoBinaryError::NotGo));
}

#[test]
fn versions_parse() {
    assert_eq!(parse_version("go1.24.4"), Some((1, 24)));
    assert_eq!(parse_version("go1.17"), Some((1, 17)));
    assert_eq!(parse_version("go1.21rc2"), Some((1, 21)));
    assert_eq!(parse_version("devel +abc"), None);
}

proptest! {
    /// A damaged executable (bytes changed, or cut short) gives an error or
    /// probes inside the file, never a panic.
    #[test]
    fn damaged_files_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..16),
        cut in any::<prop::sample::Index>(),
        modern in any::<bool>(),
    ) {
        let mut spec = Spec::new("go1.24.4");
        if !modern {
            spec.layout = Layout::Go117;
            spec.version = "go1.17.2";
        }
        let (mut file, _) = build(&spec);
        for (i, b) in edits {
            let i = i.index(file.len());
            file[i] = b;
        }
        file.truncate(cut.index(file.len() + 1));
        if let Ok(p) = inspect(&file) {
            for off in p.read.returns.iter().chain(&p.write.returns).chain([&p.read.entry, &p.write.entry]) {
                prop_assert!((*off as usize) < file.len());
            }
        }
    }
}

#[test]
fn only_files_with_go_sections_are_read_in_full() {
    let (file, _) = build(&Spec::new("go1.24.4"));
    let mut reads = 0;
    let mut read_at = |off: u64, n: usize| {
        reads += 1;
        file.get(off as usize..off as usize + n).map(<[u8]>::to_vec)
    };
    assert!(may_be_go(&mut read_at));
    // Without the Go sections' names: not Go.
    let mut other = file.clone();
    for name in [&b".go.buildinfo"[..], b".gopclntab"] {
        let at = memchr::memmem::rfind(&other, name).unwrap();
        other[at + 1] = b'x';
    }
    let mut read_other = |off: u64, n: usize| other.get(off as usize..off as usize + n).map(<[u8]>::to_vec);
    assert!(!may_be_go(&mut read_other));
    // No section headers at all: maybe.
    let mut stripped = Spec::new("go1.24.4");
    stripped.section_headers = false;
    let (bare, _) = build(&stripped);
    assert!(may_be_go(&mut |off: u64, n: usize| bare
        .get(off as usize..off as usize + n)
        .map(<[u8]>::to_vec)));
    assert!(!may_be_go(&mut |_: u64, _: usize| None));
}

#[test]
fn a_table_of_another_layout_is_refused_only_when_it_names_crypto_tls() {
    // A Go 1.15 table (magic 0xfffffffb), as bullseye's Go writes it.
    let (mut file, _) = build(&Spec::new("go1.15.15"));
    let tab = memchr::memmem::find(&file, &0xfffffff1u32.to_le_bytes()).unwrap();
    file[tab..tab + 4].copy_from_slice(&0xfffffffbu32.to_le_bytes());
    assert_eq!(inspect(&file), Err(GoBinaryError::UnknownVersion("go1.15.15".into())));
    let at = memchr::memmem::find(&file, b"crypto/tls.(*Conn).Read").unwrap();
    file[at] = b'x';
    assert_eq!(inspect(&file), Err(GoBinaryError::NoTls));
    // A newer Go without crypto/tls is no refusal either.
    let mut no_tls = Spec::new("go1.26.0");
    no_tls.functions.retain(|(n, _)| !n.starts_with("crypto/tls"));
    assert_eq!(inspect(&build(&no_tls).0), Err(GoBinaryError::NoTls));
}

#[test]
fn a_program_names_mcp_only_with_one_of_its_names_among_its_strings() {
    let (file, _) = build(&Spec::new("go1.24.4"));
    assert!(
        !inspect(&file).unwrap().names_mcp,
        "the synthetic program has no MCP strings"
    );
    for name in MCP_NAMES {
        // No `.rodata` in the synthetic file: the whole file is searched.
        let mut with = file.clone();
        with.extend_from_slice(format!("\x00method\x00{name}\x00").as_bytes());
        assert!(inspect(&with).unwrap().names_mcp, "{name}");
    }
    // Near misses: a function named after a method, a path that only
    // starts like one, a method of another protocol.
    for other in [
        "main.handleToolsCall",
        "tools/cal",
        "notifications/initialize",
        "textDocument/didOpen",
        "ProtocolVersion",
    ] {
        assert!(!names_mcp(other.as_bytes()), "{other}");
    }
    assert!(names_mcp(b"..{\"method\":\"tools/call\"}.."));
    assert!(names_mcp(b"\x00json:\"protocolVersion\"\x00"));
}
