//! What the benchmark driver (`publisher/examples/bench/`) reports to `cargo xtask bench`
//! (`xtask/src/bench/`): one type per scenario, serialised by the driver and read back by
//! xtask, so that both sides agree on every field at compile time.
//!
//! The contract is one JSON object on the last line of the driver's stdout
//! ([`print_report`] writes it, [`run_for_report`] runs a process and reads it). The field
//! names are those the driver has always printed; xtask turns them into the bench's own
//! output keys (documented in BENCHMARKS.md), which this module does not name.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// `parser`: our exposition parser against `prometheus-parse` on the same bodies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParserReport {
    /// The size of each body parsed, as the simulated nodes served it.
    pub body_bytes: Vec<usize>,
    /// Samples our parser reads from all bodies, every family included.
    pub samples_ours: usize,
    /// Samples `prometheus-parse` reads from the same bodies; equal to `samples_ours` when
    /// the comparison is fair.
    pub samples_prometheus_parse: usize,
    /// Samples of the families the publisher publishes.
    pub samples_published_families: usize,
    /// Throughput of our parser over every sample and label, one value per run, in MB/s
    /// (10^6 bytes).
    pub ours_mb_s: Vec<f64>,
    /// Throughput of our parser over the families the publisher publishes (the others
    /// skipped), decoding every label of the kept samples, MB/s.
    pub ours_as_published_mb_s: Vec<f64>,
    /// Throughput of the publisher's fast path: the published families only, read as the
    /// aggregator reads them (raw label text as the series key, the `quantile` label of the
    /// latency summary), MB/s.
    pub ours_fast_path_mb_s: Vec<f64>,
    /// Samples the fast path yields; equal to `samples_published_families`.
    pub samples_fast_path: usize,
    /// Throughput of `prometheus-parse`, MB/s.
    pub prometheus_parse_mb_s: Vec<f64>,
}

/// `round`: one measuring process, which discovers the pods and runs rounds against a
/// running fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundsReport {
    /// Scrapes in flight at once.
    pub concurrency: usize,
    /// The pods scraped per round when limited to the first N (sequential baselines).
    pub subset: Option<usize>,
    /// How long the first LIST of the aws-node pods took, in seconds.
    pub initial_list_s: f64,
    /// Every round in order; the first one runs with cold caches and allocator.
    pub rounds: Vec<MeasuredRound>,
    /// The process's peak RSS (`VmHWM`), in KiB.
    pub peak_rss_kib: u64,
    /// The publisher's CPU time during the first LIST of the aws-node pods, in seconds.
    #[serde(default)]
    pub initial_list_cpu_s: f64,
    /// The process's RSS (`VmRSS`) once the pod cache is filled, before the first round, in
    /// KiB: the watch cache's share of the peak.
    #[serde(default)]
    pub rss_after_list_kib: u64,
    /// What the simulated nodes spent rendering their expositions while this process ran,
    /// as the fleet counted it (filled in by the `scale` scenario, which asks the fleet).
    #[serde(default)]
    pub simulation: Option<SimulationUsage>,
}

/// The simulation's share of a measuring process's rounds: what the simulated nodes spent
/// producing their answers, which a real cluster spends on its own nodes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SimulationUsage {
    /// CPU seconds spent producing exposition bodies (summed over the fleet's threads).
    pub render_s: f64,
    /// Bodies produced.
    pub bodies: u64,
}

impl RoundsReport {
    /// The duration of every round in order, in seconds.
    pub fn round_seconds(&self) -> impl Iterator<Item = f64> + '_ {
        self.rounds.iter().map(|round| round.seconds)
    }
}

/// One round: discover, scrape, parse, aggregate and build the CloudWatch batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasuredRound {
    pub seconds: f64,
    /// Pods the round set out to scrape.
    pub pods: usize,
    pub pods_scraped: usize,
    pub scrape_errors: usize,
    pub parse_errors: usize,
    /// Datums the round produced, self-metrics included.
    pub datums: usize,
    /// PutMetricData calls those datums take.
    pub batches: usize,
    /// CPU time the measuring (publisher) process spent during the round, every thread,
    /// user and system, in seconds (`CLOCK_PROCESS_CPUTIME_ID`, what getrusage sums).
    #[serde(default)]
    pub cpu_s: f64,
    /// CPU time the fleet process (the simulated nodes and the fake API server with its pods
    /// proxy) spent during the round, in seconds, read from its `/proc/PID/stat` (10 ms
    /// resolution); `None` when the fleet's PID was not given.
    #[serde(default)]
    pub fleet_cpu_s: Option<f64>,
}

/// `scale`: rounds at one fleet size, in several measuring processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleReport {
    pub nodes: usize,
    pub concurrency: usize,
    /// The per-pod scrape timeout, in seconds.
    pub timeout_s: f64,
    /// One report per measuring process, every node healthy, scraping directly.
    pub runs: Vec<RoundsReport>,
    /// One report per measuring process, every node healthy, scraping through the fake API
    /// server's pods proxy (the publisher's default path); empty when not asked for.
    pub proxy_runs: Vec<RoundsReport>,
    /// Concurrency 1 over a subset of the pods, on loopback, when asked for.
    pub sequential: Option<RoundsReport>,
    /// Concurrent and sequential rounds with every node answering late, when asked for.
    pub latency: Option<LatencyReport>,
    /// Rounds with some nodes never answering, when asked for.
    pub hung: Option<HungReport>,
}

