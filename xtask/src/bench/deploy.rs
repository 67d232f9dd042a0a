//! Deploy: fresh and no-op `cargo xtask deploy` runs against a sandbox this command starts,
//! with this very binary as the deployer, counting the requests each run makes.

use std::path::Path;

use anyhow::Context;
use sandbox::environment::{Sandbox, SandboxOptions};
use sandbox::python_tools::PythonTools;

use super::Sizes;
use super::report::{Report, Summary};

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
    let mut args = command.to_vec();
    args.extend(["--cluster", sandbox.cluster(), "--yes"]);
    let seconds = super::time_xtask(sandbox, home, &args).await?;
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

pub(super) async fn run(root: &Path, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
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
