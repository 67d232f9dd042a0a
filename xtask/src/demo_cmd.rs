//! `cargo xtask demo`: the whole product on one machine, no AWS account. It starts the
//! sandbox with a fleet of simulated nodes (and a registry behind its ECR), deploys with
//! the real `deploy` command, builds our publisher's image, pushes it with `image push`,
//! switches the Deployment to it with `deploy --publisher ours`, runs that very image
//! (pulled from the registry by digest, in podman, as the sandbox has no kubelet) against
//! the fleet for a few rounds, shows what CloudWatch now holds next to what the nodes
//! served, saves the dashboard body, and tears everything down. Without docker-registry or
//! podman on the machine, the publisher runs as a local process instead, and it says so.

use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use sandbox::environment::{Sandbox, SandboxOptions};
use sandbox::python_tools::{PythonTools, workspace_root};

use crate::aws::AwsError;
use crate::cargo_tool::target_dir;
use crate::exit;
use crate::flags::DemoFlags;

/// The metrics the demo reads back, with the statistic the dashboard uses and the fleet
/// sample they come from (None for the publisher's own metrics).
const SHOWN: [(&str, &str, Option<&str>); 7] = [
    ("maxIPAddresses", "Maximum", Some("awscni_ip_max")),
    (
        "totalIPAddresses",
        "Maximum",
        Some("awscni_total_ip_addresses"),
    ),
    (
        "assignIPAddresses",
        "Maximum",
        Some("awscni_assigned_ip_addresses"),
    ),
    ("eniAllocated", "Maximum", Some("awscni_eni_allocated")),
    ("eniMaxAvailable", "Maximum", Some("awscni_eni_max")),
    ("podsScraped", "Maximum", None),
    ("scrapeErrors", "Maximum", None),
];

pub fn demo(flags: DemoFlags) -> anyhow::Result<ExitCode> {
    crate::terminal::runtime()?.block_on(run(flags))
}

async fn run(flags: DemoFlags) -> anyhow::Result<ExitCode> {
    let root = workspace_root();
    println!("Building the publisher...");
    // A shell's environment for cargo, so that this build and the others reuse each other's
    // output (see `cargo_command`).
    let built = tokio::process::Command::from(crate::cargo_tool::cargo_command())
        .args(["build", "--quiet", "--package", "cni-metrics-publisher"])
        .current_dir(&root)
        .status()
        .await
        .context("running cargo build")?;
    anyhow::ensure!(
        built.success(),
        "building cni-metrics-publisher failed ({built})"
    );
    let publisher = target_dir(&root).join("debug/cni-metrics-publisher");

    let tools = PythonTools::ensure(&root).context("installing the AWS emulator")?;
    let work = tempfile::Builder::new()
        .prefix("cni-metrics-demo")
        .tempdir()
        .context("creating a work directory")?;
    let dir = flags.dir.clone().unwrap_or_else(|| work.path().to_owned());
    println!(
        "Starting the sandbox: AWS emulator, Kubernetes API server, {} simulated nodes...",
        flags.nodes
    );
    let sandbox = Sandbox::start(
        &tools,
        SandboxOptions {
            nodes: flags.nodes,
            cluster: "demo".to_owned(),
            registry: sandbox::registry::available(),
            ..SandboxOptions::new(dir.join("sandbox"))
        },
    )
    .await
    .context("starting the sandbox")?;
    let result = drive(&sandbox, &publisher, &dir, &flags).await;
    sandbox.shutdown().await;
    result?;
    Ok(exit::code(exit::SUCCESS))
}

async fn drive(
    sandbox: &Sandbox,
    publisher: &Path,
    dir: &Path,
    flags: &DemoFlags,
) -> anyhow::Result<()> {
    deploy(sandbox, &[]).await?;
    let image = ship_image(sandbox, publisher, dir).await?;
    let started = SystemTime::now();
    match &image {
        Some(reference) => run_container(sandbox, dir, reference, flags.rounds).await?,
        None => run_publisher(sandbox, publisher, flags.rounds).await?,
    }
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&sandbox.sdk_config());
    show_metrics(sandbox, &cloudwatch, started).await?;
    show_alarms(sandbox).await?;
    save_dashboard(sandbox, &cloudwatch, dir).await?;
    save_widget_images(sandbox, &cloudwatch, dir).await?;
    if flags.dir.is_none() {
        println!("(that directory is removed when the demo ends; pass --dir DIR to keep it)");
    }
    println!("Stopping the sandbox.");
    Ok(())
}

