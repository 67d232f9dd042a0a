//! The benchmark driver behind `cargo xtask bench`. It is built in release mode and run as
//! several processes, so that the peak RSS of the publisher side is measured without the
//! simulated fleet's memory in it:
//!
//! - `fleet`: a sandbox (AWS emulator, fake Kubernetes API server, simulated aws-node fleet)
//!   that prints one JSON line when ready and then obeys one command per stdin line
//!   (faults, churn, request-log summaries), answering each with one JSON line. It stops
//!   when its stdin closes.
//! - `round`: one measuring process. It discovers the pods from the fake API server, then
//!   runs rounds (discover, scrape, parse, aggregate, build the CloudWatch batches) with
//!   the publisher's own library code and prints the timings and its peak RSS as JSON.
//! - `scale`: starts one `fleet` and runs `round` processes against it: plain runs, a
//!   sequential run (concurrency 1) and runs with 1% of the nodes hung.
//! - `parser`: our exposition parser against the `prometheus-parse` crate on the same bytes.
//! - `soak`: thousands of rounds against a churning fleet, watching RSS and the per-pod state.
//! - `cloudwatch`: rounds published to the emulator, counting PutMetricData calls from its
//!   request recording.
//!
//! Every subcommand prints exactly one JSON object on stdout; `cargo xtask bench` computes
//! the medians and ratios. Nothing here is timed by a test.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_sdk_cloudwatch::types::MetricDatum;
use clap::{Parser, Subcommand};
use cni_metrics_publisher::aggregate::{Aggregator, AggregatorOptions, RoundStats};
use cni_metrics_publisher::cloudwatch::{
    CloudWatchPublisher, DatumQueue, MAX_BYTES_PER_CALL, MAX_DATUMS_PER_CALL,
};
use cni_metrics_publisher::cycle::RoundRunner;
use cni_metrics_publisher::datum::Datum;
use cni_metrics_publisher::discovery::{PodDiscovery, ScrapeTarget};
use cni_metrics_publisher::exposition::{Sample, Samples};
use cni_metrics_publisher::ipamd_metrics::index_of_family;
use cni_metrics_publisher::scrape::{ScrapeOptions, Scraper};
use sandbox::environment::{Sandbox, SandboxOptions};
use sandbox::fleet::{AWS_NODE_LABEL, AWS_NODE_NAMESPACE, Fault, IPAMD_METRICS_PORT};
use sandbox::python_tools::{PythonTools, workspace_root};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The CLUSTER_ID every benchmark round publishes under.
const CLUSTER_ID: &str = "bench";
/// The publisher's default body limit (`--scrape-body-limit 1MiB`).
const BODY_LIMIT: usize = 1024 * 1024;
/// How long a measuring process may wait for the first pod listing.
const DISCOVERY_WAIT: Duration = Duration::from_secs(120);
/// How long any child process may take before it is killed and the scenario fails.
const CHILD_DEADLINE: Duration = Duration::from_secs(600);
/// The round deadline of the sequential baselines, longer than any of them takes:
/// concurrency 1 is upstream's way, which has no round deadline, and the baseline must
/// scrape every pod of its subset.
const SEQUENTIAL_ROUND_TIMEOUT_MS: u64 = 500_000;

