//! The publisher's fast path (`Samples::filtered` with the published families, which skips
//! the other families without tokenising them) against the full parse (`Samples::new`, every
//! line validated) on every exposition on disk and on bodies served by the simulated fleet:
//! both must give the same published values.
//!
//! "Published values" are everything the aggregator reads of a sample of a published family:
//! the metric, the family's type, the suffix, the raw label text (its series key), the decoded
//! labels (it reads the latency summary's `quantile`), the value and, for good measure, the
//! sample name, timestamp and line.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cni_metrics_publisher::exposition::{MetricType, ParseError, Sample, Samples, Suffix};
use cni_metrics_publisher::ipamd_metrics::index_of_family;
use cni_metrics_publisher::scrape::{ScrapeOptions, Scraper};
use sandbox::fleet::{Fault, Fleet, FleetOptions, IPAMD_METRICS_PORT};

/// One sample of a published family, as the aggregator sees it.
#[derive(Debug, PartialEq)]
struct PublishedValue {
    metric: usize,
    family_type: MetricType,
    suffix: Suffix,
    name: String,
    raw_labels: String,
    labels: Vec<(String, String)>,
    /// The value's bits, with every NaN made the same NaN: NaN != NaN, and the aggregator
    /// treats all NaNs alike.
    value_bits: u64,
    timestamp_ms: Option<i64>,
    line: usize,
}

impl PublishedValue {
    /// `None` for a sample of a family the publisher does not publish.
    fn of(sample: &Sample<'_>) -> Option<Self> {
        let metric = index_of_family(sample.family)?;
        let value = if sample.value.is_nan() {
            f64::NAN
        } else {
            sample.value
        };
        Some(Self {
            metric,
            family_type: sample.family_type,
            suffix: sample.suffix,
            name: sample.name.to_owned(),
            raw_labels: sample.raw_labels.to_owned(),
            labels: sample
                .labels()
                .map(|label| (label.name.to_owned(), Cow::into_owned(label.value)))
                .collect(),
            value_bits: value.to_bits(),
            timestamp_ms: sample.timestamp_ms,
            line: sample.line,
        })
    }
}

/// The published values of a parse, up to its first error, and that error.
fn published<'a>(
    samples: impl Iterator<Item = Result<Sample<'a>, ParseError>>,
) -> (Vec<PublishedValue>, Option<ParseError>) {
    let mut values = Vec::new();
    for sample in samples {
        match sample {
            Ok(sample) => values.extend(PublishedValue::of(&sample)),
            Err(error) => return (values, Some(error)),
        }
    }
    (values, None)
}

fn fast_path(body: &str) -> (Vec<PublishedValue>, Option<ParseError>) {
    published(Samples::filtered(body, |family| {
        index_of_family(family).is_some()
    }))
}

fn full_parse(body: &str) -> (Vec<PublishedValue>, Option<ParseError>) {
    published(Samples::new(body))
}

/// Asserts that the fast path publishes what the full parse publishes, and returns how many
/// values that is.
///
/// On a valid body both must give the same values and no error. The fast path does not
/// validate the families it skips, so on an invalid body it may read on past the line the full
/// parse stops at: up to that line, both must agree, and it must not stop earlier.
fn assert_same_published_values(origin: &str, body: &str) -> usize {
    let (full, full_error) = full_parse(body);
    let (fast, fast_error) = fast_path(body);
    match &full_error {
        None => {
            assert_eq!(
                fast_error, None,
                "{origin}: the fast path fails on a body the full parse accepts"
            );
            assert_eq!(
                fast, full,
                "{origin}: the fast path and the full parse publish different values"
            );
        }
        Some(full_error) => {
            let before_error: Vec<_> = fast
                .iter()
                .filter(|value| value.line < full_error.line)
                .collect();
            let full: Vec<_> = full.iter().collect();
            assert_eq!(
                before_error, full,
                "{origin}: before the full parse's error ({full_error}), the fast path and the \
                 full parse publish different values"
            );
            if let Some(fast_error) = &fast_error {
                assert!(
                    fast_error.line >= full_error.line,
                    "{origin}: the fast path fails ({fast_error}) before the full parse does \
                     ({full_error})"
                );
            }
        }
    }
    full.len()
}

