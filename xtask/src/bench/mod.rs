//! `cargo xtask bench`: the benchmarks of issue 7, run side by side in one invocation so
//! every ratio compares numbers measured on the same machine at the same time.
//!
//! The publisher-side scenarios run in the release-built driver
//! `publisher/examples/bench/` (one process per measurement where peak RSS matters);
//! this command builds it, runs it, reads its reports (the types of
//! [`sandbox::bench_report`], which the driver writes) and turns them into medians,
//! min/max, ratios and target checks. The deploy scenario runs here, against a sandbox this
//! command starts and stops, with this very binary as the deployer. The clean debug build
//! time takes minutes of both cores, so it is measured only with `--clean-build` and
//! otherwise read from the value recorded in BENCHMARKS.md.
//!
//! The fleet scenario times a single-cluster `plan` against a ten-cluster fleet `plan` the
//! same way, against sandbox clusters sharing one emulator. `--only` picks scenarios.
//!
//! One module per scenario, each adding its lines, output keys and targets to the `Report`
//! (`report.rs`); the driver's side has a file of the same name for each scenario it runs.

mod binary_size;
mod clean_build;
mod cloudwatch;
mod deploy;
mod fleet;
mod large_clusters;
mod parser;
mod report;
mod scale;
mod soak;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use sandbox::bench_report::run_for_report;
use sandbox::python_tools::{PythonTools, workspace_root};
use serde::de::DeserializeOwned;

use crate::cargo_tool::target_dir;
use crate::exit;
use crate::flags::{BenchFlags, BenchScenario};

pub use clean_build::recorded_clean_build_seconds;
pub use report::Summary;

use report::Report;

/// How long one driver process (or one deployer run) may take before it is killed and the
/// bench fails.
const DRIVER_DEADLINE: Duration = Duration::from_secs(900);

/// How big each scenario is: the full bench, or a short one.
struct Sizes {
    /// (nodes, measuring processes, rounds per process)
    scale: Vec<(usize, usize, usize)>,
    /// The same, for the sizes measured only through the pods proxy, on a fleet with one
    /// listener (20,000 nodes and more).
    large: Vec<(usize, usize, usize)>,
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
    /// Runs of each of the single-cluster and the fleet plan.
    fleet_plan_runs: usize,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                scale: vec![(100, 2, 3), (1000, 2, 3), (5000, 1, 3)],
                large: vec![(20_000, 1, 2)],
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
                fleet_plan_runs: 3,
            }
        } else {
            Sizes {
                scale: vec![(100, 3, 4), (1000, 3, 4), (5000, 3, 4)],
                large: vec![(20_000, 1, 3), (50_000, 1, 3), (100_000, 1, 3)],
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
                fleet_plan_runs: 5,
            }
        }
    }
}

pub fn run(flags: BenchFlags) -> anyhow::Result<ExitCode> {
    let root = workspace_root();
    let sizes = Sizes::new(flags.quick);
    let mut report = Report::default();
    report.set("quick", flags.quick);
    let wanted = |scenario: BenchScenario| flags.only.is_empty() || flags.only.contains(&scenario);
    // The release binaries serve the publisher-side scenarios only.
    let needs_release = [
        BenchScenario::BinarySize,
        BenchScenario::Parser,
        BenchScenario::Scale,
        BenchScenario::Large,
        BenchScenario::Cloudwatch,
        BenchScenario::Soak,
    ]
    .into_iter()
    .any(wanted);

    if !flags.no_build && needs_release {
        eprintln!("Building the publisher and the benchmark driver (release)...");
        build_release(&root)?;
    }
    let target_dir = target_dir(&root);
    let driver = target_dir.join("release/examples/bench");
    let publisher_binary = target_dir.join("release/cni-metrics-publisher");
    PythonTools::ensure(&root).context("installing the AWS emulator")?;

    if wanted(BenchScenario::BinarySize) {
        binary_size::run(&publisher_binary, &mut report)?;
    }
    if wanted(BenchScenario::CleanBuild) {
        clean_build::run(&root, flags.clean_build, &mut report)?;
    }
    let runtime = crate::terminal::runtime()?;
    runtime.block_on(async {
        if wanted(BenchScenario::Parser) {
            parser::run(&driver, &sizes, &mut report).await?;
        }
        // The CPU per 1,000 nodes through the proxy at the smaller sizes, from which the
        // large sizes report its growth.
        let mut proxy_cpu = Vec::new();
        if wanted(BenchScenario::Scale) {
            proxy_cpu = scale::run(&driver, &sizes, &mut report).await?;
        }
        if wanted(BenchScenario::Large) {
            large_clusters::run(&driver, &sizes, &proxy_cpu, &mut report).await?;
        }
        if wanted(BenchScenario::Cloudwatch) {
            cloudwatch::run(&driver, &sizes, &mut report).await?;
        }
        if wanted(BenchScenario::Soak) {
            soak::run(&driver, &sizes, &mut report).await?;
        }
        if wanted(BenchScenario::Deploy) {
            deploy::run(&root, &sizes, &mut report).await?;
        }
        if wanted(BenchScenario::Fleet) {
            fleet::run(&root, &sizes, &mut report).await?;
        }
        anyhow::Ok(())
    })?;

    report.print(flags.output, flags.quick);
    Ok(exit::code(exit::SUCCESS))
}

fn build_release(root: &Path) -> anyhow::Result<()> {
    // The same environment as `image build`'s release build, so that each reuses the other's.
    let status = crate::cargo_tool::cargo_command()
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

/// Runs this very binary (the deployer) with `args` against a sandbox, as a user's shell
/// would: a clean environment with `PATH`, `HOME` and the sandbox's variables only. Returns
/// its wall time in seconds; a failed run is an error with its output.
async fn time_xtask(
    sandbox: &sandbox::environment::Sandbox,
    home: &Path,
    args: &[&str],
) -> anyhow::Result<f64> {
    let xtask = std::env::current_exe().context("finding the xtask binary")?;
    let started = std::time::Instant::now();
    let output = tokio::process::Command::new(xtask)
        .args(args)
        .arg("--quiet")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .envs(sandbox.env_vars())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(DRIVER_DEADLINE, output)
        .await
        .with_context(|| format!("`cargo xtask {}` ran past its deadline", args.join(" ")))??;
    let seconds = started.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "`cargo xtask {}` failed against the sandbox: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(seconds)
}
