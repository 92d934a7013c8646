//! The two pictures of a run, as SVG (plotters' SVG backend needs no system
//! fonts): server-added latency per token over time (p50, p99 and max per
//! 250 ms), and its histogram.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use plotters::prelude::*;

use crate::report::Report;
use crate::stats::{percentile, Percentiles};

const BUCKET_MS: u32 = 250;

/// (start s, p50 ms, p99 ms, max ms) of one time bucket.
type Row = (f64, f64, f64, f64);
const BINS: u64 = 60;

/// One row per time bucket: (start s, p50 ms, p99 ms, max ms).
pub fn over_time(timeline: &[(u32, u32)]) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut i = 0;
    while i < timeline.len() {
        let bucket = timeline[i].0 / BUCKET_MS;
        let mut values: Vec<u64> = Vec::new();
        while i < timeline.len() && timeline[i].0 / BUCKET_MS == bucket {
            values.push(u64::from(timeline[i].1));
            i += 1;
        }
        let Some(percentiles) = Percentiles::of(&values) else {
            continue;
        };
        let ms = |us: u64| us as f64 / 1000.0;
        rows.push((
            f64::from(bucket * BUCKET_MS) / 1000.0,
            ms(percentiles.at(50.0)),
            ms(percentiles.at(99.0)),
            ms(percentiles.max()),
        ));
    }
    rows
}

/// Counts per bin of `width_us` up to the p99.9 (the last bin holds the rest).
pub fn histogram(values: &[u64]) -> (u64, Vec<u64>) {
    let top = percentile(values, 99.9).unwrap_or(0).max(1);
    let width = top.div_ceil(BINS).max(1);
    let mut counts = vec![0u64; BINS as usize + 1];
    for &v in values.iter() {
        counts[((v / width) as usize).min(BINS as usize)] += 1;
    }
    (width, counts)
}

/// Writes `{stem}.latency-over-time.svg` and `{stem}.latency-histogram.svg`.
pub fn write(report: &Report, stem: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if report.timeline.is_empty() {
        bail!("no stamped tokens: give the server the model `mock-stamped`");
    }
    let name = |suffix: &str| {
        let mut path = stem.as_os_str().to_owned();
        path.push(suffix);
        PathBuf::from(path)
    };
    let time_path = name(".latency-over-time.svg");
    let hist_path = name(".latency-histogram.svg");
    let title = &report.target;

    let rows = over_time(&report.timeline);
    let x_max = rows.last().map_or(1.0, |r| r.0 + 0.25);
    let y_max = rows.iter().map(|r| r.2).fold(0.1_f64, f64::max) * 1.2;
    {
        let root = SVGBackend::new(&time_path, (1000, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("server-added latency per token: {title}"),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the run started")
            .y_desc("ms (p99 scale; max clipped)")
            .draw()?;
        let series: [(&str, RGBColor, usize); 3] = [
            ("p50", BLUE, 1),
            ("p99", RED, 2),
            ("max", RGBColor(160, 160, 160), 3),
        ];
        let pick = |r: &Row, column: usize| match column {
            1 => r.1,
            2 => r.2,
            _ => r.3,
        };
        for (label, color, column) in series {
            chart
                .draw_series(LineSeries::new(
                    rows.iter().map(|r| (r.0, pick(r, column).min(y_max))),
                    color,
                ))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart.configure_series_labels().border_style(BLACK).draw()?;
        root.present().context("cannot write the SVG")?;
    }

    let values: Vec<u64> = report.timeline.iter().map(|&(_, v)| u64::from(v)).collect();
    let (width, counts) = histogram(&values);
    {
        let root = SVGBackend::new(&hist_path, (1000, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let x_max = (width * (BINS + 1)) as f64 / 1000.0;
        let y_max = counts.iter().copied().max().unwrap_or(1) as f64 * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "server-added latency per token, {} tokens: {title}",
                    values.len()
                ),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(65)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("ms (last bar: above p99.9)")
            .y_desc("tokens")
            .draw()?;
        chart.draw_series(counts.iter().enumerate().map(|(bin, &count)| {
            let x0 = (bin as u64 * width) as f64 / 1000.0;
            let x1 = ((bin as u64 + 1) * width) as f64 / 1000.0;
            Rectangle::new([(x0, 0.0), (x1, count as f64)], BLUE.mix(0.6).filled())
        }))?;
        root.present().context("cannot write the SVG")?;
    }
    Ok(vec![time_path, hist_path])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_bins() {
        // Under 2 048 µs, so the histogram's figures are exact.
        let timeline = [(0, 1_000), (10, 2_000), (260, 1_500)];
        let rows = over_time(&timeline);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], (0.0, 1.0, 2.0, 2.0));
        assert_eq!(rows[1], (0.25, 1.5, 1.5, 1.5));
        let values: Vec<u64> = (1..=1000).collect();
        let (width, counts) = histogram(&values);
        assert_eq!(counts.iter().sum::<u64>(), 1000);
        assert_eq!(width, 999_u64.div_ceil(BINS));
    }

    #[test]
    fn writes_two_svgs() {
        let report = Report {
            target: "test".into(),
            timeline: (0..500).map(|i| (i * 10, 100 + i % 50)).collect(),
            ..Report::default()
        };
        let stem = std::env::temp_dir().join(format!("skald-plot-{}", std::process::id()));
        let paths = write(&report, &stem).unwrap();
        for path in paths {
            let svg = std::fs::read_to_string(&path).unwrap();
            assert!(
                svg.starts_with("<svg") && svg.contains("latency"),
                "{path:?}"
            );
            std::fs::remove_file(path).unwrap();
        }
        assert!(write(&Report::default(), &stem).is_err());
    }
}
