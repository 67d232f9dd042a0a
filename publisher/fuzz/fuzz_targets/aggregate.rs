//! Fuzzes the aggregator over several rounds of fuzzed pod bodies: it must never panic and
//! never produce a non-finite datum.
//!
//! Input layout: rounds are separated by the byte 0x1D; within a round, pods are separated by
//! 0x1E. The first byte of a pod chooses its UID (one of four), its zone (none or one of two)
//! and whether its scrape failed; the rest is its body, decoded as UTF-8 lossily.

#![no_main]

use std::time::SystemTime;

use cni_metrics_publisher::aggregate::{Aggregator, AggregatorOptions, PodScrape, ScrapeOutcome};
use cni_metrics_publisher::ipamd_metrics::IPAMD_METRIC_COUNT;
use libfuzzer_sys::fuzz_target;

const UIDS: [&str; 4] = ["uid-a", "uid-b", "uid-c", "uid-d"];
const ZONES: [Option<&str>; 3] = [None, Some("zone-1"), Some("zone-2")];

fuzz_target!(|data: &[u8]| {
    let mut aggregator = Aggregator::new(AggregatorOptions {
        cluster_id: "fuzz".to_owned(),
        per_az: true,
        max_series_per_pod: cni_metrics_publisher::aggregate::DEFAULT_MAX_SERIES_PER_POD,
        stale_rounds: cni_metrics_publisher::aggregate::DEFAULT_STALE_ROUNDS,
    });
    for round in data.split(|byte| *byte == 0x1D).take(16) {
        let pods: Vec<(u8, String)> = round
            .split(|byte| *byte == 0x1E)
            .filter_map(|pod| {
                let (selector, body) = pod.split_first()?;
                Some((*selector, String::from_utf8_lossy(body).into_owned()))
            })
            .collect();
        let scrapes: Vec<PodScrape<'_>> = pods
            .iter()
            .map(|(selector, body)| {
                let uid = UIDS[usize::from(selector % 4)];
                PodScrape {
                    uid,
                    name: uid,
                    zone: ZONES[usize::from((selector / 4) % 3)],
                    outcome: if selector & 0x80 != 0 {
                        ScrapeOutcome::Failed
                    } else {
                        ScrapeOutcome::Body(body)
                    },
                }
            })
            .collect();
        let (published, stats) = aggregator.round(&scrapes, SystemTime::UNIX_EPOCH);
        for datum in &published.datums {
            assert!(datum.value.is_finite(), "non-finite datum {datum:?}");
        }
        // One cluster datum per metric, plus at most one per zone for the capacity metrics.
        assert!(published.datums.len() <= IPAMD_METRIC_COUNT + 3 * 2);
        assert!(stats.pods_scraped + stats.scrape_errors + stats.parse_errors <= scrapes.len());
        assert!(aggregator.tracked_pods() <= UIDS.len());
    }
});
