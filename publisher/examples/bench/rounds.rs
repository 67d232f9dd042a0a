//! The `round` process, one measurement with the publisher's own `RoundRunner` as
//! `cni-metrics-publisher run --scrape-via direct` (or `--scrape-via proxy`) builds it, and
//! the [`Publisher`] the other scenarios run rounds with.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_sdk_cloudwatch::types::MetricDatum;
use cni_metrics_publisher::aggregate::{Aggregator, AggregatorOptions, RoundStats};
use cni_metrics_publisher::cloudwatch::{
    DatumQueue, MAX_BYTES_PER_CALL, MAX_DATUMS_PER_CALL, to_metric_datum,
};
use cni_metrics_publisher::config::ScrapeVia;
use cni_metrics_publisher::cycle::RoundRunner;
use cni_metrics_publisher::datum::Datum;
use cni_metrics_publisher::discovery::{PodDiscovery, ScrapeTarget};
use cni_metrics_publisher::scrape::{ScrapeOptions, Scraper};
use sandbox::bench_report::{MeasuredRound, RoundsReport, run_for_report};
use sandbox::fleet::{AWS_NODE_LABEL, AWS_NODE_NAMESPACE, IPAMD_METRICS_PORT};

use crate::CLUSTER_ID;

/// The publisher's default body limit (`--scrape-body-limit 1MiB`).
const BODY_LIMIT: usize = 1024 * 1024;
/// How long a measuring process may wait for the first pod listing.
const DISCOVERY_WAIT: Duration = Duration::from_secs(120);
/// How long any child process may take before it is killed and the scenario fails.
const CHILD_DEADLINE: Duration = Duration::from_secs(600);

/// How every measuring process runs its rounds; `scale` takes the same flags for its
/// processes.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct ProcessOptions {
    /// Rounds per process; the first one is reported apart (cold caches and allocator)
    #[arg(long, default_value_t = 4)]
    pub(crate) rounds: usize,
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
    #[arg(long, default_value_t = 5000)]
    pub(crate) timeout_ms: u64,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RoundOptions {
    #[arg(long)]
    pub(crate) kubeconfig: PathBuf,
    #[command(flatten)]
    pub(crate) process: ProcessOptions,
    /// The round's deadline (default: the scrape timeout, the publisher's default until it
    /// became 80% of the interval; the results in BENCHMARKS.md were measured with it)
    #[arg(long)]
    pub(crate) round_timeout_ms: Option<u64>,
    /// Scrape only the first N pods of each round (for the sequential baseline)
    #[arg(long)]
    pub(crate) subset: Option<usize>,
    /// How scrapes reach the nodes: straight to them, or through the fake API server's
    /// pods proxy (the publisher's default)
    #[arg(long, value_enum, default_value_t = ScrapeVia::Direct)]
    pub(crate) scrape_via: ScrapeVia,
    /// The fleet process, whose CPU time each round also reports
    #[arg(long)]
    pub(crate) fleet_pid: Option<u32>,
}

impl RoundOptions {
    /// The `round` command line that parses back into these options.
    fn command_line(&self) -> Vec<OsString> {
        let mut line: Vec<OsString> = vec![
            "round".into(),
            "--kubeconfig".into(),
            self.kubeconfig.clone().into(),
            "--rounds".into(),
            self.process.rounds.to_string().into(),
            "--concurrency".into(),
            self.process.concurrency.to_string().into(),
            "--timeout-ms".into(),
            self.process.timeout_ms.to_string().into(),
        ];
        if let Some(round_timeout_ms) = self.round_timeout_ms {
            line.extend([
                "--round-timeout-ms".into(),
                round_timeout_ms.to_string().into(),
            ]);
        }
        if let Some(subset) = self.subset {
            line.extend(["--subset".into(), subset.to_string().into()]);
        }
        let via = match self.scrape_via {
            ScrapeVia::Direct => "direct",
            ScrapeVia::Proxy => "proxy",
        };
        line.extend(["--scrape-via".into(), via.into()]);
        if let Some(pid) = self.fleet_pid {
            line.extend(["--fleet-pid".into(), pid.to_string().into()]);
        }
        line
    }
}

/// Everything a round needs, built the way `cni-metrics-publisher run --scrape-via direct`
/// (or `proxy`) builds it.
pub(crate) struct Publisher {
    pub(crate) runner: RoundRunner,
    /// How long the first LIST of the aws-node pods took.
    initial_list: Duration,
    /// The CPU time the process spent on it.
    initial_list_cpu: Duration,
}

