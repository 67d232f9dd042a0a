//! A simulated fleet of aws-node (ipamd) metrics endpoints.
//!
//! Each [`SimNode`] listens on its own loopback address `127.x.y.z` at the real ipamd port
//! 61678 and answers `GET /metrics` with a realistic Prometheus text exposition: the
//! `awscni_*` families with the types and labels of ipamd v1.20 (including the quantile-less
//! `awscni_aws_api_latency_ms` summary and the startup histograms), plus the `go_*`,
//! `process_*` and `promhttp_*` families a Go endpoint serves; 10–20 KB per body.
//!
//! Every scrape advances the node's simulation by one 30 s interval: counters grow and gauges
//! move, deterministically from the fleet seed and the node index (each node owns a tiny
//! xorshift generator; nothing global). Knobs change a node while it runs: faults (slow, hang,
//! HTTP 500, garbage, oversized), counter resets (ipamd restarted), type drift (the five
//! families ipamd moved between gauge and counter served as gauges), and pod replacement.
//!
//! Each node remembers what it served ([`SimNode::last_served`], [`SimNode::served_history`])
//! as structured data, so tests compute the expected cluster aggregates independently of the
//! parser under test. Each node also exists as a Kubernetes [`Pod`] and [`Node`] for the fake
//! API server.
//!
//! Addresses are allocated without collisions across fleets and processes (see `address`).

mod address;
mod exposition;
mod kube_objects;
mod server;
mod simulation;

/// The fake API server spreads its UID seeds with it too.
pub(crate) use simulation::splitmix64;

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use tokio::task::JoinHandle;

pub use exposition::{
    MetricType, ServedExposition, ServedFamily, ServedSample, TYPE_DRIFT_FAMILIES,
};
pub use kube_objects::{AWS_NODE_LABEL, AWS_NODE_NAMESPACE};
pub use server::EXPOSITION_CONTENT_TYPE;

use exposition::{NodeLayout, Recorder, TextRenderer};
use kube_objects::{NodeFacts, PodIdentity};
use simulation::{PoolShape, SimState, XorShift};

/// The port ipamd serves its metrics on.
pub const IPAMD_METRICS_PORT: u16 = 61678;

/// What can go wrong when starting a fleet.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("invalid fleet options: {0}")]
    InvalidOptions(String),
    #[error(
        "loopback address {address} is not available: this fleet needs the whole 127.0.0.0/8 \
         routed to loopback, as Linux does ({source})"
    )]
    LoopbackUnavailable {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "no free loopback address for port {port} after {attempts} attempts; is something \
         listening on 0.0.0.0:{port}? ({last_error})"
    )]
    NoFreeAddress {
        port: u16,
        attempts: u32,
        last_error: std::io::Error,
    },
    #[error("could not listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// How a node misbehaves on its next scrapes. Set with [`SimNode::set_fault`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// Answer normally.
    #[default]
    None,
    /// Wait this long, then answer normally.
    Slow(Duration),
    /// Accept the connection and read the request, then never answer.
    Hang,
    /// Answer 500 with promhttp's gather error text.
    Http500,
    /// Answer 200 with a body that is not a valid exposition.
    Garbage,
    /// Answer 200 with a valid exposition padded with comment lines past this many bytes.
    Oversized(usize),
    /// Answer 200 with a valid exposition in which the unlabelled gauges
    /// `awscni_assigned_ip_addresses` and `awscni_total_ip_addresses` read `1e+200` and
    /// `1e-200`: values CloudWatch refuses. The served history keeps the simulated values.
    ExtremeValues,
    /// Like `Oversized(size)`, but the body is sent in pieces spread evenly over `over`, as
    /// from a node on a congested link: the scraper holds the partial body all that time.
    SlowBody { size: usize, over: Duration },
    /// Answer 200 with a valid exposition plus this many extra counter series of
    /// `awscni_ec2api_req_count`, each with a label value never seen before (in this body
    /// or any other), as from an ipamd with a label-cardinality bug. The extra series are
    /// not in [`SimNode::served_history`].
    ManySeries(usize),
}

