//! Tests of the simulated aws-node fleet over real HTTP on loopback: the exposition is valid
//! and realistic, values evolve as a real ipamd's do, every knob behaves, the record of what
//! was served matches the wire, addresses never collide, and the Kubernetes objects carry
//! what the publisher's discovery relies on.
//!
//! The exposition is checked with a strict text-format checker written here, independent of
//! the project's own parser.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use sandbox::fleet::{
    EXPOSITION_CONTENT_TYPE, Fault, Fleet, FleetOptions, IPAMD_METRICS_PORT, MetricType, SimNode,
    TYPE_DRIFT_FAMILIES,
};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Client timeout for answers that should come promptly; generous for a loaded CI machine.
const PROMPTLY: Duration = Duration::from_secs(20);

/// The awscni families of ipamd v1.20 and their types (counters as of v1.19.4+).
const IPAMD_FAMILIES: [(&str, &str); 26] = [
    ("awscni_add_ip_req_count", "counter"),
    ("awscni_assigned_ip_addresses", "gauge"),
    ("awscni_assigned_ip_per_cidr", "gauge"),
    ("awscni_assigned_ip_per_eni", "gauge"),
    ("awscni_aws_api_error_count", "counter"),
    ("awscni_aws_api_latency_ms", "summary"),
    ("awscni_aws_utils_error_count", "counter"),
    ("awscni_connmark_backend", "gauge"),
    ("awscni_connmark_reconcile_total", "counter"),
    ("awscni_del_ip_req_count", "counter"),
    ("awscni_ec2api_error_count", "counter"),
    ("awscni_ec2api_req_count", "counter"),
    ("awscni_eni_allocated", "gauge"),
    ("awscni_eni_max", "gauge"),
    ("awscni_force_removed_enis", "counter"),
    ("awscni_force_removed_ips", "counter"),
    ("awscni_ip_max", "gauge"),
    ("awscni_ipamd_action_inprogress", "gauge"),
    ("awscni_ipamd_error_count", "counter"),
    (
        "awscni_ipamd_node_initialization_duration_seconds",
        "histogram",
    ),
    ("awscni_ipamd_startup_duration_seconds", "histogram"),
    ("awscni_no_available_ip_addresses", "counter"),
    ("awscni_pod_eni_error_count", "counter"),
    ("awscni_reconcile_count", "counter"),
    ("awscni_total_ip_addresses", "gauge"),
    ("awscni_total_ipv4_prefixes", "gauge"),
];

// ---------------------------------------------------------------------------------------
// A tiny HTTP client.
// ---------------------------------------------------------------------------------------

/// What a GET returned.
#[derive(Debug)]
struct Fetched {
    status: u16,
    content_type: Option<String>,
    chunked: bool,
    content_length: Option<usize>,
    body: String,
}

/// Aborts the task driving a client connection when the request is over or abandoned, so a
/// timed-out request does not leave a task behind.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn fetch_path(address: SocketAddr, path: &str, timeout: Duration) -> Result<Fetched, String> {
    let request = async {
        let stream = TcpStream::connect(address)
            .await
            .map_err(|error| format!("connect to {address}: {error}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| format!("handshake with {address}: {error}"))?;
        let _driver = AbortOnDrop(tokio::spawn(async move {
            let _ = connection.await;
        }));
        let request = Request::get(path)
            .header(HOST, address.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|error| error.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| format!("request to {address}: {error}"))?;
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|value: &http::HeaderValue| value.to_str().ok())
                .map(str::to_owned)
        };
        let status = response.status().as_u16();
        let content_type = header(CONTENT_TYPE);
        let chunked = header(TRANSFER_ENCODING).is_some_and(|value| value.contains("chunked"));
        let content_length = header(CONTENT_LENGTH).and_then(|value| value.parse().ok());
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| format!("body from {address}: {error}"))?
            .to_bytes();
        Ok(Fetched {
            status,
            content_type,
            chunked,
            content_length,
            body: String::from_utf8(body.to_vec()).map_err(|error| error.to_string())?,
        })
    };
    tokio::time::timeout(timeout, request)
        .await
        .map_err(|_| format!("no answer from {address} within {timeout:?}"))?
}

async fn fetch(node: &SimNode, timeout: Duration) -> Result<Fetched, String> {
    fetch_path(node.address(), "/metrics", timeout).await
}

/// Fetches and expects a 200 with a valid exposition.
async fn scrape(node: &SimNode) -> (Fetched, Vec<Family>) {
    let fetched = fetch(node, PROMPTLY).await.expect("the node answers");
    assert_eq!(fetched.status, 200, "status of {node:?}");
    let families = check_exposition(&fetched.body)
        .unwrap_or_else(|error| panic!("{node:?} served an invalid exposition: {error}"));
    (fetched, families)
}

// ---------------------------------------------------------------------------------------
// A strict checker of the Prometheus text format 0.0.4.
// ---------------------------------------------------------------------------------------

/// Label pairs in the order they were served.
type Labels = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

#[derive(Debug, Clone, PartialEq)]
struct Family {
    name: String,
    help: Option<String>,
    kind: Option<String>,
    samples: Vec<Sample>,
}

