//! The parts of 64-bit little-endian ELF files that the executable
//! readers ([`crate::go_binary`], [`crate::boringssl_binary`]) need:
//! sections, loadable segments, and the mapping from virtual addresses to
//! file offsets (what a uprobe takes). The input is an untrusted file:
//! every offset is checked.

/// Why a file is not read as ELF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ElfError {
    /// Not a 64-bit little-endian ELF file.
    NotElf,
    /// Headers that point outside the file or have impossible sizes.
    Malformed,
}

/// `p_flags` bit of an executable segment.
pub(crate) const PF_X: u32 = 1;

pub(crate) const EM_X86_64: u16 = 62;
pub(crate) const PT_LOAD: u32 = 1;

pub(crate) fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off.checked_add(2)?)?.try_into().ok()?))
}

pub(crate) fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off.checked_add(4)?)?.try_into().ok()?))
}

pub(crate) fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off.checked_add(8)?)?.try_into().ok()?))
}

pub(crate) struct Section<'a> {
    pub(crate) name: &'a [u8],
    pub(crate) addr: u64,
    pub(crate) offset: u64,
    pub(crate) size: u64,
    /// SHT_NOBITS (`.bss`): no bytes in the file.
    pub(crate) nobits: bool,
}

pub(crate) struct Segment {
    pub(crate) vaddr: u64,
    pub(crate) offset: u64,
    pub(crate) filesz: u64,
    /// `p_flags`: [`PF_X`] for code.
    pub(crate) flags: u32,
}

/// The parts of a 64-bit little-endian ELF file this module reads.
pub(crate) struct Elf<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) machine: u16,
    pub(crate) sections: Vec<Section<'a>>,
    pub(crate) segments: Vec<Segment>,
}

impl<'a> Elf<'a> {
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self, ElfError> {
        if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
            return Err(ElfError::NotElf);
        }
        let bad = ElfError::Malformed;
        let machine = u16_at(bytes, 18).ok_or(ElfError::NotElf)?;
        let phoff = u64_at(bytes, 32).ok_or(ElfError::NotElf)? as usize;
        let shoff = u64_at(bytes, 40).ok_or(ElfError::NotElf)? as usize;
        let phentsize = u16_at(bytes, 54).ok_or(ElfError::NotElf)? as usize;
        let phnum = u16_at(bytes, 56).ok_or(ElfError::NotElf)? as usize;
        let shentsize = u16_at(bytes, 58).ok_or(ElfError::NotElf)? as usize;
        let shnum = u16_at(bytes, 60).ok_or(ElfError::NotElf)? as usize;
        let shstrndx = u16_at(bytes, 62).ok_or(ElfError::NotElf)? as usize;
        let mut segments = Vec::new();
        if phnum > 0 {
            if phentsize < 56 {
                return Err(bad);
            }
            for i in 0..phnum {
                let h = phoff.checked_add(i * phentsize).ok_or(ElfError::Malformed)?;
                let field = |k: usize| h.checked_add(k).and_then(|at| u64_at(bytes, at));
                let (Some(kind), Some(flags), Some(offset), Some(vaddr), Some(filesz)) = (
                    u32_at(bytes, h),
                    h.checked_add(4).and_then(|at| u32_at(bytes, at)),
                    field(8),
                    field(16),
                    field(32),
                ) else {
                    return Err(ElfError::Malformed);
                };
                if kind == PT_LOAD {
                    segments.push(Segment {
                        vaddr,
                        offset,
                        filesz,
                        flags,
                    });
                }
            }
        }
        let mut raw = Vec::new();
        if shnum > 0 {
            if shentsize < 64 {
                return Err(bad);
            }
            for i in 0..shnum {
                let h = shoff.checked_add(i * shentsize).ok_or(ElfError::Malformed)?;
                let field = |k: usize| h.checked_add(k).and_then(|at| u64_at(bytes, at));
                let (Some(name), Some(kind), Some(addr), Some(offset), Some(size)) = (
                    u32_at(bytes, h),
                    h.checked_add(4).and_then(|at| u32_at(bytes, at)),
                    field(16),
                    field(24),
                    field(32),
                ) else {
                    return Err(ElfError::Malformed);
                };
                raw.push((name, kind, addr, offset, size));
            }
        }
        let strtab = raw.get(shstrndx).and_then(|&(_, _, _, off, size)| {
            bytes.get(usize::try_from(off).ok()?..usize::try_from(off.checked_add(size)?).ok()?)
        });
        let sections = raw
            .iter()
            .map(|&(name, kind, addr, offset, size)| {
                let name = strtab
                    .and_then(|t| t.get(name as usize..))
                    .map(|s| &s[..memchr::memchr(0, s).unwrap_or(s.len())])
                    .unwrap_or(b"");
                Section {
                    name,
                    addr,
                    offset,
                    size,
                    nobits: kind == 8,
                }
            })
            .collect();
        Ok(Elf {
            bytes,
            machine,
            sections,
            segments,
        })
    }

    pub(crate) fn section(&self, name: &[u8]) -> Option<&Section<'a>> {
        self.sections.iter().find(|s| s.name == name)
    }

    pub(crate) fn section_bytes(&self, name: &[u8]) -> Option<(&'a [u8], u64)> {
        let s = self.section(name).filter(|s| !s.nobits)?;
        Some((self.bytes_at(s.offset, s.size)?, s.addr))
    }

    pub(crate) fn bytes_at(&self, offset: u64, len: u64) -> Option<&'a [u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = usize::try_from(offset.checked_add(len)?).ok()?;
        self.bytes.get(start..end)
    }

    /// The file offset of a virtual address (through the loadable segments).
    pub(crate) fn file_offset(&self, va: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| va >= s.vaddr && va - s.vaddr < s.filesz)
            .and_then(|s| (va - s.vaddr).checked_add(s.offset))
    }

    /// The virtual address of a file offset (through the loadable segments).
    pub(crate) fn vaddr_of(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| offset >= s.offset && offset - s.offset < s.filesz)
            .and_then(|s| (offset - s.offset).checked_add(s.vaddr))
    }

    /// The executable segments' bytes, each with its virtual address and
    /// file offset (segments whose addresses would wrap are left out).
    pub(crate) fn code(&self) -> impl Iterator<Item = (&'a [u8], u64, u64)> + '_ {
        self.segments
            .iter()
            .filter(|s| s.flags & PF_X != 0 && s.vaddr.checked_add(s.filesz).is_some())
            .filter_map(|s| Some((self.bytes_at(s.offset, s.filesz)?, s.vaddr, s.offset)))
    }

    /// `len` bytes at virtual address `va`.
    pub(crate) fn bytes_at_va(&self, va: u64, len: u64) -> Option<&'a [u8]> {
        let off = self.file_offset(va)?;
        self.bytes_at(off, len)
    }
}

