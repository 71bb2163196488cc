//! Where TLS plaintext can be taken: the OpenSSL library files (and
//! statically linked executables such as `node`) that processes on the host
//! map, found through `/proc/<pid>/maps`.
//!
//! A uprobe is attached to a *file* (its inode), not to a process, so each
//! distinct file is probed once and every process mapping it, now or later,
//! is covered. Files inside containers are opened through
//! `/proc/<pid>/root`, which resolves the path in the process's own mount
//! namespace. The scan repeats (`capture.tls_scan_interval_ms`) to catch
//! containers that start later and libraries loaded with `dlopen` (Python
//! loads libssl only when `ssl` is first imported). Between scans, the
//! kernel's exec notices name each process that ran a new executable, and
//! that executable is looked at at once ([`Scanner::scan_executable`]): a
//! short-lived program (`claude mcp list` runs for 0.3 s) is probed before
//! its first connection, usually.
//!
//! Go programs carry their own TLS (`crypto/tls`) inside the executable:
//! the executable of each process is read once per distinct file, and a Go
//! program's probe points come from its function table
//! ([`mcp_monitor_pipeline::go_binary`]). Bun executables (Claude Code
//! among them) carry BoringSSL without symbols: theirs come from the
//! machine code ([`mcp_monitor_pipeline::boringssl_binary`]), found once
//! per build (the same executable is often installed many times) and kept.

use mcp_monitor_pipeline::boringssl_binary::{self, BoringSslError, BoringSslProbes};
use mcp_monitor_pipeline::go_binary::{self, GoBinaryError, GoTlsProbes};

use super::mapped_file::{with_mapping, MappingError};
use std::{
    collections::{HashMap, HashSet},
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    sync::Arc,
};

/// What to attach to a file.
#[derive(Clone, Debug)]
pub enum Probes {
    /// OpenSSL's `SSL_*` functions, by symbol.
    OpenSsl,
    /// Go's `crypto/tls`, at the offsets its function table gives.
    Go(GoTlsProbes),
    /// A Go program with `crypto/tls` whose strings hold none of MCP's names
    /// (its Go version given): left unprobed, as it does not handle MCP
    /// itself (`capture.tls_go = "mcp"`, the default).
    GoNotMcp(String),
    /// A Go program with `crypto/tls` that cannot be probed safely
    /// (unknown Go version, another architecture, a damaged table): logged
    /// and counted, never guessed.
    GoRefused(GoBinaryError),
    /// BoringSSL's `SSL_read`/`SSL_write` in a Bun executable, at the
    /// offsets its machine code gives.
    BoringSsl(BoringSslProbes),
    /// A Bun executable whose BoringSSL functions were not recognised:
    /// logged and counted, never guessed.
    BoringSslRefused(BoringSslError),
}

/// A file to probe.
#[derive(Clone, Debug)]
pub struct TlsTarget {
    /// What to attach.
    pub probes: Probes,
    /// Path the scanner opened (through `/proc/<pid>/root` for files seen
    /// in a process).
    pub open_path: PathBuf,
    /// The file, held open from the scan to the attach: a process that
    /// exits in between (its `/proc/<pid>/root` gone) cannot make the
    /// attach fail, and so cannot leave its library unprobed for good.
    pub handle: Arc<std::fs::File>,
    /// Path as the process sees it, for logs.
    pub path: String,
    /// The process it was found in (0: found on the host file system).
    pub pid: u32,
    /// (device, inode): the file's identity.
    pub file: (u64, u64),
}

impl TlsTarget {
    /// The path to attach through: the agent's own descriptor of the file
    /// (`/proc/self/fd/N`), which the kernel follows to the same inode
    /// whatever became of the process it was found in.
    pub fn attach_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.handle.as_raw_fd()))
    }
}

/// The host's file system as the agent can reach it: `/proc/1/root` (pid 1
/// is the host's init when the agent shares the host's PID namespace, as
/// the DaemonSet does); where pid 1's files are out of reach (some
/// sandboxes refuse them even to root), the root of the nearest ancestor
/// in another mount namespace (the container runtime's shim, on the host);
/// else our own root (the agent runs on the host itself).
pub fn host_root(proc_root: &Path) -> PathBuf {
    let init = proc_root.join("1/root");
    if std::fs::read_dir(&init).is_ok() {
        return init;
    }
    let mnt_ns = |pid: &str| std::fs::read_link(proc_root.join(pid).join("ns/mnt")).ok();
    let own = mnt_ns("self");
    let mut pid = std::os::unix::process::parent_id();
    for _ in 0..64 {
        if pid <= 1 {
            break;
        }
        let p = pid.to_string();
        let root = proc_root.join(&p).join("root");
        let ns = mnt_ns(&p);
        if ns.is_some() && ns != own && std::fs::read_dir(&root).is_ok() {
            return root;
        }
        let Some(ppid) = std::fs::read_to_string(proc_root.join(&p).join("stat"))
            .ok()
            .and_then(|s| crate::identity::parse_stat(&s))
            .map(|st| st.ppid)
        else {
            break;
        };
        pid = ppid;
    }
    PathBuf::from("/")
}

