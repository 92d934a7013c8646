//! The result of a `run`: a JSON report and the tables printed from it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::stats::Summary;

/// The figures in every report, in table order: (key, description).
pub const FIGURES: [(&str, &str); 6] = [
    ("connect", "connect (TCP + upgrade + ready)"),
    ("send_to_ack", "send to ack"),
    ("send_to_upstream", "send to upstream request"),
    ("send_to_first_delta", "send to first delta"),
    ("inter_delta_gap", "gap between deltas"),
    ("added_per_token", "server-added latency per token"),
];

/// What one `run` measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The WebSocket URL that was loaded.
    pub target: String,
    /// The load, as configured (no secret).
    pub load: serde_json::Value,
    pub started_unix_ms: u64,
    pub elapsed_s: f64,
    pub sessions: u64,
    pub sessions_connected: u64,
    pub messages_sent: u64,
    /// Messages whose stream ended with `done` (any finish reason).
    pub messages_done: u64,
    pub deltas: u64,
    /// Stamped tokens seen (model `mock-stamped`); 0 otherwise.
    pub stamped_tokens: u64,
    pub frames_in: u64,
    pub bytes_in: u64,
    pub frames_out: u64,
    pub bytes_out: u64,
    /// Errors by protocol code, plus the harness's own kinds (`connect`,
    /// `timeout`, `deadline`, `connection_lost`, `close_<code>`, `undecodable`).
    pub errors: BTreeMap<String, u64>,
    /// Latency figures by key (see [`FIGURES`]), microseconds.
    pub latency: BTreeMap<String, Summary>,
    /// Every stamped token as (ms since the run started, added µs), in time
    /// order: what the plots are drawn from. Not written to the JSON report.
    #[serde(skip)]
    pub timeline: Vec<(u32, u32)>,
}

impl Report {
    /// Deltas received per second of the run.
    pub fn deltas_per_second(&self) -> f64 {
        self.per_second(self.deltas)
    }

    /// Stamped tokens delivered per second of the run (several tokens may
    /// share one delta).
    pub fn tokens_per_second(&self) -> f64 {
        self.per_second(self.stamped_tokens)
    }

    fn per_second(&self, count: u64) -> f64 {
        if self.elapsed_s > 0.0 {
            count as f64 / self.elapsed_s
        } else {
            0.0
        }
    }

    /// A summary by key, zero when the figure was not measured.
    pub fn figure(&self, key: &str) -> Summary {
        self.latency.get(key).copied().unwrap_or_default()
    }

    /// The report as a human-readable table (milliseconds).
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: {} of {} sessions connected, {} messages sent, {} done, {} deltas ({:.0}/s), {} stamped tokens ({:.0}/s), {:.1} s",
            self.target,
            self.sessions_connected,
            self.sessions,
            self.messages_sent,
            self.messages_done,
            self.deltas,
            self.deltas_per_second(),
            self.stamped_tokens,
            self.tokens_per_second(),
            self.elapsed_s
        );
        let _ = writeln!(
            out,
            "frames in/out {}/{}, bytes in/out {}/{}",
            self.frames_in, self.frames_out, self.bytes_in, self.bytes_out
        );
        latency_table(&mut out, &FIGURES, &self.latency);
        errors_line(&mut out, &self.errors);
        out
    }
}

/// The latency table of a report: a header and one row per measured figure
/// of `figures` (key, label), count, p50, p90, p99 and max in milliseconds.
pub fn latency_table(
    out: &mut String,
    figures: &[(&str, &str)],
    latency: &BTreeMap<String, Summary>,
) {
    let _ = writeln!(
        out,
        "| {:<32} | {:>8} | {:>9} | {:>9} | {:>9} | {:>9} |",
        "figure (ms)", "count", "p50", "p90", "p99", "max"
    );
    let _ = writeln!(
        out,
        "|{:-<34}|{:->10}|{:->11}|{:->11}|{:->11}|{:->11}|",
        "", "", "", "", "", ""
    );
    for (key, label) in figures {
        let s = latency.get(*key).copied().unwrap_or_default();
        if s.count == 0 {
            continue;
        }
        let _ = writeln!(
            out,
            "| {:<32} | {:>8} | {:>9} | {:>9} | {:>9} | {:>9} |",
            label,
            s.count,
            ms(s.p50_us),
            ms(s.p90_us),
            ms(s.p99_us),
            ms(s.max_us)
        );
    }
}

/// `errors: none`, or `errors: kind=count, …`.
/// Errors counted by kind, by any number of tasks at once.
#[derive(Default)]
pub struct ErrorCounts(std::sync::Mutex<BTreeMap<String, u64>>);

impl ErrorCounts {
    /// Counts one error of `kind`.
    pub fn add(&self, kind: impl Into<String>) {
        *self.lock().entry(kind.into()).or_default() += 1;
    }

    /// The counts so far, by kind.
    pub fn by_kind(&self) -> BTreeMap<String, u64> {
        self.lock().clone()
    }

    /// How many errors so far, of every kind.
    pub fn total(&self) -> u64 {
        self.lock().values().sum()
    }

