//! What a descriptor refers to, remembered per process, descriptor and
//! direction (`KNOWN_FILES`), so the transfers of a tracked stream do not
//! walk `current->files` and the file's inode and socket again each time
//! (8 to 12 kernel reads: a third of what a traced pipe write cost).
//!
//! A direct-mapped cache like `JUDGED`, forgotten where the number is
//! (`close`, `dup2`/`dup3`, exec: see `forget_judged`). A number can still
//! come back for another file unseen (`close_range`, io_uring, a reused
//! pid that forks without exec): each entry serves at most
//! [`USES_PER_WALK`] transfers before the walk is done again, and holds the
//! process's start time, so a stale entry lives at most that many
//! transfers.

use crate::{
    capture::stream_state_of,
    kernel_read::{file_info, FileInfo},
    maps::{KnownFile, KNOWN_FILES},
    transfer::{judged_key, judged_slot},
};
use monitor_common::{stream_state, Direction, FdKind, KernelConfig, StreamKey};

/// Transfers served from an entry before the descriptor is walked again.
const USES_PER_WALK: u8 = 63;

/// What descriptor `fd` of the current process (`pid_tgid`, started at
/// `start_ns`) refers to, from the cache if it is there and fresh.
#[inline(always)]
pub(crate) fn known_file_info(
    cfg: &KernelConfig,
    pid_tgid: u64,
    start_ns: u64,
    fd: i32,
    dir: Direction,
) -> Option<FileInfo> {
    if let Some(fi) = cached(pid_tgid, start_ns, fd, dir) {
        return Some(fi);
    }
    let fi = file_info(cfg, fd, dir)?;
    let key = judged_key(pid_tgid, fd, dir);
    if let Some(e) = KNOWN_FILES.get_ptr_mut(judged_slot(key)) {
        // SAFETY: e points at the array value, valid for a KnownFile (plain
        // integers); two CPUs writing one slot can leave a mixed entry, which
        // the key and start time checks catch unless both are this
        // descriptor's, with the same file.
        unsafe {
            *e = KnownFile {
                key,
                start_ns,
                inode: fi.inode,
                channel: fi.channel,
                peer: fi.peer,
                kind: fi.kind as u8,
                uses_left: USES_PER_WALK,
                _pad0: 0,
                _pad1: 0,
            };
        }
    }
    Some(fi)
}

/// The cached entry for the descriptor, one use of it taken; `None` when
/// there is none (or it is another's, stale or used up).
#[inline(always)]
pub(crate) fn cached(pid_tgid: u64, start_ns: u64, fd: i32, dir: Direction) -> Option<FileInfo> {
    let key = judged_key(pid_tgid, fd, dir);
    let e = KNOWN_FILES.get_ptr_mut(judged_slot(key))?;
    // SAFETY: e points at the array value, valid for a KnownFile (plain
    // integers, any bit pattern valid); a racing writer is covered above.
    unsafe {
        if (*e).key != key || (*e).start_ns != start_ns || (*e).uses_left == 0 {
            return None;
        }
        (*e).uses_left -= 1;
        let kind = match (*e).kind {
            1 => FdKind::Pipe,
            2 => FdKind::UnixStream,
            3 => FdKind::Tcp4,
            4 => FdKind::Tcp6,
            _ => FdKind::Other,
        };
        Some(FileInfo {
            kind,
            inode: (*e).inode,
            channel: (*e).channel,
            peer: (*e).peer,
        })
    }
}

/// Forgets descriptor `fd` of the current process, both directions.
#[inline(always)]
pub(crate) fn forget_known_file(pid_tgid: u64, fd: i32) {
    for dir in [Direction::Ingress, Direction::Egress] {
        let key = judged_key(pid_tgid, fd, dir);
        if let Some(e) = KNOWN_FILES.get_ptr_mut(judged_slot(key)) {
            // SAFETY: e points at the array value; key 0 is nobody's.
            unsafe {
                if (*e).key == key {
                    (*e).key = 0;
                }
            }
        }
    }
}

/// Whether the current write, on descriptor `fd` of a tracked process
/// (`pid_tgid`, started at `start_ns`), goes to a pipe or unix socket whose
/// writer notice was sent: then its exit has nothing more to do (the
/// payload is captured where it is read), and leaves before the capture
/// stage and its descriptor walk. Asks `STREAMS` each time, so a decision
/// userspace makes about the stream is seen at once.
#[inline(always)]
pub(crate) fn writer_notified(pid_tgid: u64, start_ns: u64, fd: i32) -> bool {
    if start_ns == 0 {
        return false;
    }
    let Some(fi) = cached(pid_tgid, start_ns, fd, Direction::Egress) else {
        return false;
    };
    if !fi.kind.is_local_ipc() {
        return false;
    }
    let key = StreamKey::new((pid_tgid >> 32) as u32, fd, fi.inode, Direction::Egress as u8);
    stream_state_of(&key) == stream_state::WRITER_NOTIFIED
}
