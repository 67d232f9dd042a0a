//! PutMetricData calls: rounds published to the AWS emulator, then a backlog flushed at
//! once (the driver's `cloudwatch` scenario).

use std::path::Path;

use sandbox::bench_report::CloudWatchReport;

use super::report::Report;
use super::{Sizes, args, driver_report};

/// The batch size upstream's helper sends per PutMetricData call.
const UPSTREAM_DATUMS_PER_CALL: f64 = 20.0;

pub(super) async fn run(driver: &Path, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    eprintln!("CloudWatch calls...");
    let result: CloudWatchReport = driver_report(
        driver,
        &args(&[
            "cloudwatch",
            "--nodes",
            &sizes.cloudwatch_nodes.to_string(),
            "--rounds",
            &sizes.cloudwatch_rounds.to_string(),
            "--backlog-rounds",
            &sizes.cloudwatch_backlog_rounds.to_string(),
        ]),
    )
    .await?;
    let steady_datums: Vec<f64> = result
        .round_datums
        .iter()
        .map(|&datums| datums as f64)
        .collect();
    let steady_calls = result.steady_recorded.put_metric_data_datums.len() as f64;
    let steady_total: f64 = steady_datums.iter().sum();
    let expected_steady: f64 = steady_datums
        .iter()
        .map(|datums| (datums / 1000.0).ceil())
        .sum();
    let backlog_datums = result.backlog_datums as f64;
    let backlog_calls = result.backlog_recorded.put_metric_data_datums.len() as f64;
    let expected_backlog = (backlog_datums / 1000.0).ceil();
    let max_bytes = result
        .steady_recorded
        .put_metric_data_bytes
        .iter()
        .chain(&result.backlog_recorded.put_metric_data_bytes)
        .map(|&bytes| bytes as f64)
        .fold(0.0, f64::max);
    let per_call = steady_total / steady_calls.max(1.0);
    let backlog_per_call = backlog_datums / backlog_calls.max(1.0);
    report.line(format!(
        "CloudWatch: {} rounds of {steady_total} datums in {steady_calls} PutMetricData calls ({per_call:.1} datums per call; upstream sends {UPSTREAM_DATUMS_PER_CALL}); a backlog of {backlog_datums} datums in {backlog_calls} calls ({backlog_per_call:.0} per call); largest request body {max_bytes} bytes (as recorded, awsJson)",
        steady_datums.len(),
    ));
    report.set("cloudwatch_datums_per_call", per_call);
    report.set(
        "cloudwatch_upstream_datums_per_call",
        UPSTREAM_DATUMS_PER_CALL,
    );
    report.set("cloudwatch_round_calls", steady_calls);
    report.set("cloudwatch_backlog_datums", backlog_datums);
    report.set("cloudwatch_backlog_calls", backlog_calls);
    report.set("cloudwatch_backlog_datums_per_call", backlog_per_call);
    report.set("cloudwatch_max_request_bytes", max_bytes);
    let calls_ok = steady_calls == expected_steady && backlog_calls == expected_backlog;
    report.target(
        "CloudWatch calls = ceil(datums / 1000)",
        calls_ok,
        format!(
            "{steady_calls} calls for {steady_total} datums in {} rounds (expected {expected_steady}); {backlog_calls} for a backlog of {backlog_datums} (expected {expected_backlog})",
            steady_datums.len()
        ),
    );
    report.target(
        "every PutMetricData request < 1 MB",
        max_bytes < 1_000_000.0,
        format!("largest {max_bytes} bytes"),
    );
    Ok(())
}
