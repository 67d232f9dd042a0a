//! The slim objects the discovery caches hold, decoded from what an API server sends.

use std::sync::Arc;

use cni_metrics_publisher::discovery::{
    AwsNodePod, ZONE_LABEL, ZoneNode, node_zone, scrape_targets,
};
use sandbox::fleet::{Fleet, FleetOptions};

#[tokio::test]
async fn full_pod_and_node_objects_decode_into_the_cache_objects() {
    let fleet = Fleet::start(FleetOptions {
        nodes: 2,
        ..FleetOptions::default()
    })
    .await
    .expect("the fleet starts");
    let node = fleet.node(1);
    let pod_json = serde_json::to_value(node.pod_object()).expect("the pod serialises");
    // The fields that make a real aws-node pod large are in the JSON...
    assert!(pod_json["spec"]["containers"].is_array());
    let pod: AwsNodePod = serde_json::from_value(pod_json).expect("the pod decodes");
    let targets = scrape_targets(&[Arc::new(pod)], |_| None);
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].name, node.pod_name());
    assert_eq!(targets[0].uid, node.pod_uid());
    assert_eq!(targets[0].host_ip, node.address().ip().to_string());

    let node_json = serde_json::to_value(node.node_object()).expect("the node serialises");
    let kube_node: ZoneNode = serde_json::from_value(node_json).expect("the node decodes");
    assert_eq!(node_zone(&kube_node), Some(node.zone()));
    assert!(
        kube_node
            .metadata
            .labels
            .as_ref()
            .is_some_and(|labels| labels.contains_key(ZONE_LABEL))
    );
    fleet.shutdown().await;
}