/// How a fleet's nodes are reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NodeListeners {
    /// Each node listens on its own loopback address, as a real node does: scrapers can
    /// reach it directly or through the API server's pods proxy. One open file per node.
    #[default]
    PerNode,
    /// Every node is served by one listener on `127.0.0.1`, which tells them apart by the
    /// Host header (their `IP:port`), so a fleet can be larger than the open-file limit.
    /// The nodes' addresses are only names: nothing listens on them, so only the pods proxy
    /// of an API server routed there ([`crate::kube_api::FakeApiServer::route_pod_proxy_via`])
    /// reaches them.
    Shared,
}

/// How to build a fleet. `FleetOptions { nodes: 10, ..FleetOptions::default() }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Availability zones, assigned to nodes round-robin.
    pub zones: Vec<String>,
    /// AWS region, used in node names, labels and image URLs.
    pub region: String,
    /// The port every node listens on. 0 lets the kernel pick one per node.
    pub port: u16,
    /// Seed of all simulated values; same seed, same numbers.
    pub seed: u64,
    /// Every n-th node (index % n == n - 1) runs ipamd in prefix-delegation mode; 0 = none.
    pub prefix_delegation_every: usize,
    /// Serve labelled series only once they were first touched, as client_golang's vectors
    /// do (so error families are missing on nodes that never had that error). When false,
    /// every known series and family is always served, zero when untouched.
    pub sparse_vectors: bool,
    /// How many served expositions each node remembers.
    pub history_len: usize,
    /// One listener per node, or one for the whole fleet.
    pub listeners: NodeListeners,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            zones: vec![
                "us-west-2a".to_owned(),
                "us-west-2b".to_owned(),
                "us-west-2c".to_owned(),
            ],
            region: "us-west-2".to_owned(),
            port: IPAMD_METRICS_PORT,
            seed: 1,
            prefix_delegation_every: 0,
            sparse_vectors: true,
            history_len: 4,
            listeners: NodeListeners::PerNode,
        }
    }
}

/// Time spent producing served bodies, summed over every fleet of the process.
static RENDER_NANOS: AtomicU64 = AtomicU64::new(0);
/// Bodies served, summed over every fleet of the process.
static RENDERED_BODIES: AtomicU64 = AtomicU64::new(0);

/// The CPU time every fleet of this process has spent producing the expositions it served
/// (stepping the simulation and rendering the text), and how many it served: the simulation's own
/// cost, which the benchmark separates from the publisher's and the API server's.
pub fn rendering_totals() -> (Duration, u64) {
    (
        Duration::from_nanos(RENDER_NANOS.load(Ordering::Relaxed)),
        RENDERED_BODIES.load(Ordering::Relaxed),
    )
}

/// The CPU time of the calling thread, in nanoseconds.
fn thread_cpu_nanos() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    u64::try_from(now.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(now.tv_nsec).unwrap_or(0))
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves the data
/// consistent, so a panic elsewhere must not break the rest of a test.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One served exposition, kept compactly: the simulation snapshot it was rendered from.
/// Rendering is deterministic, so the text and the samples can be rebuilt on demand.
#[derive(Clone, Debug)]
struct ServedRecord {
    sequence: u64,
    identity: Arc<PodIdentity>,
    state: SimState,
    type_drift: bool,
    padded_to: Option<usize>,
}

/// What changes while a node runs, behind one lock so that a scrape and a restart never
/// interleave.
struct LiveState {
    simulation: SimState,
    identity: Arc<PodIdentity>,
    /// Draws the names and UIDs of replacement pods.
    identity_rng: XorShift,
    history: VecDeque<ServedRecord>,
}

