//! The `scale` scenario: rounds at one fleet size in several measuring processes, with
//! every node healthy (scraping directly and, when asked for, through the pods proxy), at
//! concurrency 1, with a modelled node latency and with some nodes hung.

use cni_metrics_publisher::config::ScrapeVia;
use sandbox::bench_report::{HungReport, LatencyReport, ScaleReport};

use anyhow::bail;
use sandbox::bench_report::{RoundsReport, SimulationUsage};

use crate::fleet::FleetChild;
use crate::rounds::{ProcessOptions, RoundOptions, round_process};

/// The round deadline of the sequential baselines, longer than any of them takes:
/// concurrency 1 is upstream's way, which has no round deadline, and the baseline must
/// scrape every pod of its subset.
const SEQUENTIAL_ROUND_TIMEOUT_MS: u64 = 500_000;

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ScaleOptions {
    #[arg(long)]
    nodes: usize,
    /// Measuring processes with all nodes healthy
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[command(flatten)]
    process: ProcessOptions,
    /// Measuring processes with all nodes healthy that scrape through the fake API
    /// server's pods proxy, interleaved with the direct ones (0: off)
    #[arg(long, default_value_t = 0)]
    proxy_runs: usize,
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
    /// The deadline of the plain and proxy rounds (default: the scrape timeout)
    #[arg(long)]
    round_timeout_ms: Option<u64>,
    /// Serve the fleet from one listener behind the pods proxy, for fleets larger than the
    /// open-file limit allows one listener per node; direct runs are then impossible
    #[arg(long)]
    shared_listener: bool,
}

pub(crate) async fn run(options: &ScaleOptions) -> anyhow::Result<ScaleReport> {
    let listeners = crate::fleet::node_listeners(options.shared_listener);
    if options.shared_listener
        && (options.runs > 0
            || options.sequential_subset > 0
            || options.latency_ms > 0
            || options.hang_every > 0)
    {
        bail!(
            "--shared-listener serves the nodes only through the pods proxy: ask for \
             --runs 0 and --proxy-runs only"
        );
    }
    let mut fleet = FleetChild::start(options.nodes, listeners).await?;
    let healthy = RoundOptions {
        kubeconfig: fleet.ready.kubeconfig.clone(),
        process: options.process,
        round_timeout_ms: options.round_timeout_ms,
        subset: None,
        scrape_via: ScrapeVia::Direct,
        fleet_pid: Some(fleet.ready.pid),
    };
    let proxy = RoundOptions {
        scrape_via: ScrapeVia::Proxy,
        ..healthy.clone()
    };
    // Direct and proxy processes alternate, so that whatever else loads the machine weighs
    // on both alike and their ratio stays fair.
    let mut runs = Vec::new();
    let mut proxy_runs = Vec::new();
    for run in 0..options.runs.max(options.proxy_runs) {
        if run < options.runs {
            runs.push(measured_with_usage(&mut fleet, &healthy).await?);
        }
        if run < options.proxy_runs {
            proxy_runs.push(measured_with_usage(&mut fleet, &proxy).await?);
        }
    }
    // Concurrency 1 over the first `sequential_subset` pods (all of them when 0).
    let sequential_options = RoundOptions {
        process: ProcessOptions {
            rounds: options.sequential_rounds,
            concurrency: 1,
            ..options.process
        },
        round_timeout_ms: Some(SEQUENTIAL_ROUND_TIMEOUT_MS),
        subset: (options.sequential_subset > 0).then_some(options.sequential_subset),
        ..healthy.clone()
    };
    let sequential = if options.sequential_subset > 0 {
        Some(round_process(&sequential_options).await?)
    } else {
        None
    };
    let latency = if options.latency_ms > 0 {
        fleet.slow(options.latency_ms).await?;
        let concurrent = round_process(&healthy).await?;
        let sequential = round_process(&sequential_options).await?;
        fleet.clear().await?;
        Some(LatencyReport {
            latency_ms: options.latency_ms,
            run: concurrent,
            sequential,
        })
    } else {
        None
    };
    let hung = if options.hang_every > 0 {
        let hung_nodes = fleet.hang(options.hang_every).await?;
        let run = round_process(&RoundOptions {
            process: ProcessOptions {
                rounds: options.hung_rounds,
                ..options.process
            },
            ..healthy
        })
        .await?;
        fleet.clear().await?;
        Some(HungReport { hung_nodes, run })
    } else {
        None
    };
    fleet.stop().await?;
    Ok(ScaleReport {
        nodes: options.nodes,
        concurrency: options.process.concurrency,
        timeout_s: options.process.timeout_ms as f64 / 1000.0,
        runs,
        proxy_runs,
        sequential,
        latency,
        hung,
    })
}

/// One measuring process, with what the simulated nodes spent producing its answers (asked
/// of the fleet before and after it ran).
async fn measured_with_usage(
    fleet: &mut FleetChild,
    options: &RoundOptions,
) -> anyhow::Result<RoundsReport> {
    let before = fleet.usage().await?;
    let mut report = round_process(options).await?;
    let after = fleet.usage().await?;
    report.simulation = Some(SimulationUsage {
        render_s: after.render_s - before.render_s,
        bodies: after.bodies - before.bodies,
    });
    Ok(report)
}
