//! Soak: thousands of rounds against a churning fleet, watching RSS and the per-pod state
//! (the driver's `soak` scenario).

use std::path::Path;

use sandbox::bench_report::SoakReport;
use serde_json::json;

use super::report::Report;
use super::{Sizes, args, driver_report};

pub(super) async fn run(driver: &Path, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    eprintln!(
        "Soak: {} rounds against {} churning nodes...",
        sizes.soak_rounds, sizes.soak_nodes
    );
    let result: SoakReport = driver_report(
        driver,
        &args(&[
            "soak",
            "--nodes",
            &sizes.soak_nodes.to_string(),
            "--rounds",
            &sizes.soak_rounds.to_string(),
            "--baseline-round",
            "100",
        ]),
    )
    .await?;
    let growth = result.rss_growth_pct;
    let violations = result.state_violations;
    report.line(format!(
        "soak: {} rounds, {} nodes churning (1% replaced, 1% restarted, 1% HTTP 500, 1% garbage per round) in {:.0} s: RSS {} KiB at round 100 -> {} KiB at round {} ({growth:+.1}%); max tracked pods {} of {} live; state violations {violations}; failed scrapes {} + unparsable {}",
        result.rounds,
        result.nodes,
        result.elapsed_s,
        result.baseline_rss_kib,
        result.final_rss_kib,
        result.rounds,
        result.max_tracked_pods,
        result.live_pods,
        result.scrape_errors,
        result.parse_errors,
    ));
    report.set("soak_rounds", result.rounds);
    report.set("soak_rss_growth_pct", growth);
    report.set("soak_rss_by_round_kib", json!(result.rss_by_round_kib));
    report.set("soak_max_tracked_pods", result.max_tracked_pods);
    report.set("soak_state_violations", violations);
    report.target(
        "soak RSS within 10% of round 100",
        growth.abs() <= 10.0,
        format!("{growth:+.1}%"),
    );
    report.target(
        "soak: no panic, state never holds gone pods",
        violations == 0,
        format!("{violations} violations, the driver exited cleanly"),
    );
    Ok(())
}
