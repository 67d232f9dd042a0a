//! `cargo xtask bench`: the benchmarks of issue 7, run side by side in one invocation so
//! every ratio compares numbers measured on the same machine at the same time.
//!
//! The publisher-side scenarios run in the release-built driver
//! `publisher/examples/bench.rs` (one process per measurement where peak RSS matters);
//! this command builds it, runs it, and turns its raw JSON into medians, min/max, ratios
//! and target checks. The deploy scenario runs here, against a sandbox this command starts
//! and stops, with this very binary as the deployer. The clean debug build time takes
//! minutes of both cores, so it is measured only with `--clean-build` and otherwise read
//! from the value recorded in BENCHMARKS.md.

use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sandbox::bench_report::{
    CloudWatchReport, ParserReport, RoundsReport, ScaleReport, SoakReport, run_for_report,
};
use sandbox::environment::{Sandbox, SandboxOptions};
use sandbox::python_tools::{PythonTools, workspace_root};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::cargo_tool::{cargo, target_dir};
use crate::exit;
use crate::flags::{BenchFlags, OutputFormat};

/// The marker in BENCHMARKS.md that holds the recorded clean build time.
const CLEAN_BUILD_MARKER: &str = "clean_debug_build_s:";
/// How long one driver process may run before it is killed and the bench fails.
const DRIVER_DEADLINE: Duration = Duration::from_secs(900);
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
/// The batch size upstream's helper sends per PutMetricData call.
const UPSTREAM_DATUMS_PER_CALL: f64 = 20.0;

/// How big each scenario is: the full bench, or a short one.
struct Sizes {
    /// (nodes, measuring processes, rounds per process)
    scale: Vec<(usize, usize, usize)>,
    sequential_subset: usize,
    hung_rounds: usize,
    parser_seconds: f64,
    parser_runs: usize,
    soak_nodes: usize,
    soak_rounds: usize,
    cloudwatch_nodes: usize,
    cloudwatch_rounds: usize,
    cloudwatch_backlog_rounds: usize,
    deploy_fresh_runs: usize,
    deploy_noop_runs: usize,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                scale: vec![(100, 2, 3), (1000, 2, 3), (5000, 1, 3)],
                sequential_subset: 250,
                hung_rounds: 1,
                parser_seconds: 0.3,
                parser_runs: 3,
                soak_nodes: 100,
                soak_rounds: 300,
                cloudwatch_nodes: 50,
                cloudwatch_rounds: 3,
                cloudwatch_backlog_rounds: 50,
                deploy_fresh_runs: 1,
                deploy_noop_runs: 2,
            }
        } else {
            Sizes {
                scale: vec![(100, 3, 4), (1000, 3, 4), (5000, 3, 4)],
                sequential_subset: 500,
                hung_rounds: 2,
                parser_seconds: 1.0,
                parser_runs: 5,
                soak_nodes: 100,
                soak_rounds: 2000,
                cloudwatch_nodes: 100,
                cloudwatch_rounds: 5,
                cloudwatch_backlog_rounds: 100,
                deploy_fresh_runs: 3,
                deploy_noop_runs: 5,
            }
        }
    }
}

