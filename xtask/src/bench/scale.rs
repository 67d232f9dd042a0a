//! Rounds at scale (the driver's `scale` scenario): round time, peak RSS and the initial
//! listing at each fleet size, scraping directly and, at [`PROXY_NODES`], also through the
//! fake API server's pods proxy; at the largest, also the comparison with concurrency 1 (on
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
/// The fleet sizes whose rounds are also measured through the pods proxy (the publisher's
/// default transport), with as many processes and rounds as the direct ones there, in the
/// same fleet, so that the two compare.
const PROXY_NODES: [usize; 2] = [1000, 5000];

/// How the rounds of a measuring process reach the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transport {
    Direct,
    Proxy,
}

impl Transport {
    /// How the human lines name it.
    fn label(self) -> &'static str {
        match self {
            Transport::Direct => "direct",
            Transport::Proxy => "pods proxy",
        }
    }

    /// What the JSON keys of its rounds end in; the direct keys keep their names from
    /// before the proxy was measured.
    fn key_suffix(self) -> &'static str {
        match self {
            Transport::Direct => "",
            Transport::Proxy => "_proxy",
        }
    }
}

/// Runs the scenario; returns the publisher's CPU milliseconds per 1,000 nodes per round
/// through the pods proxy at each fleet size measured that way.
pub(super) async fn run(
    driver: &Path,
    sizes: &Sizes,
    report: &mut Report,
) -> anyhow::Result<Vec<(usize, f64)>> {
    let mut proxy_cpu = Vec::new();
    let largest = sizes
        .scale
        .iter()
        .map(|(nodes, _, _)| *nodes)
        .max()
        .unwrap_or(0);
    for &(nodes, runs, rounds) in &sizes.scale {
        eprintln!("Rounds at {nodes} nodes...");
        let is_largest = nodes == largest;
        let proxy_runs = if PROXY_NODES.contains(&nodes) {
            runs
        } else {
            0
        };
        let arguments = arguments(
            nodes,
            (runs, proxy_runs),
            rounds,
            is_largest.then_some(sizes),
        );
        let result: ScaleReport = driver_report(driver, &arguments).await?;
        let healthy = healthy_runs(nodes, Transport::Direct, &result.runs, report)?;
        if !result.proxy_runs.is_empty() {
            let proxy = healthy_runs(nodes, Transport::Proxy, &result.proxy_runs, report)?;
            proxy_vs_direct(nodes, &proxy, &healthy, report);
            proxy_cpu.push((nodes, proxy.cpu_ms_per_1000_nodes.median));
        }
        if is_largest {
            largest_fleet(nodes, &result, &healthy, report)?;
        }
    }
    Ok(proxy_cpu)
}

