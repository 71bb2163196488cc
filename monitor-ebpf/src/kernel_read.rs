//! Reading kernel and user memory: the checked `bpf_probe_read_*` wrappers,
//! the start time of the current task, and what a descriptor is (pipe, unix
//! or TCP socket) and, for TCP, its connection.

use crate::maps::count;
use aya_ebpf::helpers::generated::{bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_user};
use core::ffi::c_void;
use monitor_common::{ConnTuple, Counter, Direction, FdKind, KernelConfig};

pub(crate) const S_IFMT: u16 = 0o170000;

pub(crate) const S_IFIFO: u16 = 0o010000;

pub(crate) const S_IFSOCK: u16 = 0o140000;

pub(crate) const AF_UNIX: u16 = 1;

pub(crate) const AF_INET: u16 = 2;

pub(crate) const AF_INET6: u16 = 10;

pub(crate) const SOCK_STREAM: u16 = 1;

pub(crate) const SOCK_SEQPACKET: u16 = 5;

/// Reads a `T` at kernel address `addr`; `None` if the helper fails.
///
/// # Safety
///
/// Every bit pattern must be a valid `T` (integers, arrays of them): the
/// bytes come from arbitrary kernel memory. `addr` may be anything: the
/// helper checks it and fails instead of faulting.
#[inline(always)]
pub(crate) unsafe fn kread<T: Copy>(addr: u64) -> Option<T> {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: dst is the local `v`, exactly size_of::<T>() bytes; the helper
    // checks `addr` and fails instead of faulting.
    let r = bpf_probe_read_kernel(
        v.as_mut_ptr() as *mut c_void,
        core::mem::size_of::<T>() as u32,
        addr as *const c_void,
    );
    if r == 0 {
        // SAFETY: r == 0: the helper filled all of `v`, and the caller
        // guarantees every bit pattern is a valid `T`.
        Some(v.assume_init())
    } else {
        None
    }
}

/// Reads a `T` at user address `addr` (current process); `None` if the
/// helper fails.
///
/// # Safety
///
/// Every bit pattern must be a valid `T` (integers, arrays of them): the
/// bytes come from arbitrary user memory. `addr` may be anything: the
/// helper checks it and fails instead of faulting.
#[inline(always)]
pub(crate) unsafe fn uread<T: Copy>(addr: u64) -> Option<T> {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: dst is the local `v`, exactly size_of::<T>() bytes; the helper
    // checks `addr` and fails instead of faulting.
    let r = bpf_probe_read_user(
        v.as_mut_ptr() as *mut c_void,
        core::mem::size_of::<T>() as u32,
        addr as *const c_void,
    );
    if r == 0 {
        // SAFETY: r == 0: the helper filled all of `v`, and the caller
        // guarantees every bit pattern is a valid `T`.
        Some(v.assume_init())
    } else {
        None
    }
}

/// Start time of the current *process*: the thread-group leader's. (The
/// current task may be any thread, and threads have their own start times.)
#[inline(always)]
pub(crate) fn current_start_ns(cfg: &KernelConfig) -> u64 {
    let o = &cfg.offsets;
    // SAFETY: bpf_get_current_task takes no arguments; both kreads are of u64
    // (any bit pattern valid), and a bad address makes them return None.
    unsafe {
        let task = bpf_get_current_task();
        let leader = kread::<u64>(task + o.task_group_leader as u64).unwrap_or(0);
        let leader = if leader == 0 { task } else { leader };
        kread::<u64>(leader + o.task_start_boottime as u64).unwrap_or(0)
    }
}

/// What a file descriptor refers to.
#[derive(Clone, Copy)]
pub(crate) struct FileInfo {
    pub(crate) kind: FdKind,
    pub(crate) inode: u64,
    pub(crate) channel: u64,
    pub(crate) peer: u64,
}

/// `current->files->fdt->fd[fd]`: the open file of descriptor `fd`, or
/// None if it is closed, out of the table, or a read failed.
#[inline(always)]
fn current_file(cfg: &KernelConfig, fd: i32) -> Option<u64> {
    if fd < 0 {
        return None;
    }
    let o = &cfg.offsets;
    // SAFETY: bpf_get_current_task takes no arguments; every kread is of a
    // u64/u32 (any bit pattern valid), and a bad address returns None.
    unsafe {
        let task = bpf_get_current_task();
        let files: u64 = kread(task + o.task_files as u64)?;
        let fdt: u64 = kread(files + o.files_fdt as u64)?;
        let max_fds: u32 = kread(fdt + o.fdt_max_fds as u64)?;
        if fd as u32 >= max_fds {
            return None;
        }
        let fd_array: u64 = kread(fdt + o.fdt_fd as u64)?;
        let file: u64 = kread(fd_array + (fd as u64) * 8)?;
        (file != 0).then_some(file)
    }
}

