//! Percentiles of latency samples, from an HdrHistogram.
//!
//! Samples are microseconds. Percentiles come from the `hdrhistogram` crate
//! (3 significant digits) rather than a hand-written rank computation: it is
//! the structure latency tools agree on, and a kept crate is one thing less to
//! get wrong. Its semantics are HdrHistogram's: `p(q)` is the smallest
//! recorded value such that at least q% of the samples are at or below it,
//! reported as the top of its bucket, so a figure is never below the observed
//! sample and at most 0.1% above it (values under 2 048 µs are exact). p100 is
//! the maximum, rounded the same way. The mean is computed exactly from the
//! samples.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Significant decimal digits kept by every histogram (0.1% resolution).
const SIGNIFICANT_DIGITS: u8 = 3;

/// The percentiles of one set of samples.
pub struct Percentiles {
    histogram: Histogram<u64>,
}

impl Percentiles {
    /// Records `samples`; `None` when there are none.
    pub fn of(samples: &[u64]) -> Option<Percentiles> {
        let highest = samples.iter().copied().max()?;
        // Sized to the largest sample, so every record fits; the bounds are
        // valid by construction (high >= 2 * low, 3 digits).
        let mut histogram = Histogram::new_with_max(highest.max(2), SIGNIFICANT_DIGITS)
            .expect("valid HdrHistogram bounds");
        for &sample in samples {
            histogram.saturating_record(sample);
        }
        Some(Percentiles { histogram })
    }

    /// The percentile `q` (0 <= q <= 100, clamped).
    pub fn at(&self, q: f64) -> u64 {
        self.histogram
            .value_at_quantile(q.clamp(0.0, 100.0) / 100.0)
    }

    /// The largest sample (at its bucket's top, like every percentile).
    pub fn max(&self) -> u64 {
        self.histogram.max()
    }

    /// The number of samples.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }
}

/// The percentile `q` (0 <= q <= 100) of `samples`; `None` when there are none.
pub fn percentile(samples: &[u64], q: f64) -> Option<u64> {
    Percentiles::of(samples).map(|percentiles| percentiles.at(q))
}

/// Count, mean and percentiles of one figure, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Summary {
    /// Summarises `samples` (all zero when there are none).
    pub fn of(samples: &[u64]) -> Summary {
        let Some(percentiles) = Percentiles::of(samples) else {
            return Summary::default();
        };
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Summary {
            count: percentiles.count(),
            mean_us: sum as f64 / samples.len() as f64,
            p50_us: percentiles.at(50.0),
            p90_us: percentiles.at(90.0),
            p99_us: percentiles.at(99.0),
            max_us: percentiles.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_ranks_on_one_to_hundred() {
        // Below 2 048 every value has its own bucket: exact nearest rank.
        let samples: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentile(&samples, 50.0), Some(50));
        assert_eq!(percentile(&samples, 90.0), Some(90));
        assert_eq!(percentile(&samples, 99.0), Some(99));
        assert_eq!(percentile(&samples, 99.5), Some(100));
        assert_eq!(percentile(&samples, 100.0), Some(100));
        assert_eq!(percentile(&samples, 0.0), Some(1));
    }

    #[test]
    fn small_and_empty_sets() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7], 1.0), Some(7));
        assert_eq!(percentile(&[7], 100.0), Some(7));
        assert_eq!(percentile(&[0, 0, 3], 50.0), Some(0));
        // Ten samples: p50 is the 5th, p90 the 9th, p99 the 10th.
        let ten: Vec<u64> = (10..=100).step_by(10).collect();
        assert_eq!(percentile(&ten, 50.0), Some(50));
        assert_eq!(percentile(&ten, 90.0), Some(90));
        assert_eq!(percentile(&ten, 99.0), Some(100));
        assert_eq!(Summary::of(&[]), Summary::default());
    }

    /// Within 0.1% of `exact` and never below it.
    fn close(value: u64, exact: u64) -> bool {
        value >= exact && (value - exact) as f64 <= exact as f64 * 0.001
    }

    #[test]
    fn large_values_are_within_a_thousandth() {
        // 1 ms .. 1 s in 1 ms steps: the true p50 is 500 ms, p99 990 ms.
        let samples: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let summary = Summary::of(&samples);
        assert!(close(summary.p50_us, 500_000), "{summary:?}");
        assert!(close(summary.p90_us, 900_000), "{summary:?}");
        assert!(close(summary.p99_us, 990_000), "{summary:?}");
        assert!(close(summary.max_us, 1_000_000), "{summary:?}");
        assert!((summary.mean_us - 500_500.0).abs() < 1e-6);
    }

    #[test]
    fn one_outlier_moves_the_max_not_the_p99() {
        let mut samples = vec![10; 99];
        samples.push(5_000_000);
        let summary = Summary::of(&samples);
        assert_eq!((summary.p50_us, summary.p99_us), (10, 10));
        assert!(close(summary.max_us, 5_000_000), "{summary:?}");
        assert_eq!(summary.count, 100);
        assert!((summary.mean_us - 50_009.9).abs() < 1e-6);
    }

    #[test]
    fn summary_of_unsorted_samples() {
        let summary = Summary::of(&[5, 1, 4, 2, 3]);
        assert_eq!(summary.count, 5);
        assert!((summary.mean_us - 3.0).abs() < 1e-9);
        assert_eq!((summary.p50_us, summary.p90_us), (3, 5));
        assert_eq!((summary.p99_us, summary.max_us), (5, 5));
    }
}
