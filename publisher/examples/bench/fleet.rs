//! The `fleet` process, which serves the simulated fleet to the measuring processes, and
//! [`FleetChild`], through which a scenario starts and commands it. Both ends of the
//! protocol are here: a [`FleetReady`] line when the sandbox is up, then one
//! [`FleetCommand`] per stdin line, each answered with one JSON line.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use sandbox::bench_report::AwsRecording;
use sandbox::bench_report::SimulationUsage;
use sandbox::environment::{Sandbox, SandboxOptions};
use sandbox::fleet::{Fault, NodeListeners};
use sandbox::python_tools::{PythonTools, workspace_root};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::CLUSTER_ID;

/// How long a fleet may take to start: 100,000 nodes and their pods take a while to build
/// and store.
const FLEET_START_DEADLINE: Duration = Duration::from_secs(600);

/// The line the fleet process prints once its sandbox is up.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct FleetReady {
    pub(crate) kubeconfig: PathBuf,
    pub(crate) aws_endpoint: String,
    pub(crate) region: String,
    pub(crate) nodes: usize,
    /// The fleet process, whose CPU time the measuring processes read per round.
    pub(crate) pid: u32,
}

/// What the fleet process is told to do, one JSON line each.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
enum FleetCommand {
    /// Hang every `every`-th node: it accepts connections and never answers.
    Hang { every: usize },
    /// Make every node answer after `millis`.
    Slow { millis: u64 },
    /// Take every node's fault away.
    Clear,
    /// One round's worth of churn (see [`churn`]).
    Churn { round: usize },
    /// Tell what the AWS emulator recorded.
    AwsRecording,
    /// Forget what the AWS emulator recorded.
    ClearAwsRecording,
    /// Tell what the simulated nodes have spent producing their answers so far.
    Usage,
}

/// The answer to `Hang`.
#[derive(Debug, Serialize, Deserialize)]
struct Hung {
    hung: usize,
}

/// The answer to `Churn`.
#[derive(Debug, Serialize, Deserialize)]
struct Churned {
    live_pods: usize,
}

/// The answer to the commands that only act.
#[derive(Debug, Serialize, Deserialize)]
struct Done {}

/// How the fleet's nodes are reached: each on its own loopback address (scrapers can then
/// reach them directly), or all through one listener behind the pods proxy, for fleets
/// larger than the open-file limit allows.
pub(crate) fn node_listeners(shared: bool) -> NodeListeners {
    if shared {
        NodeListeners::Shared
    } else {
        NodeListeners::PerNode
    }
}

