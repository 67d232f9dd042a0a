//! The `parser` scenario: our exposition parser against the `prometheus-parse` crate on the
//! same bodies, fetched from simulated nodes.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::Context;
use cni_metrics_publisher::discovery::ScrapeTarget;
use cni_metrics_publisher::exposition::{MetricType, Sample, Samples, Suffix};
use cni_metrics_publisher::ipamd_metrics::index_of_family;
use cni_metrics_publisher::scrape::Scraper;
use sandbox::bench_report::ParserReport;
use sandbox::fleet::AWS_NODE_NAMESPACE;

use crate::rounds::scrape_settings;

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

/// The publisher's fast path: what `aggregate::parse_ipamd_samples` reads of a body. The
/// families it does not publish are skipped; of the kept samples it looks up the metric and
/// reads the type, suffix, value and the raw label text (the series key), and decodes one
/// label, the `quantile` of the latency summary's quantile samples.
fn parse_ours_fast_path(body: &str) -> usize {
    let mut count = 0;
    for sample in Samples::filtered(body, |family| index_of_family(family).is_some()) {
        let Ok(sample) = sample else { break };
        black_box(index_of_family(sample.family));
        black_box((sample.family_type, sample.suffix));
        black_box((sample.raw_labels, sample.value));
        if sample.family_type == MetricType::Summary && sample.suffix == Suffix::None {
            black_box(sample.label("quantile"));
        }
        count += 1;
    }
    count
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

pub(crate) async fn run(seconds: f64, runs: usize) -> anyhow::Result<ParserReport> {
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
    let fast_path_samples: usize = bodies.iter().map(|body| parse_ours_fast_path(body)).sum();
    anyhow::ensure!(
        fast_path_samples == published_samples,
        "the fast path read {fast_path_samples} samples, the published families have {published_samples}"
    );

    let mut ours = Vec::new();
    let mut as_published = Vec::new();
    let mut theirs = Vec::new();
    let mut fast_path = Vec::new();
    for _ in 0..runs {
        ours.push(throughput(&bodies, seconds, parse_ours_fully));
        theirs.push(throughput(&bodies, seconds, parse_with_prometheus_parse));
        as_published.push(throughput(&bodies, seconds, parse_ours_as_published));
        fast_path.push(throughput(&bodies, seconds, parse_ours_fast_path));
    }
    Ok(ParserReport {
        body_bytes: bodies.iter().map(String::len).collect(),
        samples_ours: ours_samples,
        samples_prometheus_parse: theirs_samples,
        samples_published_families: published_samples,
        ours_mb_s: ours,
        ours_as_published_mb_s: as_published,
        ours_fast_path_mb_s: fast_path,
        samples_fast_path: fast_path_samples,
        prometheus_parse_mb_s: theirs,
    })
}
