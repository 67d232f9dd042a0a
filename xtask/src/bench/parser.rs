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
