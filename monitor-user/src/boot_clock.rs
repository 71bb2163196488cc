//! The kernel's clocks: records are stamped with `CLOCK_BOOTTIME`, events
//! carry Unix time; the offset between them is measured here once when
//! capture starts and travels with recordings.

/// Nanoseconds to add to a `CLOCK_BOOTTIME` reading to get Unix time.
pub fn boot_to_unix_offset_ns() -> i128 {
    fn now(clock: libc::clockid_t) -> i128 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: valid clock id and a valid out pointer.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
    }
    // Bracket the boot-time read between two real-time reads.
    let a = now(libc::CLOCK_REALTIME);
    let b = now(libc::CLOCK_BOOTTIME);
    let c = now(libc::CLOCK_REALTIME);
    (a + c) / 2 - b
}

/// Current `CLOCK_BOOTTIME` in ns.
pub fn boot_now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid clock id and a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_is_plausible() {
        let off = boot_to_unix_offset_ns();
        // Booted after 2020 and not in the future.
        assert!(off > 1_577_836_800 * 1_000_000_000);
        assert!(boot_now_ns() > 0);
    }
}