/// `cargo xtask deploy` against the sandbox, as a user would run it, with `extra` flags.
async fn deploy(sandbox: &Sandbox, extra: &[&str]) -> anyhow::Result<()> {
    let xtask = std::env::current_exe().context("finding the xtask binary")?;
    println!(
        "\n$ cargo xtask deploy --cluster demo --yes {}",
        extra.join(" ")
    );
    let deployed = tokio::process::Command::new(&xtask)
        .args(["deploy", "--cluster", "demo", "--yes", "--quiet"])
        .args(extra)
        .envs(sandbox.env_vars())
        .stdin(Stdio::null())
        .status()
        .await
        .context("running deploy")?;
    anyhow::ensure!(deployed.success(), "deploy failed ({deployed})");
    Ok(())
}

/// Builds our publisher's image around `publisher`, pushes it to the sandbox's ECR with
/// `image push` and deploys it with `--publisher ours`; returns the reference the
/// Deployment runs. `None`, with the reason printed, when the machine lacks the registry or
/// podman to run it.
async fn ship_image(
    sandbox: &Sandbox,
    publisher: &Path,
    dir: &Path,
) -> anyhow::Result<Option<String>> {
    let missing = match (sandbox.registry(), podman_runs().await) {
        (Some(_), true) => None,
        (None, _) => Some("docker-registry (apt-get install docker-registry)"),
        (Some(_), false) => Some("podman (apt-get install podman runc)"),
    };
    if let Some(missing) = missing {
        println!(
            "\n(no {missing} on this machine: our publisher runs as a local process, not from its image)"
        );
        return Ok(None);
    }
    let layout = dir.join("image/oci");
    println!("\n$ cargo xtask image build   # around the debug publisher, for speed");
    let built = crate::image::build(&crate::image::BuildOptions {
        workspace_root: workspace_root(),
        platforms: vec![crate::image::Platform::LinuxAmd64],
        binary: Some(publisher.to_owned()),
        out: layout.clone(),
        archive: None,
    })
    .context("building the publisher image")?;
    print!("{}", built.to_human());
    let xtask = std::env::current_exe().context("finding the xtask binary")?;
    println!("\n$ cargo xtask image push --region {}", sandbox.region());
    let pushed = tokio::process::Command::new(&xtask)
        .args(["image", "push", "--quiet", "--layout"])
        .arg(&layout)
        .envs(sandbox.env_vars())
        .stdin(Stdio::null())
        .output()
        .await
        .context("running image push")?;
    anyhow::ensure!(
        pushed.status.success(),
        "image push failed: {}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let reference = String::from_utf8_lossy(&pushed.stdout).trim().to_owned();
    println!("{reference}");
    deploy(sandbox, &["--publisher", "ours", "--leader-elect"]).await?;
    Ok(Some(reference))
}

/// Whether podman is installed.
async fn podman_runs() -> bool {
    tokio::process::Command::new("podman")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|status| status.success())
}

/// podman's containers.conf on these machines, as root without systemd: no ulimits to copy
/// (a container's default ones cannot be raised here), the cgroupfs manager, runc, and
/// events to a file. The image tests run podman with it too.
pub const PODMAN_CONTAINERS_CONF: &str = "[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nruntime = \"runc\"\n";