impl Family {
    fn sum(&self, sample_name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|sample| sample.name == sample_name)
            .map(|sample| sample.value)
            .sum()
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut characters = name.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_' || first == ':')
        && characters.all(|character| {
            character.is_ascii_alphanumeric() || character == '_' || character == ':'
        })
}

fn is_label_name(name: &str) -> bool {
    let mut characters = name.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && characters.all(|character| character.is_ascii_alphanumeric() || character == '_')
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if text
            .chars()
            .all(|character| character.is_ascii_digit() || "+-.eE".contains(character)) =>
        {
            text.parse().map_err(|_| format!("bad value {text:?}"))
        }
        _ => Err(format!("bad value {text:?}")),
    }
}

/// Parses `{name="value",...}` starting right after `{`; returns the labels and the rest.
fn parse_labels(mut rest: &str) -> Result<(Labels, &str), String> {
    let mut labels: Labels = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let equals = rest.find('=').ok_or("label without '='")?;
        let name = &rest[..equals];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        if labels.iter().any(|(existing, _)| existing == name) {
            return Err(format!("duplicate label {name:?}"));
        }
        rest = rest[equals + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut characters = rest.char_indices();
        let end = loop {
            match characters.next() {
                None => return Err("unterminated label value".to_owned()),
                Some((position, '"')) => break position,
                Some((_, '\\')) => match characters.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, character)) => value.push(character),
            }
        };
        labels.push((name.to_owned(), value));
        rest = &rest[end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("labels not separated by ','".to_owned());
        }
    }
}

/// The family a sample name belongs to, given the declared type of the current family.
fn sample_belongs(family: &Family, sample_name: &str) -> bool {
    let suffixes: &[&str] = match family.kind.as_deref() {
        Some("summary") => &["", "_sum", "_count"],
        Some("histogram") => &["_bucket", "_sum", "_count"],
        _ => &[""],
    };
    suffixes
        .iter()
        .any(|suffix| sample_name == format!("{}{suffix}", family.name))
}

