//! Time: wall-clock milliseconds for records and limits, behind a [`Clock`]
//! so that tests can move time (month rollover of quotas), and the UTC
//! calendar month a quota counts in.
//!
//! Calendar arithmetic is `jiff`'s (a well-kept date library), not ours:
//! the month of an instant, the start of the next one, RFC 3339 text.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;

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

fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A UTC calendar month: what a quota counts in. Written `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Month(Date);

impl Month {
    /// The month holding the instant `ms` (milliseconds since the epoch).
    pub fn of(ms: i64) -> Month {
        let date = timestamp(ms).to_zoned(TimeZone::UTC).date();
        Month(date.first_of_month())
    }

    /// The month before this one.
    pub fn previous(self) -> Month {
        Month(
            self.0
                .checked_sub(jiff::Span::new().months(1))
                .unwrap_or(self.0),
        )
    }

    /// Milliseconds at the start of the month after this one.
    pub fn next_start_ms(self) -> i64 {
        self.0
            .checked_add(jiff::Span::new().months(1))
            .and_then(|d| d.to_zoned(TimeZone::UTC))
            .map(|z| z.timestamp().as_millisecond())
            .unwrap_or(i64::MAX)
    }

    /// This month and the `n - 1` before it, newest first.
    pub fn recent(self, n: usize) -> Vec<Month> {
        std::iter::successors(Some(self), |m| Some(m.previous()))
            .take(n)
            .collect()
    }

    /// Parses `YYYY-MM` (digits only: what [`Month`] prints, and nothing
    /// else, so that a month reads back as the text it came from).
    pub fn parse(text: &str) -> Option<Month> {
        let (year, month) = text.split_once('-')?;
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(year, 4) || !digits(month, 2) {
            return None;
        }
        Date::new(year.parse().ok()?, month.parse().ok()?, 1)
            .ok()
            .map(Month)
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.0.year(), self.0.month())
    }
}

impl serde::Serialize for Month {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Month {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Month, D::Error> {
        let text = String::deserialize(d)?;
        Month::parse(&text).ok_or_else(|| serde::de::Error::custom("a month is YYYY-MM"))
    }
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-27T12:00:00.000Z`.
pub fn rfc3339(ms: i64) -> String {
    timestamp(ms).strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_in_utc() {
        let month = |ms| Month::of(ms).to_string();
        assert_eq!(month(0), "1970-01");
        assert_eq!(month(1_764_547_199_999), "2025-11"); // 2025-11-30T23:59:59.999Z
        assert_eq!(month(1_764_547_200_000), "2025-12");
        assert_eq!(month(1_709_164_800_000), "2024-02"); // 2024-02-29 (leap day)
        assert_eq!(month(1_767_225_599_999), "2025-12");
        assert_eq!(month(1_767_225_600_000), "2026-01");
        assert_eq!(
            Month::of(1_764_547_199_999).next_start_ms(),
            1_764_547_200_000
        );
        assert_eq!(
            Month::of(1_767_225_000_000).next_start_ms(),
            1_767_225_600_000
        );
        assert_eq!(Month::parse("2026-01"), Some(Month::of(1_767_225_600_000)));
        assert_eq!(Month::parse("2026-13"), None);
        assert_eq!(Month::parse("26-01"), None);
        assert_eq!(Month::parse("+026-01"), None, "digits only");
        assert_eq!(Month::parse("2026-+1"), None, "digits only");
    }

    #[test]
    fn recent_months_and_rfc3339() {
        let recent: Vec<String> = Month::of(1_767_225_600_000)
            .recent(3)
            .iter()
            .map(Month::to_string)
            .collect();
        assert_eq!(recent, ["2026-01", "2025-12", "2025-11"]);
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