impl Publisher {
    async fn start(
        kubeconfig: &Path,
        concurrency: usize,
        timeout: Duration,
        round_timeout: Duration,
        via: ScrapeVia,
    ) -> anyhow::Result<Publisher> {
        let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)
            .with_context(|| format!("reading {}", kubeconfig.display()))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .context("loading the fleet's kubeconfig")?;
        let client = kube::Client::try_from(config.clone()).context("building the kube client")?;
        let selector = format!("{}={}", AWS_NODE_LABEL.0, AWS_NODE_LABEL.1);
        let mut settings = scrape_settings(concurrency, timeout);
        settings.round_timeout = round_timeout;
        // As `cni-metrics-publisher run` does: the proxy transport gets its own client (no
        // retries, the scrape timeout as read timeout), separate from discovery's.
        let scraper = match via {
            ScrapeVia::Direct => Scraper::direct(&settings),
            ScrapeVia::Proxy => {
                Scraper::via_proxy(config, &settings).context("building the pods-proxy scraper")?
            }
        };
        let listing = Instant::now();
        let listing_cpu = process_cpu_time();
        let discovery = PodDiscovery::start(client, AWS_NODE_NAMESPACE, &selector, false);
        let runner = RoundRunner::new(
            discovery,
            scraper,
            Aggregator::new(AggregatorOptions {
                cluster_id: CLUSTER_ID.to_owned(),
                per_az: false,
                max_series_per_pod: cni_metrics_publisher::aggregate::DEFAULT_MAX_SERIES_PER_POD,
                stale_rounds: cni_metrics_publisher::aggregate::DEFAULT_STALE_ROUNDS,
            }),
        );
        runner.wait_until_ready(DISCOVERY_WAIT).await?;
        Ok(Publisher {
            runner,
            initial_list: listing.elapsed(),
            initial_list_cpu: process_cpu_time().saturating_sub(listing_cpu),
        })
    }

    /// A publisher with the defaults of `cni-metrics-publisher run`: concurrency 64 and a 5 s
    /// scrape timeout, and a round deadline equal to it: the 5 s the results in BENCHMARKS.md
    /// were measured with (the publisher's default is now 24 s, 80% of the 30 s interval,
    /// which no healthy round below comes near). It scrapes directly, as the soak and
    /// CloudWatch results were measured: those scenarios are about memory and batching, which
    /// the transport does not change.
    pub(crate) async fn with_defaults(kubeconfig: &Path) -> anyhow::Result<Publisher> {
        let timeout = Duration::from_secs(5);
        Publisher::start(kubeconfig, 64, timeout, timeout, ScrapeVia::Direct).await
    }

    /// One round: discover, scrape, parse, aggregate, add the self-metrics and build the
    /// CloudWatch batches. `subset` limits the pods scraped.
    pub(crate) async fn round(
        &mut self,
        subset: Option<usize>,
        fleet_pid: Option<u32>,
    ) -> MeasuredRound {
        let fleet_cpu_before = fleet_pid.and_then(other_process_cpu_seconds);
        let cpu_before = process_cpu_time();
        let started = Instant::now();
        let (datums, stats, pods) = self.round_datums(subset).await;
        let datum_count = datums.len();
        let batches = cloudwatch_batches(datums);
        let seconds = started.elapsed().as_secs_f64();
        let cpu_s = process_cpu_time().saturating_sub(cpu_before).as_secs_f64();
        let fleet_cpu_s = fleet_pid
            .and_then(other_process_cpu_seconds)
            .zip(fleet_cpu_before)
            .map(|(after, before)| after - before);
        MeasuredRound {
            seconds,
            cpu_s,
            fleet_cpu_s,
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
    pub(crate) async fn round_datums(
        &mut self,
        subset: Option<usize>,
    ) -> (Vec<Datum>, RoundStats, usize) {
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
/// scrape timeout, explicitly (see [`Publisher::with_defaults`]).
pub(crate) fn scrape_settings(concurrency: usize, timeout: Duration) -> ScrapeOptions {
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

/// Splits datums into PutMetricData batches of SDK datums with the publisher's own queue,
/// as a flush does.
fn cloudwatch_batches(datums: Vec<Datum>) -> Vec<Vec<MetricDatum>> {
    let mut queue = DatumQueue::new(datums.len());
    queue.push(datums);
    let mut batches = Vec::new();
    while !queue.is_empty() {
        let batch = queue.next_batch(MAX_DATUMS_PER_CALL, MAX_BYTES_PER_CALL);
        queue.remove_before(batch.first_seq + batch.datums.len() as u64);
        batches.push(batch.datums.iter().map(to_metric_datum).collect());
    }
    batches
}

/// The CPU time this process has used so far, every thread, user and system: what
/// getrusage(RUSAGE_SELF) sums, with nanosecond resolution.
pub(crate) fn process_cpu_time() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// The user and system CPU time of another process so far, in seconds, from
/// `/proc/PID/stat` (fields 14 and 15, in clock ticks of 1/100 s: Linux's USER_HZ);
/// `None` when it cannot be read.
fn other_process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; the fields after it do not.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index)?.parse::<u64>().ok();
    // Field 3 (the state) is the first after the name, so fields 14 and 15 sit at 11 and 12.
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// A field of `/proc/self/status` in KiB (`VmHWM` is the peak RSS, `VmRSS` the current).
pub(crate) fn proc_status_kib(field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().trim_end_matches("kB").trim().parse().ok()
        })
        .with_context(|| format!("no {field} in /proc/self/status"))
}

pub(crate) async fn measure(options: &RoundOptions) -> anyhow::Result<RoundsReport> {
    let ProcessOptions {
        rounds: round_count,
        concurrency,
        timeout_ms,
    } = options.process;
    let timeout = Duration::from_millis(timeout_ms);
    let round_timeout = options
        .round_timeout_ms
        .map_or(timeout, Duration::from_millis);
    let mut publisher = Publisher::start(
        &options.kubeconfig,
        concurrency,
        timeout,
        round_timeout,
        options.scrape_via,
    )
    .await?;
    let rss_after_list_kib = proc_status_kib("VmRSS")?;
    let mut rounds = Vec::new();
    for _ in 0..round_count {
        rounds.push(publisher.round(options.subset, options.fleet_pid).await);
    }
    Ok(RoundsReport {
        concurrency,
        subset: options.subset,
        initial_list_s: publisher.initial_list.as_secs_f64(),
        initial_list_cpu_s: publisher.initial_list_cpu.as_secs_f64(),
        rss_after_list_kib,
        rounds,
        peak_rss_kib: proc_status_kib("VmHWM")?,
        simulation: None,
    })
}

/// Runs `round` with `options` in its own process, so its peak RSS is its own.
pub(crate) async fn round_process(options: &RoundOptions) -> anyhow::Result<RoundsReport> {
    let line = options.command_line();
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command.args(&line);
    let process = format!("the round process {line:?}");
    Ok(run_for_report(command, process, CHILD_DEADLINE).await?)
}
