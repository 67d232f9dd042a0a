//! Fleet plan: `cargo xtask plan` of one cluster against the same run over ten clusters
//! (`--config DIR`), against sandbox clusters in four regions of one AWS emulator this
//! command starts, each with its own Kubernetes API server and aws-node pods. The fleet is
//! deployed first, so both plans are the drift check a CI job runs. The target: the fleet
//! plan takes at most twice the single cluster's.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sandbox::environment::{Sandbox, SandboxOptions};
use sandbox::python_tools::PythonTools;

use super::report::{Report, Summary};
use super::{Sizes, time_xtask};

/// Clusters in the fleet, as in the issue.
const CLUSTERS: usize = 10;
/// Regions the clusters are spread over.
const REGIONS: [&str; 4] = ["us-west-2", "eu-west-1", "us-east-1", "ap-southeast-2"];
/// Nodes per cluster: a plan reads no aws-node pod, so a few are enough.
const NODES: usize = 3;
/// The fleet's `--parallel`: all ten at once, so that the wall time is one cluster's plan
/// plus what the shared emulator and this machine's cores add.
const PARALLEL: u16 = 10;
/// The target of the issue: the fleet plan in at most this many single plans.
const TARGET_RATIO: f64 = 2.0;

pub(super) async fn run(root: &Path, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    eprintln!("Fleet plan against {CLUSTERS} sandbox clusters...");
    let tools = PythonTools::find(root)?;
    let work = tempfile::Builder::new()
        .prefix("cni-bench-fleet")
        .tempdir()
        .context("creating a work directory")?;
    let home = work.path().join("home");
    let configs = work.path().join("configs");
    std::fs::create_dir_all(&home)?;
    std::fs::create_dir_all(&configs)?;
    let mut sandboxes: Vec<Sandbox> = Vec::with_capacity(CLUSTERS);
    let started = start_fleet(&tools, work.path(), &mut sandboxes).await;
    let result = match started {
        Ok(()) => measure(&sandboxes, &home, &configs, sizes).await,
        Err(error) => Err(error),
    };
    // The emulator's owner last: the others only point at it.
    for sandbox in sandboxes.into_iter().rev() {
        sandbox.shutdown().await;
    }
    let (single, fleet) = result?;
    let ratio = fleet.median / single.median;
    report.line(format!("single-cluster plan: {}", single.text("s")));
    report.line(format!(
        "{CLUSTERS}-cluster fleet plan (--parallel {PARALLEL}): {}; {ratio:.2}x one cluster's",
        fleet.text("s")
    ));
    report.set("fleet_plan_single_s", single.median);
    report.set("fleet_plan_single_runs_s", single.json());
    report.set("fleet_plan_10_s", fleet.median);
    report.set("fleet_plan_10_runs_s", fleet.json());
    report.set("fleet_plan_parallel", PARALLEL);
    report.set("fleet_plan_10_vs_1_ratio", ratio);
    report.target(
        "fleet plan of 10 <= 2x one cluster's plan",
        ratio <= TARGET_RATIO,
        format!("{ratio:.2}x"),
    );
    Ok(())
}

/// Starts the clusters one by one (each after the first reuses its emulator) into
/// `sandboxes`, so that whatever started is stopped even when a later one fails.
async fn start_fleet(
    tools: &PythonTools,
    work: &Path,
    sandboxes: &mut Vec<Sandbox>,
) -> anyhow::Result<()> {
    for index in 0..CLUSTERS {
        let aws_endpoint = sandboxes
            .first()
            .map(|first| first.aws_endpoint().to_owned());
        let sandbox = Sandbox::start(
            tools,
            SandboxOptions {
                nodes: NODES,
                cluster: format!("bench-{index:02}"),
                region: REGIONS[index % REGIONS.len()].to_owned(),
                aws_endpoint,
                ..SandboxOptions::new(work.join(format!("sandbox-{index:02}")))
            },
        )
        .await
        .with_context(|| format!("starting sandbox cluster {index}"))?;
        sandboxes.push(sandbox);
    }
    Ok(())
}

/// Deploys the fleet, then times single and fleet plans, alternating so that both see
/// the same state of the machine.
async fn measure(
    sandboxes: &[Sandbox],
    home: &Path,
    configs: &Path,
    sizes: &Sizes,
) -> anyhow::Result<(Summary, Summary)> {
    let mut paths = Vec::with_capacity(sandboxes.len());
    for sandbox in sandboxes {
        paths.push(write_config(configs, sandbox)?);
    }
    let first = sandboxes.first().context("no sandbox cluster")?;
    let configs = configs.display().to_string();
    let single_config = paths[0].display().to_string();
    time_xtask(first, home, &["deploy", "--config", &configs, "--yes"]).await?;
    let parallel = PARALLEL.to_string();
    let mut single = Vec::new();
    let mut fleet = Vec::new();
    for _ in 0..sizes.fleet_plan_runs {
        single.push(time_xtask(first, home, &["plan", "--config", &single_config]).await?);
        fleet.push(
            time_xtask(
                first,
                home,
                &["plan", "--config", &configs, "--parallel", &parallel],
            )
            .await?,
        );
    }
    Ok((
        Summary::of(&single).context("no single plan runs")?,
        Summary::of(&fleet).context("no fleet plan runs")?,
    ))
}

/// One cluster's config: its name, region, kubeconfig and context.
fn write_config(dir: &Path, sandbox: &Sandbox) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{}.yaml", sandbox.cluster()));
    std::fs::write(
        &path,
        format!(
            "cluster: {}\nregion: {}\nkubeconfig: {}\ncontext: sandbox\n",
            sandbox.cluster(),
            sandbox.region(),
            sandbox.kubeconfig_path().display()
        ),
    )
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
