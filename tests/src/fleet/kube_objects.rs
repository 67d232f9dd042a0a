//! The Kubernetes objects behind each simulated node: the aws-node DaemonSet pod that serves
//! the metrics and the Node it runs on, shaped like what an EKS API server returns.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, ContainerState, ContainerStateRunning, ContainerStatus, HostIP, Node,
    NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo, Pod, PodCondition, PodIP,
    PodSpec, PodStatus, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;

use super::simulation::{InstanceProfile, XorShift};

/// The namespace and label selector upstream's helper lists aws-node pods with.
pub const AWS_NODE_NAMESPACE: &str = "kube-system";
pub const AWS_NODE_LABEL: (&str, &str) = ("k8s-app", "aws-node");

/// The aws-node image version the simulated DaemonSet runs.
const AWS_NODE_VERSION: &str = "v1.20.4-eksbuild.2";
const NODE_AGENT_VERSION: &str = "v1.2.5-eksbuild.1";
const KUBELET_VERSION: &str = "v1.33.4-eks-e386d34";

/// The ECR account that serves the EKS add-on images in most commercial regions.
const ECR_ACCOUNT: &str = "602401143452";

/// The alphabet Kubernetes uses for generated name suffixes (no vowels, no look-alikes).
const NAME_SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Who the current aws-node pod of a node is. Replaced wholesale by `Fleet::replace_node`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PodIdentity {
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) restart_count: i32,
    pub(crate) created_at: Timestamp,
}

impl PodIdentity {
    pub(crate) fn generate(rng: &mut XorShift, created_at: Timestamp) -> Self {
        Self {
            name: format!("aws-node-{}", name_suffix(rng)),
            uid: uuid_v4(rng),
            restart_count: 0,
            created_at,
        }
    }
}

/// A five-character suffix as the DaemonSet controller generates.
pub(crate) fn name_suffix(rng: &mut XorShift) -> String {
    (0..5)
        .map(|_| {
            let index = rng.range(0, NAME_SUFFIX_ALPHABET.len() as u64 - 1) as usize;
            char::from(NAME_SUFFIX_ALPHABET[index])
        })
        .collect()
}

/// A random (version 4) UUID in its canonical text form.
pub(crate) fn uuid_v4(rng: &mut XorShift) -> String {
    let high = rng.next_u64();
    let low = rng.next_u64();
    let time_low = high >> 32;
    let time_mid = (high >> 16) & 0xffff;
    let version_and_time_high = 0x4000 | (high & 0x0fff);
    let variant_and_sequence = 0x8000 | ((low >> 48) & 0x3fff);
    let node = low & 0xffff_ffff_ffff;
    format!(
        "{time_low:08x}-{time_mid:04x}-{version_and_time_high:04x}-{variant_and_sequence:04x}-{node:012x}"
    )
}

/// The facts of one node that its Pod and Node objects are built from.
pub(crate) struct NodeFacts<'a> {
    pub(crate) node_name: &'a str,
    pub(crate) ip: String,
    pub(crate) metrics_port: u16,
    pub(crate) zone: &'a str,
    pub(crate) zone_id: String,
    pub(crate) region: &'a str,
    pub(crate) instance_id: &'a str,
    pub(crate) profile: InstanceProfile,
    pub(crate) daemonset_uid: &'a str,
    pub(crate) revision_hash: &'a str,
    pub(crate) node_uid: &'a str,
    pub(crate) node_created_at: Timestamp,
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

fn image(region: &str, repository: &str, tag: &str) -> String {
    format!("{ECR_ACCOUNT}.dkr.ecr.{region}.amazonaws.com/amazon/{repository}:{tag}")
}

fn running_status(
    name: &str,
    image: String,
    restart_count: i32,
    started_at: Timestamp,
) -> ContainerStatus {
    ContainerStatus {
        name: name.to_owned(),
        image,
        image_id: format!("sha256:{}", "0".repeat(64)),
        container_id: Some(format!("containerd://{}", "a".repeat(64))),
        ready: true,
        started: Some(true),
        restart_count,
        state: Some(ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(started_at)),
            }),
            ..ContainerState::default()
        }),
        ..ContainerStatus::default()
    }
}