/// Library directories looked at on the host at start, so that processes
/// which load libssl later (or start later) are covered from their first
/// call.
const HOST_LIBRARY_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/lib64",
    "/usr/lib",
    "/lib",
    "/usr/local/lib",
    "/usr/local/lib64",
];

/// Directories searched for the configured executables on the host.
const HOST_BIN_DIRS: &[&str] = &["/usr/bin", "/usr/local/bin", "/bin", "/opt/node/bin"];

/// True for a file name that is an OpenSSL libssl (`libssl.so.3`,
/// `libssl.so.1.1`, `libssl.so`).
pub fn is_libssl(name: &str) -> bool {
    name.starts_with("libssl.so")
}

/// One line of `/proc/<pid>/maps`: `address perms offset dev inode path`.
struct MapsLine<'a> {
    executable: bool,
    dev: &'a str,
    inode: &'a str,
    /// The path (it may hold spaces, and end in ` (deleted)`); empty for
    /// anonymous mappings.
    path: &'a str,
}

fn maps_lines(maps: &str) -> impl Iterator<Item = MapsLine<'_>> {
    maps.lines().filter_map(|line| {
        let mut fields = line.splitn(6, ' ');
        let (_, perms, _, dev, inode) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        Some(MapsLine {
            executable: perms.contains('x'),
            dev,
            inode,
            path: fields.next().unwrap_or("").trim_start(),
        })
    })
}

/// The mapped files of one `/proc/<pid>/maps` text that may hold OpenSSL:
/// executable mappings of a libssl or of an executable named in
/// `executables` (which link OpenSSL statically). Deleted files are
/// skipped (they cannot be opened by path).
pub fn candidates<'a>(maps: &'a str, executables: &[String]) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for line in maps_lines(maps).filter(|l| l.executable) {
        let path = line.path;
        if !path.starts_with('/') || path.ends_with(" (deleted)") {
            continue;
        }
        let name = path.rsplit('/').next().unwrap_or(path);
        if (is_libssl(name) || executables.iter().any(|e| e == name)) && !out.contains(&path) {
            out.push(path);
        }
    }
    out
}

/// The (device, inode) of every executable mapping in one
/// `/proc/<pid>/maps` text, deleted files included (what
/// [`Scanner::take_unused`] must not take probes off).
pub fn mapped_files(maps: &str) -> Vec<(u64, u64)> {
    maps_lines(maps)
        .filter(|l| l.executable)
        .filter_map(|l| {
            let (major, minor) = l.dev.split_once(':')?;
            let major = u32::from_str_radix(major, 16).ok()?;
            let minor = u32::from_str_radix(minor, 16).ok()?;
            let inode = l.inode.parse::<u64>().ok().filter(|&i| i != 0)?;
            Some((libc::makedev(major, minor), inode))
        })
        .collect()
}

/// A file probed (or refused): the agent's descriptor of it, kept to tell
/// when it is deleted.
struct Seen {
    /// `None` past the descriptors the scan may hold: such a file is never
    /// taken off.
    handle: Option<Arc<std::fs::File>>,
    /// Size and modification time when it was probed (not the change
    /// time, which a `chmod` or an unlink moves).
    version: Option<FileVersion>,
    path: String,
}

type FileVersion = (u64, i64, i64);

fn version_of(m: &std::fs::Metadata) -> FileVersion {
    (m.size(), m.mtime(), m.mtime_nsec())
}

/// Probed files whose descriptor is kept (to tell when they are deleted or
/// rewritten), at most; fewer where the open-file limit is low (a quarter
/// of it).
const MAX_HELD: usize = 4096;

fn max_held() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid pointer to an rlimit we own.
    let cur = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
    } else {
        1024
    };
    MAX_HELD.min(cur / 4)
}

