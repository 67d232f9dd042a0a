//! Rounds at scale (the driver's `scale` scenario): round time, peak RSS and the initial
//! listing at each fleet size; at the largest, also the comparison with concurrency 1 (on
//! loopback and with a modelled node latency) and rounds with 1% of the nodes hung.

use std::path::Path;

use anyhow::Context;
use sandbox::bench_report::{HungReport, LatencyReport, RoundsReport, ScaleReport};

use super::report::{Report, Summary};
use super::{Sizes, args, driver_report};

/// The publisher's default per-pod scrape timeout, which the hung-node scenario runs with.
const SCRAPE_TIMEOUT_MS: u64 = 5000;
/// The latency every simulated node answers with in the concurrency comparison. On
/// loopback a scrape costs only CPU, and two cores shared with the fleet cannot make 64
/// concurrent scrapes much faster than one at a time; a real scrape also waits on the
/// network and on ipamd gathering its ~1,300 samples. Through the API server's pods proxy
/// (upstream's path, and our default) that is two network hops plus the API server, so
/// 5 ms is a conservative figure for it. Both comparisons are reported: on loopback and
/// with this latency.
const NODE_LATENCY_MS: u64 = 5;

pub(super) async fn run(driver: &Path, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let largest = sizes
        .scale
        .iter()
        .map(|(nodes, _, _)| *nodes)
        .max()
        .unwrap_or(0);
    for &(nodes, runs, rounds) in &sizes.scale {
        eprintln!("Rounds at {nodes} nodes...");
        let is_largest = nodes == largest;
        let arguments = arguments(nodes, runs, rounds, is_largest.then_some(sizes));
        let result: ScaleReport = driver_report(driver, &arguments).await?;
        let healthy = healthy_runs(nodes, &result.runs, report)?;
        if is_largest {
            largest_fleet(nodes, &result, &healthy, report)?;
        }
    }
    Ok(())
}

/// The driver's arguments for one fleet size; `largest` (the sizes) adds the comparison
/// with concurrency 1, the node latency and the hung nodes.
fn arguments(nodes: usize, runs: usize, rounds: usize, largest: Option<&Sizes>) -> Vec<String> {
    let mut arguments = args(&[
        "scale",
        "--nodes",
        &nodes.to_string(),
        "--runs",
        &runs.to_string(),
        "--rounds",
        &rounds.to_string(),
        "--timeout-ms",
        &SCRAPE_TIMEOUT_MS.to_string(),
    ]);
    if let Some(sizes) = largest {
        arguments.extend(args(&[
            "--latency-ms",
            &NODE_LATENCY_MS.to_string(),
            "--sequential-subset",
            &sizes.sequential_subset.to_string(),
            "--hang-every",
            "100",
            "--hung-rounds",
            &sizes.hung_rounds.to_string(),
        ]));
    }
    arguments
}

/// What the largest fleet's targets are checked against: the later rounds' durations and
/// the peak RSS of the processes with every node healthy.
struct Healthy {
    warm: Summary,
    rss: Summary,
}

/// Reports the processes with every node healthy at one fleet size.
fn healthy_runs(
    nodes: usize,
    runs: &[RoundsReport],
    report: &mut Report,
) -> anyhow::Result<Healthy> {
    let mut warm = Vec::new();
    let mut cold = Vec::new();
    let mut peak_rss_mib = Vec::new();
    let mut initial_list = Vec::new();
    let mut errors = 0;
    for run in runs {
        let (first, rest) = round_seconds(run);
        cold.extend(first);
        warm.extend(rest);
        peak_rss_mib.push(run.peak_rss_kib as f64 / 1024.0);
        initial_list.push(run.initial_list_s);
        for round in &run.rounds {
            errors += round.scrape_errors + round.parse_errors;
        }
    }
    let warm = Summary::of(&warm).context("no rounds measured")?;
    let cold = Summary::of(&cold).context("no rounds measured")?;
    let rss = Summary::of(&peak_rss_mib).context("no peak RSS measured")?;
    let list = Summary::of(&initial_list).context("no listing measured")?;
    report.line(format!(
        "round at {nodes} nodes (concurrency 64, direct): {}; first round of the process {}; peak RSS {}; initial LIST+WATCH {}; failed scrapes {errors}",
        warm.text("s"),
        cold.text("s"),
        rss.text("MiB"),
        list.text("s"),
    ));
    report.set(&format!("round_{nodes}_median_s"), warm.median);
    report.set(&format!("round_{nodes}_s"), warm.json());
    report.set(&format!("round_{nodes}_first_s"), cold.json());
    report.set(&format!("peak_rss_mib_{nodes}"), rss.median);
    report.set(&format!("peak_rss_mib_{nodes}_runs"), rss.json());
    Ok(Healthy { warm, rss })
}

