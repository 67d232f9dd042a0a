//! The `soak` scenario: thousands of rounds against a churning fleet, watching RSS and the
//! per-pod state.

use std::time::Instant;

use anyhow::Context;
use sandbox::bench_report::SoakReport;

use crate::fleet::FleetChild;
use crate::rounds::{Publisher, proc_status_kib};
use sandbox::fleet::NodeListeners;

pub(crate) async fn run(
    nodes: usize,
    rounds: usize,
    baseline_round: usize,
) -> anyhow::Result<SoakReport> {
    let mut fleet = FleetChild::start(nodes, NodeListeners::PerNode).await?;
    let mut publisher = Publisher::with_defaults(&fleet.ready.kubeconfig).await?;
    let started = Instant::now();
    let mut rss_samples = Vec::new();
    let mut baseline_rss_kib = None;
    let mut max_tracked = 0;
    let mut state_violations = 0;
    let mut scrape_errors = 0;
    let mut parse_errors = 0;
    let mut pods_scraped = 0;
    for round in 1..=rounds {
        let live_pods = fleet.churn(round).await?;
        let report = publisher.round(None, None).await;
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
            rss_samples.push((round, proc_status_kib("VmRSS")?));
        }
    }
    let final_rss_kib = proc_status_kib("VmRSS")?;
    fleet.stop().await?;
    let baseline = baseline_rss_kib.context("fewer rounds than the baseline round")?;
    Ok(SoakReport {
        nodes,
        rounds,
        baseline_round,
        baseline_rss_kib: baseline,
        final_rss_kib,
        rss_growth_pct: (final_rss_kib as f64 - baseline as f64) / baseline as f64 * 100.0,
        rss_by_round_kib: rss_samples,
        max_tracked_pods: max_tracked,
        live_pods: nodes,
        state_violations,
        pods_scraped,
        scrape_errors,
        parse_errors,
        tracked_series: publisher.runner.aggregator().tracked_series(),
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}