/// The section names of an ELF file (`.shstrtab`), read through
/// `read_at(offset, len)` without reading the rest of the file: None when
/// it is not a 64-bit little-endian ELF file (or its headers cannot be
/// read), `Some(None)` when it has no section headers.
pub(crate) fn section_names(read_at: &mut dyn FnMut(u64, usize) -> Option<Vec<u8>>) -> Option<Option<Vec<u8>>> {
    let h = read_at(0, 64)?;
    if h.len() < 64 || &h[..4] != b"\x7fELF" || h[4] != 2 || h[5] != 1 {
        return None;
    }
    let (shoff, shentsize, shnum, shstrndx) = (u64_at(&h, 40)?, u16_at(&h, 58)?, u16_at(&h, 60)?, u16_at(&h, 62)?);
    let (shentsize, shnum, shstrndx) = (usize::from(shentsize), usize::from(shnum), usize::from(shstrndx));
    if shnum == 0 {
        return Some(None);
    }
    if shentsize < 64 || shstrndx >= shnum {
        return None;
    }
    let names_header = read_at(shoff.saturating_add((shstrndx * shentsize) as u64), 64)?;
    let (off, size) = (u64_at(&names_header, 24)?, u64_at(&names_header, 32)?);
    if size > 1 << 20 {
        return None;
    }
    read_at(off, size as usize).map(Some)
}

impl Elf<'_> {
    /// The GNU build id (`.note.gnu.build-id`), in hex.
    pub(crate) fn build_id(&self) -> Option<String> {
        let (note, _) = self.section_bytes(b".note.gnu.build-id")?;
        let (namesz, descsz, kind) = (u32_at(note, 0)?, u32_at(note, 4)?, u32_at(note, 8)?);
        // NT_GNU_BUILD_ID, owner "GNU\0".
        if kind != 3 || namesz != 4 || !(1..=64).contains(&descsz) {
            return None;
        }
        let id = note.get(16..16 + descsz as usize)?;
        Some(id.iter().map(|b| format!("{b:02x}")).collect())
    }
}