/// Everything about one node, shared between its handle and its server task.
pub(crate) struct NodeShared {
    index: usize,
    address: SocketAddr,
    node_name: String,
    node_uid: String,
    node_created_at: Timestamp,
    zone: String,
    zone_id: String,
    region: String,
    instance_id: String,
    daemonset_uid: Arc<str>,
    revision_hash: Arc<str>,
    layout: NodeLayout,
    history_len: usize,
    fault: Mutex<Fault>,
    type_drift: AtomicBool,
    requests: AtomicU64,
    scrapes: AtomicU64,
    live: Mutex<LiveState>,
}

impl NodeShared {
    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn current_fault(&self) -> Fault {
        *lock(&self.fault)
    }

    /// Advances the simulation by one interval, records what is served and renders it.
    pub(crate) fn serve_exposition(&self, padded_to: Option<usize>) -> String {
        // CPU time rather than wall time: a busy machine preempts the renderer, which
        // would otherwise count as the simulation's cost.
        let started = thread_cpu_nanos();
        let body = self.step_and_render(padded_to);
        RENDER_NANOS.fetch_add(
            thread_cpu_nanos().saturating_sub(started),
            Ordering::Relaxed,
        );
        RENDERED_BODIES.fetch_add(1, Ordering::Relaxed);
        body
    }

    fn step_and_render(&self, padded_to: Option<usize>) -> String {
        let record = {
            let mut live = lock(&self.live);
            live.simulation.step(&self.layout.shape);
            let snapshot = live.simulation;
            live.simulation.record_scrape();
            let record = ServedRecord {
                sequence: self.scrapes.fetch_add(1, Ordering::Relaxed) + 1,
                identity: Arc::clone(&live.identity),
                state: snapshot,
                type_drift: self.type_drift.load(Ordering::Relaxed),
                padded_to,
            };
            live.history.push_back(record.clone());
            while live.history.len() > self.history_len.max(1) {
                live.history.pop_front();
            }
            record
        };
        // Rendering happens outside the lock: it is the expensive part.
        self.render(&record)
    }

    fn render(&self, record: &ServedRecord) -> String {
        let mut renderer = TextRenderer::with_capacity(20_000);
        exposition::emit(
            &self.layout,
            &record.state,
            record.type_drift,
            &mut renderer,
        );
        let mut body = renderer.out;
        if let Some(target) = record.padded_to {
            exposition::pad_to(&mut body, target);
        }
        body
    }

    fn materialize(&self, record: &ServedRecord) -> ServedExposition {
        let mut recorder = Recorder::default();
        exposition::emit(
            &self.layout,
            &record.state,
            record.type_drift,
            &mut recorder,
        );
        ServedExposition {
            sequence: record.sequence,
            pod_name: record.identity.name.clone(),
            pod_uid: record.identity.uid.clone(),
            node_name: self.node_name.clone(),
            type_drift: record.type_drift,
            padded_to: record.padded_to,
            families: recorder.families,
            body: self.render(record),
        }
    }

    fn facts(&self) -> NodeFacts<'_> {
        NodeFacts {
            node_name: &self.node_name,
            ip: self.address.ip().to_string(),
            metrics_port: self.address.port(),
            zone: &self.zone,
            zone_id: self.zone_id.clone(),
            region: &self.region,
            instance_id: &self.instance_id,
            profile: self.layout.shape.profile,
            daemonset_uid: &self.daemonset_uid,
            revision_hash: &self.revision_hash,
            node_uid: &self.node_uid,
            node_created_at: self.node_created_at,
        }
    }
}

/// A handle on one simulated node. Cheap to clone; every knob is thread-safe and takes
/// effect from the next request on.
#[derive(Clone)]
pub struct SimNode {
    shared: Arc<NodeShared>,
}

impl std::fmt::Debug for SimNode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SimNode")
            .field("index", &self.shared.index)
            .field("address", &self.shared.address)
            .field("node_name", &self.shared.node_name)
            .field("pod_name", &self.pod_name())
            .finish_non_exhaustive()
    }
}

