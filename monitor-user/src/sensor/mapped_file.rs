//! Reading a whole executable through a read-only mapping, safe against the
//! file shrinking meanwhile.
//!
//! Executables are searched in full (Go's function table, Bun's BoringSSL)
//! through a mapping: their pages are clean page cache the kernel can
//! reclaim, not copies in the agent's memory (they reach hundreds of MB,
//! the DaemonSet's limit is 256 MiB). But a page of a mapping past the
//! file's end raises `SIGBUS`, which would kill the agent: a running
//! executable cannot be opened for writing, one whose last process has
//! just exited can be rewritten in place (`cp` over it) while it is read.
//! So while a mapping is read, a `SIGBUS` handler replaces a faulting page
//! of *that* mapping with a page of zeros and notes that the file changed;
//! the result of that read is then thrown away. A `SIGBUS` anywhere else
//! gets the default action, as without the handler.

use std::{
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Mutex, Once,
    },
};

/// The mapping being read (start, length; 0 when none), for the handler.
static START: AtomicUsize = AtomicUsize::new(0);
static LEN: AtomicUsize = AtomicUsize::new(0);
/// A page of the mapping faulted since it was made.
static FAULTED: AtomicBool = AtomicBool::new(false);
/// One mapping is read at a time (the handler knows one).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
static INSTALL: Once = Once::new();

/// Why a file could not be read through a mapping.
#[derive(Debug, PartialEq, Eq)]
pub enum MappingError {
    /// `mmap` refused (the length is the file's, as `fstat` gave it).
    Map,
    /// The file shrank while it was read: what was read is not the file.
    Shrank,
}

extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let start = START.load(Ordering::SeqCst);
    let len = LEN.load(Ordering::SeqCst);
    if start != 0 && addr >= start && addr - start < len {
        // SAFETY: sysconf and mmap are plain system calls; the page lies
        // inside our own mapping, which nothing else uses while it is read.
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE).max(4096) as usize;
            let at = addr & !(page - 1);
            let zeros = libc::mmap(
                at as *mut libc::c_void,
                page,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            );
            if zeros != libc::MAP_FAILED {
                FAULTED.store(true, Ordering::SeqCst);
                return;
            }
        }
    }
    // Not ours (or the page could not be replaced): the default action, as
    // if there were no handler, when the faulting access is retried.
    // SAFETY: resetting a signal's disposition is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
    }
}

fn install() {
    INSTALL.call_once(|| {
        // SAFETY: a zeroed sigaction with a valid handler and flags.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_sigbus as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut act.sa_mask);
            if libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut()) != 0 {
                log::warn!(
                    "could not install the SIGBUS handler: an executable rewritten while it is searched would stop the agent"
                );
            }
        }
    });
}

/// Runs `f` on a read-only mapping of the first `len` bytes of `file`.
pub fn with_mapping<T>(file: &std::fs::File, len: u64, f: impl FnOnce(&[u8]) -> T) -> Result<T, MappingError> {
    let len = usize::try_from(len).map_err(|_| MappingError::Map)?;
    if len == 0 {
        return Err(MappingError::Map);
    }
    install();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: a fresh private read-only mapping of an open file, checked
    // for failure; the slice lives only while the mapping does (unmapped
    // below, after the last use), and a page of it that faults is replaced
    // by zeros (above) rather than left unmapped.
    unsafe {
        let at = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        );
        if at == libc::MAP_FAILED {
            return Err(MappingError::Map);
        }
        FAULTED.store(false, Ordering::SeqCst);
        LEN.store(len, Ordering::SeqCst);
        START.store(at as usize, Ordering::SeqCst);
        let result = f(std::slice::from_raw_parts(at as *const u8, len));
        START.store(0, Ordering::SeqCst);
        LEN.store(0, Ordering::SeqCst);
        libc::munmap(at, len);
        if FAULTED.swap(false, Ordering::SeqCst) {
            return Err(MappingError::Shrank);
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_file_that_shrinks_while_it_is_read_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exe");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&[7u8; 3 * 65536])
            .unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let len = file.metadata().unwrap().len();

        // Whole: read as it is.
        let sum = with_mapping(&file, len, |b| b.iter().map(|&x| x as u64).sum::<u64>());
        assert_eq!(sum, Ok(7 * 3 * 65536));

        // Truncated in the middle of the read, as `cp` over it would: the
        // pages past the new end fault, and the read is reported, not fatal.
        let r = with_mapping(&file, len, |b| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(100)
                .unwrap();
            b[len as usize - 1]
        });
        assert_eq!(r, Err(MappingError::Shrank));

        // The next read of the (now short) file works as before.
        let len = file.metadata().unwrap().len();
        assert_eq!(with_mapping(&file, len, |b| b.len()), Ok(100));
    }
}