/// Rounds against a fleet whose every node answers after a modelled network latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyReport {
    /// The latency of every node, in milliseconds.
    pub latency_ms: u64,
    /// Concurrent rounds (the publisher's default concurrency).
    pub run: RoundsReport,
    /// Concurrency 1 over a subset of the pods.
    pub sequential: RoundsReport,
}

/// Rounds against a fleet with some nodes hung (accepting connections, never answering).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HungReport {
    pub hung_nodes: usize,
    pub run: RoundsReport,
}

/// `soak`: many rounds against a churning fleet, watching RSS and the per-pod state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoakReport {
    pub nodes: usize,
    pub rounds: usize,
    /// The round whose RSS is the baseline of the growth.
    pub baseline_round: usize,
    pub baseline_rss_kib: u64,
    /// The RSS after the last round, in KiB.
    pub final_rss_kib: u64,
    /// From the baseline to the final RSS, in percent of the baseline.
    pub rss_growth_pct: f64,
    /// (round, RSS in KiB) every 100 rounds and after the last.
    pub rss_by_round_kib: Vec<(usize, u64)>,
    /// The most pods the aggregator's per-pod state held after any round.
    pub max_tracked_pods: usize,
    /// The pods the fleet runs, which the per-pod state may never exceed.
    pub live_pods: usize,
    /// Rounds after which the per-pod state held pods that were gone.
    pub state_violations: usize,
    pub pods_scraped: usize,
    pub scrape_errors: usize,
    pub parse_errors: usize,
    /// Series the aggregator tracked after the last round.
    pub tracked_series: usize,
    pub elapsed_s: f64,
}

/// `cloudwatch`: rounds published to the AWS emulator, then a backlog flushed at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudWatchReport {
    pub nodes: usize,
    /// The datums of each steady-state round, each flushed on its own.
    pub round_datums: Vec<usize>,
    /// The PutMetricData calls each steady-state flush made, as the publisher counted them.
    pub round_calls: Vec<usize>,
    /// What the emulator recorded during the steady-state rounds.
    pub steady_recorded: AwsRecording,
    /// Rounds queued while CloudWatch was unreachable.
    pub backlog_rounds: usize,
    pub backlog_datums: usize,
    /// The PutMetricData calls the backlog's flush made, as the publisher counted them.
    pub backlog_calls: usize,
    /// What the emulator recorded while the backlog was flushed.
    pub backlog_recorded: AwsRecording,
}

/// The requests the AWS emulator recorded since it was last cleared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsRecording {
    pub total: usize,
    /// Requests that change state (not Get, List or Describe).
    pub mutating: usize,
    /// The body size of each PutMetricData request, as recorded (awsJson).
    pub put_metric_data_bytes: Vec<usize>,
    /// The datums of each PutMetricData request.
    pub put_metric_data_datums: Vec<usize>,
}

/// Why no report could be read from a process.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("could not run {process}")]
    Spawn {
        process: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{process} ran past its deadline of {deadline:?}")]
    Deadline { process: String, deadline: Duration },
    #[error("{process} failed ({status}); a panic shows on stderr above")]
    Failed { process: String, status: ExitStatus },
    #[error("{process} printed nothing")]
    Empty { process: String },
    #[error("{process} printed a line that is not a {expected}")]
    Parse {
        process: String,
        expected: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("could not write the report")]
    Write(#[source] serde_json::Error),
}

/// Prints `report` as the one JSON line the reading side takes. Rust's stdout is
/// line-buffered, so the line leaves at its newline.
pub fn print_report(report: &impl Serialize) -> Result<(), ReportError> {
    let line = serde_json::to_string(report).map_err(ReportError::Write)?;
    println!("{line}");
    Ok(())
}

/// Runs `command` to its end within `deadline` and reads the report on its last stdout
/// line. Its stderr is passed through, so that its progress and any panic show; the
/// process is killed when the deadline passes. `process` names it in errors.
pub async fn run_for_report<T: DeserializeOwned>(
    mut command: tokio::process::Command,
    process: String,
    deadline: Duration,
) -> Result<T, ReportError> {
    let output = command
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(deadline, output).await {
        Ok(Ok(output)) => output,
        Ok(Err(source)) => return Err(ReportError::Spawn { process, source }),
        Err(_elapsed) => return Err(ReportError::Deadline { process, deadline }),
    };
    if !output.status.success() {
        return Err(ReportError::Failed {
            process,
            status: output.status,
        });
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let Some(last) = text.lines().last() else {
        return Err(ReportError::Empty { process });
    };
    serde_json::from_str(last).map_err(|source| ReportError::Parse {
        process,
        expected: std::any::type_name::<T>(),
        source,
    })
}