/// A probed file whose probes are to be taken off: deleted, and no process
/// maps or runs it any more (the probes would keep its blocks on disk, and
/// its inode number may be reused by a new file); or rewritten in place
/// (the probes' offsets are the old content's; it is looked at again).
#[derive(Clone, Debug)]
pub struct Unused {
    /// (device, inode), as in [`TlsTarget::file`].
    pub file: (u64, u64),
    /// Path as it was found, for logs.
    pub path: String,
    /// Rewritten in place rather than deleted.
    pub rewritten: bool,
}

/// What the scan reports to the sensor.
#[derive(Debug)]
pub enum Finding {
    /// A file to probe.
    Probe(TlsTarget),
    /// A file whose probes are to be taken off.
    Unused(Unused),
}

/// Executables remembered as looked at (not Go with `crypto/tls`, not
/// Bun); past this the set starts over, which only means looking again.
const MAX_EXES_CHECKED: usize = 65_536;

/// Finds TLS library files not seen before.
pub struct Scanner {
    proc_root: PathBuf,
    executables: Vec<String>,
    seen: HashMap<(u64, u64), Seen>,
    /// Files mapped or run by a process in the scan in progress.
    in_use: HashSet<(u64, u64)>,
    /// A process's memory map could not be read in the scan in progress
    /// (not because it exited): nothing is taken off after it.
    incomplete: bool,
    /// Descriptors held in `seen`, and the most allowed.
    held: usize,
    max_held: usize,
    /// Executables already looked at for Go and Bun (each distinct file
    /// once), by (device, inode, modification time, size): a new file
    /// that reuses an inode number is looked at afresh.
    exes_checked: HashSet<(u64, u64, i64, i64, u64)>,
    /// What each Bun build (by build id) gave: a copy in another container
    /// or directory is not searched again.
    /// Only successes are kept, with the code at both probe points.
    bun_builds: HashMap<String, (BoringSslProbes, [[u8; 32]; 2])>,
    /// Probe Go programs whose strings hold no MCP name too (`capture.tls_go =
    /// "all"`).
    every_go_program: bool,
}

impl Scanner {
    /// `executables`: file names of executables that link OpenSSL
    /// statically (`capture.tls_executables`).
    pub fn new(proc_root: impl Into<PathBuf>, executables: Vec<String>) -> Self {
        Self {
            proc_root: proc_root.into(),
            executables,
            seen: HashMap::new(),
            in_use: HashSet::new(),
            incomplete: false,
            held: 0,
            max_held: max_held(),
            exes_checked: HashSet::new(),
            bun_builds: HashMap::new(),
            every_go_program: false,
        }
    }

    /// Probe every Go program with `crypto/tls`, not only those whose
    /// strings hold an MCP name (`capture.tls_go = "all"`).
    pub fn probing_every_go_program(mut self, every: bool) -> Self {
        self.every_go_program = every;
        self
    }

    fn new_target(&mut self, open_path: PathBuf, path: &str, pid: u32) -> Option<TlsTarget> {
        let md = std::fs::metadata(&open_path).ok()?;
        if !md.is_file() {
            return None;
        }
        let file = (md.dev(), md.ino());
        self.in_use.insert(file);
        if self.seen.contains_key(&file) {
            return None;
        }
        // Only a file that could be opened counts as seen.
        let handle = Arc::new(std::fs::File::open(&open_path).ok()?);
        self.remember(file, &handle, path);
        Some(TlsTarget {
            probes: Probes::OpenSsl,
            open_path,
            handle,
            path: path.to_owned(),
            pid,
            file,
        })
    }

    fn remember(&mut self, file: (u64, u64), handle: &Arc<std::fs::File>, path: &str) {
        let keep = self.held < self.max_held;
        self.held += usize::from(keep);
        let old = self.seen.insert(
            file,
            Seen {
                handle: keep.then(|| handle.clone()),
                version: handle.metadata().ok().map(|m| version_of(&m)),
                path: path.to_owned(),
            },
        );
        if old.is_some_and(|o| o.handle.is_some()) {
            self.held -= 1;
        }
    }

