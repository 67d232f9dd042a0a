//! Rounds at the sizes of EKS's largest clusters (20,000 to 100,000 nodes), through the
//! fake API server's pods proxy (the publisher's default transport). One listener per node
//! would need more open files than this machine allows (20,000), so the fleet serves every
//! node from one listener and the proxy reaches each by its address; direct rounds are
//! measured up to 5,000 nodes only (`scale.rs`).
//!
//! Besides round time, peak RSS and the first listing, each size reports what a cluster
//! pays per round: the publisher's CPU time per 1,000 nodes (its own process, not the
//! simulation's), and how much of the round the simulated nodes spent producing their
//! answers, which a real cluster spends on its own nodes.

use std::path::Path;

use anyhow::Context;
use sandbox::bench_report::{RoundsReport, ScaleReport};
use serde_json::{Map, Value};

use super::report::{Report, Summary};
use super::scale::{Healthy, Transport, healthy_runs};
use super::{Sizes, args, driver_report};

/// The publisher's default scrape timeout.
const SCRAPE_TIMEOUT_MS: u64 = 5000;
/// The publisher's default round deadline: 80% of upstream's default 30 s interval.
const ROUND_DEADLINE_MS: u64 = 24_000;
/// Upstream's default interval, within which a round must complete.
const INTERVAL_S: f64 = 30.0;
/// The memory limit the rendered manifests give the publisher.
const MEMORY_LIMIT_MIB: f64 = 256.0;
/// How long the watch cache's first LIST+WATCH of the largest fleet may take.
const INITIAL_LIST_TARGET_S: f64 = 10.0;
/// The publisher's CPU per 1,000 nodes per round that a cluster should pay at most.
const CPU_TARGET_MS: f64 = 40.0;
/// How much the CPU per 1,000 nodes may grow from 1,000 nodes to the largest fleet and
/// still count as flat (linear cost): more would mean a cost growing faster than the fleet.
const CPU_FLAT_GROWTH: f64 = 1.5;

/// Runs every large size; `smaller` holds the CPU per 1,000 nodes measured through the
/// proxy at the smaller sizes (`scale.rs`), so that the growth from 1,000 nodes up is
/// reported in one place.
pub(super) async fn run(
    driver: &Path,
    sizes: &Sizes,
    smaller: &[(usize, f64)],
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut cpu_by_size: Vec<(usize, f64)> = smaller.to_vec();
    let mut largest: Option<(usize, Healthy)> = None;
    for &(nodes, runs, rounds) in &sizes.large {
        eprintln!("Rounds at {nodes} nodes through the pods proxy (one listener for the fleet)...");
        let result: ScaleReport = driver_report(driver, &arguments(nodes, runs, rounds)).await?;
        let healthy = healthy_runs(nodes, Transport::Proxy, &result.proxy_runs, report)?;
        report.set(
            &format!("initial_list_{nodes}_s"),
            healthy.initial_list.median,
        );
        cache_memory(nodes, &result.proxy_runs, report);
        simulation_share(nodes, &result.proxy_runs, report)?;
        api_server_load(nodes, report);
        cpu_by_size.push((nodes, healthy.cpu_ms_per_1000_nodes.median));
        largest = Some((nodes, healthy));
    }
    let Some((nodes, healthy)) = largest else {
        return Ok(());
    };
    targets(nodes, &healthy, report);
    cpu_growth(&cpu_by_size, report);
    Ok(())
}

/// The driver's arguments for one large size: proxy processes only, on a fleet with one
/// listener, with the publisher's default scrape timeout and round deadline.
fn arguments(nodes: usize, runs: usize, rounds: usize) -> Vec<String> {
    args(&[
        "scale",
        "--nodes",
        &nodes.to_string(),
        "--runs",
        "0",
        "--proxy-runs",
        &runs.to_string(),
        "--rounds",
        &rounds.to_string(),
        "--timeout-ms",
        &SCRAPE_TIMEOUT_MS.to_string(),
        "--round-timeout-ms",
        &ROUND_DEADLINE_MS.to_string(),
        "--shared-listener",
    ])
}

