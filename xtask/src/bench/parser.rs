//! Parser throughput: our exposition parser against `prometheus-parse` on the same bodies
//! (the driver's `parser` scenario).

use std::path::Path;

use anyhow::Context;
use sandbox::bench_report::ParserReport;

use super::report::{Report, Summary};
use super::{Sizes, args, driver_report};

pub(super) async fn run(driver: &Path, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    eprintln!("Parser throughput...");
    let result: ParserReport = driver_report(
        driver,
        &args(&[
            "parser",
            "--seconds",
            &sizes.parser_seconds.to_string(),
            "--runs",
            &sizes.parser_runs.to_string(),
        ]),
    )
    .await?;
    summarise(&result, report)
}

/// Turns the driver's parser report into lines, output keys and targets.
fn summarise(result: &ParserReport, report: &mut Report) -> anyhow::Result<()> {
    let ours = Summary::of(&result.ours_mb_s).context("no parser runs")?;
    let published = Summary::of(&result.ours_as_published_mb_s).context("no parser runs")?;
    let fast_path = Summary::of(&result.ours_fast_path_mb_s).context("no parser runs")?;
    let theirs = Summary::of(&result.prometheus_parse_mb_s).context("no parser runs")?;
    let ratio = ours.median / theirs.median;
    let body_sizes: Vec<f64> = result
        .body_bytes
        .iter()
        .map(|&bytes| bytes as f64)
        .collect();
    report.line(format!(
        "parser, every sample and label ({} bodies of {:.0}-{:.0} bytes): ours {}, prometheus-parse {}, ratio {ratio:.1}x",
        body_sizes.len(),
        body_sizes.iter().copied().fold(f64::INFINITY, f64::min),
        body_sizes.iter().copied().fold(0.0, f64::max),
        ours.text("MB/s"),
        theirs.text("MB/s"),
    ));
    report.line(format!(
        "parser, only the published families, every label decoded: {}",
        published.text("MB/s")
    ));
    report.line(format!(
        "parser fast path, as the aggregator reads the published families ({} samples): {}",
        result.samples_fast_path,
        fast_path.text("MB/s")
    ));
    report.set("parser_mb_s", ours.median);
    report.set("parser_mb_s_runs", ours.json());
    report.set("parser_as_published_mb_s", published.median);
    report.set("parser_fast_path_mb_s", fast_path.median);
    report.set("parser_fast_path_mb_s_runs", fast_path.json());
    report.set("prometheus_parse_mb_s", theirs.median);
    report.set("prometheus_parse_mb_s_runs", theirs.json());
    report.set("parser_vs_prometheus_parse_ratio", ratio);
    report.target(
        "parser >= 20x prometheus-parse",
        ratio >= 20.0,
        format!("{ratio:.1}x"),
    );
    report.target(
        "parser fast path >= 1000 MB/s",
        fast_path.median >= 1000.0,
        format!("{:.0} MB/s", fast_path.median),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_fast_path_and_the_full_parse_ratio_get_their_keys_and_targets() {
        let result = ParserReport {
            body_bytes: vec![20_000, 21_000],
            samples_ours: 1335,
            samples_prometheus_parse: 1127,
            samples_published_families: 653,
            ours_mb_s: vec![600.0, 640.0, 620.0],
            ours_as_published_mb_s: vec![850.0, 870.0, 860.0],
            ours_fast_path_mb_s: vec![1100.0, 1200.0, 1150.0],
            samples_fast_path: 653,
            prometheus_parse_mb_s: vec![25.0, 24.0, 26.0],
        };
        let mut report = Report::default();
        summarise(&result, &mut report).expect("a complete report");
        assert_eq!(report.get("parser_mb_s"), Some(&json!(620.0)));
        assert_eq!(report.get("parser_as_published_mb_s"), Some(&json!(860.0)));
        assert_eq!(report.get("parser_fast_path_mb_s"), Some(&json!(1150.0)));
        assert!(report.get("parser_fast_path_mb_s_runs").is_some());
        // The ratio is the full parse's, over the same bodies.
        assert_eq!(
            report.get("parser_vs_prometheus_parse_ratio"),
            Some(&json!(620.0 / 25.0))
        );
        assert!(
            report
                .lines()
                .iter()
                .any(|line| line.contains("fast path") && line.contains("653 samples"))
        );
    }
}
