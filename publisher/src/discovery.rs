//! Finds the aws-node pods to scrape from a watch-backed cache: one LIST at start, then a
//! WATCH that keeps a reflector store current, so a round costs the API server nothing.
//! With `--per-az` the Nodes are watched too, for their `topology.kubernetes.io/zone`.
//!
//! Only Running pods with an IP that are not being deleted are scraped. Pods are keyed by
//! UID, so a replaced pod (same name, new UID) starts with fresh counter state.
//!
//! The caches hold slim objects ([`AwsNodePod`], [`ZoneNode`]) rather than `Pod` and
//! `Node`: serde skips every field discovery does not read while the listing and the watch
//! events are decoded, and the metadata that is decoded but unused (managed fields,
//! annotations, owner references) is cleared before an object enters the cache. An EKS
//! aws-node pod is 10-30 KB of JSON (two containers with their environment, volumes, managed
//! fields); kept whole, 5,000 of them would be most of the publisher's memory.

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

/// Clears the metadata discovery never reads, before an object enters a cache. Labels are
/// kept only when `keep_labels` (a Node's zone is a label; a pod was selected by its labels
/// already).
fn trim_metadata(metadata: &mut ObjectMeta, keep_labels: bool) {
    metadata.managed_fields = None;
    metadata.annotations = None;
    metadata.owner_references = None;
    metadata.finalizers = None;
    metadata.generate_name = None;
    if keep_labels {
        if let Some(labels) = metadata.labels.as_mut() {
            labels.retain(|key, _| key == ZONE_LABEL);
        }
    } else {
        metadata.labels = None;
    }
}

/// Watch-backed caches of aws-node pods (and Nodes, for zones). Dropping it stops the
/// watches.
pub struct PodDiscovery {
    pods: Store<AwsNodePod>,
    nodes: Option<Store<ZoneNode>>,
    namespace: String,
    tasks: Vec<JoinHandle<()>>,
}

impl PodDiscovery {
    /// Starts the watches. Must run inside a Tokio runtime.
    pub fn start(client: Client, namespace: &str, selector: &str, watch_nodes: bool) -> Self {
        let pods_api: Api<AwsNodePod> = Api::namespaced(client.clone(), namespace);
        let (pods, pod_writer) = reflector::store();
        let pod_stream = reflector::reflector(
            pod_writer,
            watcher(pods_api, watcher::Config::default().labels(selector))
                .modify(|pod: &mut AwsNodePod| trim_metadata(&mut pod.metadata, false)),
        );
        let mut tasks = vec![tokio::spawn(drive("pods", pod_stream))];
        let nodes = watch_nodes.then(|| {
            let nodes_api: Api<ZoneNode> = Api::all(client);
            let (nodes, node_writer) = reflector::store();
            let node_stream = reflector::reflector(
                node_writer,
                watcher(nodes_api, watcher::Config::default())
                    .modify(|node: &mut ZoneNode| trim_metadata(&mut node.metadata, true)),
            );
            tasks.push(tokio::spawn(drive("nodes", node_stream)));
            nodes
        });
        PodDiscovery {
            pods,
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
            if self.pods.wait_until_ready().await.is_err() {
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
        let pods = self.pods.state();
        let zone_of = |node_name: &str| -> Option<String> {
            let nodes = self.nodes.as_ref()?;
            let node = nodes.get(&ObjectRef::new(node_name))?;
            node_zone(&node)
        };
        scrape_targets(&pods, zone_of)
    }
}

impl Drop for PodDiscovery {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Polls a reflector stream forever, logging watch errors. The watcher recovers by itself;
/// the backoff keeps a broken API server from being hammered.
async fn drive<S, K>(what: &'static str, stream: S)
where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
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
            let metadata = &pod.metadata;
            if metadata.deletion_timestamp.is_some() {
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
            let zone = pod
                .spec
                .as_ref()
                .and_then(|spec| spec.node_name.as_deref())
                .and_then(&zone_of);
            Some(ScrapeTarget {
                uid: metadata.uid.clone()?,
                name: metadata.name.clone()?,
                namespace: metadata.namespace.clone()?,
                host_ip: host_ip.to_owned(),
                zone,
            })
        })
        .collect();
    targets.sort_by(|left, right| left.name.cmp(&right.name));
    targets
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
    fn cached_metadata_keeps_only_what_discovery_reads() {
        let mut metadata = ObjectMeta {
            name: Some("aws-node-abcde".to_owned()),
            uid: Some("uid-1".to_owned()),
            namespace: Some("kube-system".to_owned()),
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
        let mut node_metadata = metadata.clone();
        trim_metadata(&mut metadata, false);
        assert_eq!(metadata.labels, None);
        assert_eq!(metadata.annotations, None);
        assert_eq!(metadata.managed_fields, None);
        assert_eq!(metadata.uid.as_deref(), Some("uid-1"));
        assert_eq!(metadata.name.as_deref(), Some("aws-node-abcde"));
        trim_metadata(&mut node_metadata, true);
        let labels = node_metadata.labels.expect("the zone label is kept");
        assert_eq!(labels.len(), 1);
        assert_eq!(
            labels.get(ZONE_LABEL).map(String::as_str),
            Some("us-west-2a")
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