/// The median, minimum and maximum of some runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Summary {
    /// `None` for no values. The median of an even count is the mean of the middle two.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let median = if sorted.len().is_multiple_of(2) {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        } else {
            sorted[middle]
        };
        Some(Summary {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            runs: sorted.len(),
        })
    }

    fn text(&self, unit: &str) -> String {
        format!(
            "{} {unit} (min {}, max {}, n={})",
            round3(self.median),
            round3(self.min),
            round3(self.max),
            self.runs
        )
    }

    fn json(&self) -> Value {
        json!({ "median": self.median, "min": self.min, "max": self.max, "runs": self.runs })
    }
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// The value recorded after the marker in BENCHMARKS.md, e.g.
/// `<!-- clean_debug_build_s: 412 -->`.
pub fn recorded_clean_build_seconds(benchmarks_md: &str) -> Option<f64> {
    let start = benchmarks_md.find(CLEAN_BUILD_MARKER)? + CLEAN_BUILD_MARKER.len();
    benchmarks_md[start..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What the bench prints: human lines and one JSON object, filled side by side.
#[derive(Default)]
struct Report {
    lines: Vec<String>,
    json: Map<String, Value>,
    targets: Vec<(String, bool, String)>,
}

impl Report {
    fn line(&mut self, text: impl Into<String>) {
        let text = text.into();
        // Progress goes to stderr as it happens; stdout gets the table at the end.
        eprintln!("  {text}");
        self.lines.push(text);
    }

    fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.json.insert(key.to_owned(), value.into());
    }

    fn target(&mut self, name: &str, met: bool, measured: String) {
        self.targets.push((name.to_owned(), met, measured));
    }
}

pub fn run(flags: BenchFlags) -> anyhow::Result<ExitCode> {
    let root = workspace_root();
    let sizes = Sizes::new(flags.quick);
    let mut report = Report::default();
    report.set("quick", flags.quick);

    if !flags.no_build {
        eprintln!("Building the publisher and the benchmark driver (release)...");
        build_release(&root)?;
    }
    let target_dir = target_dir(&root);
    let driver = target_dir.join("release/examples/bench");
    let publisher_binary = target_dir.join("release/cni-metrics-publisher");
    PythonTools::ensure(&root).context("installing the AWS emulator")?;

    binary_size(&publisher_binary, &mut report)?;
    clean_build(&root, flags.clean_build, &mut report)?;
    let runtime = crate::cluster_cmd::runtime()?;
    runtime.block_on(async {
        parser(&driver, &sizes, &mut report).await?;
        scale(&driver, &sizes, &mut report).await?;
        cloudwatch(&driver, &sizes, &mut report).await?;
        soak(&driver, &sizes, &mut report).await?;
        deploy(&root, &sizes, &mut report).await
    })?;

    let targets: Map<String, Value> = report
        .targets
        .iter()
        .map(|(name, met, _)| (name.clone(), Value::Bool(*met)))
        .collect();
    report.set("targets_met", Value::Object(targets));
    match flags.output {
        OutputFormat::Json => println!("{}", Value::Object(report.json.clone())),
        OutputFormat::Human => {
            println!(
                "cargo xtask bench{}",
                if flags.quick { " --quick" } else { "" }
            );
            for line in &report.lines {
                println!("  {line}");
            }
            println!("Targets:");
            for (name, met, measured) in &report.targets {
                let verdict = if *met { "met   " } else { "MISSED" };
                println!("  {verdict} {name}: {measured}");
            }
        }
    }
    Ok(exit::code(exit::SUCCESS))
}

fn build_release(root: &Path) -> anyhow::Result<()> {
    let status = std::process::Command::new(cargo())
        .args([
            "build",
            "--quiet",
            "--release",
            "--package",
            "cni-metrics-publisher",
            "--bin",
            "cni-metrics-publisher",
            "--example",
            "bench",
        ])
        .current_dir(root)
        .status()
        .context("running cargo build --release")?;
    if !status.success() {
        bail!("building the publisher and the benchmark driver failed ({status})");
    }
    Ok(())
}

fn binary_size(binary: &Path, report: &mut Report) -> anyhow::Result<()> {
    let bytes = std::fs::metadata(binary)
        .with_context(|| format!("reading the size of {}", binary.display()))?
        .len();
    // The release profile strips symbols (`strip = true`), so this is the stripped size.
    let megabytes = bytes as f64 / 1e6;
    report.line(format!(
        "publisher binary (release, stripped): {:.2} MB",
        megabytes
    ));
    report.set("publisher_binary_mb", megabytes);
    report.target(
        "publisher binary <= 15 MB",
        megabytes <= 15.0,
        format!("{megabytes:.2} MB"),
    );
    Ok(())
}

/// Measures `cargo build --workspace` (debug) in a fresh target directory under /tmp when
/// asked, and deletes it afterwards; otherwise reports the value recorded in BENCHMARKS.md.
fn clean_build(root: &Path, measure: bool, report: &mut Report) -> anyhow::Result<()> {
    if !measure {
        let recorded = std::fs::read_to_string(root.join("BENCHMARKS.md"))
            .ok()
            .as_deref()
            .and_then(recorded_clean_build_seconds);
        match recorded {
            Some(seconds) => report.line(format!(
                "clean debug build: {seconds} s (recorded in BENCHMARKS.md; --clean-build measures it again)"
            )),
            None => report.line("clean debug build: not measured (pass --clean-build)"),
        }
        report.set("clean_debug_build_s", recorded);
        report.set("clean_debug_build_measured_now", false);
        return Ok(());
    }
    let scratch = tempfile::Builder::new()
        .prefix("cni-clean-build")
        .tempdir_in("/tmp")
        .context("creating a scratch target directory")?;
    eprintln!("Measuring a clean debug build of the workspace (minutes)...");
    let started = Instant::now();
    let status = std::process::Command::new(cargo())
        .args(["build", "--quiet", "--workspace"])
        .env("CARGO_TARGET_DIR", scratch.path())
        .current_dir(root)
        .status()
        .context("running the clean build")?;
    let seconds = started.elapsed().as_secs_f64();
    drop(scratch);
    if !status.success() {
        bail!("the clean debug build failed ({status})");
    }
    report.line(format!("clean debug build: {seconds:.0} s (measured now)"));
    report.set("clean_debug_build_s", seconds);
    report.set("clean_debug_build_measured_now", true);
    Ok(())
}

/// Runs the driver with `arguments` and reads the report it prints last.
async fn driver_report<T: DeserializeOwned>(
    driver: &Path,
    arguments: &[String],
) -> anyhow::Result<T> {
    let mut command = tokio::process::Command::new(driver);
    command.args(arguments);
    let process = format!("the benchmark driver {arguments:?}");
    Ok(run_for_report(command, process, DRIVER_DEADLINE).await?)
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|text| (*text).to_owned()).collect()
}