impl SimNode {
    /// The node's position in its fleet.
    pub fn index(&self) -> usize {
        self.shared.index
    }

    /// `127.x.y.z:61678` (or the fleet's custom port).
    pub fn address(&self) -> SocketAddr {
        self.shared.address
    }

    /// The name of the current aws-node pod, `aws-node-xxxxx`.
    pub fn pod_name(&self) -> String {
        lock(&self.shared.live).identity.name.clone()
    }

    /// The UID of the current aws-node pod.
    pub fn pod_uid(&self) -> String {
        lock(&self.shared.live).identity.uid.clone()
    }

    /// `ip-127-x-y-z.<region>.compute.internal`.
    pub fn node_name(&self) -> String {
        self.shared.node_name.clone()
    }

    pub fn zone(&self) -> String {
        self.shared.zone.clone()
    }

    /// The simulated EC2 instance type, which bounds `awscni_eni_max` and `awscni_ip_max`.
    pub fn instance_type(&self) -> &'static str {
        self.shared.layout.shape.profile.instance_type
    }

    /// Whether this node's ipamd runs in prefix-delegation mode.
    pub fn prefix_delegation(&self) -> bool {
        self.shared.layout.shape.prefix_delegation
    }

    pub fn set_fault(&self, fault: Fault) {
        *lock(&self.shared.fault) = fault;
    }

    pub fn fault(&self) -> Fault {
        self.shared.current_fault()
    }

    /// Simulates an aws-node container restart: counters and histograms start again near
    /// zero, the pod keeps its name and UID and its restart count goes up by one.
    pub fn reset_counters(&self) {
        let mut live = lock(&self.shared.live);
        live.simulation.restart_process(&self.shared.layout.shape);
        let mut identity = (*live.identity).clone();
        identity.restart_count += 1;
        live.identity = Arc::new(identity);
    }

    /// Holds this node's pod load at `percent` % of its IP capacity (`awscni_ip_max`), as
    /// after a burst of pods: the next scrapes serve that many assigned IPs, with the pool
    /// grown to hold them, and no churn. The way a test drives a cluster towards IP
    /// exhaustion.
    pub fn pin_load_percent(&self, percent: u32) {
        let shape = &self.shared.layout.shape;
        let assigned = u64::from(shape.max_ips()) * u64::from(percent.min(100)) / 100;
        lock(&self.shared.live)
            .simulation
            .pin_assigned(shape, u32::try_from(assigned).unwrap_or(u32::MAX));
    }

    /// Serves the five drifting families as gauges (`true`) or counters (`false`).
    pub fn set_type_drift(&self, gauges_instead_of_counters: bool) {
        self.shared
            .type_drift
            .store(gauges_instead_of_counters, Ordering::Relaxed);
    }

    /// How many valid expositions this node has served (plain, slow and oversized answers).
    pub fn scrape_count(&self) -> u64 {
        self.shared.scrapes.load(Ordering::Relaxed)
    }

    /// How many `/metrics` requests this node received, whatever it answered.
    pub fn request_count(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Exactly what the node served last, or `None` before its first served exposition.
    /// An exposition counts as served once it is handed to the connection, even if the
    /// client gave up waiting (a slow node whose scraper timed out).
    pub fn last_served(&self) -> Option<ServedExposition> {
        let record = lock(&self.shared.live).history.back().cloned()?;
        Some(self.shared.materialize(&record))
    }

    /// The last few served expositions (`FleetOptions::history_len`), oldest first.
    pub fn served_history(&self) -> Vec<ServedExposition> {
        let records: Vec<ServedRecord> = lock(&self.shared.live).history.iter().cloned().collect();
        records
            .iter()
            .map(|record| self.shared.materialize(record))
            .collect()
    }

    /// The current aws-node pod, Running and Ready.
    pub fn pod_object(&self) -> Pod {
        let identity = Arc::clone(&lock(&self.shared.live).identity);
        kube_objects::aws_node_pod(&self.shared.facts(), &identity)
    }

    /// The Kubernetes Node this aws-node pod runs on.
    pub fn node_object(&self) -> Node {
        kube_objects::kube_node(&self.shared.facts())
    }
}

