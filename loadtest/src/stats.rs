//! Percentiles of latency samples.
//!
//! Samples are microseconds. Percentiles use the nearest-rank definition (the
//! smallest sample such that at least q% of the samples are at or below it),
//! so every reported figure is a latency that was really observed, and p100
//! is the maximum.

use serde::{Deserialize, Serialize};

/// The nearest-rank percentile `q` (0 < q <= 100) of ascending `sorted`
/// samples; `None` when there are none.
pub fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = (q.clamp(0.0, 100.0) / 100.0 * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
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
    /// Summarises `samples` (sorting them in place).
    pub fn of(samples: &mut [u64]) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        samples.sort_unstable();
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        let at = |q| percentile(samples, q).unwrap_or(0);
        Summary {
            count: samples.len() as u64,
            mean_us: sum as f64 / samples.len() as f64,
            p50_us: at(50.0),
            p90_us: at(90.0),
            p99_us: at(99.0),
            max_us: at(100.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_on_one_to_hundred() {
        let samples: Vec<u64> = (1..=100).collect();
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
        // Ten samples: p50 is the 5th, p90 the 9th, p99 the 10th.
        let ten: Vec<u64> = (10..=100).step_by(10).collect();
        assert_eq!(percentile(&ten, 50.0), Some(50));
        assert_eq!(percentile(&ten, 90.0), Some(90));
        assert_eq!(percentile(&ten, 99.0), Some(100));
        assert_eq!(Summary::of(&mut []), Summary::default());
    }

    #[test]
    fn summary_sorts_and_averages() {
        let mut samples = vec![5, 1, 4, 2, 3];
        let summary = Summary::of(&mut samples);
        assert_eq!(samples, [1, 2, 3, 4, 5]);
        assert_eq!(summary.count, 5);
        assert!((summary.mean_us - 3.0).abs() < 1e-9);
        assert_eq!((summary.p50_us, summary.p90_us), (3, 5));
        assert_eq!((summary.p99_us, summary.max_us), (5, 5));
    }
}