    /// After a pass over the processes ([`Scanner::scan_processes`]): the
    /// files seen before that were deleted since and that no process maps
    /// or runs. They are forgotten (a new file with the same inode number
    /// is a new file).
    ///
    /// A file counts as in use by its inode alone: a maps line names a file
    /// on overlayfs (before Linux 6.8) or btrfs by another device than
    /// `stat` does, and a collision only keeps probes longer. After a pass
    /// that could not read some process's map (no `CAP_SYS_PTRACE`,
    /// `hidepid`), deleted files are left alone.
    pub fn take_unused(&mut self) -> Vec<Unused> {
        let in_use: HashSet<u64> = std::mem::take(&mut self.in_use)
            .into_iter()
            .map(|(_, ino)| ino)
            .collect();
        let complete = !std::mem::take(&mut self.incomplete);
        let mut out = Vec::new();
        for (file, s) in &self.seen {
            let Some(m) = s.handle.as_ref().and_then(|h| h.metadata().ok()) else {
                continue;
            };
            let rewritten = s.version.is_some_and(|v| v != version_of(&m));
            let deleted = m.nlink() == 0 && complete && !in_use.contains(&file.1);
            if rewritten || deleted {
                out.push(Unused {
                    file: *file,
                    path: s.path.clone(),
                    rewritten,
                });
            }
        }
        for u in &out {
            if self.seen.remove(&u.file).is_some_and(|s| s.handle.is_some()) {
                self.held -= 1;
            }
            self.exes_checked.retain(|c| (c.0, c.1) != u.file);
        }
        out
    }

    /// libssl files in the host's usual library directories and the
    /// configured executables in its usual bin directories, seen from
    /// `host_root` (`/proc/1/root`: the host's file system even when the
    /// agent runs in a container).
    pub fn scan_host(&mut self, host_root: &Path) -> Vec<TlsTarget> {
        let mut out = Vec::new();
        for dir in HOST_LIBRARY_DIRS {
            let Ok(entries) = std::fs::read_dir(host_root.join(dir.trim_start_matches('/'))) else {
                continue;
            };
            // Symbolic links (libssl.so -> libssl.so.3) name a file found
            // under its own name too.
            let mut names: Vec<String> = entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| !t.is_symlink()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| is_libssl(n))
                .collect();
            names.sort();
            for name in names {
                let path = format!("{dir}/{name}");
                let open = host_root.join(path.trim_start_matches('/'));
                out.extend(self.new_target(open, &path, 0));
            }
        }
        for dir in HOST_BIN_DIRS {
            for exe in self.executables.clone() {
                let path = format!("{dir}/{exe}");
                let open = host_root.join(path.trim_start_matches('/'));
                out.extend(self.new_target(open, &path, 0));
            }
        }
        out
    }

    /// One pass over the processes: the files they map that were not seen.
    /// Then [`Scanner::take_unused`] tells which seen files no process
    /// uses any more.
    pub fn scan_processes(&mut self) -> Vec<TlsTarget> {
        self.in_use.clear();
        self.incomplete = false;
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir(&self.proc_root) else {
            return out;
        };
        let me = std::process::id();
        for ent in dir.flatten() {
            let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            out.extend(self.scan_process(pid));
        }
        out
    }

    /// A process that just ran a new executable (the kernel's exec
    /// notices): its executable, looked at before the program can open its
    /// first connection (libraries are not mapped yet at exec; the
    /// periodic scan finds them). One `stat` for a file seen before.
    pub fn scan_executable(&mut self, pid: u32) -> Option<TlsTarget> {
        self.exe_target(&self.proc_root.join(pid.to_string()), pid)
    }

    /// One process: the files it maps and its executable, where not seen
    /// before.
    fn scan_process(&mut self, pid: u32) -> Vec<TlsTarget> {
        let mut out = Vec::new();
        let proc_dir = self.proc_root.join(pid.to_string());
        // The executable first: it counts as in use even where the map
        // cannot be read.
        out.extend(self.exe_target(&proc_dir, pid));
        let maps = match std::fs::read_to_string(proc_dir.join("maps")) {
            Ok(maps) => maps,
            Err(e) => {
                // Gone meanwhile (ENOENT, ESRCH) is not a gap in the view,
                // nor is pid 1 of a sandbox that refuses its files even to
                // root (see `host_root`): such an init maps no libssl.
                let exited = e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH);
                self.incomplete |= !exited && pid != 1;
                return out;
            }
        };
        self.in_use.extend(mapped_files(&maps));
        let paths: Vec<String> = candidates(&maps, &self.executables)
            .into_iter()
            .map(str::to_owned)
            .collect();
        for path in paths {
            let open = proc_dir.join("root").join(path.trim_start_matches('/'));
            out.extend(self.new_target(open, &path, pid));
        }
        out
    }

    /// The process's executable, when it is a Go program with `crypto/tls`
    /// or a Bun executable, not looked at before. `/proc/<pid>/exe` opens
    /// the file itself, whatever the process's mount namespace.
    fn exe_target(&mut self, proc_dir: &Path, pid: u32) -> Option<TlsTarget> {
        let open_path = proc_dir.join("exe");
        let md = std::fs::metadata(&open_path).ok()?;
        let file = (md.dev(), md.ino());
        self.in_use.insert(file);
        let checked = |md: &std::fs::Metadata| (md.dev(), md.ino(), md.mtime(), md.mtime_nsec(), md.size());
        if !md.is_file() || self.seen.contains_key(&file) || self.exes_checked.contains(&checked(&md)) {
            return None;
        }
        let handle = std::fs::File::open(&open_path).ok()?;
        // The opened file's own identity and size (the process may have run
        // another executable since the stat above).
        let md = handle.metadata().ok()?;
        let file = (md.dev(), md.ino());
        if self.exes_checked.len() >= MAX_EXES_CHECKED {
            self.exes_checked.clear();
        }
        if !md.is_file() || self.seen.contains_key(&file) || !self.exes_checked.insert(checked(&md)) {
            return None;
        }
        let path = std::fs::read_link(&open_path)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| open_path.display().to_string());
        let probes = match go_probes(&handle, md.len()) {
            Ok(p) if !p.names_mcp && !self.every_go_program => Probes::GoNotMcp(p.version),
            Ok(p) => Probes::Go(p),
            Err(e @ (GoBinaryError::UnknownVersion(_) | GoBinaryError::Architecture | GoBinaryError::Malformed(_))) => {
                Probes::GoRefused(e)
            }
            Err(GoBinaryError::NotGo) => match self.bun_probes(&handle, md.len()) {
                Some(Ok(p)) => Probes::BoringSsl(p),
                Some(Err(BoringSslError::NoBoringSsl | BoringSslError::NotElf)) | None => return None,
                Some(Err(e)) => Probes::BoringSslRefused(e),
            },
            Err(e) => {
                log::trace!("TLS: {path} (pid {pid}): {e}");
                return None;
            }
        };
        let handle = Arc::new(handle);
        // A file left unprobed needs no descriptor kept: `exes_checked`
        // (device, inode, modification time, size) keeps it from being
        // looked at again, and a rewritten or replaced file is new there.
        if !matches!(probes, Probes::GoNotMcp(_)) {
            self.remember(file, &handle, &path);
        }
        Some(TlsTarget {
            probes,
            open_path,
            handle,
            path,
            pid,
            file,
        })
    }
}