    /// The map; a task that panicked holding it left it whole (each change
    /// is one increment), so a poisoned lock is taken as it is.
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub fn errors_line(out: &mut String, errors: &BTreeMap<String, u64>) {
    if errors.is_empty() {
        let _ = writeln!(out, "errors: none");
    } else {
        let list: Vec<String> = errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "errors: {}", list.join(", "));
    }
}

/// Microseconds as milliseconds with three decimals.
pub fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// `target / baseline` with two decimals, `-` when the baseline is zero.
pub fn ratio(target: f64, baseline: f64) -> String {
    if baseline > 0.0 {
        format!("{:.2}", target / baseline)
    } else {
        "-".into()
    }
}

/// Target against baseline, measured in the same run: p50 and p99 of every
/// figure and the delivered deltas per second, with ratios (target / baseline).
pub fn comparison_table(target: &Report, baseline: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| {:<44} | {:>10} | {:>10} | {:>6} |",
        "figure", "target", "baseline", "ratio"
    );
    let _ = writeln!(out, "|{:-<46}|{:->12}|{:->12}|{:->8}|", "", "", "", "");
    for (key, label) in FIGURES {
        let (t, b) = (target.figure(key), baseline.figure(key));
        if t.count == 0 && b.count == 0 {
            continue;
        }
        for (name, tv, bv) in [("p50", t.p50_us, b.p50_us), ("p99", t.p99_us, b.p99_us)] {
            let _ = writeln!(
                out,
                "| {:<44} | {:>10} | {:>10} | {:>6} |",
                format!("{label}, {name} (ms)"),
                ms(tv),
                ms(bv),
                ratio(tv as f64, bv as f64)
            );
        }
    }
    for (name, t, b) in [
        (
            "deltas delivered per second",
            target.deltas_per_second(),
            baseline.deltas_per_second(),
        ),
        (
            "stamped tokens delivered per second",
            target.tokens_per_second(),
            baseline.tokens_per_second(),
        ),
    ] {
        let _ = writeln!(
            out,
            "| {:<44} | {:>10.0} | {:>10.0} | {:>6} |",
            name,
            t,
            b,
            ratio(t, b)
        );
    }
    let errors = |r: &Report| r.errors.values().sum::<u64>();
    let _ = writeln!(
        out,
        "| {:<44} | {:>10} | {:>10} | {:>6} |",
        "errors",
        errors(target),
        errors(baseline),
        ""
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut report = Report {
            target: "ws://127.0.0.1:1/v1/ws".into(),
            elapsed_s: 2.0,
            sessions: 2,
            sessions_connected: 2,
            deltas: 10,
            ..Report::default()
        };
        report.latency.insert(
            "added_per_token".into(),
            Summary::of(&[100, 200, 300, 1_500]),
        );
        report.errors.insert("rate_limited".into(), 3);
        report
    }

    #[test]
    fn json_has_the_documented_keys_and_round_trips() {
        let report = sample();
        let json = serde_json::to_value(&report).unwrap();
        for key in [
            "target",
            "load",
            "started_unix_ms",
            "elapsed_s",
            "sessions",
            "sessions_connected",
            "messages_sent",
            "messages_done",
            "deltas",
            "stamped_tokens",
            "frames_in",
            "bytes_in",
            "frames_out",
            "bytes_out",
            "errors",
            "latency",
        ] {
            assert!(json.get(key).is_some(), "missing {key} in {json}");
        }
        assert_eq!(json["latency"]["added_per_token"]["p99_us"], 1_500);
        assert_eq!(json["errors"]["rate_limited"], 3);
        let back: Report = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn table_shows_milliseconds_and_errors() {
        let table = sample().table();
        assert!(table.contains("server-added latency per token"), "{table}");
        assert!(table.contains("1.500"), "{table}");
        assert!(table.contains("rate_limited=3"), "{table}");
        assert!(table.contains("(5/s)"), "{table}");
        assert!(
            !table.contains("send to ack"),
            "unmeasured rows are left out: {table}"
        );
    }

    #[test]
    fn comparison_divides_target_by_baseline() {
        let baseline = sample();
        let mut target = sample();
        target.latency.insert(
            "added_per_token".into(),
            // Under 2 048 µs, so the histogram's figures are exact.
            Summary::of(&[150, 300, 450, 1_800]),
        );
        target.deltas = 5;
        target.stamped_tokens = 30;
        let table = comparison_table(&target, &baseline);
        let row = table
            .lines()
            .find(|l| l.contains("server-added latency per token, p99"))
            .unwrap();
        assert!(
            row.contains("1.800") && row.contains("1.500") && row.contains("1.20"),
            "{row}"
        );
        let rate = table
            .lines()
            .find(|l| l.contains("deltas delivered"))
            .unwrap();
        assert!(rate.contains("0.50"), "{rate}");
        let tokens = table
            .lines()
            .find(|l| l.contains("tokens delivered"))
            .unwrap();
        assert!(tokens.contains("15") && tokens.contains("-"), "{tokens}");
        assert!(!table.contains("send to ack"), "{table}");
    }
}
