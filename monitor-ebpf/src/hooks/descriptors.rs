//! Descriptor life cycle: a closed descriptor's number comes back for the
//! next file the process opens, so what is known of it (`KNOWN_FILES`,
//! what it refers to; `JUDGED`, the thinning of looks at streams without
//! MCP) is forgotten when it is closed or replaced. Otherwise a new file
//! would be taken for the old one, and the files a process reads at start
//! (an interpreter's modules: hundreds of reads on a few numbers within
//! milliseconds) would have the looks at its MCP stream thinned before its
//! first message.

use crate::{
    hooks::SavedRegs, known_files::forget_known_file, maps::config, threads::current_caller, transfer::forget_judged,
};
use monitor_common::config_flags;

/// x86_64 system call numbers: `close(fd)`; `dup2(old, new)` and
/// `dup3(old, new, flags)`, which close `new` first if it was open.
pub(crate) const NR_CLOSE: u64 = 3;
pub(crate) const NR_DUP2: u64 = 33;
pub(crate) const NR_DUP3: u64 = 292;

/// Forgets descriptor `fd` of the current process (whose call's registers
/// are `regs`): closed or replaced.
#[inline(always)]
pub(crate) fn forget(regs: &SavedRegs, fd: u64) {
    let Some(cfg) = config() else { return };
    let pid_tgid = current_caller(regs).pid_tgid;
    forget_known_file(pid_tgid, fd as i32);
    if cfg.flags & config_flags::DISCOVERY != 0 {
        forget_judged(pid_tgid, fd as i32);
    }
}