pub(crate) async fn serve(nodes: usize, listeners: NodeListeners) -> anyhow::Result<()> {
    let root = workspace_root();
    let tools = PythonTools::find(&root)
        .context("the AWS emulator's virtualenv is missing; `cargo xtask bench` installs it")?;
    let dir = tempfile::Builder::new()
        .prefix("cni-bench-fleet")
        .tempdir()
        .context("creating the sandbox directory")?;
    let sandbox = Sandbox::start(
        &tools,
        SandboxOptions {
            nodes,
            cluster: CLUSTER_ID.to_owned(),
            node_listeners: listeners,
            ..SandboxOptions::new(dir.path())
        },
    )
    .await
    .context("starting the sandbox")?;
    let ready = FleetReady {
        kubeconfig: sandbox.kubeconfig_path(),
        aws_endpoint: sandbox.aws_endpoint().to_owned(),
        region: sandbox.region().to_owned(),
        nodes: sandbox.fleet().len(),
        pid: std::process::id(),
    };
    // Rust's stdout is line-buffered, so every answer leaves at its newline.
    println!("{}", serde_json::to_string(&ready)?);

    // Tokio's stdin needs a feature the workspace does not enable; a thread reading lines
    // into a channel does the same job.
    let (line_sender, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if line_sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut faulted: Vec<usize> = Vec::new();
    while let Some(line) = lines.recv().await {
        let answer = match serde_json::from_str(&line) {
            Ok(command) => obey(&sandbox, command, &mut faulted)?,
            Err(error) => json!({ "error": format!("unknown command {line:?}: {error}") }),
        };
        println!("{answer}");
    }
    sandbox.shutdown().await;
    Ok(())
}

/// Carries out `command` and gives its answer.
fn obey(
    sandbox: &Sandbox,
    command: FleetCommand,
    faulted: &mut Vec<usize>,
) -> anyhow::Result<Value> {
    let answer = match command {
        FleetCommand::Hang { every } => {
            let mut hung = 0;
            for node in sandbox.fleet().nodes() {
                if node.index() % every.max(1) == 0 {
                    node.set_fault(Fault::Hang);
                    hung += 1;
                }
            }
            serde_json::to_value(Hung { hung })?
        }
        FleetCommand::Slow { millis } => {
            sandbox
                .fleet()
                .set_fault_all(Fault::Slow(Duration::from_millis(millis)));
            serde_json::to_value(Done {})?
        }
        FleetCommand::Clear => {
            sandbox.fleet().set_fault_all(Fault::None);
            serde_json::to_value(Done {})?
        }
        FleetCommand::Churn { round } => {
            churn(sandbox, round, faulted)?;
            serde_json::to_value(Churned {
                live_pods: sandbox.fleet().len(),
            })?
        }
        FleetCommand::AwsRecording => serde_json::to_value(aws_recording(sandbox)?)?,
        FleetCommand::Usage => {
            let (rendering, bodies) = sandbox::fleet::rendering_totals();
            serde_json::to_value(SimulationUsage {
                render_s: rendering.as_secs_f64(),
                bodies,
            })?
        }
        FleetCommand::ClearAwsRecording => {
            if let Some(emulator) = sandbox.emulator() {
                emulator.clear_recording()?;
            }
            serde_json::to_value(Done {})?
        }
    };
    Ok(answer)
}

/// One round's worth of churn, deterministic in the round number: about 1% of the pods
/// replaced by the DaemonSet (new name and UID), 1% restarted (counters reset), and 1% each
/// answering HTTP 500 or garbage; last round's faulty nodes recover.
fn churn(sandbox: &Sandbox, round: usize, faulted: &mut Vec<usize>) -> anyhow::Result<()> {
    let nodes = sandbox.fleet().len();
    if nodes == 0 {
        return Ok(());
    }
    for index in faulted.drain(..) {
        sandbox.fleet().node(index).set_fault(Fault::None);
    }
    let per_round = nodes.div_ceil(100);
    for slot in 0..per_round {
        let step = round * per_round + slot;
        sandbox
            .replace_node((step * 7) % nodes)
            .context("replacing a pod")?;
        sandbox
            .fleet()
            .node((step * 13 + 3) % nodes)
            .reset_counters();
        let erroring = (step * 17 + 5) % nodes;
        let garbage = (step * 19 + 11) % nodes;
        sandbox.fleet().node(erroring).set_fault(Fault::Http500);
        sandbox.fleet().node(garbage).set_fault(Fault::Garbage);
        faulted.extend([erroring, garbage]);
    }
    Ok(())
}

/// What the emulator recorded: every request by operation, and the PutMetricData bodies.
fn aws_recording(sandbox: &Sandbox) -> anyhow::Result<AwsRecording> {
    let Some(emulator) = sandbox.emulator() else {
        bail!("this sandbox has no emulator of its own to read a recording from");
    };
    let requests = emulator.recorded_requests()?;
    let put_metric_data_bytes: Vec<usize> = requests
        .iter()
        .filter(|request| request.action.as_deref() == Some("PutMetricData"))
        .map(|request| request.body.len())
        .collect();
    let put_metric_data_datums: Vec<usize> = requests
        .iter()
        .filter(|request| request.action.as_deref() == Some("PutMetricData"))
        .map(|request| {
            request
                .json_body()
                .and_then(|body| body["MetricData"].as_array().map(Vec::len))
                .unwrap_or(0)
        })
        .collect();
    Ok(AwsRecording {
        total: requests.len(),
        mutating: requests
            .iter()
            .filter(|request| request.is_mutating())
            .count(),
        put_metric_data_bytes,
        put_metric_data_datums,
    })
}

/// A running `fleet` child process and its command channel.
pub(crate) struct FleetChild {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    pub(crate) ready: FleetReady,
}

impl FleetChild {
    pub(crate) async fn start(
        nodes: usize,
        listeners: NodeListeners,
    ) -> anyhow::Result<FleetChild> {
        let mut command = tokio::process::Command::new(std::env::current_exe()?);
        command.args(["fleet", "--nodes", &nodes.to_string()]);
        match listeners {
            NodeListeners::PerNode => {}
            NodeListeners::Shared => {
                command.arg("--shared-listener");
            }
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the fleet process")?;
        let stdin = child.stdin.take().context("the fleet's stdin")?;
        let stdout = child.stdout.take().context("the fleet's stdout")?;
        let mut stdout = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(FLEET_START_DEADLINE, stdout.next_line())
            .await
            .with_context(|| format!("the fleet did not start within {FLEET_START_DEADLINE:?}"))??
            .context("the fleet process exited before it was ready")?;
        Ok(FleetChild {
            child,
            stdin,
            stdout,
            ready: serde_json::from_str(&ready).context("the fleet's ready line")?,
        })
    }

    /// Hangs every `every`-th node; returns how many hang.
    pub(crate) async fn hang(&mut self, every: usize) -> anyhow::Result<usize> {
        let Hung { hung } = self.command(&FleetCommand::Hang { every }).await?;
        Ok(hung)
    }

    /// Makes every node answer after `millis`.
    pub(crate) async fn slow(&mut self, millis: u64) -> anyhow::Result<()> {
        let Done {} = self.command(&FleetCommand::Slow { millis }).await?;
        Ok(())
    }

    /// Takes every node's fault away.
    pub(crate) async fn clear(&mut self) -> anyhow::Result<()> {
        let Done {} = self.command(&FleetCommand::Clear).await?;
        Ok(())
    }

    /// Churns the fleet for `round`; returns how many pods it runs.
    pub(crate) async fn churn(&mut self, round: usize) -> anyhow::Result<usize> {
        let Churned { live_pods } = self.command(&FleetCommand::Churn { round }).await?;
        Ok(live_pods)
    }

    /// What the AWS emulator recorded since it was last cleared.
    pub(crate) async fn aws_recording(&mut self) -> anyhow::Result<AwsRecording> {
        self.command(&FleetCommand::AwsRecording).await
    }

    /// What the simulated nodes have spent producing their answers since the fleet started.
    pub(crate) async fn usage(&mut self) -> anyhow::Result<SimulationUsage> {
        self.command(&FleetCommand::Usage).await
    }

    pub(crate) async fn clear_aws_recording(&mut self) -> anyhow::Result<()> {
        let Done {} = self.command(&FleetCommand::ClearAwsRecording).await?;
        Ok(())
    }

    /// Sends `command` and reads its answer, which the fleet process gives as an `A`.
    async fn command<A: DeserializeOwned>(&mut self, command: &FleetCommand) -> anyhow::Result<A> {
        let line = serde_json::to_string(command)?;
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        let line = tokio::time::timeout(Duration::from_secs(60), self.stdout.next_line())
            .await
            .with_context(|| format!("the fleet did not answer {command:?} within 60 s"))??
            .context("the fleet process exited")?;
        let answer: Value = serde_json::from_str(&line)?;
        if let Some(error) = answer.get("error") {
            bail!("the fleet refused {command:?}: {error}");
        }
        serde_json::from_value(answer)
            .with_context(|| format!("the fleet's answer to {command:?}: {line}"))
    }

    /// Closes stdin, which stops the sandbox, and waits for the process; kills it if it
    /// takes longer than 30 s.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        let FleetChild {
            mut child, stdin, ..
        } = self;
        drop(stdin);
        match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => child.kill().await?,
        }
        Ok(())
    }
}