/// The driver's arguments for one fleet size, with `runs` measuring processes (direct,
/// pods proxy); `largest` (the sizes) adds the comparison with concurrency 1, the node
/// latency and the hung nodes.
fn arguments(
    nodes: usize,
    (runs, proxy_runs): (usize, usize),
    rounds: usize,
    largest: Option<&Sizes>,
) -> Vec<String> {
    let mut arguments = args(&[
        "scale",
        "--nodes",
        &nodes.to_string(),
        "--runs",
        &runs.to_string(),
        "--proxy-runs",
        &proxy_runs.to_string(),
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

/// What the largest fleet's targets are checked against: the later rounds' durations, the
/// peak RSS of the processes with every node healthy, their first listing and the CPU the
/// publisher spent per round.
pub(super) struct Healthy {
    pub(super) warm: Summary,
    pub(super) rss: Summary,
    pub(super) initial_list: Summary,
    /// The publisher process's CPU time per round, in milliseconds per 1,000 nodes.
    pub(super) cpu_ms_per_1000_nodes: Summary,
    /// Whether every later round scraped every pod.
    pub(super) every_node_counted: bool,
}

/// Reports the processes with every node healthy at one fleet size that reached the nodes
/// by `transport`.
pub(super) fn healthy_runs(
    nodes: usize,
    transport: Transport,
    runs: &[RoundsReport],
    report: &mut Report,
) -> anyhow::Result<Healthy> {
    let mut warm = Vec::new();
    let mut cold = Vec::new();
    let mut peak_rss_mib = Vec::new();
    let mut initial_list = Vec::new();
    let mut cpu_per_1000 = Vec::new();
    let mut errors = 0;
    let mut every_node_counted = true;
    for run in runs {
        let (first, rest) = round_seconds(run);
        cold.extend(first);
        warm.extend(rest);
        peak_rss_mib.push(run.peak_rss_kib as f64 / 1024.0);
        initial_list.push(run.initial_list_s);
        for (position, round) in run.rounds.iter().enumerate() {
            errors += round.scrape_errors + round.parse_errors;
            if position > 0 {
                every_node_counted &= round.pods_scraped == round.pods && round.pods == nodes;
                if round.pods > 0 {
                    cpu_per_1000.push(round.cpu_s * 1000.0 / (round.pods as f64 / 1000.0));
                }
            }
        }
    }
    let warm = Summary::of(&warm).context("no rounds measured")?;
    let cold = Summary::of(&cold).context("no rounds measured")?;
    let rss = Summary::of(&peak_rss_mib).context("no peak RSS measured")?;
    let list = Summary::of(&initial_list).context("no listing measured")?;
    let cpu = Summary::of(&cpu_per_1000).context("no round CPU time measured")?;
    report.line(format!(
        "round at {nodes} nodes (concurrency 64, {}): {}; first round of the process {}; peak RSS {}; initial LIST+WATCH {}; publisher CPU per 1,000 nodes per round {}; failed scrapes {errors}",
        transport.label(),
        warm.text("s"),
        cold.text("s"),
        rss.text("MiB"),
        list.text("s"),
        cpu.text("ms"),
    ));
    let suffix = transport.key_suffix();
    report.set(&format!("round_{nodes}{suffix}_median_s"), warm.median);
    report.set(&format!("round_{nodes}{suffix}_s"), warm.json());
    report.set(&format!("round_{nodes}{suffix}_first_s"), cold.json());
    report.set(&format!("peak_rss_mib_{nodes}{suffix}"), rss.median);
    report.set(&format!("peak_rss_mib_{nodes}{suffix}_runs"), rss.json());
    report.set(
        &format!("cpu_ms_per_1000_nodes_{nodes}{suffix}"),
        cpu.median,
    );
    Ok(Healthy {
        warm,
        rss,
        initial_list: list,
        cpu_ms_per_1000_nodes: cpu,
        every_node_counted,
    })
}

/// How much longer a round through the pods proxy takes than a direct one at the same fleet
/// size, measured in the same fleet: the ratio of the medians of the later rounds.
fn proxy_vs_direct(nodes: usize, proxy: &Healthy, direct: &Healthy, report: &mut Report) {
    let ratio = proxy.warm.median / direct.warm.median;
    report.line(format!(
        "round at {nodes} nodes, pods proxy vs direct: {ratio:.2}x the time ({:.3} s vs {:.3} s); peak RSS {:.1} vs {:.1} MiB",
        proxy.warm.median, direct.warm.median, proxy.rss.median, direct.rss.median,
    ));
    report.set(&format!("round_{nodes}_proxy_vs_direct_ratio"), ratio);
}

/// The targets, which refer to the largest fleet of this invocation, and the scenarios
/// only the largest fleet runs.
fn largest_fleet(
    nodes: usize,
    result: &ScaleReport,
    healthy: &Healthy,
    report: &mut Report,
) -> anyhow::Result<()> {
    let Healthy { warm, rss, .. } = healthy;
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

#[cfg(test)]
mod tests {
    use sandbox::bench_report::MeasuredRound;
    use serde_json::json;

    use super::*;

    fn process(seconds: &[f64], peak_rss_kib: u64) -> RoundsReport {
        RoundsReport {
            concurrency: 64,
            subset: None,
            initial_list_s: 0.1,
            rounds: seconds
                .iter()
                .map(|&seconds| MeasuredRound {
                    seconds,
                    pods: 1000,
                    pods_scraped: 1000,
                    scrape_errors: 0,
                    parse_errors: 0,
                    datums: 20,
                    batches: 1,
                    cpu_s: seconds / 2.0,
                    fleet_cpu_s: None,
                })
                .collect(),
            peak_rss_kib,
            initial_list_cpu_s: 0.05,
            rss_after_list_kib: peak_rss_kib / 2,
            simulation: None,
        }
    }

    #[test]
    fn proxy_rounds_get_their_own_keys_and_the_ratio_to_direct() {
        let mut report = Report::default();
        let direct = [process(&[0.9, 0.2, 0.3], 20 * 1024)];
        let proxy = [process(&[1.0, 0.5, 0.7], 22 * 1024)];
        let direct = healthy_runs(1000, Transport::Direct, &direct, &mut report).expect("direct");
        let proxy = healthy_runs(1000, Transport::Proxy, &proxy, &mut report).expect("proxy");
        proxy_vs_direct(1000, &proxy, &direct, &mut report);

        // The direct keys keep their names; the proxy's are the same with `_proxy`.
        assert_eq!(report.get("round_1000_median_s"), Some(&json!(0.25)));
        assert_eq!(report.get("round_1000_proxy_median_s"), Some(&json!(0.6)));
        assert_eq!(
            report.get("round_1000_proxy_s"),
            Some(&json!({ "median": 0.6, "min": 0.5, "max": 0.7, "runs": 2 }))
        );
        assert_eq!(
            report.get("round_1000_proxy_first_s"),
            Some(&json!({ "median": 1.0, "min": 1.0, "max": 1.0, "runs": 1 }))
        );
        assert_eq!(report.get("peak_rss_mib_1000"), Some(&json!(20.0)));
        assert_eq!(report.get("peak_rss_mib_1000_proxy"), Some(&json!(22.0)));
        assert!(report.get("peak_rss_mib_1000_proxy_runs").is_some());
        assert_eq!(
            report.get("round_1000_proxy_vs_direct_ratio"),
            Some(&json!(0.6 / 0.25))
        );
        let lines = report.lines();
        assert!(lines[0].starts_with("round at 1000 nodes (concurrency 64, direct): 0.25 s"));
        assert!(lines[1].starts_with("round at 1000 nodes (concurrency 64, pods proxy): 0.6 s"));
        assert!(lines[2].starts_with("round at 1000 nodes, pods proxy vs direct: 2.40x"));
    }

    #[test]
    fn both_sizes_of_the_bench_measure_the_proxy_where_they_measure_direct_rounds() {
        for quick in [false, true] {
            let sizes = Sizes::new(quick);
            for nodes in PROXY_NODES {
                let measured = sizes
                    .scale
                    .iter()
                    .any(|&(size, runs, rounds)| size == nodes && runs > 0 && rounds > 1);
                assert!(measured, "{nodes} nodes, quick {quick}");
            }
        }
    }

    #[test]
    fn the_driver_is_asked_for_proxy_runs() {
        let arguments = arguments(1000, (3, 2), 4, None);
        let at = arguments
            .iter()
            .position(|argument| argument == "--proxy-runs")
            .expect("--proxy-runs");
        assert_eq!(arguments[at + 1], "2");
        assert_eq!(arguments[0], "scale");
    }
}
