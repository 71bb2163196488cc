//! Just enough of a BTF reader to find struct member offsets, and to tell
//! whether kernel functions share a prototype (the syscall fexit hooks).
//!
//! Rust eBPF programs have no CO-RE field relocations, so the kernel programs
//! read `task_struct`, `file`, `socket`... through byte offsets that this
//! module resolves from the running kernel's BTF (`/sys/kernel/btf/vmlinux`,
//! which the agent's sensor reads) and that the loader passes in the
//! `CONFIG` map.
//!
//! Format: <https://docs.kernel.org/bpf/btf.html>. Every read is bounds
//! checked; malformed input yields an error, never a panic.

use std::collections::HashMap;

use monitor_common::KernelOffsets;

/// Errors from reading BTF or resolving a member.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF bytes are malformed (what is wrong).
    #[error("BTF data is malformed: {0}")]
    Malformed(&'static str),
    /// No complete struct or union of that name (the name given).
    #[error("the kernel's BTF has no struct `{0}`")]
    NoStruct(String),
    /// The struct has no member at that path.
    #[error("struct `{strukt}` in the kernel's BTF has no member `{member}`")]
    NoMember {
        /// The struct searched.
        strukt: String,
        /// The whole member path asked for (`__sk_common.skc_family`).
        member: String,
    },
    /// The member (`struct.path`) is a bitfield or does not start on a byte boundary.
    #[error("member `{0}` is a bitfield; only byte-aligned members are supported")]
    Bitfield(String),
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Debug)]
struct Member {
    name: u32,
    type_id: u32,
    /// Bit offset from the start of the struct.
    bit_offset: u32,
    bitfield: bool,
}

#[derive(Clone, Debug)]
enum Type {
    Composite {
        name: u32,
        members: Vec<Member>,
    },
    /// Typedef, const, volatile, restrict, type tag: look through to `target`.
    Alias {
        target: u32,
    },
    Pointer {
        target: u32,
    },
    /// A struct or union declared without its members.
    Forward,
    Func {
        name: u32,
        proto: u32,
    },
    /// A function prototype: its parameters' types.
    Proto {
        params: Vec<u32>,
    },
    Other,
}

/// What a pointer parameter of a kernel function points to, in the
/// kernel's BTF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pointee {
    /// A struct or union with its members: the verifier lets a tracing
    /// program load through such a pointer.
    Complete,
    /// A struct declared without its members (`FWD`), which 5.10's
    /// verifier refuses to let a program read the parameter as.
    Forward,
    /// Anything else.
    Other,
}

/// Parsed BTF type information (structs, unions and the qualifiers between
/// them; other kinds are skipped).
pub struct Btf {
    strings: Vec<u8>,
    /// Index = type id; id 0 is `void`.
    types: Vec<Type>,
    structs_by_name: HashMap<String, u32>,
    funcs_by_name: HashMap<String, u32>,
}

fn u32_at(data: &[u8], off: usize, little: bool) -> Option<u32> {
    let b: [u8; 4] = data.get(off..off.checked_add(4)?)?.try_into().ok()?;
    Some(if little {
        u32::from_le_bytes(b)
    } else {
        u32::from_be_bytes(b)
    })
}