/// A running fleet. Dropping it stops every server (also the ones stuck in hung requests);
/// [`Fleet::shutdown`] does the same and waits until every address is released.
pub struct Fleet {
    nodes: Vec<SimNode>,
    used_pod_names: Mutex<HashSet<String>>,
    servers: Vec<JoinHandle<()>>,
    /// The one listener of a [`NodeListeners::Shared`] fleet.
    shared_listener: Option<SocketAddr>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Fleet")
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Binds one loopback address per node and starts serving. Must run inside a Tokio
    /// runtime.
    pub async fn start(options: FleetOptions) -> Result<Fleet, FleetError> {
        if options.nodes > 0 && options.zones.is_empty() {
            return Err(FleetError::InvalidOptions(
                "zones is empty; give at least one availability zone".to_owned(),
            ));
        }
        if options.region.is_empty() {
            return Err(FleetError::InvalidOptions(
                "region is empty; give an AWS region such as us-west-2".to_owned(),
            ));
        }

        let started_at = now_in_seconds();
        let mut fleet_rng = XorShift::seeded(&[options.seed, 0xF1EE7]);
        let fleet_facts = FleetFacts {
            started_at,
            now_epoch_seconds: started_at.as_second() as f64,
            daemonset_uid: kube_objects::uuid_v4(&mut fleet_rng).into(),
            // Revision hashes are ten characters of the same alphabet as name suffixes.
            revision_hash: (0..2)
                .map(|_| kube_objects::name_suffix(&mut fleet_rng))
                .collect::<String>()
                .into(),
            short_region: short_region_name(&options.region),
        };

        let mut used_pod_names = HashSet::with_capacity(options.nodes);
        let mut nodes = Vec::with_capacity(options.nodes);
        let mut listeners = Vec::with_capacity(options.nodes);
        for index in 0..options.nodes {
            let address = match options.listeners {
                NodeListeners::PerNode => {
                    let (listener, address) = address::bind_next(options.port)?;
                    listeners.push(listener);
                    address
                }
                NodeListeners::Shared => address::reserve_unbound(options.port),
            };
            let shared = new_node(index, address, &options, &fleet_facts, &mut used_pod_names);
            nodes.push(SimNode {
                shared: Arc::new(shared),
            });
        }

        let (servers, shared_listener) = match options.listeners {
            NodeListeners::PerNode => {
                let servers = nodes
                    .iter()
                    .zip(listeners)
                    .map(|(node, listener)| {
                        tokio::spawn(server::serve(listener, Arc::clone(&node.shared)))
                    })
                    .collect();
                (servers, None)
            }
            NodeListeners::Shared => {
                let local = SocketAddr::from(([127, 0, 0, 1], 0));
                let listener = tokio::net::TcpListener::bind(local)
                    .await
                    .map_err(|source| FleetError::Bind {
                        address: local,
                        source,
                    })?;
                let bound = listener.local_addr().map_err(|source| FleetError::Bind {
                    address: local,
                    source,
                })?;
                let by_address = nodes
                    .iter()
                    .map(|node| (node.shared.address, Arc::clone(&node.shared)))
                    .collect();
                let server = tokio::spawn(server::serve_shared(listener, Arc::new(by_address)));
                (vec![server], Some(bound))
            }
        };
        Ok(Fleet {
            nodes,
            used_pod_names: Mutex::new(used_pod_names),
            servers,
            shared_listener,
        })
    }

