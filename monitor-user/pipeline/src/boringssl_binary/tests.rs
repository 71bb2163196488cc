//! Synthetic Bun-like executables: an ELF file with a read-only segment
//! holding BoringSSL's source path and a code segment whose functions call
//! `ERR_put_error` the way BoringSSL's `ssl_lib.cc` does.

use super::*;
use proptest::prelude::*;

const BASE: u64 = 0x200000;
const CODE_OFFSET: u64 = 0x1000;
const CODE_VA: u64 = BASE + CODE_OFFSET;
const NAME: &[u8] = b"../../vendor/boringssl/ssl/ssl_lib.cc\0";
const NAME_OFFSET: u64 = 0x200;

/// How the file name reaches RCX.
#[derive(Clone, Copy, PartialEq)]
enum Load {
    /// `mov ecx, imm32` (position-dependent, as Bun and Claude Code).
    Absolute,
    /// `lea rcx, [rip+disp32]` (position-independent).
    RipRelative,
}

/// Machine code being laid out at [`CODE_VA`].
struct Asm {
    code: Vec<u8>,
    load: Load,
    err_fn: u64,
}

impl Asm {
    fn new(load: Load) -> Self {
        // ERR_put_error: `ret`, then padding.
        let mut a = Asm {
            code: vec![0xc3],
            load,
            err_fn: CODE_VA,
        };
        a.pad();
        a
    }

    fn va(&self) -> u64 {
        CODE_VA + self.code.len() as u64
    }

    /// int3 up to the next 16-byte boundary (at least one).
    fn pad(&mut self) {
        self.code.push(0xcc);
        while !self.code.len().is_multiple_of(16) {
            self.code.push(0xcc);
        }
    }

    /// Starts a function: aligned, `push rbp; mov rbp, rsp`.
    fn function(&mut self) -> u64 {
        let start = self.va();
        self.code.extend([0x55, 0x48, 0x89, 0xe5]);
        start
    }

    /// `cmp qword [rdi+0x98], 0; je` over the next `skip` bytes.
    fn quic_test(&mut self, skip: u8) {
        self.code.extend([0x48, 0x83, 0xbf, 0x98, 0, 0, 0, 0, 0x74, skip]);
    }

    /// The error call (28 bytes for [`Load::Absolute`], 30 otherwise):
    /// the name, `mov edi, 16; xor esi, esi; mov edx, reason; mov r8d,
    /// line; call ERR_put_error`.
    fn error(&mut self, reason: u32) {
        match self.load {
            Load::Absolute => {
                self.code.push(0xb9);
                self.code.extend(((BASE + NAME_OFFSET) as u32).to_le_bytes());
            }
            Load::RipRelative => {
                let next = self.va() + 7;
                let disp = (BASE + NAME_OFFSET).wrapping_sub(next) as u32;
                self.code.extend([0x48, 0x8d, 0x0d]);
                self.code.extend(disp.to_le_bytes());
            }
        }
        self.code.extend([0xbf, 16, 0, 0, 0, 0x31, 0xf6, 0xba]);
        self.code.extend(reason.to_le_bytes());
        self.code.extend([0x41, 0xb8, 0x39, 0x05, 0, 0]);
        self.call(self.err_fn);
    }

    fn error_len(&self) -> u8 {
        if self.load == Load::Absolute {
            28
        } else {
            30
        }
    }

    fn call(&mut self, target: u64) {
        let next = self.va() + 5;
        self.code.push(0xe8);
        self.code.extend((target.wrapping_sub(next) as u32).to_le_bytes());
    }

    /// `pop rbp; ret`, then padding.
    fn end(&mut self) {
        self.code.extend([0x5d, 0xc3]);
        self.pad();
    }

    /// `ssl_read_impl`: reports UNINITIALIZED and HANDSHAKE_FAILURE.
    fn read_impl(&mut self) -> u64 {
        let f = self.function();
        self.error(R_UNINITIALIZED);
        self.error(R_HANDSHAKE_FAILURE);
        self.end();
        f
    }

    /// `SSL_read`: the QUIC test, then `ssl_read_impl` called (or its
    /// reports inlined when `read_impl` is None).
    fn ssl_read(&mut self, read_impl: Option<u64>) -> u64 {
        let f = self.function();
        let skip = self.error_len() + 2;
        self.quic_test(skip);
        self.error(R_SHOULD_NOT_HAVE_BEEN_CALLED);
        self.code.extend([0x5d, 0xc3]);
        match read_impl {
            Some(target) => self.call(target),
            None => {
                self.error(R_UNINITIALIZED);
                self.error(R_HANDSHAKE_FAILURE);
            }
        }
        self.end();
        f
    }