impl Btf {
    /// Parses raw BTF bytes (the content of `/sys/kernel/btf/vmlinux`).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let magic = data.get(0..2).ok_or(BtfError::Malformed("shorter than its header"))?;
        let little = match magic {
            [0x9f, 0xeb] => true,
            [0xeb, 0x9f] => false,
            _ => return Err(BtfError::Malformed("bad magic")),
        };
        let rd = |off| u32_at(data, off, little).ok_or(BtfError::Malformed("truncated header"));
        let hdr_len = rd(4)? as usize;
        let type_off = rd(8)? as usize;
        let type_len = rd(12)? as usize;
        let str_off = rd(16)? as usize;
        let str_len = rd(20)? as usize;
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off)?;
            data.get(start..start.checked_add(len)?)
        };
        let type_sec = section(type_off, type_len).ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = section(str_off, str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();

        let mut types = vec![Type::Other];
        let mut pos = 0usize;
        while pos < type_sec.len() {
            let word = |i: usize| u32_at(type_sec, pos + i * 4, little).ok_or(BtfError::Malformed("truncated type"));
            let name = word(0)?;
            let info = word(1)?;
            let size_or_type = word(2)?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            pos += 12;
            let (ty, extra) = match kind {
                KIND_INT => (Type::Other, 4),
                KIND_PTR => (Type::Pointer { target: size_or_type }, 0),
                KIND_FWD => (Type::Forward, 0),
                KIND_FUNC => (
                    Type::Func {
                        name,
                        proto: size_or_type,
                    },
                    0,
                ),
                KIND_FLOAT => (Type::Other, 0),
                KIND_ARRAY => (Type::Other, 12),
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for m in 0..vlen {
                        let base = pos + m * 12;
                        let w = |i: usize| {
                            u32_at(type_sec, base + i * 4, little).ok_or(BtfError::Malformed("truncated member"))
                        };
                        let offset = w(2)?;
                        let (bit_offset, bitfield) = if kind_flag {
                            (offset & 0x00ff_ffff, offset >> 24 != 0)
                        } else {
                            (offset, false)
                        };
                        members.push(Member {
                            name: w(0)?,
                            type_id: w(1)?,
                            bit_offset,
                            bitfield,
                        });
                    }
                    (Type::Composite { name, members }, vlen * 12)
                }
                KIND_ENUM => (Type::Other, vlen * 8),
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    (Type::Alias { target: size_or_type }, 0)
                }
                KIND_FUNC_PROTO => {
                    let mut params = Vec::with_capacity(vlen);
                    for p in 0..vlen {
                        // Each parameter: name offset, type id.
                        params.push(
                            u32_at(type_sec, pos + p * 8 + 4, little)
                                .ok_or(BtfError::Malformed("truncated parameter"))?,
                        );
                    }
                    (Type::Proto { params }, vlen * 8)
                }
                KIND_VAR => (Type::Other, 4),
                KIND_DATASEC => (Type::Other, vlen * 12),
                KIND_DECL_TAG => (Type::Other, 4),
                KIND_ENUM64 => (Type::Other, vlen * 12),
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            pos = pos.checked_add(extra).ok_or(BtfError::Malformed("type overflows"))?;
            if pos > type_sec.len() {
                return Err(BtfError::Malformed("truncated type data"));
            }
            types.push(ty);
        }

        let mut btf = Btf {
            strings,
            types,
            structs_by_name: HashMap::new(),
            funcs_by_name: HashMap::new(),
        };
        for (id, ty) in btf.types.iter().enumerate() {
            match ty {
                // Keep the first complete definition of each name.
                Type::Composite { name, members } if *name != 0 && !members.is_empty() => {
                    let n = btf.string(*name).to_owned();
                    btf.structs_by_name.entry(n).or_insert(id as u32);
                }
                Type::Func { name, .. } => {
                    let n = btf.string(*name).to_owned();
                    btf.funcs_by_name.entry(n).or_insert(id as u32);
                }
                _ => {}
            }
        }
        Ok(btf)
    }

    /// The type id of kernel function `name`'s prototype: two functions
    /// with the same id have the same prototype to the verifier (which
    /// compares them by identity for tail calls between tracing programs).
    pub fn func_proto(&self, name: &str) -> Option<u32> {
        match self.types.get(*self.funcs_by_name.get(name)? as usize)? {
            Type::Func { proto, .. } => Some(*proto),
            _ => None,
        }
    }

    /// What parameter `index` of kernel function `name` points to; `None`
    /// when there is no such function or parameter, or it is not a pointer.
    pub fn pointer_param(&self, name: &str, index: usize) -> Option<Pointee> {
        let Some(Type::Proto { params }) = self.types.get(self.func_proto(name)? as usize) else {
            return None;
        };
        let Some(Type::Pointer { target }) = self.types.get(self.resolve(*params.get(index)?) as usize) else {
            return None;
        };
        Some(match self.types.get(self.resolve(*target) as usize) {
            Some(Type::Composite { members, .. }) if !members.is_empty() => Pointee::Complete,
            Some(Type::Forward) => Pointee::Forward,
            _ => Pointee::Other,
        })
    }

    fn string(&self, off: u32) -> &str {
        let Some(rest) = self.strings.get(off as usize..) else {
            return "";
        };
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(Type::Alias { target }) => id = *target,
                _ => break,
            }
        }
        id
    }

    /// Finds `name` among the members of composite `id`, descending into
    /// anonymous struct/union members. Returns (bit offset, member type).
    fn find_member(&self, id: u32, name: &str, depth: u32) -> Option<(u32, u32, bool)> {
        if depth > 8 {
            return None;
        }
        let Some(Type::Composite { members, .. }) = self.types.get(self.resolve(id) as usize) else {
            return None;
        };
        for m in members {
            let mname = self.string(m.name);
            if mname == name {
                return Some((m.bit_offset, m.type_id, m.bitfield));
            }
            if mname.is_empty() {
                if let Some((off, ty, bf)) = self.find_member(m.type_id, name, depth + 1) {
                    return Some((m.bit_offset + off, ty, bf));
                }
            }
        }
        None
    }

    /// Byte offset of a member path such as `"__sk_common.skc_family"` in
    /// struct `strukt`.
    pub fn offset_of(&self, strukt: &str, path: &str) -> Result<u32, BtfError> {
        let mut id = *self
            .structs_by_name
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
        let mut bits = 0u32;
        for part in path.split('.') {
            let (off, ty, bitfield) = self.find_member(id, part, 0).ok_or_else(|| BtfError::NoMember {
                strukt: strukt.to_owned(),
                member: path.to_owned(),
            })?;
            if bitfield || off % 8 != 0 {
                return Err(BtfError::Bitfield(format!("{strukt}.{path}")));
            }
            bits += off;
            id = ty;
        }
        Ok(bits / 8)
    }

    /// Resolves every offset the kernel programs use.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        Ok(KernelOffsets {
            task_tgid: self.offset_of("task_struct", "tgid")?,
            task_pid: self.offset_of("task_struct", "pid")?,
            task_real_parent: self.offset_of("task_struct", "real_parent")?,
            task_start_boottime: self.offset_of("task_struct", "start_boottime")?,
            task_group_leader: self.offset_of("task_struct", "group_leader")?,
            task_files: self.offset_of("task_struct", "files")?,
            files_fdt: self.offset_of("files_struct", "fdt")?,
            fdt_max_fds: self.offset_of("fdtable", "max_fds")?,
            fdt_fd: self.offset_of("fdtable", "fd")?,
            file_inode: self.offset_of("file", "f_inode")?,
            file_private_data: self.offset_of("file", "private_data")?,
            inode_mode: self.offset_of("inode", "i_mode")?,
            inode_ino: self.offset_of("inode", "i_ino")?,
            socket_type: self.offset_of("socket", "type")?,
            socket_sk: self.offset_of("socket", "sk")?,
            sock_family: self.offset_of("sock", "__sk_common.skc_family")?,
            unix_peer: self.offset_of("unix_sock", "peer")?,
            sock_daddr: self.offset_of("sock", "__sk_common.skc_daddr")?,
            sock_rcv_saddr: self.offset_of("sock", "__sk_common.skc_rcv_saddr")?,
            sock_dport: self.offset_of("sock", "__sk_common.skc_dport")?,
            sock_num: self.offset_of("sock", "__sk_common.skc_num")?,
            sock_v6_daddr: self.offset_of("sock", "__sk_common.skc_v6_daddr")?,
            sock_v6_rcv_saddr: self.offset_of("sock", "__sk_common.skc_v6_rcv_saddr")?,
        })
    }
}