#[derive(Debug, Parser)]
#[command(about = "Benchmark driver for `cargo xtask bench`; prints one JSON object")]
struct Arguments {
    #[command(subcommand)]
    command: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Serve a sandbox and obey commands on stdin (internal)
    Fleet {
        #[arg(long)]
        nodes: usize,
    },
    /// One measuring process: rounds against a running fleet (internal)
    Round(RoundOptions),
    /// Rounds at one fleet size: plain, sequential and hung runs
    Scale(ScaleOptions),
    /// Our parser against prometheus-parse on the same bytes
    Parser {
        /// Seconds each parser runs per measurement
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// Measurements per parser, interleaved
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Many rounds against a churning fleet
    Soak {
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        #[arg(long, default_value_t = 2000)]
        rounds: usize,
        /// The round whose RSS is the baseline
        #[arg(long, default_value_t = 100)]
        baseline_round: usize,
    },
    /// Rounds published to the emulator, then a backlog flushed at once
    Cloudwatch {
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Rounds queued while "CloudWatch is unreachable", then flushed in one go
        #[arg(long, default_value_t = 100)]
        backlog_rounds: usize,
    },
}

#[derive(Debug, Clone, clap::Args)]
struct RoundOptions {
    #[arg(long)]
    kubeconfig: PathBuf,
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// The round's deadline (default: the scrape timeout, as the publisher's default)
    #[arg(long)]
    round_timeout_ms: Option<u64>,
    /// Scrape only the first N pods of each round (for the sequential baseline)
    #[arg(long)]
    subset: Option<usize>,
}

#[derive(Debug, Clone, clap::Args)]
struct ScaleOptions {
    #[arg(long)]
    nodes: usize,
    /// Measuring processes with all nodes healthy
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Rounds per process; the first one is reported apart (cold caches and allocator)
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Also measure concurrency 1 on the first N pods (0: off)
    #[arg(long, default_value_t = 0)]
    sequential_subset: usize,
    /// Rounds of the sequential process (the first is not used)
    #[arg(long, default_value_t = 2)]
    sequential_rounds: usize,
    /// Also measure with every N-th node hung (0: off; 100 = 1%)
    #[arg(long, default_value_t = 0)]
    hang_every: usize,
    /// Rounds of the hung process
    #[arg(long, default_value_t = 2)]
    hung_rounds: usize,
    /// Also measure concurrent and sequential rounds with every node answering after this
    /// many milliseconds, a modelled network and gather latency (0: off)
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let arguments = Arguments::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the Tokio runtime")?;
    let report = runtime.block_on(async {
        match arguments.command {
            Scenario::Fleet { nodes } => serve_fleet(nodes).await.map(|()| Value::Null),
            Scenario::Round(options) => measure_rounds(&options).await,
            Scenario::Scale(options) => scale(&options).await,
            Scenario::Parser { seconds, runs } => parser(seconds, runs).await,
            Scenario::Soak {
                nodes,
                rounds,
                baseline_round,
            } => soak(nodes, rounds, baseline_round).await,
            Scenario::Cloudwatch {
                nodes,
                rounds,
                backlog_rounds,
            } => cloudwatch(nodes, rounds, backlog_rounds).await,
        }
    })?;
    if !report.is_null() {
        println!("{report}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The fleet process.

async fn serve_fleet(nodes: usize) -> anyhow::Result<()> {
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
            ..SandboxOptions::new(dir.path())
        },
    )
    .await
    .context("starting the sandbox")?;
    let ready = json!({
        "kubeconfig": sandbox.kubeconfig_path(),
        "aws_endpoint": sandbox.aws_endpoint(),
        "region": sandbox.region(),
        "nodes": sandbox.fleet().len(),
    });
    // Rust's stdout is line-buffered, so every answer leaves at its newline.
    println!("{ready}");

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
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["hang", every] => {
                let every: usize = every.parse().context("hang takes a number")?;
                let mut hung = 0;
                for node in sandbox.fleet().nodes() {
                    if node.index() % every.max(1) == 0 {
                        node.set_fault(Fault::Hang);
                        hung += 1;
                    }
                }
                json!({ "hung": hung })
            }
            ["slow", millis] => {
                let millis: u64 = millis.parse().context("slow takes milliseconds")?;
                sandbox
                    .fleet()
                    .set_fault_all(Fault::Slow(Duration::from_millis(millis)));
                json!({ "slow_ms": millis })
            }
            ["clear"] => {
                sandbox.fleet().set_fault_all(Fault::None);
                json!({ "cleared": true })
            }
            ["churn", round] => {
                let round: usize = round.parse().context("churn takes a round number")?;
                churn(&sandbox, round, &mut faulted)?;
                json!({ "live_pods": sandbox.fleet().len() })
            }
            ["aws"] => aws_summary(&sandbox)?,
            ["aws-clear"] => {
                if let Some(emulator) = sandbox.emulator() {
                    emulator.clear_recording()?;
                }
                json!({ "cleared": true })
            }
            _ => json!({ "error": format!("unknown command {line:?}") }),
        };
        println!("{answer}");
    }
    sandbox.shutdown().await;
    Ok(())
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
fn aws_summary(sandbox: &Sandbox) -> anyhow::Result<Value> {
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
    Ok(json!({
        "total": requests.len(),
        "mutating": requests.iter().filter(|request| request.is_mutating()).count(),
        "put_metric_data_bytes": put_metric_data_bytes,
        "put_metric_data_datums": put_metric_data_datums,
    }))
}

/// A running `fleet` child process and its command channel.
struct FleetChild {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    ready: Value,
}

impl FleetChild {
    async fn start(nodes: usize) -> anyhow::Result<FleetChild> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["fleet", "--nodes", &nodes.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the fleet process")?;
        let stdin = child.stdin.take().context("the fleet's stdin")?;
        let stdout = child.stdout.take().context("the fleet's stdout")?;
        let mut stdout = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(180), stdout.next_line())
            .await
            .context("the fleet did not start within 180 s")??
            .context("the fleet process exited before it was ready")?;
        Ok(FleetChild {
            child,
            stdin,
            stdout,
            ready: serde_json::from_str(&ready).context("the fleet's ready line")?,
        })
    }

