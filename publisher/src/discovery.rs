//! Finds the aws-node pods to scrape from a watch-backed cache: one LIST at start, then a
//! WATCH that keeps a reflector store current, so a round costs the API server nothing.
//! With `--per-az` the Nodes are watched too, for their `topology.kubernetes.io/zone`.
//!
//! Only Running pods with an IP that are not being deleted are scraped. Pods are keyed by
//! UID, so a replaced pod (same name, new UID) starts with fresh counter state.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
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

/// Watch-backed caches of aws-node pods (and Nodes, for zones). Dropping it stops the
/// watches.
pub struct PodDiscovery {
    pods: Store<Pod>,
    nodes: Option<Store<Node>>,
    namespace: String,
    tasks: Vec<JoinHandle<()>>,
}

impl PodDiscovery {
    /// Starts the watches. Must run inside a Tokio runtime.
    pub fn start(client: Client, namespace: &str, selector: &str, watch_nodes: bool) -> Self {
        let pods_api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let (pods, pod_writer) = reflector::store();
        let pod_stream = reflector::reflector(
            pod_writer,
            watcher(pods_api, watcher::Config::default().labels(selector)),
        );
        let mut tasks = vec![tokio::spawn(drive("pods", pod_stream))];
        let nodes = watch_nodes.then(|| {
            let nodes_api: Api<Node> = Api::all(client);
            let (nodes, node_writer) = reflector::store();
            let node_stream =
                reflector::reflector(node_writer, watcher(nodes_api, watcher::Config::default()));
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
    pods: &[Arc<Pod>],
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
pub fn node_zone(node: &Node) -> Option<String> {
    node.metadata
        .labels
        .as_ref()?
        .get(ZONE_LABEL)
        .filter(|zone| !zone.is_empty())
        .cloned()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    fn pod(name: &str, phase: &str, ip: Option<&str>) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("kube-system".to_owned()),
                uid: Some(format!("uid-{name}")),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some(format!("node-{name}")),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.to_owned()),
                pod_ip: ip.map(str::to_owned),
                host_ip: ip.map(str::to_owned),
                ..PodStatus::default()
            }),
        })
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
