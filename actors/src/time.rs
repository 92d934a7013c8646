//! Time: wall-clock milliseconds for records and limits, behind a [`Clock`]
//! so that tests can move time (month rollover of quotas), and the UTC
//! calendar month a quota counts in.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Where limits and quotas read the time.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// A clock that tests set and move: the system time plus an offset.
#[derive(Default)]
pub struct OffsetClock {
    offset_ms: AtomicI64,
}

impl OffsetClock {
    pub fn advance_ms(&self, ms: i64) {
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

impl Clock for OffsetClock {
    fn now_ms(&self) -> i64 {
        now_ms() + self.offset_ms.load(Ordering::Relaxed)
    }
}

/// The UTC calendar month of a time, as `YYYY-MM`.
pub fn month_of(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let (year, month, _) = civil_from_days(days);
    format!("{year:04}-{month:02}")
}

/// Milliseconds at the start of the UTC month after the one holding `ms`.
pub fn next_month_start_ms(ms: i64) -> i64 {
    let (year, month, _) = civil_from_days(ms.div_euclid(86_400_000));
    let (y, m) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    days_from_civil(y, m, 1) * 86_400_000
}

/// The month of `ms` and the `n - 1` months before it, newest first.
pub fn recent_months(ms: i64, n: usize) -> Vec<String> {
    let mut months = Vec::with_capacity(n);
    let mut at = ms;
    for _ in 0..n {
        months.push(month_of(at));
        let (year, month, _) = civil_from_days(at.div_euclid(86_400_000));
        at = days_from_civil(year, month, 1) * 86_400_000 - 1;
    }
    months
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-27T12:00:00.000Z`.
pub fn rfc3339(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (y, m, d).
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

/// The inverse: (y, m, d) to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_in_utc() {
        assert_eq!(month_of(0), "1970-01");
        assert_eq!(month_of(1_764_547_199_999), "2025-11"); // 2025-11-30T23:59:59.999Z
        assert_eq!(month_of(1_764_547_200_000), "2025-12");
        assert_eq!(month_of(1_709_164_800_000), "2024-02"); // 2024-02-29 (leap day)
        assert_eq!(month_of(1_767_225_599_999), "2025-12");
        assert_eq!(month_of(1_767_225_600_000), "2026-01");
        assert_eq!(next_month_start_ms(1_764_547_199_999), 1_764_547_200_000);
        assert_eq!(next_month_start_ms(1_767_225_000_000), 1_767_225_600_000);
        for day in (0..30_000).step_by(7) {
            assert_eq!(days_from_civil_roundtrip(day), day);
        }
    }

    fn days_from_civil_roundtrip(day: i64) -> i64 {
        let (y, m, d) = civil_from_days(day);
        days_from_civil(y, m, d)
    }

    #[test]
    fn recent_months_and_rfc3339() {
        assert_eq!(
            recent_months(1_767_225_600_000, 3),
            ["2026-01", "2025-12", "2025-11"]
        );
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_767_225_601_234), "2026-01-01T00:00:01.234Z");
    }

    #[test]
    fn offset_clock_moves() {
        let clock = OffsetClock::default();
        let before = clock.now_ms();
        clock.advance_ms(40 * 86_400_000);
        assert!(clock.now_ms() - before >= 40 * 86_400_000);
    }
}