/// The targets, which refer to the largest fleet of this invocation, and the scenarios
/// only the largest fleet runs.
fn largest_fleet(
    nodes: usize,
    result: &ScaleReport,
    healthy: &Healthy,
    report: &mut Report,
) -> anyhow::Result<()> {
    let Healthy { warm, rss } = healthy;
    // The keys the issue names refer to the largest fleet of this invocation.
    report.set("round_largest_nodes", nodes);
    if nodes != 5000 {
        report.set("round_5000_median_s", warm.median);
        report.set("peak_rss_mib_5000", rss.median);
    }
    report.target(
        &format!("round at {nodes} nodes <= 5 s median"),
        warm.median <= 5.0,
        format!("{:.3} s", warm.median),
    );
    report.target(
        &format!("peak RSS at {nodes} nodes <= 64 MiB"),
        rss.median <= 64.0,
        format!("{:.1} MiB", rss.median),
    );

    if let Some(ratio) = result.sequential.as_ref().and_then(|sequential| {
        sequential_comparison(
            report,
            "sequential_loopback",
            "on loopback",
            nodes,
            warm.median,
            sequential,
        )
    }) {
        report.set("round_vs_sequential_ratio_loopback", ratio);
    }
    if let Some(latency) = &result.latency {
        with_latency(nodes, latency, report)?;
    }
    if let Some(hung) = &result.hung {
        with_hung_nodes(nodes, hung, report)?;
    }
    Ok(())
}

/// Concurrent rounds against nodes that answer late, and how much faster they are than
/// concurrency 1 against the same nodes.
fn with_latency(nodes: usize, latency: &LatencyReport, report: &mut Report) -> anyhow::Result<()> {
    let latency_ms = latency.latency_ms;
    let (_, concurrent) = round_seconds(&latency.run);
    let concurrent = Summary::of(&concurrent).context("no rounds measured with node latency")?;
    let label = format!("with {latency_ms} ms per scrape");
    report.line(format!(
        "round at {nodes} nodes {label} (concurrency 64): {}",
        concurrent.text("s")
    ));
    report.set(
        &format!("round_{nodes}_latency_median_s"),
        concurrent.median,
    );
    report.set("node_latency_ms", latency_ms);
    if let Some(ratio) = sequential_comparison(
        report,
        "sequential_latency",
        &label,
        nodes,
        concurrent.median,
        &latency.sequential,
    ) {
        report.set("round_vs_sequential_ratio", ratio);
        report.target(
            &format!("round >= 20x faster than concurrency 1 ({label})"),
            ratio >= 20.0,
            format!("{ratio:.1}x"),
        );
    }
    Ok(())
}

/// Rounds with 1% of the nodes hung, which must end within the per-pod timeout.
fn with_hung_nodes(nodes: usize, hung: &HungReport, report: &mut Report) -> anyhow::Result<()> {
    let (first, rest) = round_seconds(&hung.run);
    let all: Vec<f64> = first.into_iter().chain(rest).collect();
    let summary = Summary::of(&all).context("no hung rounds measured")?;
    let timeout_s = SCRAPE_TIMEOUT_MS as f64 / 1000.0;
    report.line(format!(
        "round at {nodes} nodes with {} hung (1%), per-pod timeout {timeout_s} s: {}",
        hung.hung_nodes,
        summary.text("s")
    ));
    report.set("hung_round_s", summary.max);
    report.set("hung_round_runs_s", summary.json());
    report.set("hung_nodes", hung.hung_nodes);
    report.set("scrape_timeout_s", timeout_s);
    report.target(
        "hung round <= timeout + 1 s",
        summary.max <= timeout_s + 1.0,
        format!("{:.3} s (worst), timeout {timeout_s} s", summary.max),
    );
    Ok(())
}

/// The round durations of one measuring process: (first round, later rounds).
fn round_seconds(run: &RoundsReport) -> (Vec<f64>, Vec<f64>) {
    let seconds: Vec<f64> = run.round_seconds().collect();
    match seconds.split_first() {
        Some((first, rest)) => (vec![*first], rest.to_vec()),
        None => (Vec::new(), Vec::new()),
    }
}

/// Compares a concurrent round with the sequential (concurrency 1) run of the same scale
/// result, which scraped a subset of the pods and is scaled per pod; returns the ratio.
fn sequential_comparison(
    report: &mut Report,
    key: &str,
    label: &str,
    nodes: usize,
    concurrent_median: f64,
    sequential: &RoundsReport,
) -> Option<f64> {
    let (_, sequential_warm) = round_seconds(sequential);
    let sequential_warm = Summary::of(&sequential_warm)?;
    let subset = sequential.subset.unwrap_or(nodes) as f64;
    let estimated = sequential_warm.median / subset * nodes as f64;
    let ratio = estimated / concurrent_median;
    report.line(format!(
        "sequential (concurrency 1) {label}, measured on {subset} of {nodes} pods and scaled per pod: {:.3} s for {subset} -> {estimated:.2} s for {nodes}; concurrent is {ratio:.1}x faster",
        sequential_warm.median
    ));
    report.set(&format!("{key}_subset_pods"), subset);
    report.set(&format!("{key}_subset_s"), sequential_warm.median);
    report.set(&format!("{key}_estimated_s"), estimated);
    Some(ratio)
}
