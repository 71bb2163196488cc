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
//! So while a mapping is read, a `SIGBUS` handler replaces the rest of
//! *that* mapping, from the faulting page on, with zeros and notes that the
//! file changed; the result of that read is then thrown away. A `SIGBUS`
//! anywhere else (or sent by `kill`) gets the default action, as without
//! the handler. A file rewritten without shrinking past a page being read
//! raises no fault: its size and times, compared before and after the
//! read, tell instead.

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
    /// The file changed (shrank, or was written) while it was read: what
    /// was read is not the file.
    Changed,
}

extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler;
    // si_addr is meaningful for a fault (si_code > 0), not for `kill`.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    let start = START.load(Ordering::SeqCst);
    let len = LEN.load(Ordering::SeqCst);
    if code > 0 && start != 0 && addr >= start && addr - start < len {
        // SAFETY: sysconf and mmap are plain system calls; the range lies
        // inside our own mapping, which nothing else uses while it is read.
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE).max(4096) as usize;
            let at = addr & !(page - 1);
            // The rest at once: a file cut short faults on every page past
            // its new end.
            let zeros = libc::mmap(
                at as *mut libc::c_void,
                start + len - at,
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
    // Not ours (or the pages could not be replaced): the default action, as
    // if there were no handler: a fault repeats when the access is retried,
    // a signal sent by `kill` is raised again (pending until we return).
    // SAFETY: signal and raise are async-signal-safe.
    unsafe {
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
        if code <= 0 {
            libc::raise(libc::SIGBUS);
        }
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

/// What tells a file rewritten in place: size, modification and change
/// times.
fn version(file: &std::fs::File) -> Option<(u64, i64, i64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = file.metadata().ok()?;
    Some((m.size(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()))
}

/// The mapping being read; unmapped, and forgotten by the handler, when
/// dropped (also if the reader panics).
struct Mapped {
    at: *mut libc::c_void,
    len: usize,
}

impl Drop for Mapped {
    fn drop(&mut self) {
        START.store(0, Ordering::SeqCst);
        LEN.store(0, Ordering::SeqCst);
        // SAFETY: our own mapping, no longer read.
        unsafe {
            libc::munmap(self.at, self.len);
        }
    }
}

/// Runs `f` on a read-only mapping of the first `len` bytes of `file`.
pub fn with_mapping<T>(file: &std::fs::File, len: u64, f: impl FnOnce(&[u8]) -> T) -> Result<T, MappingError> {
    let len = usize::try_from(len).map_err(|_| MappingError::Map)?;
    if len == 0 {
        return Err(MappingError::Map);
    }
    install();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before = version(file);
    // SAFETY: a fresh private read-only mapping of an open file, checked
    // for failure; the slice lives only while the mapping does (unmapped
    // when `mapped` drops, after the last use), and pages of it that fault
    // are replaced by zeros (above) rather than left unmapped.
    let result = unsafe {
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
        let mapped = Mapped { at, len };
        FAULTED.store(false, Ordering::SeqCst);
        LEN.store(len, Ordering::SeqCst);
        START.store(at as usize, Ordering::SeqCst);
        let result = f(std::slice::from_raw_parts(mapped.at as *const u8, mapped.len));
        drop(mapped);
        result
    };
    if FAULTED.swap(false, Ordering::SeqCst) || before.is_none() || version(file) != before {
        return Err(MappingError::Changed);
    }
    Ok(result)
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
        assert_eq!(r, Err(MappingError::Changed));

        // The next read of the (now short) file works as before.
        let len = file.metadata().unwrap().len();
        assert_eq!(with_mapping(&file, len, |b| b.len()), Ok(100));

        // Rewritten in place without shrinking: no fault, but the read is
        // not taken for the file either.
        let r = with_mapping(&file, len, |b| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .write_all(&[9u8; 100])
                .unwrap();
            b[0]
        });
        assert_eq!(r, Err(MappingError::Changed));
    }

    #[test]
    fn a_sigbus_outside_the_mapping_is_not_taken_for_ours() {
        // `kill -BUS` is no fault of the mapping: with none being read the
        // handler must leave it alone (tested in a child, which the default
        // action ends).
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sensor::mapped_file::tests::child_sends_itself_sigbus",
                "--ignored",
            ])
            .env("MCP_MONITOR_SIGBUS_CHILD", "1")
            .status()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGBUS), "{status:?}");
    }

    #[test]
    #[ignore = "run by a_sigbus_outside_the_mapping_is_not_taken_for_ours"]
    fn child_sends_itself_sigbus() {
        if std::env::var_os("MCP_MONITOR_SIGBUS_CHILD").is_none() {
            return;
        }
        install();
        // SAFETY: raising a signal at ourselves.
        unsafe {
            libc::raise(libc::SIGBUS);
        }
        // The default action has ended the process before this.
        std::process::exit(0);
    }
}
