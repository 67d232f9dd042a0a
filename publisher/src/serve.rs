//! The HTTP endpoint for `USE_PROMETHEUS=true` / `--listen`: `/metrics` with the last
//! round's cluster aggregates and the publisher's own metrics in Prometheus text format
//! 0.0.4, `/healthz` (the process serves) and `/readyz` (a round completed, or, on a standby
//! replica, the lease is being watched successfully).
//!
//! Names: every datum becomes `cni_metrics_<CloudWatch name>` (e.g.
//! `cni_metrics_assignIPAddresses`), typed gauge because each value is one round's number
//! (counter metrics are already per-interval deltas), with the dimensions as snake_case
//! labels (`cluster_id`, and the zone label with `--per-az`).
//!
//! The endpoint cannot be starved: the liveness probe and scrapes share the process's
//! file-descriptor limit with whoever connects, so connections are bounded. A client must
//! send its request headers within [`DEFAULT_HEADER_READ_TIMEOUT`] (also between requests on
//! a kept-alive connection), and at most [`ServeOptions::max_connections`] are open at once,
//! by default a quarter of the open-file limit (capped), leaving the rest to scrapes. A
//! connection over the limit evicts the oldest open one (an idle one unless every
//! connection is busy; its response in flight is finished first) and waits briefly for its
//! slot, so a pile of idle connections never locks the kubelet's probe out.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::task::JoinHandle;

use crate::datum::{CLUSTER_DIMENSION, Datum};
use crate::ipamd_metrics::IPAMD_METRICS;

/// The content type of the 0.0.4 text format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The prefix of every exposed aggregate.
pub const METRIC_PREFIX: &str = "cni_metrics_";
/// The ipamd families upstream's helper serves with `USE_PROMETHEUS=true`, as unlabelled
/// gauges holding the cluster totals. They are served under the same names so that
/// dashboards and alerts written against upstream's endpoint keep working.
pub const UPSTREAM_PROMETHEUS_FAMILIES: [&str; 6] = [
    "awscni_eni_max",
    "awscni_ip_max",
    "awscni_eni_allocated",
    "awscni_total_ip_addresses",
    "awscni_assigned_ip_addresses",
    "awscni_total_ipv4_prefixes",
];

/// How long a client may take to send its request headers, counted from the connection's
/// start or, on a kept-alive connection, from the previous response. Prometheus and the
/// kubelet send theirs at once; a client that does not is holding a descriptor for nothing.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The default connection limit is the open-file limit divided by this: most descriptors are
/// left to scrapes (one per scrape in flight), the API server clients and the CloudWatch client.
pub const CONNECTION_SHARE_OF_FILE_LIMIT: u64 = 4;
/// The default connection limit never exceeds this: a few scrapers and probes need a handful.
pub const MAX_DERIVED_CONNECTIONS: usize = 256;
/// The default connection limit never goes below this, however low the file limit.
pub const MIN_DERIVED_CONNECTIONS: usize = 4;
/// The default connection limit when the open-file limit cannot be read.
pub const FALLBACK_CONNECTIONS: usize = 64;
/// How long a connection over the limit waits for the evicted connection's slot before it
/// is closed.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// How the endpoint bounds its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// The most connections open at once.
    pub max_connections: usize,
    /// See [`DEFAULT_HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
}

