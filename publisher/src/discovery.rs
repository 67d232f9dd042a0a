//! Finds the aws-node pods to scrape from a watch-backed cache: one LIST at start, then a
//! WATCH that keeps a reflector store current, so a round costs the API server nothing.
//! With `--per-az` the Nodes are watched too, for their `topology.kubernetes.io/zone`.
//!
//! Only Running pods with an IP that are not being deleted are scraped. Pods are keyed by
//! UID, so a replaced pod (same name, new UID) starts with fresh counter state.
//!
//! Objects are decoded as slim views ([`AwsNodePod`], [`ZoneNode`]) rather than `Pod` and
//! `Node`: serde skips every field discovery does not read while the listing and the watch
//! events are decoded. An EKS aws-node pod is 10-30 KB of JSON (two containers with their
//! environment, volumes, managed fields); kept whole, 5,000 of them would be most of the
//! publisher's memory. The pod cache goes further and keeps, per scrapeable pod, only its
//! name, UID, host IP and node name (~150 bytes), so that 100,000 nodes fit the rendered
//! memory limit; the Node cache keeps each Node's metadata with only the zone label.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::task::JoinHandle;

/// The Node label holding the availability zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(
        "the aws-node pod cache was not filled within {timeout:?}: the publisher needs \
         list/watch on pods in namespace {namespace} (check the RBAC and the API server)"
    )]
    NotReady {
        timeout: Duration,
        namespace: String,
    },
}

/// One pod to scrape, as the cache saw it at the start of the round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeTarget {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// The node's IP (aws-node runs with hostNetwork, so it equals the pod IP).
    pub host_ip: String,
    /// The node's availability zone, when Nodes are watched and labelled.
    pub zone: Option<String>,
}

