//! Port selectors: a process that binds or connects to a selected port is
//! tracked.

use crate::{
    kernel_read::{current_start_ns, uread},
    maps::{config, PORT_SELECTORS},
    tracking::{track, tracked_reason},
};
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use monitor_common::{config_flags, TrackReason};

/// x86_64 system call numbers of `connect(fd, addr, len)` and
/// `bind(fd, addr, len)`.
pub(crate) const NR_CONNECT: u64 = 42;
pub(crate) const NR_BIND: u64 = 49;

/// Whether port selectors are configured (else the calls need no look).
#[inline(always)]
pub(crate) fn port_selectors_on() -> bool {
    config().is_some_and(|cfg| cfg.flags & config_flags::PORT_SELECTORS != 0)
}

/// `bind` or `connect` with the user `sockaddr` at `addr`: a process that
/// binds or connects to a selected TCP port is tracked from then on, so
/// its connections are captured from their first byte.
#[inline(always)]
pub(crate) fn on_port_call(addr: u64) {
    let Some(cfg) = config() else { return };
    if cfg.flags & config_flags::PORT_SELECTORS == 0 {
        return;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == cfg.self_tgid {
        return;
    }
    // struct sockaddr_in / sockaddr_in6: family, then the port in network
    // order at the same offset.
    // SAFETY: uread of a u16 (any bit pattern valid); the helper checks the
    // user address and fails instead of faulting.
    let Some(family) = (unsafe { uread::<u16>(addr) }) else {
        return;
    };
    if family != 2 && family != 10 {
        return;
    }
    // SAFETY: as for `family`: a u16, helper-checked address.
    let Some(port) = (unsafe { uread::<u16>(addr + 2) }) else {
        return;
    };
    let port = u16::from_be(port);
    // SAFETY: only presence is tested; the value is never read.
    if unsafe { PORT_SELECTORS.get(&port) }.is_none() {
        return;
    }
    if tracked_reason(cfg, tgid) == TrackReason::None as u32 {
        track(tgid, current_start_ns(cfg), TrackReason::PortSelector);
    }
}