/// Checks a body strictly against the text format and returns its families. Beyond the
/// grammar it requires: HELP and TYPE for every family, before its samples; families not
/// split; no duplicate series; quantile on summary lines and le on buckets; cumulative
/// buckets ending in +Inf equal to _count.
fn check_exposition(body: &str) -> Result<Vec<Family>, String> {
    if body.is_empty() {
        return Err("empty body".to_owned());
    }
    if !body.ends_with('\n') {
        return Err("the last line is not terminated".to_owned());
    }
    let mut families: Vec<Family> = Vec::new();
    let mut seen_series: HashSet<String> = HashSet::new();
    for (number, line) in body.lines().enumerate() {
        let context = |error: String| format!("line {}: {error}: {line:?}", number + 1);
        if line.is_empty() {
            return Err(context("empty line".to_owned()));
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            let keyword = words.next().unwrap_or_default();
            if keyword != "HELP" && keyword != "TYPE" {
                continue;
            }
            let name = words
                .next()
                .ok_or_else(|| context("no metric name".to_owned()))?;
            let text = words.next().unwrap_or_default();
            if !is_metric_name(name) {
                return Err(context(format!("bad metric name {name:?}")));
            }
            if families.last().is_none_or(|family| family.name != name) {
                if families.iter().any(|family| family.name == name) {
                    return Err(context("family split in two".to_owned()));
                }
                families.push(Family {
                    name: name.to_owned(),
                    help: None,
                    kind: None,
                    samples: Vec::new(),
                });
            }
            let family = families.last_mut().ok_or("no family")?;
            if !family.samples.is_empty() {
                return Err(context("HELP or TYPE after samples".to_owned()));
            }
            if keyword == "HELP" {
                if family.help.replace(text.to_owned()).is_some() {
                    return Err(context("second HELP".to_owned()));
                }
            } else {
                if !["counter", "gauge", "summary", "histogram", "untyped"].contains(&text) {
                    return Err(context(format!("unknown type {text:?}")));
                }
                if family.kind.replace(text.to_owned()).is_some() {
                    return Err(context("second TYPE".to_owned()));
                }
            }
            continue;
        }

        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| context("no value".to_owned()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(context(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if let Some(after) = line[name_end..].strip_prefix('{') {
            parse_labels(after).map_err(context)?
        } else {
            (Vec::new(), &line[name_end..])
        };
        let mut fields = rest
            .strip_prefix(' ')
            .ok_or_else(|| context("no space before the value".to_owned()))?
            .split(' ');
        let value = parse_value(fields.next().unwrap_or_default()).map_err(context)?;
        if let Some(timestamp) = fields.next() {
            timestamp
                .parse::<i64>()
                .map_err(|_| context("bad timestamp".to_owned()))?;
        }
        if fields.next().is_some() {
            return Err(context("trailing fields".to_owned()));
        }
        let family = families
            .last_mut()
            .filter(|family| sample_belongs(family, name))
            .ok_or_else(|| context("sample outside its family (or without TYPE)".to_owned()))?;
        let mut key_labels = labels.clone();
        key_labels.sort();
        if !seen_series.insert(format!("{name}{key_labels:?}")) {
            return Err(context("duplicate series".to_owned()));
        }
        let is_plain = name == family.name;
        match family.kind.as_deref() {
            Some("summary") if is_plain && !labels.iter().any(|(label, _)| label == "quantile") => {
                return Err(context("summary line without quantile".to_owned()));
            }
            Some("histogram")
                if name.ends_with("_bucket") && !labels.iter().any(|(label, _)| label == "le") =>
            {
                return Err(context("bucket without le".to_owned()));
            }
            _ => {}
        }
        family.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    for family in &families {
        if family.help.is_none() || family.kind.is_none() {
            return Err(format!("family {} lacks HELP or TYPE", family.name));
        }
        if family.samples.is_empty() {
            return Err(format!("family {} has no samples", family.name));
        }
        if family.kind.as_deref() == Some("histogram") {
            check_histogram(family)?;
        }
    }
    Ok(families)
}

fn check_histogram(family: &Family) -> Result<(), String> {
    let without_le = |sample: &Sample| -> Labels {
        sample
            .labels
            .iter()
            .filter(|(name, _)| name != "le")
            .cloned()
            .collect()
    };
    // Bucket series keyed by their labels without `le`: (upper bound, cumulative count).
    let mut buckets: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
    for sample in family
        .samples
        .iter()
        .filter(|sample| sample.name.ends_with("_bucket"))
    {
        let bound = sample
            .labels
            .iter()
            .find(|(name, _)| name == "le")
            .map(|(_, value)| parse_value(value))
            .ok_or("bucket without le")??;
        buckets
            .entry(without_le(sample))
            .or_default()
            .push((bound, sample.value));
    }
    for (labels, series) in buckets {
        let cumulative = series
            .windows(2)
            .all(|pair| pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1);
        let last = series.last().ok_or("no buckets")?;
        let count = family
            .samples
            .iter()
            .find(|sample| sample.name.ends_with("_count") && without_le(sample) == labels)
            .ok_or(format!("{}: no _count for {labels:?}", family.name))?;
        if !cumulative || last.0 != f64::INFINITY || last.1 != count.value {
            return Err(format!("{}: bad buckets for {labels:?}", family.name));
        }
    }
    Ok(())
}

fn by_name(families: &[Family]) -> HashMap<&str, &Family> {
    families
        .iter()
        .map(|family| (family.name.as_str(), family))
        .collect()
}

fn labels_of(sample: &Sample) -> Vec<(&str, &str)> {
    sample
        .labels
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect()
}

fn dense(nodes: usize) -> FleetOptions {
    FleetOptions {
        nodes,
        sparse_vectors: false,
        ..FleetOptions::default()
    }
}

async fn start(options: FleetOptions) -> Fleet {
    Fleet::start(options).await.expect("the fleet starts")
}

// ---------------------------------------------------------------------------------------
// The checker itself.
// ---------------------------------------------------------------------------------------

#[test]
fn the_checker_rejects_what_a_strict_parser_rejects() {
    let valid = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n";
    assert!(check_exposition(valid).is_ok());
    for invalid in [
        "a_total 1\n",
        "# HELP a A.\n# TYPE a gauge\na{x=\"1} 2\n",
        "# HELP a A.\n# TYPE a gauge\na{x=\"1\"} two\n",
        "# HELP a A.\n# TYPE a gauge\na 1\na 2\n",
        "# HELP a A.\n# TYPE a gauge\na 1",
        "# HELP a A.\n# TYPE a summary\na 1\n",
        "# HELP a A.\n# TYPE a gauge\nb 1\n",
        "<html></html>\n",
    ] {
        assert!(check_exposition(invalid).is_err(), "accepted {invalid:?}");
    }
}

// ---------------------------------------------------------------------------------------
// The exposition.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn serves_a_valid_realistic_ipamd_exposition() {
    let fleet = start(FleetOptions {
        prefix_delegation_every: 3,
        ..dense(6)
    })
    .await;
    for node in fleet.nodes() {
        assert_eq!(node.address().port(), IPAMD_METRICS_PORT);
        let (fetched, families) = scrape(node).await;
        assert_eq!(
            fetched.content_type.as_deref(),
            Some(EXPOSITION_CONTENT_TYPE)
        );
        // Go's net/http sends a body this large chunked, without Content-Length.
        assert!(
            fetched.chunked && fetched.content_length.is_none(),
            "{fetched:?}"
        );
        // A real ipamd body is 10-20 KB, half of it HELP and TYPE lines; dense mode serves
        // every series, so it sits at the top of that range.
        let size = fetched.body.len();
        assert!(
            (12_000..=24_000).contains(&size),
            "{node:?} served {size} bytes"
        );

        let names: Vec<&str> = families.iter().map(|family| family.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(
            names, sorted,
            "families are sorted as the Go registry sorts them"
        );
        let families = by_name(&families);
        for (name, kind) in IPAMD_FAMILIES {
            let family = families
                .get(name)
                .unwrap_or_else(|| panic!("{name} is served"));
            assert_eq!(family.kind.as_deref(), Some(kind), "type of {name}");
        }
        for name in [
            "go_gc_duration_seconds",
            "go_goroutines",
            "go_info",
            "go_memstats_alloc_bytes",
            "go_memstats_alloc_bytes_total",
            "go_threads",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
            "promhttp_metric_handler_requests_in_flight",
            "promhttp_metric_handler_requests_total",
        ] {
            assert!(families.contains_key(name), "{name} is served");
        }
        assert_eq!(
            families["go_gc_duration_seconds"].kind.as_deref(),
            Some("summary")
        );

        // The latency summary has no objectives: only _sum and _count, never a quantile.
        let latency = families["awscni_aws_api_latency_ms"];
        assert!(
            latency
                .samples
                .iter()
                .all(|sample| sample.name != "awscni_aws_api_latency_ms")
        );
        assert!(latency.samples.iter().all(|sample| {
            let labels: Vec<&str> = sample
                .labels
                .iter()
                .map(|(name, _)| name.as_str())
                .collect();
            labels == ["api", "error", "status"]
        }));

        // The pool is consistent: the per-cidr and per-ENI series add up to the assigned
        // addresses, which fit in the pool, which fits under the maximum.
        let assigned = families["awscni_assigned_ip_addresses"].sum("awscni_assigned_ip_addresses");
        let per_cidr = families["awscni_assigned_ip_per_cidr"].sum("awscni_assigned_ip_per_cidr");
        let per_eni = families["awscni_assigned_ip_per_eni"].sum("awscni_assigned_ip_per_eni");
        let total = families["awscni_total_ip_addresses"].sum("awscni_total_ip_addresses");
        let maximum = families["awscni_ip_max"].sum("awscni_ip_max");
        assert_eq!(assigned, per_cidr, "{node:?}");
        assert_eq!(assigned, per_eni, "{node:?}");
        assert!(
            assigned <= total && total <= maximum,
            "{assigned} {total} {maximum}"
        );
        let prefixes = families["awscni_total_ipv4_prefixes"].sum("awscni_total_ipv4_prefixes");
        let cidr_suffix = if node.prefix_delegation() {
            "/28"
        } else {
            "/32"
        };
        assert_eq!(prefixes > 0.0, node.prefix_delegation(), "{node:?}");
        assert!(
            families["awscni_assigned_ip_per_cidr"]
                .samples
                .iter()
                .all(|sample| sample.labels[0].1.ends_with(cidr_suffix))
        );
    }
    assert!(fleet.nodes().iter().any(SimNode::prefix_delegation));
    assert!(!fleet.nodes().iter().all(SimNode::prefix_delegation));
}

#[tokio::test]
async fn sparse_vectors_hide_untouched_series_like_client_golang() {
    let fleet = start(FleetOptions {
        nodes: 12,
        ..FleetOptions::default()
    })
    .await;
    let mut exposing = HashMap::<&str, usize>::new();
    for node in fleet.nodes() {
        let (_, families) = scrape(node).await;
        let families = by_name(&families);
        for (name, _) in IPAMD_FAMILIES {
            if families.contains_key(name) {
                *exposing.entry(name).or_default() += 1;
            }
        }
        // Counter vectors show only touched series; nothing is served as a zero placeholder
        // except the series ipamd itself creates at zero.
        for sample in &families["awscni_ec2api_req_count"].samples {
            assert!(sample.value > 0.0, "{sample:?}");
        }
    }
    // Unlabelled families are always there; some error vectors only on some nodes.
    assert_eq!(exposing["awscni_add_ip_req_count"], 12);
    assert_eq!(exposing["awscni_force_removed_enis"], 12);
    let sometimes: Vec<&str> = IPAMD_FAMILIES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| exposing.get(name).is_some_and(|count| *count < 12))
        .collect();
    assert!(!sometimes.is_empty(), "{exposing:?}");
}

#[tokio::test]
async fn counters_grow_and_gauges_move_between_scrapes() {
    let fleet = start(dense(2)).await;
    for node in fleet.nodes() {
        let mut previous: Option<Vec<Family>> = None;
        let mut awscni_gauge_moved = false;
        for _ in 0..8 {
            let (_, families) = scrape(node).await;
            if let Some(previous) = &previous {
                let before = by_name(previous);
                let mut any_gauge_moved = false;
                let mut any_counter_grew = false;
                for family in &families {
                    let old = before[family.name.as_str()];
                    for sample in &family.samples {
                        let Some(old_sample) = old.samples.iter().find(|old_sample| {
                            old_sample.name == sample.name && old_sample.labels == sample.labels
                        }) else {
                            continue;
                        };
                        let cumulative = matches!(family.kind.as_deref(), Some("counter"))
                            || (matches!(family.kind.as_deref(), Some("summary" | "histogram"))
                                && !sample.labels.iter().any(|(name, _)| name == "quantile"));
                        if cumulative {
                            assert!(
                                sample.value >= old_sample.value,
                                "counter {} {:?} went from {} to {}",
                                sample.name,
                                sample.labels,
                                old_sample.value,
                                sample.value
                            );
                            any_counter_grew |= sample.value > old_sample.value;
                        } else if family.kind.as_deref() == Some("gauge")
                            && sample.value != old_sample.value
                        {
                            any_gauge_moved = true;
                            awscni_gauge_moved |= family.name.starts_with("awscni_");
                        }
                    }
                }
                assert!(any_counter_grew && any_gauge_moved, "{node:?} did not move");
            }
            previous = Some(families);
        }
        assert!(
            awscni_gauge_moved,
            "no awscni gauge of {node:?} moved in 8 scrapes"
        );
        assert_eq!(node.scrape_count(), 8);
        assert_eq!(node.request_count(), 8);
    }
}

#[tokio::test]
async fn the_same_seed_serves_the_same_ipamd_values() {
    let (first, second) = tokio::join!(start(dense(3)), start(dense(3)));
    for (left, right) in first.nodes().iter().zip(second.nodes()) {
        scrape(left).await;
        scrape(right).await;
        let left = left.last_served().expect("served");
        let right = right.last_served().expect("served");
        let ipamd = |served: &sandbox::fleet::ServedExposition| {
            served
                .families
                .iter()
                .filter(|family| family.name.starts_with("awscni_"))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(ipamd(&left), ipamd(&right));
    }
    let other_seed = start(FleetOptions {
        seed: 99,
        ..dense(1)
    })
    .await;
    scrape(other_seed.node(0)).await;
    let other = other_seed.node(0).last_served().expect("served");
    let same_index = first.node(0).last_served().expect("served");
    assert_ne!(
        other.sum("awscni_ec2api_req_count"),
        same_index.sum("awscni_ec2api_req_count")
    );
}

// ---------------------------------------------------------------------------------------
// Restarts and replacements.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn reset_counters_restarts_counters_near_zero() {
    let fleet = start(dense(2)).await;
    let node = fleet.node(1);
    let uid = node.pod_uid();
    scrape(node).await;
    let before = node.last_served().expect("served");
    node.reset_counters();
    scrape(node).await;
    let after = node.last_served().expect("served");

    for sample_name in [
        "awscni_ec2api_req_count",
        "awscni_aws_api_latency_ms_count",
        "awscni_add_ip_req_count",
        "go_memstats_alloc_bytes_total",
        "process_cpu_seconds_total",
    ] {
        let old = before.sum(sample_name).expect("served before");
        let new = after.sum(sample_name).expect("served after");
        assert!(new < old, "{sample_name}: {old} -> {new}");
    }
    assert_eq!(
        after.value("promhttp_metric_handler_requests_total", &[("code", "200")]),
        Some(0.0)
    );
    // A container restart keeps the pod; its restart count shows it.
    assert_eq!(node.pod_uid(), uid);
    assert_eq!(after.pod_uid, uid);
    let status = node.pod_object().status.expect("pod status");
    let restarts = status
        .container_statuses
        .expect("container statuses")
        .iter()
        .find(|container| container.name == "aws-node")
        .map(|container| container.restart_count);
    assert_eq!(restarts, Some(1));
}

#[tokio::test]
async fn replace_node_gives_a_new_pod_whose_counters_restart() {
    let fleet = start(dense(3)).await;
    let node = fleet.node(2);
    let (old_name, old_uid) = (node.pod_name(), node.pod_uid());
    scrape(node).await;
    let before = node.last_served().expect("served");
    fleet.replace_node(2);
    assert_ne!(node.pod_name(), old_name);
    assert_ne!(node.pod_uid(), old_uid);
    let suffix = node
        .pod_name()
        .strip_prefix("aws-node-")
        .map(str::to_owned)
        .expect("aws-node- prefix");
    assert_eq!(suffix.len(), 5);
    assert!(
        suffix
            .chars()
            .all(|character| "bcdfghjklmnpqrstvwxz2456789".contains(character))
    );

    scrape(node).await;
    let after = node.last_served().expect("served");
    assert_eq!(after.pod_uid, node.pod_uid());
    assert_eq!(after.pod_name, node.pod_name());
    assert!(after.sum("awscni_ec2api_req_count") < before.sum("awscni_ec2api_req_count"));
    // The node itself did not change.
    assert_eq!(after.node_name, before.node_name);
    let pods = fleet.pods();
    assert_eq!(
        pods[2].metadata.uid.as_deref(),
        Some(node.pod_uid().as_str())
    );
    let names: HashSet<_> = pods.iter().map(|pod| pod.metadata.name.clone()).collect();
    assert_eq!(names.len(), 3);
    // A correct publisher sees a new pod UID: first sight, so no counter delta at all.
    assert_eq!(fleet.expected_counter_delta("awscni_add_ip_req_count"), 0.0);
}

// ---------------------------------------------------------------------------------------
// Faults.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_slow_node_answers_after_the_delay() {
    let fleet = start(dense(1)).await;
    let node = fleet.node(0);
    node.set_fault(Fault::Slow(Duration::from_millis(400)));
    let began = Instant::now();
    let fetched = fetch(node, PROMPTLY)
        .await
        .expect("a slow node still answers");
    assert!(
        began.elapsed() >= Duration::from_millis(400),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(fetched.status, 200);
    check_exposition(&fetched.body).expect("a slow answer is a valid exposition");
    // A client that gives up earlier gets nothing.
    assert!(fetch(node, Duration::from_millis(100)).await.is_err());
}

#[tokio::test]
async fn a_hung_node_never_answers_and_does_not_block_shutdown() {
    let fleet = start(dense(2)).await;
    let hung = fleet.node(0).clone();
    hung.set_fault(Fault::Hang);
    let error = fetch(&hung, Duration::from_millis(500))
        .await
        .expect_err("a hung node never answers");
    assert!(error.contains("no answer"), "{error}");
    assert_eq!(hung.request_count(), 1, "the request was received");
    assert_eq!(hung.scrape_count(), 0);
    // The other node is unaffected, and the hung one recovers once the fault is cleared.
    scrape(fleet.node(1)).await;
    hung.set_fault(Fault::None);
    scrape(&hung).await;

    // A request left hanging must not keep the fleet alive.
    hung.set_fault(Fault::Hang);
    let address = hung.address();
    let pending =
        tokio::spawn(async move { fetch_path(address, "/metrics", Duration::from_secs(60)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(PROMPTLY, fleet.shutdown())
        .await
        .expect("shutdown finishes despite a hung request");
    let outcome = tokio::time::timeout(PROMPTLY, pending)
        .await
        .expect("the hung request ends with the fleet")
        .expect("the client task ran");
    assert!(outcome.is_err(), "{outcome:?}");
    assert!(
        TcpStream::connect(address).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn http_500_garbage_and_oversized_faults() {
    let fleet = start(dense(3)).await;
    let (failing, garbage, oversized) = (fleet.node(0), fleet.node(1), fleet.node(2));
    failing.set_fault(Fault::Http500);
    garbage.set_fault(Fault::Garbage);
    oversized.set_fault(Fault::Oversized(1 << 20));

    let answer = fetch(failing, PROMPTLY).await.expect("answers");
    assert_eq!(answer.status, 500);
    assert!(answer.body.contains("An error has occurred"));

    let answer = fetch(garbage, PROMPTLY).await.expect("answers");
    assert_eq!(answer.status, 200);
    assert!(
        check_exposition(&answer.body).is_err(),
        "garbage parsed: {}",
        answer.body
    );

    let answer = fetch(oversized, PROMPTLY).await.expect("answers");
    assert_eq!(answer.status, 200);
    assert!(answer.body.len() > 1 << 20, "{} bytes", answer.body.len());
    check_exposition(&answer.body).expect("an oversized body still looks valid");
    let served = oversized
        .last_served()
        .expect("an oversized exposition is served");
    assert_eq!(served.padded_to, Some(1 << 20));
    assert_eq!(served.body, answer.body);

    // Only real expositions count as scrapes; every request counts as a request.
    assert_eq!((failing.scrape_count(), failing.request_count()), (0, 1));
    assert_eq!((garbage.scrape_count(), garbage.request_count()), (0, 1));
    assert_eq!(oversized.scrape_count(), 1);
    assert!(failing.last_served().is_none());

    fleet.set_fault_all(Fault::None);
    for node in fleet.nodes() {
        let (fetched, _) = scrape(node).await;
        assert!(fetched.body.len() < 24_000);
    }
    let missing = fetch_path(failing.address(), "/other", PROMPTLY)
        .await
        .expect("answers");
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn type_drift_flips_exactly_the_five_drifting_families() {
    let fleet = start(dense(1)).await;
    let node = fleet.node(0);
    let types = |families: &[Family]| -> BTreeMap<String, String> {
        families
            .iter()
            .map(|family| (family.name.clone(), family.kind.clone().unwrap_or_default()))
            .collect()
    };
    let (_, families) = scrape(node).await;
    let normal = types(&families);
    node.set_type_drift(true);
    let (_, families) = scrape(node).await;
    let drifted = types(&families);
    assert_eq!(
        normal.keys().collect::<Vec<_>>(),
        drifted.keys().collect::<Vec<_>>()
    );
    let mut changed: Vec<&str> = normal
        .iter()
        .filter(|(name, kind)| drifted[*name] != **kind)
        .map(|(name, kind)| {
            assert_eq!(
                (kind.as_str(), drifted[name].as_str()),
                ("counter", "gauge"),
                "{name}"
            );
            name.as_str()
        })
        .collect();
    changed.sort_unstable();
    let mut expected = TYPE_DRIFT_FAMILIES.to_vec();
    expected.sort_unstable();
    assert_eq!(changed, expected);
    let served = node.last_served().expect("served");
    assert!(served.type_drift);
    assert_eq!(
        served.metric_type("awscni_add_ip_req_count"),
        Some(MetricType::Gauge)
    );

    node.set_type_drift(false);
    let (_, families) = scrape(node).await;
    assert_eq!(types(&families), normal);
}

// ---------------------------------------------------------------------------------------
// The record of what was served.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn last_served_matches_the_wire_exactly() {
    let fleet = start(FleetOptions {
        nodes: 4,
        history_len: 3,
        prefix_delegation_every: 2,
        ..FleetOptions::default()
    })
    .await;
    assert!(fleet.node(0).last_served().is_none());
    for round in 1..=4_u64 {
        for node in fleet.nodes() {
            let (fetched, families) = scrape(node).await;
            let served = node.last_served().expect("served");
            assert_eq!(served.sequence, round);
            assert_eq!(node.scrape_count(), round);
            assert_eq!(served.body, fetched.body);
            assert_eq!(served.pod_uid, node.pod_uid());
            assert_eq!(served.pod_name, node.pod_name());
            assert_eq!(served.families.len(), families.len());
            for (family, parsed) in served.families.iter().zip(&families) {
                assert_eq!(family.name, parsed.name);
                assert_eq!(Some(family.help.as_str()), parsed.help.as_deref());
                assert_eq!(Some(family.metric_type.as_str()), parsed.kind.as_deref());
                assert_eq!(
                    family.samples.len(),
                    parsed.samples.len(),
                    "{}",
                    family.name
                );
                for sample in &parsed.samples {
                    assert_eq!(
                        served.value(&sample.name, &labels_of(sample)),
                        Some(sample.value),
                        "{} {:?}",
                        sample.name,
                        sample.labels
                    );
                }
            }
        }
    }
    let history = fleet.node(1).served_history();
    assert_eq!(
        history
            .iter()
            .map(|served| served.sequence)
            .collect::<Vec<_>>(),
        [2, 3, 4]
    );

    // The fleet-level helpers agree with sums computed from the parsed bodies.
    let mut assigned = 0.0;
    for node in fleet.nodes() {
        let served = node.last_served().expect("served");
        let families = check_exposition(&served.body).expect("valid");
        assigned +=
            by_name(&families)["awscni_assigned_ip_addresses"].sum("awscni_assigned_ip_addresses");
    }
    assert_eq!(
        fleet.expected_gauge_sum("awscni_assigned_ip_addresses"),
        assigned
    );

    let mut delta = 0.0;
    for node in fleet.nodes() {
        let history = node.served_history();
        let (previous, current) = (&history[1], &history[2]);
        delta += current.sum("awscni_ec2api_req_count").unwrap_or(0.0)
            - previous.sum("awscni_ec2api_req_count").unwrap_or(0.0);
    }
    assert!(delta > 0.0);
    assert_eq!(
        fleet.expected_counter_delta("awscni_ec2api_req_count"),
        delta
    );
}

// ---------------------------------------------------------------------------------------
// Addresses and scale.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn fleets_in_one_process_get_disjoint_addresses() {
    let (first, second) = tokio::join!(start(dense(50)), start(dense(50)));
    let addresses: HashSet<SocketAddr> = first
        .nodes()
        .iter()
        .chain(second.nodes())
        .map(SimNode::address)
        .collect();
    assert_eq!(addresses.len(), 100);
    for address in &addresses {
        let std::net::IpAddr::V4(ip) = address.ip() else {
            panic!("{address} is not IPv4");
        };
        let octets = ip.octets();
        assert_eq!(octets[0], 127);
        assert!(
            octets[1..].iter().all(|octet| (1..=254).contains(octet)),
            "{address}"
        );
    }
    let names: HashSet<String> = first
        .nodes()
        .iter()
        .chain(second.nodes())
        .map(SimNode::node_name)
        .collect();
    assert_eq!(names.len(), 100);
}

#[tokio::test]
async fn a_fleet_on_a_custom_port() {
    let fleet = start(FleetOptions {
        port: 0,
        ..dense(3)
    })
    .await;
    for node in fleet.nodes() {
        assert_ne!(node.address().port(), 0);
        scrape(node).await;
        let pod = node.pod_object();
        let port = pod.spec.expect("spec").containers[0]
            .ports
            .clone()
            .expect("ports")[0]
            .container_port;
        assert_eq!(port, i32::from(node.address().port()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_nodes_start_quickly_and_all_answer() {
    let began = Instant::now();
    let fleet = start(FleetOptions {
        nodes: 1_000,
        ..FleetOptions::default()
    })
    .await;
    let startup = began.elapsed();
    eprintln!("1,000 nodes started in {startup:?}");
    assert!(
        startup < Duration::from_secs(15),
        "startup took {startup:?}"
    );

    let began = Instant::now();
    let mut scrapes = JoinSet::new();
    let mut sizes = Vec::new();
    for chunk in fleet.nodes().chunks(50) {
        for node in chunk {
            let address = node.address();
            scrapes.spawn(async move { fetch_path(address, "/metrics", PROMPTLY).await });
        }
        while let Some(result) = scrapes.join_next().await {
            let fetched = result.expect("the task ran").expect("every node answers");
            assert_eq!(fetched.status, 200);
            sizes.push(fetched.body.len());
        }
    }
    eprintln!("1,000 scrapes took {:?}", began.elapsed());
    assert_eq!(sizes.len(), 1_000);
    assert!(fleet.nodes().iter().all(|node| node.scrape_count() == 1));
    let mean = sizes.iter().sum::<usize>() / sizes.len();
    eprintln!(
        "mean body {mean} bytes, min {:?}, max {:?}",
        sizes.iter().min(),
        sizes.iter().max()
    );
    assert!((12_000..=22_000).contains(&mean), "mean body {mean} bytes");
    let pods = fleet.pods();
    let unique_names: HashSet<_> = pods.iter().map(|pod| pod.metadata.name.clone()).collect();
    let unique_uids: HashSet<_> = pods.iter().map(|pod| pod.metadata.uid.clone()).collect();
    assert_eq!((unique_names.len(), unique_uids.len()), (1_000, 1_000));
    fleet.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Kubernetes objects.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn pods_and_nodes_carry_what_discovery_needs() {
    let fleet = start(FleetOptions {
        nodes: 5,
        zones: vec!["eu-west-1a".to_owned(), "eu-west-1b".to_owned()],
        region: "eu-west-1".to_owned(),
        ..FleetOptions::default()
    })
    .await;
    let pods = fleet.pods();
    let nodes = fleet.kube_nodes();
    assert_eq!((pods.len(), nodes.len()), (5, 5));
    let mut uids = HashSet::new();
    for (index, (pod, kube_node)) in pods.iter().zip(&nodes).enumerate() {
        let node = fleet.node(index);
        let ip = node.address().ip().to_string();
        let zone = ["eu-west-1a", "eu-west-1b"][index % 2];
        assert_eq!(node.zone(), zone);

        let metadata = &pod.metadata;
        assert_eq!(metadata.name.as_deref(), Some(node.pod_name().as_str()));
        assert_eq!(metadata.namespace.as_deref(), Some("kube-system"));
        assert!(uids.insert(metadata.uid.clone().expect("a uid")));
        let labels = metadata.labels.as_ref().expect("labels");
        assert_eq!(labels.get("k8s-app").map(String::as_str), Some("aws-node"));
        assert!(labels.contains_key("controller-revision-hash"));
        assert!(labels.contains_key("pod-template-generation"));
        let owner = &metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("DaemonSet", "aws-node")
        );
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some(node.node_name().as_str()));
        assert_eq!(spec.host_network, Some(true));
        let container = spec
            .containers
            .iter()
            .find(|container| container.name == "aws-node")
            .expect("aws-node container");
        let port = &container.ports.as_ref().expect("ports")[0];
        assert_eq!(
            (port.container_port, port.name.as_deref()),
            (61678, Some("metrics"))
        );
        let status = pod.status.as_ref().expect("status");
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ip.as_deref(), Some(ip.as_str()));
        assert_eq!(status.host_ip.as_deref(), Some(ip.as_str()));
        let ready = status
            .conditions
            .as_ref()
            .expect("conditions")
            .iter()
            .find(|condition| condition.type_ == "Ready");
        assert_eq!(
            ready.map(|condition| condition.status.as_str()),
            Some("True")
        );

        let name = kube_node.metadata.name.clone().expect("node name");
        assert_eq!(
            name,
            format!("ip-{}.eu-west-1.compute.internal", ip.replace('.', "-"))
        );
        assert_eq!(name, node.node_name());
        let labels = kube_node.metadata.labels.as_ref().expect("labels");
        assert_eq!(
            labels
                .get("topology.kubernetes.io/zone")
                .map(String::as_str),
            Some(zone)
        );
        assert_eq!(labels.get("kubernetes.io/hostname"), Some(&name));
        assert_eq!(
            labels.get("kubernetes.io/os").map(String::as_str),
            Some("linux")
        );
        assert_eq!(
            labels
                .get("node.kubernetes.io/instance-type")
                .map(String::as_str),
            Some(node.instance_type())
        );
        let node_status = kube_node.status.as_ref().expect("status");
        let internal = node_status
            .addresses
            .as_ref()
            .expect("addresses")
            .iter()
            .find(|address| address.type_ == "InternalIP");
        assert_eq!(
            internal.map(|address| address.address.as_str()),
            Some(ip.as_str())
        );
        let ready = node_status
            .conditions
            .as_ref()
            .expect("conditions")
            .iter()
            .find(|condition| condition.type_ == "Ready");
        assert_eq!(
            ready.map(|condition| condition.status.as_str()),
            Some("True")
        );

        // Both serialise as the API server would return them.
        let pod_json = serde_json::to_value(pod).expect("the pod serialises");
        assert_eq!(pod_json["kind"], "Pod");
        assert_eq!(pod_json["spec"]["hostNetwork"], true);
        let node_json = serde_json::to_value(kube_node).expect("the node serialises");
        assert_eq!(node_json["kind"], "Node");
    }
}

#[tokio::test]
async fn bad_options_are_refused_with_a_clear_error() {
    let error = Fleet::start(FleetOptions {
        zones: Vec::new(),
        ..FleetOptions::default()
    })
    .await
    .expect_err("no zones is refused");
    assert!(error.to_string().contains("zones"), "{error}");
}