impl Scanner {
    /// A Bun executable's BoringSSL probe points (None: not a Bun
    /// executable), from the cache when its build was seen before.
    fn bun_probes(&mut self, file: &std::fs::File, len: u64) -> Option<Result<BoringSslProbes, BoringSslError>> {
        use std::os::unix::fs::FileExt;
        if !(64..=MAX_EXECUTABLE).contains(&len) {
            return None;
        }
        let mut read_at = |offset: u64, n: usize| {
            let mut buf = vec![0; n];
            file.read_exact_at(&mut buf, offset).ok().map(|()| buf)
        };
        if !boringssl_binary::may_be_bun(&mut read_at) {
            return None;
        }
        let builds = &self.bun_builds;
        let searched = with_mapping(file, len, |bytes| {
            let id = boringssl_binary::build_id(bytes);
            // A build id is only bytes in a note that anyone can copy: a
            // cached result is used only where the code at both probe
            // points is the same as in the file it was found in.
            if let Some((known, code)) = id.as_ref().and_then(|id| builds.get(id)) {
                if probe_code(bytes, known).as_ref() == Some(code) {
                    return (Ok(known.clone()), None);
                }
            }
            let found = boringssl_binary::inspect(bytes);
            let to_cache = match (id, &found) {
                (Some(id), Ok(p)) => probe_code(bytes, p).map(|code| (id, (p.clone(), code))),
                _ => None,
            };
            (found, to_cache)
        });
        match searched {
            Ok((found, to_cache)) => {
                // Only from a read of the whole, unchanged file.
                if let Some((id, entry)) = to_cache {
                    if self.bun_builds.len() < MAX_BUN_BUILDS {
                        self.bun_builds.insert(id, entry);
                    }
                }
                Some(found)
            }
            Err(e) => {
                mapping_failed(e);
                None
            }
        }
    }
}

/// A file that changed while it was read is looked at again by a later
/// scan (its modification time is part of what marks it as looked at).
fn mapping_failed(e: MappingError) {
    if e == MappingError::Changed {
        log::warn!("TLS: an executable was rewritten while it was searched; it is looked at again by a later scan");
    }
}

/// Bun builds remembered, at most.
const MAX_BUN_BUILDS: usize = 64;