/// Every file under `directory`, recursively.
fn files_under(directory: &Path, files: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(directory)
        .unwrap_or_else(|error| panic!("reading {}: {error}", directory.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files_under(&path, files);
        } else {
            files.push(path);
        }
    }
}

/// The exposition corpus on disk: the fuzz corpus of the parser (and of the aggregator, whose
/// inputs are pod bodies with separator bytes; the parser takes them as they are) and the
/// exposition fixtures of the tests.
fn corpus_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for directory in ["fuzz/corpus", "tests/fixtures/exposition"] {
        files_under(&root.join(directory), &mut files);
    }
    files.sort();
    files
}

#[test]
fn fast_path_and_full_parse_publish_the_same_values_on_every_corpus_file() {
    let files = corpus_files();
    // The corpus held 166 parser inputs and 3 fixtures when this test was written; far fewer
    // means the directories moved and this test would pass without checking anything.
    assert!(
        files.len() >= 150,
        "only {} corpus files found: did the corpus move?",
        files.len()
    );
    let mut published_values = 0;
    let mut prom_files = 0;
    for path in &files {
        let bytes = std::fs::read(path)
            .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
        // The scraper hands the parser text; the fuzz targets decode their bytes the same way.
        let body = String::from_utf8_lossy(&bytes);
        published_values += assert_same_published_values(&path.display().to_string(), &body);
        // The same body with CRLF line ends, which the parser accepts.
        let crlf = body.replace('\n', "\r\n");
        assert_same_published_values(&format!("{} (CRLF)", path.display()), &crlf);
        if path
            .extension()
            .is_some_and(|extension| extension == "prom")
        {
            prom_files += 1;
        }
    }
    assert!(prom_files >= 3, "the exposition fixtures were not found");
    // The realistic fixtures alone publish more than this; zero would mean the comparison
    // compared nothing.
    assert!(
        published_values > 100,
        "only {published_values} published values in the corpus"
    );
}

fn scrape_options() -> ScrapeOptions {
    ScrapeOptions {
        port: IPAMD_METRICS_PORT,
        concurrency: 8,
        timeout: Duration::from_secs(10),
        round_timeout: Duration::from_secs(30),
        body_limit: 4 * 1024 * 1024,
        memory_budget: 64 * 4 * 1024 * 1024,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_path_and_full_parse_publish_the_same_values_on_fleet_bodies() {
    let fleet = Fleet::start(FleetOptions {
        nodes: 8,
        ..FleetOptions::default()
    })
    .await
    .expect("the fleet starts");
    // The bodies the publisher meets besides the plain ones: families served with the other
    // type, values CloudWatch refuses, many series, a padded body.
    fleet.node(1).set_type_drift(true);
    fleet.node(2).set_fault(Fault::ExtremeValues);
    fleet.node(3).set_fault(Fault::ManySeries(200));
    fleet.node(4).set_fault(Fault::Oversized(256 * 1024));
    fleet.node(5).reset_counters();
    let scraper = Scraper::direct(&scrape_options());
    let mut bodies = 0;
    // Several scrapes, so that counters move and the latency summary gets observations.
    for round in 0..3 {
        for (node, target) in fleet.nodes().iter().zip(super::scrape::targets(&fleet)) {
            let body = scraper
                .scrape(target)
                .await
                .outcome
                .expect("a simulated node answers");
            let origin = format!("node {} round {round}", node.index());
            assert!(
                assert_same_published_values(&origin, &body) > 0,
                "{origin}: no published values in a fleet body"
            );
            assert_eq!(
                full_parse(&body).1,
                None,
                "{origin}: a fleet body does not parse"
            );
            bodies += 1;
        }
    }
    fleet.shutdown().await;
    assert_eq!(bodies, 24);
}