/// The simulation's share of the rounds: what the simulated nodes spent producing their
/// answers, against the rounds' wall time, and the fleet process's CPU (simulation plus
/// fake API server and its proxy) per 1,000 nodes.
fn simulation_share(
    nodes: usize,
    runs: &[RoundsReport],
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut render_s = 0.0;
    let mut bodies = 0;
    let mut wall_s = 0.0;
    let mut fleet_cpu_per_1000 = Vec::new();
    for run in runs {
        let usage = run
            .simulation
            .context("the driver did not report the simulation's usage")?;
        render_s += usage.render_s;
        bodies += usage.bodies;
        wall_s += run.round_seconds().sum::<f64>();
        for round in run.rounds.iter().skip(1) {
            if let (Some(fleet_cpu_s), true) = (round.fleet_cpu_s, round.pods > 0) {
                fleet_cpu_per_1000.push(fleet_cpu_s * 1000.0 / (round.pods as f64 / 1000.0));
            }
        }
    }
    let share = if wall_s > 0.0 { render_s / wall_s } else { 0.0 };
    let per_body_us = if bodies > 0 {
        render_s * 1e6 / bodies as f64
    } else {
        0.0
    };
    let fleet = Summary::of(&fleet_cpu_per_1000);
    report.line(format!(
        "simulation at {nodes} nodes: {render_s:.2} s producing {bodies} bodies ({per_body_us:.1} us each) over {wall_s:.2} s of rounds: {:.0}% of the wall time (on 2 cores); fleet process (simulation + fake API server and its proxy) CPU per 1,000 nodes per round: {}",
        share * 100.0,
        fleet.map_or_else(|| "not measured".to_owned(), |fleet| fleet.text("ms")),
    ));
    report.set(&format!("simulation_share_of_round_{nodes}"), share);
    report.set(&format!("simulation_us_per_body_{nodes}"), per_body_us);
    if let Some(fleet) = fleet {
        report.set(
            &format!("fleet_process_cpu_ms_per_1000_nodes_{nodes}"),
            fleet.median,
        );
    }
    Ok(())
}

/// How much of the publisher's memory the filled pod cache takes before any round, and the
/// publisher's CPU time for that first listing.
fn cache_memory(nodes: usize, runs: &[RoundsReport], report: &mut Report) {
    let after_list: Vec<f64> = runs
        .iter()
        .map(|run| run.rss_after_list_kib as f64 / 1024.0)
        .collect();
    let list_cpu: Vec<f64> = runs.iter().map(|run| run.initial_list_cpu_s).collect();
    if let (Some(after_list), Some(list_cpu)) = (Summary::of(&after_list), Summary::of(&list_cpu)) {
        report.line(format!(
            "publisher at {nodes} nodes: RSS with the pod cache filled, before the first round {}; CPU for the first listing {}",
            after_list.text("MiB"),
            list_cpu.text("s"),
        ));
        report.set(&format!("rss_mib_after_list_{nodes}"), after_list.median);
        report.set(&format!("initial_list_cpu_{nodes}_s"), list_cpu.median);
    }
}

/// The requests the pods proxy puts on the API server at the default 30 s interval: one
/// per node per round, however the rounds are spread.
fn api_server_load(nodes: usize, report: &mut Report) {
    let per_second = nodes as f64 / INTERVAL_S;
    report.set(
        &format!("proxy_requests_per_s_at_30s_interval_{nodes}"),
        per_second,
    );
}

/// The targets of the largest size measured, and the keys the issue names for 100,000
/// nodes.
fn targets(nodes: usize, healthy: &Healthy, report: &mut Report) {
    report.set("round_large_nodes", nodes);
    if nodes == 100_000 {
        report.set("round_100000_s", healthy.warm.median);
        report.set("peak_rss_mib_100000", healthy.rss.median);
        report.set("initial_list_100000_s", healthy.initial_list.median);
    }
    report.target(
        &format!(
            "round at {nodes} nodes through the pods proxy <= {INTERVAL_S} s, every node counted"
        ),
        healthy.warm.max <= INTERVAL_S && healthy.every_node_counted,
        format!(
            "{:.3} s median, {:.3} s worst; every node counted: {}",
            healthy.warm.median, healthy.warm.max, healthy.every_node_counted
        ),
    );
    report.target(
        &format!("peak RSS at {nodes} nodes <= {MEMORY_LIMIT_MIB} MiB (the rendered limit)"),
        healthy.rss.max <= MEMORY_LIMIT_MIB,
        format!("{:.1} MiB worst", healthy.rss.max),
    );
    report.target(
        &format!("initial LIST+WATCH of {nodes} pods <= {INITIAL_LIST_TARGET_S} s"),
        healthy.initial_list.max <= INITIAL_LIST_TARGET_S,
        format!("{:.3} s worst", healthy.initial_list.max),
    );
}