/// The image the Deployment runs, pulled from the sandbox's registry and run in podman for
/// `rounds` rounds against the fleet (host network, the sandbox's kubeconfig mounted),
/// then stopped with SIGTERM as Kubernetes stops a pod. podman keeps its state under `dir`
/// (vfs storage, runc, cgroupfs: what works as root without systemd or overlay mounts).
async fn run_container(
    sandbox: &Sandbox,
    dir: &Path,
    reference: &str,
    rounds: u32,
) -> anyhow::Result<()> {
    let podman_dir = dir.join("podman");
    std::fs::create_dir_all(&podman_dir)
        .and_then(|()| std::fs::write(podman_dir.join("containers.conf"), PODMAN_CONTAINERS_CONF))
        .with_context(|| format!("writing podman's configuration in {}", podman_dir.display()))?;
    let podman = |args: &[&str]| {
        let mut command = tokio::process::Command::new("podman");
        command
            .arg("--root")
            .arg(podman_dir.join("root"))
            .arg("--runroot")
            .arg(podman_dir.join("runroot"))
            .args([
                "--storage-driver",
                "vfs",
                "--runtime",
                "runc",
                "--cgroup-manager",
                "cgroupfs",
            ])
            .args(args)
            .env("CONTAINERS_CONF", podman_dir.join("containers.conf"))
            .env("TMPDIR", &podman_dir)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    };
    let pulled = podman(&[
        "pull",
        "--quiet",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ])
    .output()
    .await
    .context("running podman pull")?;
    anyhow::ensure!(
        pulled.status.success(),
        "podman pull {reference} failed: {}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    let interval = 2;
    println!(
        "\n$ podman run --network host {reference} run --interval {interval}   # {rounds} rounds against {} aws-node pods",
        sandbox.fleet().len()
    );
    let mut args: Vec<String> = ["run", "--rm", "--network", "host", "--volume"]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
    args.push(format!(
        "{}:/etc/kubeconfig:ro",
        sandbox.kubeconfig_path().display()
    ));
    for (name, value) in sandbox.env_vars() {
        let value = if name == "KUBECONFIG" {
            "/etc/kubeconfig".to_owned()
        } else {
            value
        };
        args.extend(["--env".to_owned(), format!("{name}={value}")]);
    }
    args.extend([
        "--env".to_owned(),
        "AWS_VPC_K8S_CNI_LOGLEVEL=WARN".to_owned(),
    ]);
    args.push(reference.to_owned());
    args.extend(
        [
            "run",
            "--interval",
            &interval.to_string(),
            "--cluster-id",
            "demo",
        ]
        .map(str::to_owned),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = podman(&args).spawn().context("starting podman run")?;
    stop_after_rounds(child, interval, rounds).await
}

/// Waits for `rounds` rounds `interval` seconds apart, then sends SIGTERM (podman passes it
/// on to the container) and waits for a clean exit.
async fn stop_after_rounds(
    mut child: tokio::process::Child,
    interval: u64,
    rounds: u32,
) -> anyhow::Result<()> {
    // Enough time for the rounds, plus one interval for the first scrape and the flush.
    tokio::time::sleep(Duration::from_secs(interval * (u64::from(rounds) + 1))).await;
    if let Some(pid) = child.id() {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    let stopped = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    match stopped {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => anyhow::bail!("the publisher exited with {status}"),
        Ok(Err(error)) => anyhow::bail!("waiting for the publisher: {error}"),
        Err(_) => {
            child.kill().await.ok();
            anyhow::bail!("the publisher did not stop within 20 s of SIGTERM");
        }
    }
}

/// Our publisher for `rounds` rounds, then stopped with SIGTERM as Kubernetes stops it.
async fn run_publisher(sandbox: &Sandbox, publisher: &Path, rounds: u32) -> anyhow::Result<()> {
    let interval = 2;
    println!(
        "\n$ cni-metrics-publisher run --interval {interval}   # {rounds} rounds against {} aws-node pods",
        sandbox.fleet().len()
    );
    let child = tokio::process::Command::new(publisher)
        .args([
            "run",
            "--interval",
            &interval.to_string(),
            "--cluster-id",
            "demo",
        ])
        .envs(sandbox.env_vars())
        .env("AWS_VPC_K8S_CNI_LOGLEVEL", "WARN")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the publisher")?;
    stop_after_rounds(child, interval, rounds).await
}

/// What CloudWatch holds since `started`, next to what the nodes served.
async fn show_metrics(
    sandbox: &Sandbox,
    cloudwatch: &aws_sdk_cloudwatch::Client,
    started: SystemTime,
) -> anyhow::Result<()> {
    let mut request = cloudwatch
        .get_metric_data()
        .start_time(DateTime::from(started - Duration::from_secs(120)))
        .end_time(DateTime::from(SystemTime::now() + Duration::from_secs(120)));
    for (index, (name, stat, _)) in SHOWN.iter().enumerate() {
        let metric = Metric::builder()
            .namespace("Kubernetes")
            .metric_name(*name)
            .dimensions(
                Dimension::builder()
                    .name("CLUSTER_ID")
                    .value("demo")
                    .build(),
            )
            .build();
        request = request.metric_data_queries(
            MetricDataQuery::builder()
                .id(format!("m{index}"))
                .metric_stat(
                    MetricStat::builder()
                        .metric(metric)
                        .period(60)
                        .stat(*stat)
                        .build(),
                )
                .build(),
        );
    }
    let data = request.send().await.map_err(AwsError::call(
        "cloudwatch",
        "GetMetricData",
        "namespace Kubernetes",
    ))?;
    println!(
        "\nWhat CloudWatch now holds (namespace Kubernetes, CLUSTER_ID=demo), next to what the nodes served last:"
    );
    println!(
        "  {:<20} {:>10} {:>14}",
        "metric", "CloudWatch", "nodes' sum"
    );
    let results = data.metric_data_results();
    for (index, (name, stat, sample)) in SHOWN.iter().enumerate() {
        let value = results
            .iter()
            .find(|result| result.id() == Some(&format!("m{index}")))
            .and_then(|result| result.values().first().copied());
        let served = sample.map(|sample| sandbox.fleet().expected_gauge_sum(sample));
        println!(
            "  {name:<20} {:>10} {:>14}   ({stat})",
            value.map_or_else(|| "-".to_owned(), |v| format!("{v}")),
            served.map_or_else(|| "".to_owned(), |v| format!("{v}")),
        );
    }
    Ok(())
}

/// Saves the dashboard deploy made into `dir`, so it can be looked at after the demo.
async fn save_dashboard(
    sandbox: &Sandbox,
    cloudwatch: &aws_sdk_cloudwatch::Client,
    dir: &Path,
) -> anyhow::Result<()> {
    let dashboard_name =
        crate::settings::default_dashboard_name(sandbox.cluster(), sandbox.region());
    let dashboard = cloudwatch
        .get_dashboard()
        .dashboard_name(&dashboard_name)
        .send()
        .await
        .map_err(AwsError::call(
            "cloudwatch",
            "GetDashboard",
            &dashboard_name,
        ))?;
    let body_path = dir.join("dashboard.json");
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&body_path, dashboard.dashboard_body().unwrap_or_default()))
        .with_context(|| format!("writing {}", body_path.display()))?;
    println!(
        "\nThe dashboard {dashboard_name} is in the emulator; its body is saved in {}",
        body_path.display()
    );
    Ok(())
}

/// The alarms `deploy` made, evaluated now by the sandbox's CloudWatch over what the
/// publisher just published (real CloudWatch evaluates them every period by itself).
async fn show_alarms(sandbox: &Sandbox) -> anyhow::Result<()> {
    let Some(emulator) = sandbox.emulator() else {
        return Ok(());
    };
    let evaluated = emulator
        .evaluate_alarms(None)
        .await
        .context("evaluating the alarms in the sandbox's CloudWatch")?;
    println!(
        "
The alarms deploy made, as CloudWatch evaluates them now:"
    );
    for alarm in evaluated {
        println!("  {:<17} {}", alarm.state, alarm.alarm_name);
    }
    Ok(())
}

/// Saves each metric widget of the dashboard as a PNG, as `status --widgets` does, so the
/// IP capacity and utilisation can be looked at rather than read.
async fn save_widget_images(
    sandbox: &Sandbox,
    cloudwatch: &aws_sdk_cloudwatch::Client,
    dir: &Path,
) -> anyhow::Result<()> {
    let dashboard_name =
        crate::settings::default_dashboard_name(sandbox.cluster(), sandbox.region());
    let images = dir.join("widgets");
    println!(
        "\n$ cargo xtask status --cluster {} --widgets {}",
        sandbox.cluster(),
        images.display()
    );
    let paths = crate::widgets::save(cloudwatch, &dashboard_name, &images).await?;
    println!("The dashboard's metric widgets as CloudWatch draws them:");
    for path in paths {
        println!("  {}", path.display());
    }
    Ok(())
}