    fn kubeconfig(&self) -> anyhow::Result<PathBuf> {
        self.ready["kubeconfig"]
            .as_str()
            .map(PathBuf::from)
            .context("the fleet did not report its kubeconfig")
    }

    async fn command(&mut self, command: &str) -> anyhow::Result<Value> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        let line = tokio::time::timeout(Duration::from_secs(60), self.stdout.next_line())
            .await
            .with_context(|| format!("the fleet did not answer {command:?} within 60 s"))??
            .context("the fleet process exited")?;
        let answer: Value = serde_json::from_str(&line)?;
        if let Some(error) = answer.get("error") {
            bail!("the fleet refused {command:?}: {error}");
        }
        Ok(answer)
    }

    /// Closes stdin, which stops the sandbox, and waits for the process; kills it if it
    /// takes longer than 30 s.
    async fn stop(self) -> anyhow::Result<()> {
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

// ---------------------------------------------------------------------------------------
// Rounds: the publisher's own `RoundRunner`, as `cni-metrics-publisher run --scrape-via
// direct` builds it.

/// Everything a round needs, built the way `cni-metrics-publisher run --scrape-via direct`
/// builds it.
struct Publisher {
    runner: RoundRunner,
    /// How long the first LIST of the aws-node pods took.
    initial_list: Duration,
}

impl Publisher {
    async fn start(
        kubeconfig: &Path,
        concurrency: usize,
        timeout: Duration,
        round_timeout: Duration,
    ) -> anyhow::Result<Publisher> {
        let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        let client = kube::Client::try_from(config)?;
        let selector = format!("{}={}", AWS_NODE_LABEL.0, AWS_NODE_LABEL.1);
        let mut settings = scrape_settings(concurrency, timeout);
        settings.round_timeout = round_timeout;
        let listing = Instant::now();
        let discovery = PodDiscovery::start(client, AWS_NODE_NAMESPACE, &selector, false);
        let runner = RoundRunner::new(
            discovery,
            Scraper::direct(&settings),
            Aggregator::new(AggregatorOptions {
                cluster_id: CLUSTER_ID.to_owned(),
                per_az: false,
                max_series_per_pod: cni_metrics_publisher::aggregate::DEFAULT_MAX_SERIES_PER_POD,
            }),
        );
        runner.wait_until_ready(DISCOVERY_WAIT).await?;
        Ok(Publisher {
            runner,
            initial_list: listing.elapsed(),
        })
    }

    /// A publisher with the defaults of `cni-metrics-publisher run`: concurrency 64, a 5 s
    /// scrape timeout and a round deadline equal to it.
    async fn with_defaults(kubeconfig: &Path) -> anyhow::Result<Publisher> {
        let timeout = Duration::from_secs(5);
        Publisher::start(kubeconfig, 64, timeout, timeout).await
    }

    /// One round: discover, scrape, parse, aggregate, add the self-metrics and build the
    /// CloudWatch batches. `subset` limits the pods scraped.
    async fn round(&mut self, subset: Option<usize>) -> RoundReport {
        let started = Instant::now();
        let (datums, stats, pods) = self.round_datums(subset).await;
        let datum_count = datums.len();
        let batches = cloudwatch_batches(datums);
        RoundReport {
            elapsed: started.elapsed(),
            pods,
            pods_scraped: stats.pods_scraped,
            scrape_errors: stats.scrape_errors,
            parse_errors: stats.parse_errors,
            datums: datum_count,
            batches: batches.len(),
        }
    }

    /// Discover, scrape, parse and aggregate: the round's datums with the self-metrics
    /// last, the aggregator's statistics and the pod count.
    async fn round_datums(&mut self, subset: Option<usize>) -> (Vec<Datum>, RoundStats, usize) {
        let mut targets: Vec<ScrapeTarget> = self.runner.targets();
        if let Some(subset) = subset {
            targets.truncate(subset);
        }
        let pods = targets.len();
        let (round, stats) = self.runner.round_over(targets).await;
        (round.datums, stats, pods)
    }
}

/// The publisher's scrape settings for the benchmark's fleet; the round deadline is the
/// scrape timeout, as by default.
fn scrape_settings(concurrency: usize, timeout: Duration) -> ScrapeOptions {
    ScrapeOptions {
        port: IPAMD_METRICS_PORT,
        concurrency,
        timeout,
        round_timeout: timeout,
        body_limit: BODY_LIMIT,
        // The default budget (`--scrape-memory-budget 32MiB`).
        memory_budget: 32 * BODY_LIMIT,
    }
}

struct RoundReport {
    elapsed: Duration,
    pods: usize,
    pods_scraped: usize,
    scrape_errors: usize,
    parse_errors: usize,
    datums: usize,
    batches: usize,
}

/// Splits datums into PutMetricData batches of SDK datums with the publisher's own queue,
/// as a flush does.
fn cloudwatch_batches(datums: Vec<Datum>) -> Vec<Vec<MetricDatum>> {
    let mut queue = DatumQueue::new(datums.len());
    queue.push(datums);
    let mut batches = Vec::new();
    while !queue.is_empty() {
        let batch = queue.next_batch(MAX_DATUMS_PER_CALL, MAX_BYTES_PER_CALL);
        queue.remove_oldest(batch.len());
        batches.push(batch);
    }
    batches
}

/// A field of `/proc/self/status` in KiB (`VmHWM` is the peak RSS, `VmRSS` the current).
fn proc_status_kib(field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().trim_end_matches("kB").trim().parse().ok()
        })
        .with_context(|| format!("no {field} in /proc/self/status"))
}