/// The publisher's CPU per 1,000 nodes per round at every size measured through the proxy,
/// its growth from the smallest to the largest, and the targets: at most
/// [`CPU_TARGET_MS`] everywhere, and flat.
fn cpu_growth(cpu_by_size: &[(usize, f64)], report: &mut Report) {
    let mut by_size: Vec<(usize, f64)> = cpu_by_size.to_vec();
    by_size.sort_by_key(|(nodes, _)| *nodes);
    by_size.dedup_by_key(|(nodes, _)| *nodes);
    let (Some(&(smallest, first)), Some(&(largest, last))) = (by_size.first(), by_size.last())
    else {
        return;
    };
    let object: Map<String, Value> = by_size
        .iter()
        .map(|(nodes, cpu)| (nodes.to_string(), Value::from(*cpu)))
        .collect();
    report.set("cpu_ms_per_1000_nodes", Value::Object(object));
    let growth = last / first;
    report.set("cpu_ms_per_1000_nodes_growth", growth);
    let listed: Vec<String> = by_size
        .iter()
        .map(|(nodes, cpu)| format!("{nodes}: {cpu:.1}"))
        .collect();
    report.line(format!(
        "publisher CPU per 1,000 nodes per round, through the pods proxy (ms): {}; growth {smallest} -> {largest} nodes {growth:.2}x",
        listed.join(", ")
    ));
    let worst = by_size.iter().map(|(_, cpu)| *cpu).fold(0.0, f64::max);
    report.target(
        &format!("publisher CPU per 1,000 nodes per round <= {CPU_TARGET_MS} ms at every size"),
        worst <= CPU_TARGET_MS,
        format!("{worst:.1} ms worst ({})", listed.join(", ")),
    );
    report.target(
        &format!("publisher CPU per 1,000 nodes flat from {smallest} to {largest} nodes (growth <= {CPU_FLAT_GROWTH}x)"),
        growth <= CPU_FLAT_GROWTH,
        format!("{growth:.2}x"),
    );
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_growth_runs_from_the_smallest_to_the_largest_size_and_both_targets_are_checked() {
        let mut report = Report::default();
        cpu_growth(&[(5000, 30.0), (1000, 20.0), (100_000, 36.0)], &mut report);
        assert_eq!(
            report.get("cpu_ms_per_1000_nodes"),
            Some(&json!({ "1000": 20.0, "5000": 30.0, "100000": 36.0 }))
        );
        assert_eq!(
            report.get("cpu_ms_per_1000_nodes_growth"),
            Some(&json!(1.8))
        );
        let lines = report.lines();
        assert!(
            lines[0].ends_with("growth 1000 -> 100000 nodes 1.80x"),
            "{lines:?}"
        );
    }

    #[test]
    fn large_sizes_run_through_the_proxy_only_with_the_default_round_deadline() {
        let arguments = arguments(100_000, 1, 3);
        let value = |flag: &str| {
            let at = arguments
                .iter()
                .position(|argument| argument == flag)
                .unwrap_or_else(|| panic!("{flag} in {arguments:?}"));
            arguments[at + 1].clone()
        };
        assert_eq!(value("--runs"), "0");
        assert_eq!(value("--proxy-runs"), "1");
        assert_eq!(value("--round-timeout-ms"), "24000");
        assert!(arguments.contains(&"--shared-listener".to_owned()));
    }

    #[test]
    fn quick_stops_at_twenty_thousand_and_full_reaches_one_hundred_thousand() {
        let largest = |quick| {
            Sizes::new(quick)
                .large
                .iter()
                .map(|(nodes, _, _)| *nodes)
                .max()
        };
        assert_eq!(largest(true), Some(20_000));
        assert_eq!(largest(false), Some(100_000));
    }
}