/// The inode number of the file descriptor `fd` of the current process
/// holds, or None if it is closed.
#[inline(always)]
pub(crate) fn fd_inode(cfg: &KernelConfig, fd: i32) -> Option<u64> {
    let o = &cfg.offsets;
    let file = current_file(cfg, fd)?;
    // SAFETY: kreads of u64s (any bit pattern valid); a bad address
    // returns None.
    unsafe {
        let inode: u64 = kread(file + o.file_inode as u64)?;
        kread(inode + o.inode_ino as u64)
    }
}

/// Walks `current->files->fdt->fd[fd]` to classify the descriptor.
#[inline(always)]
pub(crate) fn file_info(cfg: &KernelConfig, fd: i32, dir: Direction) -> Option<FileInfo> {
    if fd < 0 {
        return None;
    }
    let o = &cfg.offsets;
    // SAFETY: every kread is of a u64/u16 (any bit pattern valid), and a
    // bad address returns None.
    let r = unsafe {
        let file = current_file(cfg, fd)?;
        let inode: u64 = kread(file + o.file_inode as u64)?;
        let mode: u16 = kread(inode + o.inode_mode as u64)?;
        let ino: u64 = kread(inode + o.inode_ino as u64)?;
        match mode & S_IFMT {
            S_IFIFO => Some(FileInfo {
                kind: FdKind::Pipe,
                inode: ino,
                channel: ino,
                peer: 0,
            }),
            S_IFSOCK => {
                let sock: u64 = kread(file + o.file_private_data as u64)?;
                let stype: u16 = kread(sock + o.socket_type as u64)?;
                let sk: u64 = kread(sock + o.socket_sk as u64)?;
                let family: u16 = kread(sk + o.sock_family as u64)?;
                if family == AF_UNIX && (stype == SOCK_STREAM || stype == SOCK_SEQPACKET) {
                    let peer: u64 = kread(sk + o.unix_peer as u64)?;
                    let channel = match dir {
                        Direction::Ingress => sk,
                        Direction::Egress => peer,
                    };
                    Some(FileInfo {
                        kind: FdKind::UnixStream,
                        inode: ino,
                        channel,
                        peer,
                    })
                } else if (family == AF_INET || family == AF_INET6) && stype == SOCK_STREAM {
                    let kind = if family == AF_INET { FdKind::Tcp4 } else { FdKind::Tcp6 };
                    Some(FileInfo {
                        kind,
                        inode: ino,
                        channel: sk,
                        peer: 0,
                    })
                } else {
                    Some(FileInfo {
                        kind: FdKind::Other,
                        inode: ino,
                        channel: 0,
                        peer: 0,
                    })
                }
            }
            _ => Some(FileInfo {
                kind: FdKind::Other,
                inode: ino,
                channel: 0,
                peer: 0,
            }),
        }
    };
    if r.is_none() {
        count(Counter::FdLookupFailed, 1);
    }
    r
}

/// Endpoints of the TCP socket `sk` (a `struct sock`).
#[inline(always)]
pub(crate) fn conn_tuple(cfg: &KernelConfig, sk: u64, kind: FdKind) -> ConnTuple {
    let o = &cfg.offsets;
    let mut t = ConnTuple::default();
    // SAFETY: kreads of u16 and byte arrays (any bit pattern valid); a bad
    // `sk` or offset makes the helper fail and the field stays 0.
    unsafe {
        t.local_port = kread::<u16>(sk + o.sock_num as u64).unwrap_or(0);
        t.remote_port = u16::from_be(kread::<u16>(sk + o.sock_dport as u64).unwrap_or(0));
        if kind == FdKind::Tcp4 {
            t.family = AF_INET;
            if let Some(a) = kread::<[u8; 4]>(sk + o.sock_rcv_saddr as u64) {
                t.local_addr[0] = a[0];
                t.local_addr[1] = a[1];
                t.local_addr[2] = a[2];
                t.local_addr[3] = a[3];
            }
            if let Some(a) = kread::<[u8; 4]>(sk + o.sock_daddr as u64) {
                t.remote_addr[0] = a[0];
                t.remote_addr[1] = a[1];
                t.remote_addr[2] = a[2];
                t.remote_addr[3] = a[3];
            }
        } else {
            t.family = AF_INET6;
            t.local_addr = kread::<[u8; 16]>(sk + o.sock_v6_rcv_saddr as u64).unwrap_or([0; 16]);
            t.remote_addr = kread::<[u8; 16]>(sk + o.sock_v6_daddr as u64).unwrap_or([0; 16]);
        }
    }
    t
}

/// `n & mask`, computed so that the mask reaches the verifier. Sizes passed
/// to `bpf_probe_read_user` are first clamped with `min`-like compares; LLVM
/// then finds a later mask and bound check redundant and drops them, and
/// what is left is a register-to-register `min`, from which verifiers
/// before 6.8 learn no bound (5.10 and 6.1 reject the program: "R2 min value
/// is negative"). `black_box` hides the value from LLVM, so the mask stays
/// on the very register passed on. Follow it with the `> MAX` check.
#[inline(always)]
pub(crate) fn verifier_bound(n: u64, mask: u64) -> u64 {
    core::hint::black_box(n) & mask
}
