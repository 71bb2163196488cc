//! Time formats of events and alerts (RFC 3339, UTC, nanoseconds).
//!
//! The kernel stamps records with `CLOCK_BOOTTIME`; events carry wall-clock
//! time. The agent measures the offset between the two once when capture
//! starts (`boot_clock` in the agent crate) and recordings store it, so a
//! replay prints the same times as the live run.

/// Formats Unix nanoseconds as RFC 3339 UTC with nanoseconds
/// (`2026-11-22T10:00:00.123456789Z`).
pub fn rfc3339(unix_ns: i128) -> String {
    let mut buf = [0u8; 30];
    let n = rfc3339_into(unix_ns, &mut buf);
    // Only ASCII digits and separators were written.
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Writes the RFC 3339 form into `buf` without allocating; returns its
/// length (30 for years 0-9999).
pub fn rfc3339_into(unix_ns: i128, buf: &mut [u8; 30]) -> usize {
    let secs = unix_ns.div_euclid(1_000_000_000) as i64;
    let nanos = unix_ns.rem_euclid(1_000_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    let y = y.clamp(0, 9999) as u32;
    let mut put = |at: usize, v: u32, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, y, 4);
    put(5, m, 2);
    put(8, d, 2);
    put(11, sod / 3600, 2);
    put(14, sod % 3600 / 60, 2);
    put(17, sod % 60, 2);
    put(20, nanos, 9);
    buf[4] = b'-';
    buf[7] = b'-';
    buf[10] = b'T';
    buf[13] = b':';
    buf[16] = b':';
    buf[19] = b'.';
    buf[29] = b'Z';
    30
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400_000_000_001), "2000-02-29T00:00:00.000000001Z");
        assert_eq!(rfc3339(1_795_000_000_123_456_789), "2026-11-18T11:06:40.123456789Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn agrees_with_humantime() {
        for secs in [0i64, 86_399, 1_000_000_000, 1_700_000_000, 4_102_444_800] {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
            let expect = humantime::format_rfc3339_nanos(t).to_string();
            assert_eq!(rfc3339(secs as i128 * 1_000_000_000), expect);
        }
    }
}