/// The running, ready aws-node pod of a node.
pub(crate) fn aws_node_pod(facts: &NodeFacts<'_>, identity: &PodIdentity) -> Pod {
    let cni_image = image(facts.region, "amazon-k8s-cni", AWS_NODE_VERSION);
    let agent_image = image(facts.region, "aws-network-policy-agent", NODE_AGENT_VERSION);
    let ready = |kind: &str| PodCondition {
        type_: kind.to_owned(),
        status: "True".to_owned(),
        last_transition_time: Some(Time(identity.created_at)),
        ..PodCondition::default()
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(identity.name.clone()),
            generate_name: Some("aws-node-".to_owned()),
            namespace: Some(AWS_NODE_NAMESPACE.to_owned()),
            uid: Some(identity.uid.clone()),
            creation_timestamp: Some(Time(identity.created_at)),
            labels: Some(labels(&[
                ("app.kubernetes.io/instance", "aws-vpc-cni"),
                ("app.kubernetes.io/name", "aws-node"),
                ("controller-revision-hash", facts.revision_hash),
                (AWS_NODE_LABEL.0, AWS_NODE_LABEL.1),
                ("pod-template-generation", "1"),
            ])),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".to_owned(),
                kind: "DaemonSet".to_owned(),
                name: "aws-node".to_owned(),
                uid: facts.daemonset_uid.to_owned(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(facts.node_name.to_owned()),
            host_network: Some(true),
            service_account_name: Some("aws-node".to_owned()),
            service_account: Some("aws-node".to_owned()),
            priority_class_name: Some("system-node-critical".to_owned()),
            priority: Some(2_000_001_000),
            restart_policy: Some("Always".to_owned()),
            dns_policy: Some("ClusterFirst".to_owned()),
            termination_grace_period_seconds: Some(10),
            tolerations: Some(vec![Toleration {
                operator: Some("Exists".to_owned()),
                ..Toleration::default()
            }]),
            containers: vec![
                Container {
                    name: "aws-node".to_owned(),
                    image: Some(cni_image.clone()),
                    ports: Some(vec![ContainerPort {
                        container_port: i32::from(facts.metrics_port),
                        name: Some("metrics".to_owned()),
                        protocol: Some("TCP".to_owned()),
                        host_port: Some(i32::from(facts.metrics_port)),
                        ..ContainerPort::default()
                    }]),
                    ..Container::default()
                },
                Container {
                    name: "aws-eks-nodeagent".to_owned(),
                    image: Some(agent_image.clone()),
                    args: Some(vec![
                        "--enable-ipv6=false".to_owned(),
                        "--enable-network-policy=false".to_owned(),
                        "--metrics-bind-addr=:8162".to_owned(),
                        "--health-probe-bind-addr=:8163".to_owned(),
                    ]),
                    ..Container::default()
                },
            ],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".to_owned()),
            conditions: Some(vec![
                ready("PodReadyToStartContainers"),
                ready("Initialized"),
                ready("Ready"),
                ready("ContainersReady"),
                ready("PodScheduled"),
            ]),
            host_ip: Some(facts.ip.clone()),
            host_ips: Some(vec![HostIP {
                ip: facts.ip.clone(),
            }]),
            pod_ip: Some(facts.ip.clone()),
            pod_ips: Some(vec![PodIP {
                ip: facts.ip.clone(),
            }]),
            start_time: Some(Time(identity.created_at)),
            qos_class: Some("Burstable".to_owned()),
            container_statuses: Some(vec![
                running_status("aws-eks-nodeagent", agent_image, 0, identity.created_at),
                running_status(
                    "aws-node",
                    cni_image,
                    identity.restart_count,
                    identity.created_at,
                ),
            ]),
            ..PodStatus::default()
        }),
    }
}

/// The Ready node the aws-node pod runs on, addressed by its loopback IP.
pub(crate) fn kube_node(facts: &NodeFacts<'_>) -> Node {
    let instance_type = facts.profile.instance_type;
    let condition = |kind: &str, status: &str, reason: &str| NodeCondition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        last_heartbeat_time: Some(Time(facts.node_created_at)),
        last_transition_time: Some(Time(facts.node_created_at)),
        ..NodeCondition::default()
    };
    let resources = |pods: &str| {
        BTreeMap::from([
            (
                "cpu".to_owned(),
                Quantity(format!("{}", facts.profile.vcpus)),
            ),
            (
                "memory".to_owned(),
                Quantity(format!("{}Ki", facts.profile.memory_kib)),
            ),
            ("pods".to_owned(), Quantity(pods.to_owned())),
            (
                "ephemeral-storage".to_owned(),
                Quantity("83873772Ki".to_owned()),
            ),
        ])
    };
    Node {
        metadata: ObjectMeta {
            name: Some(facts.node_name.to_owned()),
            uid: Some(facts.node_uid.to_owned()),
            creation_timestamp: Some(Time(facts.node_created_at)),
            labels: Some(labels(&[
                ("beta.kubernetes.io/arch", "amd64"),
                ("beta.kubernetes.io/instance-type", instance_type),
                ("beta.kubernetes.io/os", "linux"),
                ("eks.amazonaws.com/capacityType", "ON_DEMAND"),
                ("eks.amazonaws.com/nodegroup", "sandbox-nodes"),
                ("failure-domain.beta.kubernetes.io/region", facts.region),
                ("failure-domain.beta.kubernetes.io/zone", facts.zone),
                ("k8s.io/cloud-provider-aws", "sandbox"),
                ("kubernetes.io/arch", "amd64"),
                ("kubernetes.io/hostname", facts.node_name),
                ("kubernetes.io/os", "linux"),
                ("node.kubernetes.io/instance-type", instance_type),
                ("topology.k8s.aws/zone-id", &facts.zone_id),
                ("topology.kubernetes.io/region", facts.region),
                ("topology.kubernetes.io/zone", facts.zone),
            ])),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(format!("aws:///{}/{}", facts.zone, facts.instance_id)),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".to_owned(),
                    address: facts.ip.clone(),
                },
                NodeAddress {
                    type_: "InternalDNS".to_owned(),
                    address: facts.node_name.to_owned(),
                },
                NodeAddress {
                    type_: "Hostname".to_owned(),
                    address: facts.node_name.to_owned(),
                },
            ]),
            conditions: Some(vec![
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID"),
                condition("Ready", "True", "KubeletReady"),
            ]),
            capacity: Some(resources("29")),
            allocatable: Some(resources("29")),
            node_info: Some(NodeSystemInfo {
                architecture: "amd64".to_owned(),
                boot_id: facts.node_uid.to_owned(),
                container_runtime_version: "containerd://1.7.27".to_owned(),
                kernel_version: "6.12.37-61.105.amzn2023.x86_64".to_owned(),
                kube_proxy_version: KUBELET_VERSION.to_owned(),
                kubelet_version: KUBELET_VERSION.to_owned(),
                machine_id: facts.instance_id.replace('-', ""),
                operating_system: "linux".to_owned(),
                os_image: "Amazon Linux 2023.8.20250808".to_owned(),
                system_uuid: format!("ec2{}", facts.node_uid.get(3..).unwrap_or_default()),
                ..NodeSystemInfo::default()
            }),
            ..NodeStatus::default()
        }),
    }
}