async fn parser(driver: &Path, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
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
        "parser as the publisher uses it (only the published families): {}",
        published.text("MB/s")
    ));
    report.set("parser_mb_s", ours.median);
    report.set("parser_mb_s_runs", ours.json());
    report.set("parser_as_published_mb_s", published.median);
    report.set("prometheus_parse_mb_s", theirs.median);
    report.set("prometheus_parse_mb_s_runs", theirs.json());
    report.set("parser_vs_prometheus_parse_ratio", ratio);
    report.target(
        "parser >= 5x prometheus-parse",
        ratio >= 5.0,
        format!("{ratio:.1}x"),
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

async fn scale(driver: &Path, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let largest = sizes
        .scale
        .iter()
        .map(|(nodes, _, _)| *nodes)
        .max()
        .unwrap_or(0);
    for &(nodes, runs, rounds) in &sizes.scale {
        eprintln!("Rounds at {nodes} nodes...");
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
        let is_largest = nodes == largest;
        if is_largest {
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
        let result: ScaleReport = driver_report(driver, &arguments).await?;
        let mut warm = Vec::new();
        let mut cold = Vec::new();
        let mut peak_rss_mib = Vec::new();
        let mut initial_list = Vec::new();
        let mut errors = 0;
        for run in &result.runs {
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
        if !is_largest {
            continue;
        }
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
            let latency_ms = latency.latency_ms;
            let (_, concurrent) = round_seconds(&latency.run);
            let concurrent =
                Summary::of(&concurrent).context("no rounds measured with node latency")?;
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
        }

        if let Some(hung) = &result.hung {
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
        }
    }
    Ok(())
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

async fn cloudwatch(driver: &Path, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
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

async fn soak(driver: &Path, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    eprintln!(
        "Soak: {} rounds against {} churning nodes...",
        sizes.soak_rounds, sizes.soak_nodes
    );
    let result: SoakReport = driver_report(
        driver,
        &args(&[
            "soak",
            "--nodes",
            &sizes.soak_nodes.to_string(),
            "--rounds",
            &sizes.soak_rounds.to_string(),
            "--baseline-round",
            "100",
        ]),
    )
    .await?;
    let growth = result.rss_growth_pct;
    let violations = result.state_violations;
    report.line(format!(
        "soak: {} rounds, {} nodes churning (1% replaced, 1% restarted, 1% HTTP 500, 1% garbage per round) in {:.0} s: RSS {} KiB at round 100 -> {} KiB at round {} ({growth:+.1}%); max tracked pods {} of {} live; state violations {violations}; failed scrapes {} + unparsable {}",
        result.rounds,
        result.nodes,
        result.elapsed_s,
        result.baseline_rss_kib,
        result.final_rss_kib,
        result.rounds,
        result.max_tracked_pods,
        result.live_pods,
        result.scrape_errors,
        result.parse_errors,
    ));
    report.set("soak_rounds", result.rounds);
    report.set("soak_rss_growth_pct", growth);
    report.set("soak_rss_by_round_kib", json!(result.rss_by_round_kib));
    report.set("soak_max_tracked_pods", result.max_tracked_pods);
    report.set("soak_state_violations", violations);
    report.target(
        "soak RSS within 10% of round 100",
        growth.abs() <= 10.0,
        format!("{growth:+.1}%"),
    );
    report.target(
        "soak: no panic, state never holds gone pods",
        violations == 0,
        format!("{violations} violations, the driver exited cleanly"),
    );
    Ok(())
}

/// Requests one deployer run made: (AWS, Kubernetes, wall seconds).
struct DeployRun {
    aws: usize,
    aws_mutating: usize,
    kubernetes: usize,
    kubernetes_writes: usize,
    seconds: f64,
}

async fn run_xtask(sandbox: &Sandbox, home: &Path, command: &[&str]) -> anyhow::Result<DeployRun> {
    let emulator = sandbox
        .emulator()
        .context("the bench sandbox runs its own emulator")?;
    emulator.clear_recording()?;
    sandbox.api().clear_requests();
    let xtask = std::env::current_exe().context("finding the xtask binary")?;
    let started = Instant::now();
    let output = tokio::process::Command::new(xtask)
        .args(command)
        .args(["--cluster", sandbox.cluster(), "--yes", "--quiet"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .envs(sandbox.env_vars())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(DRIVER_DEADLINE, output)
        .await
        .context("the deployer ran past its deadline")??;
    let seconds = started.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "`cargo xtask {}` failed against the sandbox: {}",
            command.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let aws = emulator.recorded_requests()?;
    let kubernetes = sandbox.api().requests();
    Ok(DeployRun {
        aws: aws.len(),
        aws_mutating: aws.iter().filter(|request| request.is_mutating()).count(),
        kubernetes: kubernetes.len(),
        kubernetes_writes: kubernetes
            .iter()
            .filter(|request| request.is_write())
            .count(),
        seconds,
    })
}

async fn deploy(root: &Path, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    eprintln!("Deploy against the sandbox...");
    let tools = PythonTools::find(root)?;
    let work = tempfile::Builder::new()
        .prefix("cni-bench-deploy")
        .tempdir()
        .context("creating a work directory")?;
    let home = work.path().join("home");
    std::fs::create_dir_all(&home)?;
    let sandbox = Sandbox::start(
        &tools,
        SandboxOptions {
            cluster: "bench".to_owned(),
            ..SandboxOptions::new(work.path().join("sandbox"))
        },
    )
    .await
    .context("starting the sandbox")?;
    let result = deploy_runs(&sandbox, &home, sizes).await;
    sandbox.shutdown().await;
    let (fresh, noop) = result?;

    let describe = |runs: &[DeployRun]| -> anyhow::Result<(Summary, Summary, String)> {
        let seconds = Summary::of(&runs.iter().map(|run| run.seconds).collect::<Vec<_>>())
            .context("no deploy runs")?;
        let requests = Summary::of(
            &runs
                .iter()
                .map(|run| (run.aws + run.kubernetes) as f64)
                .collect::<Vec<_>>(),
        )
        .context("no deploy runs")?;
        let last = runs.last().context("no deploy runs")?;
        let detail = format!(
            "{} AWS ({} mutating) + {} Kubernetes ({} writes)",
            last.aws, last.aws_mutating, last.kubernetes, last.kubernetes_writes
        );
        Ok((seconds, requests, detail))
    };
    let (fresh_seconds, fresh_requests, fresh_detail) = describe(&fresh)?;
    let (noop_seconds, noop_requests, noop_detail) = describe(&noop)?;
    report.line(format!(
        "fresh deploy: {}; {} requests: {fresh_detail}",
        fresh_seconds.text("s"),
        fresh_requests.median
    ));
    report.line(format!(
        "no-op deploy: {}; {} requests: {noop_detail}",
        noop_seconds.text("s"),
        noop_requests.median
    ));
    let last_noop = noop.last().context("no no-op deploy")?;
    report.set("deploy_noop_requests", noop_requests.median);
    report.set("deploy_noop_aws_requests", last_noop.aws);
    report.set("deploy_noop_kubernetes_requests", last_noop.kubernetes);
    report.set(
        "deploy_noop_mutating_requests",
        last_noop.aws_mutating + last_noop.kubernetes_writes,
    );
    report.set("deploy_noop_s", noop_seconds.median);
    report.set("deploy_noop_runs_s", noop_seconds.json());
    report.set("deploy_fresh_requests", fresh_requests.median);
    report.set("deploy_fresh_s", fresh_seconds.median);
    report.set("deploy_fresh_runs_s", fresh_seconds.json());
    report.target(
        "no-op deploy changes nothing",
        last_noop.aws_mutating + last_noop.kubernetes_writes == 0,
        noop_detail,
    );
    Ok(())
}

/// The first fresh deploy is on a new sandbox; later ones follow a `destroy`.
async fn deploy_runs(
    sandbox: &Sandbox,
    home: &Path,
    sizes: &Sizes,
) -> anyhow::Result<(Vec<DeployRun>, Vec<DeployRun>)> {
    let mut fresh = Vec::new();
    for attempt in 0..sizes.deploy_fresh_runs {
        if attempt > 0 {
            run_xtask(sandbox, home, &["destroy"]).await?;
        }
        fresh.push(run_xtask(sandbox, home, &["deploy"]).await?);
    }
    let mut noop = Vec::new();
    for _ in 0..sizes.deploy_noop_runs {
        noop.push(run_xtask(sandbox, home, &["deploy"]).await?);
    }
    Ok((fresh, noop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_take_the_middle_and_ignore_non_finite_values() {
        let odd = Summary::of(&[3.0, 1.0, 2.0]).expect("values");
        assert_eq!((odd.median, odd.min, odd.max, odd.runs), (2.0, 1.0, 3.0, 3));
        let even = Summary::of(&[4.0, 1.0, f64::NAN, 2.0, 3.0]).expect("values");
        assert_eq!((even.median, even.runs), (2.5, 4));
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn the_recorded_clean_build_time_is_read_from_its_marker() {
        let text = "# Benchmarks\n<!-- clean_debug_build_s: 412.5 -->\n";
        assert_eq!(recorded_clean_build_seconds(text), Some(412.5));
        assert_eq!(recorded_clean_build_seconds("# Benchmarks\n"), None);
    }
}