    /// `SSL_write`: `ERR_clear_error()`, the QUIC test, then its reports.
    fn ssl_write(&mut self) -> u64 {
        let f = self.function();
        self.call(self.err_fn);
        let skip = self.error_len() + 2;
        self.quic_test(skip);
        self.error(R_SHOULD_NOT_HAVE_BEEN_CALLED);
        self.code.extend([0x5d, 0xc3]);
        self.error(R_UNINITIALIZED);
        self.error(R_HANDSHAKE_FAILURE);
        self.error(R_BAD_LENGTH);
        self.end();
        f
    }

    /// Another function of `ssl_lib.cc` with the QUIC test
    /// (`SSL_key_update`).
    fn other_quic_function(&mut self) -> u64 {
        let f = self.function();
        let skip = self.error_len() + 2;
        self.quic_test(skip);
        self.error(R_SHOULD_NOT_HAVE_BEEN_CALLED);
        self.code.extend([0x5d, 0xc3]);
        self.error(0x12b);
        self.end();
        f
    }
}

/// An ELF executable: header, two program headers (read-only data at
/// [`BASE`], code at [`CODE_VA`]), the name, the code.
fn elf(code: &[u8], machine: u16, with_name: bool) -> Vec<u8> {
    let mut f = vec![0u8; CODE_OFFSET as usize];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2;
    f[5] = 1;
    f[6] = 1;
    f[16] = 2;
    f[18..20].copy_from_slice(&machine.to_le_bytes());
    f[32..40].copy_from_slice(&64u64.to_le_bytes());
    f[54..56].copy_from_slice(&56u16.to_le_bytes());
    f[56..58].copy_from_slice(&2u16.to_le_bytes());
    f[58..60].copy_from_slice(&64u16.to_le_bytes());
    let phdr = |f: &mut Vec<u8>, at: usize, flags: u32, offset: u64, size: u64| {
        f[at..at + 4].copy_from_slice(&1u32.to_le_bytes());
        f[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
        f[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
        f[at + 16..at + 24].copy_from_slice(&(BASE + offset).to_le_bytes());
        f[at + 32..at + 40].copy_from_slice(&size.to_le_bytes());
        f[at + 40..at + 48].copy_from_slice(&size.to_le_bytes());
    };
    phdr(&mut f, 64, 4, 0, CODE_OFFSET);
    phdr(&mut f, 120, 5, CODE_OFFSET, code.len() as u64);
    if with_name {
        f[NAME_OFFSET as usize..NAME_OFFSET as usize + NAME.len()].copy_from_slice(NAME);
    }
    f.extend_from_slice(code);
    f
}

fn file_offset(va: u64) -> u64 {
    va - BASE
}

#[test]
fn finds_ssl_read_and_ssl_write_by_their_error_reports() {
    for load in [Load::Absolute, Load::RipRelative] {
        let mut a = Asm::new(load);
        a.other_quic_function();
        let imp = a.read_impl();
        let read = a.ssl_read(Some(imp));
        a.other_quic_function();
        let write = a.ssl_write();
        let p = inspect(&elf(&a.code, EM_X86_64, true)).unwrap();
        assert_eq!(p.read, file_offset(read));
        assert_eq!(p.write, file_offset(write));
        assert_eq!(p.build_id, None);
    }
}

#[test]
fn ssl_read_with_ssl_read_impl_inlined() {
    let mut a = Asm::new(Load::Absolute);
    let write = a.ssl_write();
    let read = a.ssl_read(None);
    let p = inspect(&elf(&a.code, EM_X86_64, true)).unwrap();
    assert_eq!((p.read, p.write), (file_offset(read), file_offset(write)));
}

#[test]
fn two_candidates_are_refused_not_guessed() {
    // SSL_peek has SSL_read's shape: two functions fit.
    let mut a = Asm::new(Load::Absolute);
    let imp = a.read_impl();
    a.ssl_read(Some(imp));
    a.ssl_read(Some(imp));
    a.ssl_write();
    assert_eq!(
        inspect(&elf(&a.code, EM_X86_64, true)),
        Err(BoringSslError::Ambiguous("SSL_read"))
    );
    let mut a = Asm::new(Load::Absolute);
    let imp = a.read_impl();
    a.ssl_read(Some(imp));
    a.ssl_write();
    a.ssl_write();
    assert_eq!(
        inspect(&elf(&a.code, EM_X86_64, true)),
        Err(BoringSslError::Ambiguous("SSL_write"))
    );
}

#[test]
fn missing_functions_and_other_files_are_told_apart() {
    let mut a = Asm::new(Load::Absolute);
    a.ssl_write();
    a.other_quic_function();
    assert_eq!(
        inspect(&elf(&a.code, EM_X86_64, true)),
        Err(BoringSslError::NotFound("SSL_read"))
    );
    let mut a = Asm::new(Load::Absolute);
    let imp = a.read_impl();
    a.ssl_read(Some(imp));
    assert_eq!(
        inspect(&elf(&a.code, EM_X86_64, true)),
        Err(BoringSslError::NotFound("SSL_write"))
    );
    assert_eq!(
        inspect(&elf(&a.code, EM_X86_64, false)),
        Err(BoringSslError::NoBoringSsl)
    );
    assert_eq!(inspect(&elf(&a.code, 183, true)), Err(BoringSslError::Architecture));
    assert_eq!(inspect(b"#!/bin/sh\n"), Err(BoringSslError::NotElf));
}

#[test]
fn a_function_that_does_not_start_at_padding_is_not_taken() {
    // SSL_write's start overwritten with a byte that is not padding and
    // an opening that decodes elsewhere: no start is found for it.
    let mut a = Asm::new(Load::Absolute);
    let imp = a.read_impl();
    a.ssl_read(Some(imp));
    let write = a.ssl_write();
    let at = (write - CODE_VA) as usize;
    a.code[at - 1] = 0x48;
    assert_eq!(
        inspect(&elf(&a.code, EM_X86_64, true)),
        Err(BoringSslError::NotFound("SSL_write"))
    );
}

#[test]
fn bun_sections_are_recognised_from_the_names_alone() {
    // A header, one section header (the names), the names.
    let mut f = vec![0u8; 64];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2;
    f[5] = 1;
    let names = b"\0.text\0.note.bun\0.bun\0";
    f[40..48].copy_from_slice(&64u64.to_le_bytes());
    f[58..60].copy_from_slice(&64u16.to_le_bytes());
    f[60..62].copy_from_slice(&1u16.to_le_bytes());
    let mut sh = vec![0u8; 64];
    sh[24..32].copy_from_slice(&128u64.to_le_bytes());
    sh[32..40].copy_from_slice(&(names.len() as u64).to_le_bytes());
    f.extend(sh);
    f.extend_from_slice(names);
    let read = |f: &[u8]| {
        let f = f.to_vec();
        move |off: u64, n: usize| f.get(off as usize..off as usize + n).map(<[u8]>::to_vec)
    };
    assert!(may_be_bun(&mut read(&f)));
    let plain: Vec<u8> = f.iter().map(|&b| if b == b'b' { b'x' } else { b }).collect();
    assert!(!may_be_bun(&mut read(&plain)));
    assert!(!may_be_bun(&mut read(
        b"not an elf file at all, but long enough to read"
    )));
}

proptest! {
    /// Damaged files: any truncation or flipped byte gives an answer,
    /// never a panic.
    #[test]
    fn damaged_files_never_panic(cut in 0usize..8192, flip: usize, byte: u8) {
        let mut a = Asm::new(Load::Absolute);
        let imp = a.read_impl();
        a.ssl_read(Some(imp));
        a.ssl_write();
        let mut f = elf(&a.code, EM_X86_64, true);
        let flip = flip % f.len();
        f[flip] = byte;
        let cut = f.len().saturating_sub(cut);
        let _ = inspect(&f[..cut]);
    }
}

/// The real executables named in `MCP_BUN_EXECUTABLES` (colon-separated:
/// Bun from npm `bun`, Claude Code's `claude`): both functions found. The
/// integration tests check the same through a capture.
#[test]
#[ignore]
fn real_bun_executables() {
    let list = std::env::var("MCP_BUN_EXECUTABLES").expect("MCP_BUN_EXECUTABLES");
    for path in list.split(':') {
        let bytes = std::fs::read(path).unwrap();
        let t = std::time::Instant::now();
        let p = inspect(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
        println!("{path}: {p:x?} in {:?}", t.elapsed());
    }
}

/// Writes the synthetic executable to `MCP_WRITE_FUZZ_SEED` (the fuzz
/// target's seed, `monitor-user/fuzz/seeds/boringssl_binary/synthetic`).
#[test]
#[ignore]
fn write_fuzz_seed() {
    let path = std::env::var("MCP_WRITE_FUZZ_SEED").expect("MCP_WRITE_FUZZ_SEED");
    let mut a = Asm::new(Load::Absolute);
    let imp = a.read_impl();
    a.ssl_read(Some(imp));
    a.ssl_write();
    std::fs::write(path, elf(&a.code, EM_X86_64, true)).unwrap();
}