async fn measure_rounds(options: &RoundOptions) -> anyhow::Result<Value> {
    let timeout = Duration::from_millis(options.timeout_ms);
    let round_timeout = options
        .round_timeout_ms
        .map_or(timeout, Duration::from_millis);
    let mut publisher = Publisher::start(
        &options.kubeconfig,
        options.concurrency,
        timeout,
        round_timeout,
    )
    .await?;
    let mut rounds = Vec::new();
    for _ in 0..options.rounds {
        let report = publisher.round(options.subset).await;
        rounds.push(json!({
            "seconds": report.elapsed.as_secs_f64(),
            "pods": report.pods,
            "pods_scraped": report.pods_scraped,
            "scrape_errors": report.scrape_errors,
            "parse_errors": report.parse_errors,
            "datums": report.datums,
            "batches": report.batches,
        }));
    }
    Ok(json!({
        "concurrency": options.concurrency,
        "subset": options.subset,
        "initial_list_s": publisher.initial_list.as_secs_f64(),
        "rounds": rounds,
        "peak_rss_kib": proc_status_kib("VmHWM")?,
    }))
}

/// Runs `round` in its own process, so its peak RSS is its own.
async fn round_process(kubeconfig: &Path, options: &[String]) -> anyhow::Result<Value> {
    let output = tokio::process::Command::new(std::env::current_exe()?)
        .arg("round")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(options)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(CHILD_DEADLINE, output)
        .await
        .context("a round process ran past its deadline")??;
    if !output.status.success() {
        bail!("a round process failed ({})", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let last = text
        .lines()
        .last()
        .context("a round process printed nothing")?;
    Ok(serde_json::from_str(last)?)
}

async fn scale(options: &ScaleOptions) -> anyhow::Result<Value> {
    let mut fleet = FleetChild::start(options.nodes).await?;
    let kubeconfig = fleet.kubeconfig()?;
    let common = |rounds: usize, concurrency: usize| {
        vec![
            "--rounds".to_owned(),
            rounds.to_string(),
            "--concurrency".to_owned(),
            concurrency.to_string(),
            "--timeout-ms".to_owned(),
            options.timeout_ms.to_string(),
        ]
    };
    let mut runs = Vec::new();
    for _ in 0..options.runs {
        runs.push(round_process(&kubeconfig, &common(options.rounds, options.concurrency)).await?);
    }
    // Concurrency 1 over the first `sequential_subset` pods (all of them when 0).
    let sequential_arguments = || {
        let mut arguments = common(options.sequential_rounds, 1);
        arguments.extend([
            "--round-timeout-ms".to_owned(),
            SEQUENTIAL_ROUND_TIMEOUT_MS.to_string(),
        ]);
        if options.sequential_subset > 0 {
            arguments.extend(["--subset".to_owned(), options.sequential_subset.to_string()]);
        }
        arguments
    };
    let sequential = if options.sequential_subset > 0 {
        Some(round_process(&kubeconfig, &sequential_arguments()).await?)
    } else {
        None
    };
    let latency = if options.latency_ms > 0 {
        fleet
            .command(&format!("slow {}", options.latency_ms))
            .await?;
        let concurrent =
            round_process(&kubeconfig, &common(options.rounds, options.concurrency)).await?;
        let sequential = round_process(&kubeconfig, &sequential_arguments()).await?;
        fleet.command("clear").await?;
        Some(json!({
            "latency_ms": options.latency_ms,
            "run": concurrent,
            "sequential": sequential,
        }))
    } else {
        None
    };
    let hung = if options.hang_every > 0 {
        let answer = fleet
            .command(&format!("hang {}", options.hang_every))
            .await?;
        let run = round_process(
            &kubeconfig,
            &common(options.hung_rounds, options.concurrency),
        )
        .await?;
        fleet.command("clear").await?;
        Some(json!({ "hung_nodes": answer["hung"], "run": run }))
    } else {
        None
    };
    fleet.stop().await?;
    Ok(json!({
        "nodes": options.nodes,
        "concurrency": options.concurrency,
        "timeout_s": options.timeout_ms as f64 / 1000.0,
        "runs": runs,
        "sequential": sequential,
        "latency": latency,
        "hung": hung,
    }))
}

// ---------------------------------------------------------------------------------------
// Parser throughput.

/// Parses every sample with our parser and decodes every label, the work prometheus-parse
/// does too.
fn parse_ours_fully(body: &str) -> usize {
    consume_samples(Samples::new(body))
}

/// What the publisher does with a body: skip the families it does not publish (go_,
/// process_, ...) and parse the rest.
fn parse_ours_as_published(body: &str) -> usize {
    consume_samples(Samples::filtered(body, |family| {
        index_of_family(family).is_some()
    }))
}

/// Reads every sample of `samples` up to the first error, decoding every label, and counts
/// them.
fn consume_samples<'a, E>(samples: impl Iterator<Item = Result<Sample<'a>, E>>) -> usize {
    let mut count = 0;
    for sample in samples {
        let Ok(sample) = sample else { break };
        for label in sample.labels() {
            black_box(&label);
        }
        black_box(sample.value);
        count += 1;
    }
    count
}

fn parse_with_prometheus_parse(body: &str) -> usize {
    let lines = body.lines().map(|line| Ok(line.to_owned()));
    match prometheus_parse::Scrape::parse(lines) {
        Ok(scrape) => black_box(scrape.samples.len()),
        Err(_) => 0,
    }
}

/// MB/s (10^6 bytes) of `parse` over `bodies`, repeated for about `seconds`.
fn throughput(bodies: &[String], seconds: f64, parse: fn(&str) -> usize) -> f64 {
    let bytes_per_pass: usize = bodies.iter().map(String::len).sum();
    let started = Instant::now();
    let mut passes = 0_u64;
    while started.elapsed().as_secs_f64() < seconds || passes == 0 {
        for body in bodies {
            black_box(parse(black_box(body)));
        }
        passes += 1;
    }
    (bytes_per_pass as f64 * passes as f64) / started.elapsed().as_secs_f64() / 1e6
}

async fn parser(seconds: f64, runs: usize) -> anyhow::Result<Value> {
    // Real bodies as the simulated nodes serve them, fetched over HTTP like a round does.
    let fleet = sandbox::fleet::Fleet::start(sandbox::fleet::FleetOptions {
        nodes: 8,
        ..Default::default()
    })
    .await?;
    let scraper = Scraper::direct(&scrape_settings(8, Duration::from_secs(5)));
    let mut bodies = Vec::new();
    for node in fleet.nodes() {
        let target = ScrapeTarget {
            uid: node.pod_uid(),
            name: node.pod_name(),
            namespace: AWS_NODE_NAMESPACE.to_owned(),
            host_ip: node.address().ip().to_string(),
            zone: None,
        };
        let scraped = scraper.scrape(target).await;
        bodies.push(scraped.outcome.context("fetching a body from the fleet")?);
    }
    fleet.shutdown().await;

    // Both parsers must see the same samples, or the comparison is meaningless.
    let ours_samples: usize = bodies.iter().map(|body| parse_ours_fully(body)).sum();
    let theirs_samples: usize = bodies
        .iter()
        .map(|body| parse_with_prometheus_parse(body))
        .sum();
    let published_samples: usize = bodies
        .iter()
        .map(|body| parse_ours_as_published(body))
        .sum();

    let mut ours = Vec::new();
    let mut as_published = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..runs {
        ours.push(throughput(&bodies, seconds, parse_ours_fully));
        theirs.push(throughput(&bodies, seconds, parse_with_prometheus_parse));
        as_published.push(throughput(&bodies, seconds, parse_ours_as_published));
    }
    let sizes: Vec<usize> = bodies.iter().map(String::len).collect();
    Ok(json!({
        "body_bytes": sizes,
        "samples_ours": ours_samples,
        "samples_prometheus_parse": theirs_samples,
        "samples_published_families": published_samples,
        "ours_mb_s": ours,
        "ours_as_published_mb_s": as_published,
        "prometheus_parse_mb_s": theirs,
    }))
}

// ---------------------------------------------------------------------------------------
// Soak.

async fn soak(nodes: usize, rounds: usize, baseline_round: usize) -> anyhow::Result<Value> {
    let mut fleet = FleetChild::start(nodes).await?;
    let mut publisher = Publisher::with_defaults(&fleet.kubeconfig()?).await?;
    let started = Instant::now();
    let mut rss_samples = Vec::new();
    let mut baseline_rss_kib = None;
    let mut max_tracked = 0;
    let mut state_violations = 0;
    let mut scrape_errors = 0;
    let mut parse_errors = 0;
    let mut pods_scraped = 0;
    for round in 1..=rounds {
        let answer = fleet.command(&format!("churn {round}")).await?;
        let live_pods = answer["live_pods"].as_u64().unwrap_or(0) as usize;
        let report = publisher.round(None).await;
        scrape_errors += report.scrape_errors;
        parse_errors += report.parse_errors;
        pods_scraped += report.pods_scraped;
        // The per-pod state may hold only pods of this round, and never more than the
        // fleet runs: a replaced pod's state must be gone.
        let tracked = publisher.runner.aggregator().tracked_pods();
        max_tracked = max_tracked.max(tracked);
        if tracked > live_pods || tracked > report.pods {
            state_violations += 1;
        }
        if round == baseline_round {
            baseline_rss_kib = Some(proc_status_kib("VmRSS")?);
        }
        if round % 100 == 0 || round == rounds {
            rss_samples.push(json!([round, proc_status_kib("VmRSS")?]));
        }
    }
    let final_rss_kib = proc_status_kib("VmRSS")?;
    fleet.stop().await?;
    let baseline = baseline_rss_kib.context("fewer rounds than the baseline round")?;
    Ok(json!({
        "nodes": nodes,
        "rounds": rounds,
        "baseline_round": baseline_round,
        "baseline_rss_kib": baseline,
        "final_rss_kib": final_rss_kib,
        "rss_growth_pct": (final_rss_kib as f64 - baseline as f64) / baseline as f64 * 100.0,
        "rss_by_round_kib": rss_samples,
        "max_tracked_pods": max_tracked,
        "live_pods": nodes,
        "state_violations": state_violations,
        "pods_scraped": pods_scraped,
        "scrape_errors": scrape_errors,
        "parse_errors": parse_errors,
        "tracked_series": publisher.runner.aggregator().tracked_series(),
        "elapsed_s": started.elapsed().as_secs_f64(),
    }))
}

// ---------------------------------------------------------------------------------------
// CloudWatch calls.

async fn cloudwatch(nodes: usize, rounds: usize, backlog_rounds: usize) -> anyhow::Result<Value> {
    let mut fleet = FleetChild::start(nodes).await?;
    let endpoint = fleet.ready["aws_endpoint"]
        .as_str()
        .context("the fleet did not report its AWS endpoint")?
        .to_owned();
    let region = fleet.ready["region"]
        .as_str()
        .unwrap_or("us-west-2")
        .to_owned();
    let mut publisher = Publisher::with_defaults(&fleet.kubeconfig()?).await?;
    let sdk_config = sandbox::aws_emulator::sdk_config_for(&endpoint, &region);
    let mut cloudwatch = CloudWatchPublisher::new(
        &sdk_config,
        cni_metrics_publisher::CLOUDWATCH_NAMESPACE,
        20_000,
        MAX_DATUMS_PER_CALL,
        MAX_BYTES_PER_CALL,
    );
    fleet.command("aws-clear").await?;

    // Steady state: each round is flushed at once, as `run` does.
    let mut round_datums = Vec::new();
    let mut round_calls = Vec::new();
    for _ in 0..rounds {
        let datums = publisher.round_datums(None).await.0;
        round_datums.push(datums.len());
        cloudwatch.enqueue(datums);
        round_calls.push(cloudwatch.flush().await?.calls);
    }
    let steady = fleet.command("aws").await?;
    fleet.command("aws-clear").await?;

    // A backlog: rounds queued while CloudWatch was unreachable, flushed in one go.
    let mut backlog_datums = 0;
    for _ in 0..backlog_rounds {
        let datums = publisher.round_datums(None).await.0;
        backlog_datums += datums.len();
        cloudwatch.enqueue(datums);
    }
    let backlog_report = cloudwatch.flush().await?;
    let backlog = fleet.command("aws").await?;
    fleet.stop().await?;
    Ok(json!({
        "nodes": nodes,
        "round_datums": round_datums,
        "round_calls": round_calls,
        "steady_recorded": steady,
        "backlog_rounds": backlog_rounds,
        "backlog_datums": backlog_datums,
        "backlog_calls": backlog_report.calls,
        "backlog_recorded": backlog,
    }))
}