/// The first bytes of code at both probe points of `p` in `bytes`.
fn probe_code(bytes: &[u8], p: &BoringSslProbes) -> Option<[[u8; 32]; 2]> {
    let at = |off: u64| -> Option<[u8; 32]> {
        let start = usize::try_from(off).ok()?;
        bytes.get(start..start.checked_add(32)?)?.try_into().ok()
    };
    Some([at(p.read)?, at(p.write)?])
}

/// Executables larger than this are not read (for Go tables or Bun's
/// BoringSSL).
const MAX_EXECUTABLE: u64 = 2 << 30;

/// Reads an executable's Go TLS probe points. Its section names are read
/// first (`pread`); only a file that may be a Go program is looked at in
/// full, through a read-only mapping: the pages the tables occupy are read
/// from disk as clean page cache, which the kernel can reclaim, not copied
/// into the agent's memory (Go executables reach hundreds of megabytes,
/// and the DaemonSet's limit is 256 MiB); a file rewritten in place while
/// it is read is noticed, not fatal ([`super::mapped_file`]).
fn go_probes(file: &std::fs::File, len: u64) -> Result<GoTlsProbes, GoBinaryError> {
    use std::os::unix::fs::FileExt;
    if !(64..=MAX_EXECUTABLE).contains(&len) {
        return Err(GoBinaryError::NotElf);
    }
    let mut read_at = |offset: u64, n: usize| {
        let mut buf = vec![0; n];
        file.read_exact_at(&mut buf, offset).ok().map(|()| buf)
    };
    if !go_binary::may_be_go(&mut read_at) {
        return Err(GoBinaryError::NotGo);
    }
    with_mapping(file, len, go_binary::inspect).unwrap_or_else(|e| {
        mapping_failed(e);
        Err(GoBinaryError::NotElf)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a2e000 r--p 00000000 08:01 1311 /usr/bin/python3.11
55d0c0a2e000-55d0c0d1b000 r-xp 0002e000 08:01 1311 /usr/bin/python3.11
7f1a2b000000-7f1a2b01f000 r--p 00000000 08:01 2222 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1a2b01f000-7f1a2b07a000 r-xp 0001f000 08:01 2222 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1a2b07a000-7f1a2b07b000 r-xp 0007a000 08:01 2222 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1a2c000000-7f1a2c001000 r-xp 00000000 08:01 3333 /opt/app dir/libssl.so.1.1
7f1a2d000000-7f1a2d001000 r-xp 00000000 08:01 4444 /tmp/libssl.so.3 (deleted)
7f1a2e000000-7f1a2e001000 r-xp 00000000 08:01 5555 /usr/lib/x86_64-linux-gnu/libcrypto.so.3
7f1a2f000000-7f1a2f001000 rw-p 00000000 00:00 0 [heap]
7ffd5a000000-7ffd5a021000 r-xp 00000000 00:00 0 [vdso]
55d0c1000000-55d0c2000000 r-xp 00000000 08:01 6666 /usr/local/bin/node
";

    #[test]
    fn maps_yield_each_libssl_once_and_named_executables() {
        assert_eq!(
            candidates(MAPS, &[]),
            vec!["/usr/lib/x86_64-linux-gnu/libssl.so.3", "/opt/app dir/libssl.so.1.1"]
        );
        assert_eq!(
            candidates(MAPS, &["node".to_owned()]),
            vec![
                "/usr/lib/x86_64-linux-gnu/libssl.so.3",
                "/opt/app dir/libssl.so.1.1",
                "/usr/local/bin/node"
            ]
        );
        assert!(candidates("garbage\n\n1 2 3\n", &[]).is_empty());
    }

    #[test]
    fn scanner_reports_a_file_once_through_any_process_root() {
        let t = tempfile::tempdir().unwrap();
        let proc_root = t.path().join("proc");
        // Two "processes" whose roots hold the same library file (a hard
        // link: same inode), and one with a different copy.
        for pid in ["10", "11", "12"] {
            std::fs::create_dir_all(proc_root.join(pid).join("root/lib")).unwrap();
            std::fs::write(
                proc_root.join(pid).join("maps"),
                "7f00-7f01 r-xp 00000000 08:01 1 /lib/libssl.so.3\n",
            )
            .unwrap();
        }
        std::fs::write(proc_root.join("10/root/lib/libssl.so.3"), b"elf").unwrap();
        std::fs::hard_link(
            proc_root.join("10/root/lib/libssl.so.3"),
            proc_root.join("11/root/lib/libssl.so.3"),
        )
        .unwrap();
        std::fs::write(proc_root.join("12/root/lib/libssl.so.3"), b"other elf").unwrap();
        let mut s = Scanner::new(&proc_root, vec![]);
        let mut found = s.scan_processes();
        found.sort_by_key(|t| t.pid);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].path, "/lib/libssl.so.3");
        assert!(found[0].open_path.ends_with("root/lib/libssl.so.3"));
        assert_eq!(found[1].pid, 12);
        assert!(s.scan_processes().is_empty(), "a second pass finds nothing new");
        // The process goes away before the attach: the file is still
        // reachable through the agent's own descriptor.
        std::fs::remove_dir_all(proc_root.join("12")).unwrap();
        assert_eq!(std::fs::read(found[1].attach_path()).unwrap(), b"other elf");
    }

    #[test]
    fn a_deleted_file_no_process_maps_is_reported_unused_and_forgotten() {
        let t = tempfile::tempdir().unwrap();
        let proc_root = t.path().join("proc");
        let lib = proc_root.join("20/root/lib/libssl.so.3");
        std::fs::create_dir_all(lib.parent().unwrap()).unwrap();
        std::fs::write(&lib, b"elf").unwrap();
        // The maps line names the file by its real device and inode, as
        // the kernel's does (and still does once it is deleted).
        let md = std::fs::metadata(&lib).unwrap();
        let maps_line = |deleted: bool| {
            format!(
                "7f00-7f01 r-xp 00000000 {:02x}:{:02x} {} /lib/libssl.so.3{}\n",
                libc::major(md.dev()),
                libc::minor(md.dev()),
                md.ino(),
                if deleted { " (deleted)" } else { "" }
            )
        };
        std::fs::write(proc_root.join("20/maps"), maps_line(false)).unwrap();
        let mut s = Scanner::new(&proc_root, vec![]);
        let found = s.scan_processes();
        assert_eq!(found.len(), 1);
        let file = found[0].file;
        drop(found);
        assert!(s.take_unused().is_empty(), "mapped and not deleted");

        // Deleted, but still mapped by the process: kept.
        std::fs::remove_file(&lib).unwrap();
        std::fs::write(proc_root.join("20/maps"), maps_line(true)).unwrap();
        assert!(s.scan_processes().is_empty());
        assert!(s.take_unused().is_empty(), "deleted but still mapped");

        // The process is gone too: unused, and forgotten.
        std::fs::remove_dir_all(proc_root.join("20")).unwrap();
        assert!(s.scan_processes().is_empty());
        let unused = s.take_unused();
        assert_eq!(unused.len(), 1, "{unused:?}");
        assert_eq!((unused[0].file, unused[0].path.as_str()), (file, "/lib/libssl.so.3"));
        assert!(s.take_unused().is_empty(), "reported once");

        // A file still on disk that no process maps stays probed: later
        // runs of it are covered.
        let other = proc_root.join("21/root/lib/libssl.so.3");
        std::fs::create_dir_all(other.parent().unwrap()).unwrap();
        std::fs::write(&other, b"elf 2").unwrap();
        std::fs::write(
            proc_root.join("21/maps"),
            "7f00-7f01 r-xp 00000000 08:01 1 /lib/libssl.so.3\n",
        )
        .unwrap();
        assert_eq!(s.scan_processes().len(), 1);
        std::fs::remove_file(proc_root.join("21/maps")).unwrap();
        assert!(s.scan_processes().is_empty());
        assert!(s.take_unused().is_empty(), "not deleted");
    }

    #[test]
    fn a_file_rewritten_in_place_is_reported_and_looked_at_again() {
        let t = tempfile::tempdir().unwrap();
        let proc_root = t.path().join("proc");
        let lib = proc_root.join("30/root/lib/libssl.so.3");
        std::fs::create_dir_all(lib.parent().unwrap()).unwrap();
        std::fs::write(&lib, b"elf").unwrap();
        std::fs::write(
            proc_root.join("30/maps"),
            "7f00-7f01 r-xp 00000000 08:01 1 /lib/libssl.so.3\n",
        )
        .unwrap();
        let mut s = Scanner::new(&proc_root, vec![]);
        assert_eq!(s.scan_processes().len(), 1);
        assert!(s.take_unused().is_empty());
        // `cp` over it: same inode, new content.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&lib, b"elf, version 2").unwrap();
        assert!(s.scan_processes().is_empty(), "still seen until the probes are off");
        let unused = s.take_unused();
        assert_eq!(unused.len(), 1, "{unused:?}");
        assert!(unused[0].rewritten);
        assert_eq!(s.scan_processes().len(), 1, "probed afresh");
    }

    #[test]
    fn a_pass_that_could_not_read_a_map_takes_nothing_off() {
        let t = tempfile::tempdir().unwrap();
        let proc_root = t.path().join("proc");
        let lib = proc_root.join("40/root/lib/libssl.so.3");
        std::fs::create_dir_all(lib.parent().unwrap()).unwrap();
        std::fs::write(&lib, b"elf").unwrap();
        std::fs::write(
            proc_root.join("40/maps"),
            "7f00-7f01 r-xp 00000000 08:01 1 /lib/libssl.so.3\n",
        )
        .unwrap();
        let mut s = Scanner::new(&proc_root, vec![]);
        assert_eq!(s.scan_processes().len(), 1);
        std::fs::remove_file(&lib).unwrap();
        // Another process whose map cannot be read (a directory stands in
        // for a file that refuses reading): it might map the deleted file.
        std::fs::remove_file(proc_root.join("40/maps")).unwrap();
        std::fs::create_dir_all(proc_root.join("41/maps")).unwrap();
        assert!(s.scan_processes().is_empty());
        assert!(s.take_unused().is_empty(), "the view was incomplete");
        std::fs::remove_dir_all(proc_root.join("41")).unwrap();
        assert!(s.scan_processes().is_empty());
        assert_eq!(s.take_unused().len(), 1, "complete again");
    }

    #[test]
    fn mapped_files_are_read_with_their_devices() {
        let maps = "\
55d0c0a2e000-55d0c0d1b000 r-xp 0002e000 08:01 1311 /usr/bin/python3.11
7f1a2b01f000-7f1a2b07a000 r-xp 0001f000 fd:10 2222 /usr/lib/x86_64-linux-gnu/libssl.so.3 (deleted)
7f1a2b07a000-7f1a2b09a000 r--p 0007a000 08:01 2222 /usr/lib/x86_64-linux-gnu/libssl.so.3
7ffd1c000000-7ffd1c021000 r-xp 00000000 00:00 0 [vdso]
";
        assert_eq!(
            mapped_files(maps),
            vec![(libc::makedev(8, 1), 1311), (libc::makedev(0xfd, 0x10), 2222)]
        );
    }

    #[test]
    fn host_root_is_pid_1s_or_else_the_nearest_ancestor_in_another_mount_namespace() {
        let t = tempfile::tempdir().unwrap();
        let proc_root = t.path();
        let ppid = std::os::unix::process::parent_id();
        let link = |pid: &str, ns: &str| {
            std::fs::create_dir_all(proc_root.join(pid).join("ns")).unwrap();
            std::os::unix::fs::symlink(ns, proc_root.join(pid).join("ns/mnt")).unwrap();
        };
        link("self", "mnt:[4026530001]");
        // Nothing readable: our own root.
        assert_eq!(host_root(proc_root), PathBuf::from("/"));
        // The parent in the same mount namespace is not the host; its
        // parent, in another one, is (the runtime's shim). (The test's own
        // parent is cargo or a shell, never pid 1.)
        assert!(ppid > 1);
        link(&ppid.to_string(), "mnt:[4026530001]");
        std::fs::create_dir_all(proc_root.join(ppid.to_string()).join("root")).unwrap();
        std::fs::write(
            proc_root.join(ppid.to_string()).join("stat"),
            format!("{ppid} (podman) S 4242 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 100 0 0\n"),
        )
        .unwrap();
        link("4242", "mnt:[4026531840]");
        std::fs::create_dir_all(proc_root.join("4242/root")).unwrap();
        assert_eq!(host_root(proc_root), proc_root.join("4242/root"));
        // pid 1's files, when readable, come first.
        std::fs::create_dir_all(proc_root.join("1/root")).unwrap();
        assert_eq!(host_root(proc_root), proc_root.join("1/root"));
    }

    #[test]
    fn host_scan_finds_libssl_and_executables() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("usr/lib/x86_64-linux-gnu")).unwrap();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::write(root.join("usr/lib/x86_64-linux-gnu/libssl.so.3"), b"a").unwrap();
        std::fs::write(root.join("usr/lib/x86_64-linux-gnu/libcrypto.so.3"), b"b").unwrap();
        std::fs::write(root.join("usr/bin/node"), b"c").unwrap();
        let mut s = Scanner::new(root.join("proc"), vec!["node".into()]);
        let found: Vec<String> = s.scan_host(root).into_iter().map(|t| t.path).collect();
        assert_eq!(found, vec!["/usr/lib/x86_64-linux-gnu/libssl.so.3", "/usr/bin/node"]);
    }
}