impl ServeOptions {
    /// The defaults for this process: a connection limit derived from its open-file limit
    /// ([`connection_limit_for`]) unless `max_connections` is given.
    pub fn for_this_process(max_connections: Option<usize>) -> ServeOptions {
        ServeOptions {
            max_connections: max_connections
                .unwrap_or_else(|| connection_limit_for(open_file_limit())),
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

/// The connection limit for a soft open-file limit of `open_files`: a quarter of it, between
/// [`MIN_DERIVED_CONNECTIONS`] and [`MAX_DERIVED_CONNECTIONS`]; [`FALLBACK_CONNECTIONS`]
/// when the limit is unknown.
pub fn connection_limit_for(open_files: Option<u64>) -> usize {
    match open_files {
        Some(limit) => usize::try_from(limit / CONNECTION_SHARE_OF_FILE_LIMIT)
            .unwrap_or(MAX_DERIVED_CONNECTIONS)
            .clamp(MIN_DERIVED_CONNECTIONS, MAX_DERIVED_CONNECTIONS),
        None => FALLBACK_CONNECTIONS,
    }
}

/// The process's soft open-file limit (RLIMIT_NOFILE), read from `/proc/self/limits` (the
/// publisher runs on Linux only, and this needs no unsafe call); `None` when unreadable or
/// unlimited.
pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    soft_open_file_limit(&limits)
}

/// The soft limit on the "Max open files" line of a `/proc/<pid>/limits` text.
fn soft_open_file_limit(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {address} for /metrics: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// The publisher's own numbers, exposed next to the aggregates.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PublisherStatus {
    pub round_duration_seconds: f64,
    pub last_round_unix_seconds: f64,
    pub rounds_total: u64,
    pub cloudwatch_queued_datums: usize,
    pub cloudwatch_dropped_datums_total: u64,
    /// Datums left out because CloudWatch refused them or would refuse their value.
    pub cloudwatch_rejected_datums_total: u64,
    /// Pods not scraped in the last round whose last good gauge values were used instead.
    pub stale_pods: usize,
    pub is_leader: bool,
}

/// What the endpoint serves; shared with the round loop.
#[derive(Debug, Default)]
pub struct ServeState {
    ready: AtomicBool,
    exposition: RwLock<String>,
}

impl ServeState {
    pub fn new() -> Arc<ServeState> {
        Arc::new(ServeState::default())
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Replaces what `/metrics` serves.
    pub fn publish(&self, datums: &[Datum], status: &PublisherStatus) {
        let text = render(datums, status);
        *self
            .exposition
            .write()
            .unwrap_or_else(PoisonError::into_inner) = text;
    }

    fn exposition(&self) -> String {
        self.exposition
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A running endpoint; dropping it stops serving.
pub struct Server {
    task: JoinHandle<()>,
}

impl Server {
    /// Binds `address` and serves until dropped.
    pub async fn start(
        address: SocketAddr,
        state: Arc<ServeState>,
        options: ServeOptions,
    ) -> Result<Server, ServeError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| ServeError::Bind { address, source })?;
        let address = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { address, source })?;
        tracing::info!(
            %address,
            max_connections = options.max_connections,
            header_read_timeout = ?options.header_read_timeout,
            "serving /metrics, /healthz and /readyz"
        );
        let task = tokio::spawn(accept_loop(listener, state, options));
        Ok(Server { task })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The open connections, oldest first, each with the sender that asks it to close.
#[derive(Default)]
struct OpenConnections {
    next_id: u64,
    by_age: BTreeMap<u64, oneshot::Sender<()>>,
}

/// Slots for connections: a permit per open connection, and who to evict when none is left.
struct ConnectionSlots {
    permits: Arc<Semaphore>,
    open: Mutex<OpenConnections>,
}

impl ConnectionSlots {
    fn new(limit: usize) -> Arc<ConnectionSlots> {
        Arc::new(ConnectionSlots {
            permits: Arc::new(Semaphore::new(limit.max(1))),
            open: Mutex::new(OpenConnections::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OpenConnections> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a new connection: a free one, or the oldest connection's once it closed.
    /// `None` when that takes longer than [`EVICTION_WAIT`].
    async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
            return Some(permit);
        }
        let oldest = self.lock().by_age.pop_first();
        if let Some((_, evict)) = oldest {
            // The connection may have ended on its own meanwhile; its slot is free then.
            let _ = evict.send(());
        }
        tokio::time::timeout(EVICTION_WAIT, Arc::clone(&self.permits).acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Registers a connection; the receiver completes when it is evicted.
    fn register(&self) -> (u64, oneshot::Receiver<()>) {
        let (evict, evicted) = oneshot::channel();
        let mut open = self.lock();
        let id = open.next_id;
        open.next_id += 1;
        open.by_age.insert(id, evict);
        (id, evicted)
    }

    fn unregister(&self, id: u64) {
        self.lock().by_age.remove(&id);
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<ServeState>, options: ServeOptions) {
    let slots = ConnectionSlots::new(options.max_connections);
    let mut builder = http1::Builder::new();
    // Without a timer hyper ignores (or, in newer versions, panics on) the header timeout.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    let builder = Arc::new(builder);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!("accepting a /metrics connection failed: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(permit) = slots.acquire().await else {
            tracing::warn!(
                %peer,
                max_connections = options.max_connections,
                "closed a /metrics connection: every connection slot stayed busy; raise \
                 --max-connections if this endpoint has many legitimate clients"
            );
            drop(stream);
            continue;
        };
        // Registered here rather than in the task, so that the next connection over the
        // limit always finds someone to evict.
        let registration = slots.register();
        tokio::spawn(serve_connection(
            stream,
            Arc::clone(&state),
            Arc::clone(&slots),
            Arc::clone(&builder),
            (permit, registration),
        ));
    }
}

/// Serves one connection until it ends, its headers are late, or it is evicted; its slot is
/// freed when this returns.
async fn serve_connection(
    stream: TcpStream,
    state: Arc<ServeState>,
    slots: Arc<ConnectionSlots>,
    builder: Arc<http1::Builder>,
    (_permit, (id, evicted)): (OwnedSemaphorePermit, (u64, oneshot::Receiver<()>)),
) {
    let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let state = Arc::clone(&state);
        async move {
            Ok::<_, std::convert::Infallible>(respond(
                &state,
                request.method(),
                request.uri().path(),
            ))
        }
    });
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = evicted => {
            // An idle connection closes at once; a response in flight is finished first.
            tracing::debug!("evicting the oldest /metrics connection for a new one");
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    slots.unregister(id);
    if let Err(error) = result {
        tracing::debug!("a /metrics connection ended with an error: {error}");
    }
}

fn respond(state: &ServeState, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = header::HeaderValue::from_str(content_type) {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        response
    };
    if method != Method::GET && method != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".to_owned(),
        );
    }
    match path {
        "/metrics" => text(StatusCode::OK, PROMETHEUS_CONTENT_TYPE, state.exposition()),
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" if state.is_ready() => text(StatusCode::OK, "text/plain", "ready\n".to_owned()),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready: no round has completed yet\n".to_owned(),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    }
}

/// Renders datums and the publisher's status in the Prometheus text format: first
/// upstream's series ([`render_upstream_series`]), then one HELP and TYPE per
/// `cni_metrics_*` family, families sorted by name, then the publisher's own; non-finite
/// values left out.
pub fn render(datums: &[Datum], status: &PublisherStatus) -> String {
    let mut families: BTreeMap<String, Vec<&Datum>> = BTreeMap::new();
    for datum in datums.iter().filter(|datum| datum.value.is_finite()) {
        families
            .entry(format!(
                "{METRIC_PREFIX}{}",
                sanitize_metric_name(&datum.metric_name)
            ))
            .or_default()
            .push(datum);
    }
    let mut out = String::with_capacity(4096);
    render_upstream_series(datums, &mut out);
    for (name, members) in &families {
        let cloudwatch_name = members
            .first()
            .map_or("", |datum| datum.metric_name.as_str());
        let _ = writeln!(
            out,
            "# HELP {name} The cluster value of CloudWatch metric {cloudwatch_name} in the last round."
        );
        let _ = writeln!(out, "# TYPE {name} gauge");
        for datum in members {
            out.push_str(name);
            if !datum.dimensions.is_empty() {
                out.push('{');
                for (position, dimension) in datum.dimensions.iter().enumerate() {
                    if position > 0 {
                        out.push(',');
                    }
                    let _ = write!(
                        out,
                        "{}=\"{}\"",
                        label_name(&dimension.name),
                        escape_label_value(&dimension.value)
                    );
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", datum.value);
        }
    }
    let own: [(&str, &str, &str, f64); 8] = [
        (
            "cni_metrics_publisher_round_duration_seconds",
            "gauge",
            "How long the last round took.",
            status.round_duration_seconds,
        ),
        (
            "cni_metrics_publisher_last_round_timestamp_seconds",
            "gauge",
            "When the last round started, in Unix seconds.",
            status.last_round_unix_seconds,
        ),
        (
            "cni_metrics_publisher_rounds_total",
            "counter",
            "Rounds completed since start.",
            status.rounds_total as f64,
        ),
        (
            "cni_metrics_publisher_cloudwatch_queued_datums",
            "gauge",
            "Datums waiting for CloudWatch.",
            status.cloudwatch_queued_datums as f64,
        ),
        (
            "cni_metrics_publisher_cloudwatch_dropped_datums_total",
            "counter",
            "Datums dropped because the CloudWatch queue was full.",
            status.cloudwatch_dropped_datums_total as f64,
        ),
        (
            "cni_metrics_publisher_cloudwatch_rejected_datums_total",
            "counter",
            "Datums left out because CloudWatch refused them or would refuse their value.",
            status.cloudwatch_rejected_datums_total as f64,
        ),
        (
            "cni_metrics_publisher_stale_pods",
            "gauge",
            "Pods not scraped in the last round whose last good gauge values were used instead.",
            status.stale_pods as f64,
        ),
        (
            "cni_metrics_publisher_leader",
            "gauge",
            "1 while this replica scrapes and publishes.",
            if status.is_leader { 1.0 } else { 0.0 },
        ),
    ];
    for (name, kind, help, value) in own {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    }
    out
}

/// Upstream's series ([`UPSTREAM_PROMETHEUS_FAMILIES`]): each family's cluster total, the
/// datum with only the `CLUSTER_ID` dimension (not the per-zone ones of `--per-az`), without
/// labels as upstream serves it. A family no pod exposed in the round is left out, as its
/// datum is: no invented zeros.
fn render_upstream_series(datums: &[Datum], out: &mut String) {
    for family in UPSTREAM_PROMETHEUS_FAMILIES {
        let Some(metric) = IPAMD_METRICS.iter().find(|metric| metric.family == family) else {
            continue;
        };
        let total = datums.iter().find(|datum| {
            datum.metric_name == metric.metric_name
                && datum.value.is_finite()
                && matches!(datum.dimensions.as_slice(), [only] if only.name == CLUSTER_DIMENSION)
        });
        let Some(total) = total else {
            continue;
        };
        let _ = writeln!(
            out,
            "# HELP {family} The sum of ipamd's {family} over the cluster's aws-node pods in the \
             last round (upstream's helper's series; also cni_metrics_{}).",
            metric.metric_name
        );
        let _ = writeln!(out, "# TYPE {family} gauge");
        let _ = writeln!(out, "{family} {}", total.value);
    }
}

/// Metric names may hold `[a-zA-Z0-9_:]`; anything else becomes `_`.
fn sanitize_metric_name(name: &str) -> String {
    name.chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() || character == '_' || character == ':' {
                character
            } else {
                '_'
            }
        })
        .collect()
}

/// `CLUSTER_ID` becomes `cluster_id`, `AvailabilityZone` becomes `availability_zone`.
fn label_name(dimension: &str) -> String {
    let mut out = String::with_capacity(dimension.len() + 4);
    let mut previous_lower = false;
    for character in dimension.chars() {
        if character.is_ascii_uppercase() {
            if previous_lower {
                out.push('_');
            }
            out.push(character.to_ascii_lowercase());
            previous_lower = false;
        } else if character.is_ascii_alphanumeric() || character == '_' {
            out.push(character);
            previous_lower = character.is_ascii_lowercase() || character.is_ascii_digit();
        } else {
            out.push('_');
            previous_lower = false;
        }
    }
    if out.starts_with(|character: char| character.is_ascii_digit()) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for character in value.chars() {
        match character {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::datum::{Dimension, Unit};

    fn datum(name: &str, value: f64, dimensions: &[(&str, &str)]) -> Datum {
        Datum {
            metric_name: name.to_owned(),
            value,
            unit: Unit::Count,
            dimensions: dimensions
                .iter()
                .map(|(name, value)| Dimension {
                    name: (*name).to_owned(),
                    value: (*value).to_owned(),
                })
                .collect(),
            timestamp: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn renders_one_family_per_metric_with_escaped_labels() {
        let datums = [
            datum("assignIPAddresses", 12.0, &[("CLUSTER_ID", "c\"1")]),
            datum(
                "assignIPAddresses",
                5.0,
                &[("CLUSTER_ID", "c\"1"), ("AvailabilityZone", "us-west-2a")],
            ),
            datum("awsAPILatency", 1.5, &[("CLUSTER_ID", "c\"1")]),
            datum("broken", f64::NAN, &[]),
        ];
        let text = render(&datums, &PublisherStatus::default());
        assert_eq!(
            text.matches("# TYPE cni_metrics_assignIPAddresses gauge")
                .count(),
            1
        );
        assert!(
            text.contains("cni_metrics_assignIPAddresses{cluster_id=\"c\\\"1\"} 12\n"),
            "{text}"
        );
        assert!(text.contains(
            "cni_metrics_assignIPAddresses{cluster_id=\"c\\\"1\",availability_zone=\"us-west-2a\"} 5\n"
        ));
        assert!(text.contains("cni_metrics_awsAPILatency{cluster_id=\"c\\\"1\"} 1.5\n"));
        assert!(!text.contains("broken"));
        assert!(text.contains("cni_metrics_publisher_rounds_total 0\n"));
        let stale = PublisherStatus {
            stale_pods: 3,
            ..PublisherStatus::default()
        };
        let text = render(&[], &stale);
        assert!(
            text.contains(
                "# TYPE cni_metrics_publisher_stale_pods gauge\ncni_metrics_publisher_stale_pods 3\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn upstreams_six_series_hold_the_cluster_totals_without_labels() {
        let cluster = [("CLUSTER_ID", "prod")];
        let zone = [("CLUSTER_ID", "prod"), ("AvailabilityZone", "us-west-2a")];
        let datums = [
            datum("assignIPAddresses", 812.0, &cluster),
            datum("assignIPAddresses", 300.0, &zone),
            datum("totalIPAddresses", 1024.0, &cluster),
            datum("totalIPv4Prefixes", 64.0, &cluster),
            datum("eniAllocated", 40.0, &cluster),
            datum("eniMaxAvailable", 120.0, &cluster),
            datum("maxIPAddresses", 2900.0, &cluster),
            datum("maxIPAddresses", 930.0, &zone),
            datum("addReqCount", 7.0, &cluster),
            datum("podsScraped", 10.0, &cluster),
        ];
        let text = render(&datums, &PublisherStatus::default());
        for (family, total) in [
            ("awscni_eni_max", "120"),
            ("awscni_ip_max", "2900"),
            ("awscni_eni_allocated", "40"),
            ("awscni_total_ip_addresses", "1024"),
            ("awscni_assigned_ip_addresses", "812"),
            ("awscni_total_ipv4_prefixes", "64"),
        ] {
            assert_eq!(
                text.matches(&format!("# HELP {family} ")).count(),
                1,
                "{text}"
            );
            let typed = format!("# TYPE {family} gauge\n{family} {total}\n");
            assert!(text.contains(&typed), "{typed:?} missing from:\n{text}");
            assert_eq!(
                text.lines()
                    .filter(|line| line.starts_with(&format!("{family} ")))
                    .count(),
                1,
                "one unlabelled sample of {family}: {text}"
            );
        }
        // Only the six, and ours stay as they were.
        assert!(!text.contains("awscni_add_ip_req_count"), "{text}");
        assert!(text.contains("cni_metrics_maxIPAddresses{cluster_id=\"prod\"} 2900\n"));
        assert!(text.contains("cni_metrics_podsScraped{cluster_id=\"prod\"} 10\n"));
        // A family no pod exposed is not served at all, as its datum is not published.
        let text = render(&datums[..2], &PublisherStatus::default());
        assert!(
            text.contains("awscni_assigned_ip_addresses 812\n"),
            "{text}"
        );
        assert!(!text.contains("awscni_ip_max"), "{text}");
    }

    #[test]
    fn the_connection_limit_is_a_capped_quarter_of_the_file_limit() {
        assert_eq!(connection_limit_for(Some(128)), 32);
        assert_eq!(connection_limit_for(Some(1024)), 256);
        assert_eq!(
            connection_limit_for(Some(1_048_576)),
            MAX_DERIVED_CONNECTIONS
        );
        assert_eq!(connection_limit_for(Some(8)), MIN_DERIVED_CONNECTIONS);
        assert_eq!(connection_limit_for(None), FALLBACK_CONNECTIONS);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            128                  4096                 files     \n";
        assert_eq!(soft_open_file_limit(limits), Some(128));
        assert_eq!(
            soft_open_file_limit(
                "Max open files            unlimited            unlimited            files"
            ),
            None
        );
        assert!(open_file_limit().is_some(), "this test runs on Linux");
    }

    #[test]
    fn label_names_are_snake_case() {
        assert_eq!(label_name("CLUSTER_ID"), "cluster_id");
        assert_eq!(label_name("AvailabilityZone"), "availability_zone");
        assert_eq!(label_name("zone-id"), "zone_id");
        assert_eq!(label_name("1x"), "_1x");
    }

    #[test]
    fn readiness_follows_the_state() {
        let state = ServeState::default();
        let status = |method: Method, path: &str| respond(&state, &method, path).status();
        assert_eq!(
            status(Method::GET, "/readyz"),
            StatusCode::SERVICE_UNAVAILABLE
        );
        state.set_ready(true);
        assert_eq!(status(Method::GET, "/readyz"), StatusCode::OK);
        assert_eq!(status(Method::GET, "/healthz"), StatusCode::OK);
        assert_eq!(status(Method::GET, "/nope"), StatusCode::NOT_FOUND);
        assert_eq!(
            status(Method::POST, "/metrics"),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