    /// The one listener of a [`NodeListeners::Shared`] fleet, to route an API server's pods
    /// proxy to; `None` when every node listens on its own address.
    pub fn shared_listener(&self) -> Option<SocketAddr> {
        self.shared_listener
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node at `index`.
    ///
    /// # Panics
    /// When `index` is out of range, like slice indexing.
    pub fn node(&self, index: usize) -> &SimNode {
        &self.nodes[index]
    }

    pub fn nodes(&self) -> &[SimNode] {
        &self.nodes
    }

    /// The current aws-node pod of every node, in node order.
    pub fn pods(&self) -> Vec<Pod> {
        self.nodes.iter().map(SimNode::pod_object).collect()
    }

    /// The Kubernetes Node of every node, in node order.
    pub fn kube_nodes(&self) -> Vec<Node> {
        self.nodes.iter().map(SimNode::node_object).collect()
    }

    /// # Panics
    /// When `index` is out of range.
    pub fn pod_object(&self, index: usize) -> Pod {
        self.node(index).pod_object()
    }

    /// Simulates the DaemonSet replacing a node's aws-node pod: a new pod name suffix and UID,
    /// restart count 0, and counters that start again near zero. The node keeps its address.
    ///
    /// # Panics
    /// When `index` is out of range.
    pub fn replace_node(&self, index: usize) {
        let node = self.node(index);
        let mut used_names = lock(&self.used_pod_names);
        let mut live = lock(&node.shared.live);
        used_names.remove(&live.identity.name);
        let identity = unique_identity(&mut live.identity_rng, &mut used_names, now_in_seconds());
        live.identity = Arc::new(identity);
        live.simulation.restart_process(&node.shared.layout.shape);
    }

    /// Sets the same fault on every node.
    pub fn set_fault_all(&self, fault: Fault) {
        for node in &self.nodes {
            node.set_fault(fault);
        }
    }

    /// The sum of a sample name over every series of every node's last served exposition:
    /// what a correct publisher reports for a gauge when it scraped every node once since
    /// they last served. Nodes that never served are left out.
    pub fn expected_gauge_sum(&self, sample_name: &str) -> f64 {
        self.nodes
            .iter()
            .filter_map(SimNode::last_served)
            .filter_map(|served| served.sum(sample_name))
            .sum()
    }

    /// The cluster counter delta between each node's last two served expositions, following
    /// the publisher's rule: per pod UID and per series, `current - previous`, `current` when
    /// it went down (restart), and 0 for a pod or series seen for the first time.
    pub fn expected_counter_delta(&self, sample_name: &str) -> f64 {
        self.nodes
            .iter()
            .map(|node| {
                let history = node.served_history();
                let [.., previous, current] = history.as_slice() else {
                    return 0.0;
                };
                if previous.pod_uid != current.pod_uid {
                    return 0.0;
                }
                current
                    .samples(sample_name)
                    .map(|sample| {
                        let labels: Vec<(&str, &str)> = sample
                            .labels
                            .iter()
                            .map(|(name, value)| (name.as_str(), value.as_str()))
                            .collect();
                        match previous.value(sample_name, &labels) {
                            None => 0.0,
                            Some(before) if sample.value < before => sample.value,
                            Some(before) => sample.value - before,
                        }
                    })
                    .sum::<f64>()
            })
            .sum()
    }

    /// Stops every server, including connections stuck in a hung request, and waits until
    /// their listeners are closed.
    pub async fn shutdown(mut self) {
        let servers = std::mem::take(&mut self.servers);
        for server in &servers {
            server.abort();
        }
        for server in servers {
            // Every task ends as cancelled; there is nothing to report.
            let _ = server.await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}

/// What every node of one fleet shares.
struct FleetFacts {
    started_at: Timestamp,
    now_epoch_seconds: f64,
    daemonset_uid: Arc<str>,
    revision_hash: Arc<str>,
    short_region: String,
}

/// Builds one node: its instance shape, its warmed-up simulation, its labels and its pod.
fn new_node(
    index: usize,
    address: SocketAddr,
    options: &FleetOptions,
    fleet: &FleetFacts,
    used_pod_names: &mut HashSet<String>,
) -> NodeShared {
    let node_seed = [options.seed, index as u64];
    let mut node_rng = XorShift::seeded(&[options.seed, index as u64, 0x1D]);
    let profile = simulation::pick_profile(&mut node_rng);
    let every = options.prefix_delegation_every;
    let shape = PoolShape {
        profile,
        prefix_delegation: every > 0 && index % every == every - 1,
    };
    let simulation = SimState::warmed_up(&shape, &node_seed);
    // The node's simulated clock reads "now" at fleet start, so the warm-up lies in
    // the past: process_start_time_seconds is minutes to hours ago, as on a real node.
    let layout = NodeLayout::new(
        shape,
        index,
        &mut node_rng,
        options.sparse_vectors,
        fleet.now_epoch_seconds - simulation.clock_seconds.floor(),
    );
    // Pod names and UIDs also mix in the address, which is unique in the process, so
    // two fleets with the same seed still get distinct pods.
    let ip_bits = match address.ip() {
        std::net::IpAddr::V4(ip) => u64::from(u32::from(ip)),
        std::net::IpAddr::V6(_) => 0,
    };
    let mut identity_rng = XorShift::seeded(&[options.seed, index as u64, ip_bits, 0x9D]);
    let identity = unique_identity(&mut identity_rng, used_pod_names, fleet.started_at);
    let zone_position = index % options.zones.len().max(1);
    let zone = options
        .zones
        .get(zone_position)
        .cloned()
        .unwrap_or_default();
    let ip_text = address.ip().to_string().replace('.', "-");
    NodeShared {
        index,
        address,
        node_name: format!("ip-{ip_text}.{}.compute.internal", options.region),
        node_uid: kube_objects::uuid_v4(&mut node_rng),
        node_created_at: fleet.started_at,
        zone_id: format!("{}-az{}", fleet.short_region, zone_position + 1),
        zone,
        region: options.region.clone(),
        instance_id: format!(
            "i-{:x}{:016x}",
            node_rng.next_u64() & 0xf,
            node_rng.next_u64()
        ),
        daemonset_uid: Arc::clone(&fleet.daemonset_uid),
        revision_hash: Arc::clone(&fleet.revision_hash),
        layout,
        history_len: options.history_len,
        fault: Mutex::new(Fault::None),
        type_drift: AtomicBool::new(false),
        requests: AtomicU64::new(0),
        scrapes: AtomicU64::new(0),
        live: Mutex::new(LiveState {
            simulation,
            identity: Arc::new(identity),
            identity_rng,
            history: VecDeque::with_capacity(options.history_len.max(1)),
        }),
    }
}

/// Draws pod identities until the name is not used by another node of the fleet: five
/// characters of a 27-letter alphabet collide often enough in a 5,000-node fleet.
fn unique_identity(
    rng: &mut XorShift,
    used_names: &mut HashSet<String>,
    created_at: Timestamp,
) -> PodIdentity {
    loop {
        let identity = PodIdentity::generate(rng, created_at);
        if used_names.insert(identity.name.clone()) {
            return identity;
        }
    }
}

/// The current time in whole seconds, as Kubernetes stores timestamps.
fn now_in_seconds() -> Timestamp {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(0));
    Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// `us-west-2` becomes `usw2`, the prefix of EKS zone ids such as `usw2-az1`.
fn short_region_name(region: &str) -> String {
    let mut parts = region.split('-');
    let mut short = parts.next().unwrap_or_default().to_owned();
    for part in parts {
        if part.chars().all(|character| character.is_ascii_digit()) {
            short.push_str(part);
        } else if let Some(first) = part.chars().next() {
            short.push(first);
        }
    }
    short
}