/// Hand-built BTF blobs, for the tests of code that reads kernel BTF
/// (here and in the agent).
#[doc(hidden)]
pub mod fixtures {
    use super::*;

    /// Builds a little-endian BTF blob by hand.
    pub struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Builder {
        /// An empty blob.
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
            }
        }
        /// Adds a string; its offset.
        pub fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }
        /// Adds a word to the type section.
        pub fn word(&mut self, w: u32) {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
        /// Adds a 32-bit integer type.
        pub fn int(&mut self, name: &str) {
            let n = self.s(name);
            self.word(n);
            self.word(KIND_INT << 24);
            self.word(4);
            self.word(32);
        }
        /// Adds a struct or union (`kind`) with (name, type, bit offset) members.
        pub fn composite(&mut self, kind: u32, name: &str, size: u32, members: &[(&str, u32, u32)]) {
            let n = self.s(name);
            self.word(n);
            self.word(kind << 24 | members.len() as u32);
            self.word(size);
            for (mname, ty, bits) in members {
                let mn = self.s(mname);
                self.word(mn);
                self.word(*ty);
                self.word(*bits);
            }
        }
        /// The blob, header first.
        pub fn finish(self) -> Vec<u8> {
            let mut out = vec![0x9f, 0xeb, 1, 0];
            out.extend_from_slice(&24u32.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&(self.types.len() as u32).to_le_bytes());
            out.extend_from_slice(&(self.types.len() as u32).to_le_bytes());
            out.extend_from_slice(&(self.strings.len() as u32).to_le_bytes());
            out.extend(self.types);
            out.extend(self.strings);
            out
        }
    }

    /// Kernel BTF with system call wrappers `long f(const struct pt_regs
    /// *regs)`: the functions of `complete` take a pointer to the complete
    /// struct (prototype id 8), those of `forward` one to a forward
    /// declaration of it (id 9), as 5.10's network calls do.
    pub fn syscall_functions(complete: &[&str], forward: &[&str]) -> Vec<u8> {
        let mut b = Builder::new();
        b.int("long"); // id 1
        b.composite(KIND_STRUCT, "pt_regs", 8, &[("di", 1, 0)]); // id 2
        let fwd = b.s("pt_regs");
        // id 3: FWD struct pt_regs
        b.word(fwd);
        b.word(KIND_FWD << 24);
        b.word(0);
        // ids 4 and 6: const struct / const FWD; 5 and 7: pointers to them.
        for (target, konst) in [(2, 4), (3, 6)] {
            b.word(0);
            b.word(KIND_CONST << 24);
            b.word(target);
            b.word(0);
            b.word(KIND_PTR << 24);
            b.word(konst);
        }
        // ids 8, 9: long (const struct pt_regs *) and long (const FWD pt_regs *)
        for ptr in [5, 7] {
            b.word(0);
            b.word(KIND_FUNC_PROTO << 24 | 1);
            b.word(1);
            let name = b.s("regs");
            b.word(name);
            b.word(ptr);
        }
        for (names, proto) in [(complete, 8), (forward, 9)] {
            for name in names {
                let n = b.s(name);
                b.word(n);
                b.word(KIND_FUNC << 24);
                b.word(proto);
            }
        }
        b.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{syscall_functions, Builder};
    use super::*;

    #[test]
    fn resolves_nested_anonymous_members() {
        let mut b = Builder::new();
        b.int("int"); // id 1
                      // id 2: anonymous union { int a; int skc_dport; } at bit 64
        b.composite(KIND_UNION, "", 4, &[("a", 1, 0), ("skc_dport", 1, 0)]);
        // id 3: struct sock_common { int x; int y; union {...}; int skc_family; }
        b.composite(
            KIND_STRUCT,
            "sock_common",
            16,
            &[("x", 1, 0), ("y", 1, 32), ("", 2, 64), ("skc_family", 1, 96)],
        );
        // id 4: struct sock { struct sock_common __sk_common; int sk_type; }
        b.composite(KIND_STRUCT, "sock", 20, &[("__sk_common", 3, 0), ("sk_type", 1, 128)]);
        let btf = Btf::parse(&b.finish()).unwrap();
        assert_eq!(btf.offset_of("sock", "__sk_common.skc_family").unwrap(), 12);
        assert_eq!(btf.offset_of("sock", "__sk_common.skc_dport").unwrap(), 8);
        assert_eq!(btf.offset_of("sock", "sk_type").unwrap(), 16);
        assert!(matches!(btf.offset_of("sock", "nope"), Err(BtfError::NoMember { .. })));
        assert!(matches!(btf.offset_of("nope", "x"), Err(BtfError::NoStruct(_))));
    }

    #[test]
    fn tells_functions_whose_pointer_parameter_is_a_forward_declaration() {
        let b = syscall_functions(&["__x64_sys_read", "__x64_sys_write"], &["__x64_sys_recvfrom"]);
        let btf = Btf::parse(&b).unwrap();
        assert_eq!(btf.func_proto("__x64_sys_read"), Some(8));
        assert_eq!(btf.func_proto("__x64_sys_write"), Some(8));
        assert_eq!(btf.func_proto("__x64_sys_recvfrom"), Some(9));
        assert_eq!(btf.func_proto("nope"), None);
        assert_eq!(btf.pointer_param("__x64_sys_read", 0), Some(Pointee::Complete));
        assert_eq!(btf.pointer_param("__x64_sys_recvfrom", 0), Some(Pointee::Forward));
        assert_eq!(btf.pointer_param("__x64_sys_read", 1), None);
        // The complete struct is still found by name, not the forward one.
        assert_eq!(btf.offset_of("pt_regs", "di").unwrap(), 0);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for data in [
            &b""[..],
            b"\x9f\xeb",
            b"\x9f\xeb\x01\x00\xff\xff\xff\xff",
            &[
                0x9f, 0xeb, 1, 0, 24, 0, 0, 0, 0, 0, 0, 0, 100, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0,
            ],
        ] {
            assert!(Btf::parse(data).is_err());
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut d = data;
            if d.len() >= 2 { d[0] = 0x9f; d[1] = 0xeb; }
            let _ = Btf::parse(&d);
        }
    }
}