/// Declares `$view`, a struct with a `metadata: ObjectMeta` field, to be a view of the
/// core/v1 kind `$kind`, so that `Api<$view>` lists and watches that kind's objects and
/// decodes only the fields `$view` declares.
macro_rules! core_v1_view {
    ($view:ty, kind: $kind:literal, path: $path:literal, scope: $scope:ty) => {
        impl k8s_openapi::Resource for $view {
            const API_VERSION: &'static str = "v1";
            const GROUP: &'static str = "";
            const KIND: &'static str = $kind;
            const VERSION: &'static str = "v1";
            const URL_PATH_SEGMENT: &'static str = $path;
            type Scope = $scope;
        }

        impl k8s_openapi::Metadata for $view {
            type Ty = ObjectMeta;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// The fields of a core/v1 Pod that discovery reads; the API server's other fields are
/// skipped when an object is decoded.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct AwsNodePod {
    pub metadata: ObjectMeta,
    pub spec: Option<AwsNodePodSpec>,
    pub status: Option<AwsNodePodStatus>,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AwsNodePodSpec {
    pub node_name: Option<String>,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct AwsNodePodStatus {
    pub phase: Option<String>,
    #[serde(rename = "hostIP")]
    pub host_ip: Option<String>,
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
}

core_v1_view!(AwsNodePod, kind: "Pod", path: "pods", scope: NamespaceResourceScope);

/// A core/v1 Node reduced to its metadata, for the zone label.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct ZoneNode {
    pub metadata: ObjectMeta,
}

core_v1_view!(ZoneNode, kind: "Node", path: "nodes", scope: ClusterResourceScope);

/// Clears the metadata discovery never reads before a Node enters the cache: everything
/// but its zone label among the labels, and the annotations, managed fields and references.
fn trim_node_metadata(metadata: &mut ObjectMeta) {
    metadata.managed_fields = None;
    metadata.annotations = None;
    metadata.owner_references = None;
    metadata.finalizers = None;
    metadata.generate_name = None;
    if let Some(labels) = metadata.labels.as_mut() {
        labels.retain(|key, _| key == ZONE_LABEL);
    }
}

/// What the pod cache keeps of one scrapeable aws-node pod: ~150 bytes. The decoded pod
/// (an `ObjectMeta` alone is ~400 bytes before its strings) plus a reflector's key for it
/// took ~1.5 KB a pod, most of the publisher's memory at 100,000 nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CachedPod {
    uid: Box<str>,
    host_ip: Box<str>,
    node_name: Option<Box<str>>,
}

impl CachedPod {
    /// The pod as discovery keeps it, when it is scrapeable: Running, with an IP and a UID,
    /// not being deleted.
    fn of(pod: &AwsNodePod) -> Option<CachedPod> {
        if pod.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let status = pod.status.as_ref()?;
        if status.phase.as_deref() != Some("Running") {
            return None;
        }
        let host_ip = status
            .host_ip
            .as_deref()
            .or(status.pod_ip.as_deref())
            .filter(|ip| !ip.is_empty())?;
        status.pod_ip.as_deref().filter(|ip| !ip.is_empty())?;
        Some(CachedPod {
            uid: pod.metadata.uid.as_deref()?.into(),
            host_ip: host_ip.into(),
            node_name: pod
                .spec
                .as_ref()
                .and_then(|spec| spec.node_name.as_deref())
                .map(Box::from),
        })
    }
}

/// The scrapeable aws-node pods by name (one namespace), kept current by a watch.
#[derive(Debug, Default)]
struct PodCache {
    pods: std::collections::HashMap<Box<str>, CachedPod>,
    /// The pods of a (re)listing in progress, which replace `pods` when it completes.
    relisting: Option<std::collections::HashMap<Box<str>, CachedPod>>,
}

impl PodCache {
    /// Applies one watch event.
    fn apply(&mut self, event: watcher::Event<AwsNodePod>) {
        match event {
            watcher::Event::Init => self.relisting = Some(std::collections::HashMap::new()),
            watcher::Event::InitApply(pod) => {
                if let (Some(relisting), Some(name)) =
                    (self.relisting.as_mut(), pod.metadata.name.as_deref())
                    && let Some(cached) = CachedPod::of(&pod)
                {
                    relisting.insert(name.into(), cached);
                }
            }
            watcher::Event::InitDone => {
                if let Some(mut relisted) = self.relisting.take() {
                    relisted.shrink_to_fit();
                    self.pods = relisted;
                }
            }
            watcher::Event::Apply(pod) => {
                let Some(name) = pod.metadata.name.as_deref() else {
                    return;
                };
                // A pod that stopped being scrapeable (terminating, failed) leaves the cache.
                match CachedPod::of(&pod) {
                    Some(cached) => {
                        self.pods.insert(name.into(), cached);
                    }
                    None => {
                        self.pods.remove(name);
                    }
                }
            }
            watcher::Event::Delete(pod) => {
                if let Some(name) = pod.metadata.name.as_deref() {
                    self.pods.remove(name);
                }
            }
        }
    }
}

/// Watch-backed caches of aws-node pods (and Nodes, for zones). Dropping it stops the
/// watches.
pub struct PodDiscovery {
    pods: Arc<std::sync::RwLock<PodCache>>,
    /// Turns true once the pod cache holds its first full listing.
    pods_ready: tokio::sync::watch::Receiver<bool>,
    nodes: Option<Store<ZoneNode>>,
    namespace: String,
    tasks: Vec<JoinHandle<()>>,
}

impl PodDiscovery {
    /// Starts the watches. Must run inside a Tokio runtime.
    pub fn start(client: Client, namespace: &str, selector: &str, watch_nodes: bool) -> Self {
        let pods_api: Api<AwsNodePod> = Api::namespaced(client.clone(), namespace);
        let pods = Arc::new(std::sync::RwLock::new(PodCache::default()));
        let (ready_sender, pods_ready) = tokio::sync::watch::channel(false);
        let cache = Arc::clone(&pods);
        let pod_stream =
            watcher(pods_api, watcher::Config::default().labels(selector)).map(move |event| {
                let event = event?;
                let listed = matches!(event, watcher::Event::InitDone);
                cache
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .apply(event);
                if listed {
                    ready_sender.send_replace(true);
                }
                Ok(())
            });
        let mut tasks = vec![tokio::spawn(drive("pods", pod_stream))];
        let nodes = watch_nodes.then(|| {
            let nodes_api: Api<ZoneNode> = Api::all(client);
            let (nodes, node_writer) = reflector::store();
            let node_stream = reflector::reflector(
                node_writer,
                watcher(nodes_api, watcher::Config::default())
                    .modify(|node: &mut ZoneNode| trim_node_metadata(&mut node.metadata)),
            );
            tasks.push(tokio::spawn(drive("nodes", node_stream)));
            nodes
        });
        PodDiscovery {
            pods,
            pods_ready,
            nodes,
            namespace: namespace.to_owned(),
            tasks,
        }
    }

    /// Waits until the caches hold their first full listing.
    pub async fn wait_until_ready(&self, timeout: Duration) -> Result<(), DiscoveryError> {
        let ready = async {
            // A dropped writer means the watch task ended; nothing more will arrive, and
            // the timeout below reports it.
            let mut pods_ready = self.pods_ready.clone();
            if pods_ready.wait_for(|ready| *ready).await.is_err() {
                std::future::pending::<()>().await;
            }
            if let Some(nodes) = &self.nodes
                && nodes.wait_until_ready().await.is_err()
            {
                std::future::pending::<()>().await;
            }
        };
        tokio::time::timeout(timeout, ready)
            .await
            .map_err(|_| DiscoveryError::NotReady {
                timeout,
                namespace: self.namespace.clone(),
            })
    }

    /// The pods to scrape now.
    pub fn targets(&self) -> Vec<ScrapeTarget> {
        let zone_of = |node_name: &str| -> Option<String> {
            let nodes = self.nodes.as_ref()?;
            let node = nodes.get(&ObjectRef::new(node_name))?;
            node_zone(&node)
        };
        let cache = self
            .pods
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        targets_of(
            cache.pods.iter().map(|(name, pod)| (&**name, pod)),
            &self.namespace,
            zone_of,
        )
    }
}

impl Drop for PodDiscovery {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Polls a watch stream forever, logging watch errors. The watcher recovers by itself;
/// the backoff keeps a broken API server from being hammered.
async fn drive<S, T>(what: &'static str, stream: S)
where
    S: futures::Stream<Item = Result<T, watcher::Error>> + Send,
{
    let mut stream = std::pin::pin!(stream.default_backoff());
    while let Some(event) = stream.next().await {
        if let Err(error) = event {
            tracing::warn!(what, "watch failed, retrying with backoff: {error}");
        }
    }
}

/// The scrapeable pods among `pods`: Running, with an IP and a UID, not being deleted.
/// Sorted by name so rounds and logs are stable.
pub fn scrape_targets(
    pods: &[Arc<AwsNodePod>],
    zone_of: impl Fn(&str) -> Option<String>,
) -> Vec<ScrapeTarget> {
    let mut targets: Vec<ScrapeTarget> = pods
        .iter()
        .filter_map(|pod| {
            let name = pod.metadata.name.as_deref()?;
            let namespace = pod.metadata.namespace.as_deref()?;
            Some(target(name, namespace, &CachedPod::of(pod)?, &zone_of))
        })
        .collect();
    targets.sort_by(|left, right| left.name.cmp(&right.name));
    targets
}

/// The scrape targets of cached pods of one namespace, sorted by name.
fn targets_of<'a>(
    pods: impl Iterator<Item = (&'a str, &'a CachedPod)>,
    namespace: &str,
    zone_of: impl Fn(&str) -> Option<String>,
) -> Vec<ScrapeTarget> {
    let mut targets: Vec<ScrapeTarget> = pods
        .map(|(name, pod)| target(name, namespace, pod, &zone_of))
        .collect();
    targets.sort_by(|left, right| left.name.cmp(&right.name));
    targets
}

fn target(
    name: &str,
    namespace: &str,
    pod: &CachedPod,
    zone_of: &impl Fn(&str) -> Option<String>,
) -> ScrapeTarget {
    ScrapeTarget {
        uid: pod.uid.to_string(),
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        host_ip: pod.host_ip.to_string(),
        zone: pod.node_name.as_deref().and_then(zone_of),
    }
}

/// The zone label of a Node.
pub fn node_zone(node: &ZoneNode) -> Option<String> {
    node.metadata
        .labels
        .as_ref()?
        .get(ZONE_LABEL)
        .filter(|zone| !zone.is_empty())
        .cloned()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn pod(name: &str, phase: &str, ip: Option<&str>) -> Arc<AwsNodePod> {
        Arc::new(AwsNodePod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("kube-system".to_owned()),
                uid: Some(format!("uid-{name}")),
                ..ObjectMeta::default()
            },
            spec: Some(AwsNodePodSpec {
                node_name: Some(format!("node-{name}")),
            }),
            status: Some(AwsNodePodStatus {
                phase: Some(phase.to_owned()),
                pod_ip: ip.map(str::to_owned),
                host_ip: ip.map(str::to_owned),
            }),
        })
    }

    #[test]
    fn cached_node_metadata_keeps_only_what_discovery_reads() {
        let mut metadata = ObjectMeta {
            name: Some("ip-10-0-1-17.us-west-2.compute.internal".to_owned()),
            uid: Some("uid-1".to_owned()),
            labels: Some(
                [(ZONE_LABEL, "us-west-2a"), ("k8s-app", "aws-node")]
                    .into_iter()
                    .map(|(key, value)| (key.to_owned(), value.to_owned()))
                    .collect(),
            ),
            annotations: Some([("a".to_owned(), "b".repeat(1000))].into_iter().collect()),
            managed_fields: Some(vec![Default::default()]),
            ..ObjectMeta::default()
        };
        trim_node_metadata(&mut metadata);
        assert_eq!(metadata.annotations, None);
        assert_eq!(metadata.managed_fields, None);
        assert_eq!(metadata.uid.as_deref(), Some("uid-1"));
        assert_eq!(
            metadata.name.as_deref(),
            Some("ip-10-0-1-17.us-west-2.compute.internal")
        );
        let labels = metadata.labels.expect("the zone label is kept");
        assert_eq!(labels.len(), 1);
        assert_eq!(
            labels.get(ZONE_LABEL).map(String::as_str),
            Some("us-west-2a")
        );
    }

    fn names(cache: &PodCache) -> Vec<String> {
        let mut names: Vec<String> = cache.pods.keys().map(|name| name.to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn the_pod_cache_follows_listings_and_watch_events() {
        let mut cache = PodCache::default();
        cache.apply(watcher::Event::Init);
        for name in ["a", "b"] {
            cache.apply(watcher::Event::InitApply(
                (*pod(name, "Running", Some("10.0.0.1"))).clone(),
            ));
        }
        cache.apply(watcher::Event::InitApply(
            (*pod("c", "Pending", None)).clone(),
        ));
        // Until the listing is complete, the cache still answers with what it had.
        assert_eq!(names(&cache), Vec::<String>::new());
        cache.apply(watcher::Event::InitDone);
        assert_eq!(names(&cache), ["a", "b"]);

        // A replaced pod (same name, new UID) is a new pod to the aggregator.
        let mut replaced = (*pod("a", "Running", Some("10.0.0.9"))).clone();
        replaced.metadata.uid = Some("uid-a2".to_owned());
        cache.apply(watcher::Event::Apply(replaced));
        let a = cache.pods.get("a").expect("a is cached");
        assert_eq!((&*a.uid, &*a.host_ip), ("uid-a2", "10.0.0.9"));
        // A pod that starts terminating stops being scraped; a deleted one is gone.
        let mut terminating = (*pod("b", "Running", Some("10.0.0.2"))).clone();
        terminating.metadata.deletion_timestamp =
            Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        cache.apply(watcher::Event::Apply(terminating));
        cache.apply(watcher::Event::Apply(
            (*pod("c", "Running", Some("10.0.0.3"))).clone(),
        ));
        assert_eq!(names(&cache), ["a", "c"]);
        cache.apply(watcher::Event::Delete(
            (*pod("a", "Running", Some("10.0.0.9"))).clone(),
        ));
        assert_eq!(names(&cache), ["c"]);

        // A relisting replaces everything: pods deleted while the watch was down go away.
        cache.apply(watcher::Event::Init);
        cache.apply(watcher::Event::InitApply(
            (*pod("d", "Running", Some("10.0.0.4"))).clone(),
        ));
        cache.apply(watcher::Event::InitDone);
        assert_eq!(names(&cache), ["d"]);
        let targets = targets_of(
            cache.pods.iter().map(|(name, pod)| (&**name, pod)),
            "kube-system",
            |node| (node == "node-d").then(|| "us-west-2b".to_owned()),
        );
        assert_eq!(
            targets,
            [ScrapeTarget {
                uid: "uid-d".to_owned(),
                name: "d".to_owned(),
                namespace: "kube-system".to_owned(),
                host_ip: "10.0.0.4".to_owned(),
                zone: Some("us-west-2b".to_owned()),
            }]
        );
    }

    #[test]
    fn only_running_pods_with_an_ip_that_are_not_terminating() {
        let mut terminating = (*pod("d", "Running", Some("10.0.0.4"))).clone();
        terminating.metadata.deletion_timestamp =
            Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let pods = vec![
            pod("b", "Running", Some("10.0.0.2")),
            pod("a", "Running", Some("10.0.0.1")),
            pod("c", "Pending", Some("10.0.0.3")),
            Arc::new(terminating),
            pod("e", "Running", None),
        ];
        let zone_of = |node: &str| (node == "node-a").then(|| "us-west-2a".to_owned());
        let targets = scrape_targets(&pods, zone_of);
        let names: Vec<&str> = targets.iter().map(|target| target.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(targets[0].uid, "uid-a");
        assert_eq!(targets[0].host_ip, "10.0.0.1");
        assert_eq!(targets[0].zone.as_deref(), Some("us-west-2a"));
        assert_eq!(targets[1].zone, None);
    }
}
