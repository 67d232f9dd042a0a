//! `kubectl get` against the fake API server prints what it prints against a real
//! cluster: the server answers kubectl's Table requests with the columns and cells of
//! kube-apiserver's printers (server-side printing), and still answers plain objects for
//! `-o yaml`, `-o json` and `-o name`.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use sandbox::kube_api::FakeApiServer;
use sandbox::kubectl::{Kubectl, KubectlOutput};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Generous bound for anything that should happen promptly on a loaded machine.
const PROMPTLY: Duration = Duration::from_secs(20);

/// How long a watch is given to print a line it should not print.
const QUIET: Duration = Duration::from_secs(2);

const NODE_A: &str = "ip-10-0-1-23.us-west-2.compute.internal";
const NODE_B: &str = "ip-10-0-2-45.us-west-2.compute.internal";

/// Seeded objects were created 3 days and 5 hours ago (minus a few seconds, so that the
/// age stays `3d5h` however slow the test is), the nodes 12 days ago.
const OBJECT_AGE: &str = "3d5h";
const NODE_AGE: &str = "12d";

/// RFC 3339 for `seconds` ago, whole seconds.
fn ago(seconds: i64) -> String {
    let now = Timestamp::now().as_second();
    Timestamp::from_second(now - seconds)
        .expect("a valid timestamp")
        .to_string()
}

fn object_created() -> String {
    ago(3 * 86_400 + 5 * 3_600 + 30)
}

fn node(name: &str, internal_ip: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "creationTimestamp": ago(12 * 86_400 + 60),
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "node.kubernetes.io/instance-type": "m5.large",
            },
        },
        "spec": {"providerID": format!("aws:///us-west-2a/i-0{}", &internal_ip[5..].replace('.', ""))},
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True", "reason": "KubeletReady"},
            ],
            "addresses": [
                {"type": "InternalIP", "address": internal_ip},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.32.3-eks-473151a",
                "osImage": "Amazon Linux 2023.7.20250414",
                "kernelVersion": "6.1.132-147.221.amzn2023.x86_64",
                "containerRuntimeVersion": "containerd://1.7.27",
                "architecture": "amd64",
                "operatingSystem": "linux",
            },
        },
    })
}

fn aws_node_pod(name: &str, node: &str, ip: &str, restarts: i64) -> Value {
    let mut aws_node = json!({
        "name": "aws-node", "ready": true, "restartCount": restarts, "started": true,
        "image": "602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon-k8s-cni:v1.19.2",
        "state": {"running": {"startedAt": object_created()}},
    });
    if restarts > 0 {
        aws_node["lastState"] = json!({"terminated": {
            "exitCode": 137, "reason": "OOMKilled", "finishedAt": ago(3 * 3_600),
        }});
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "kube-system",
            "creationTimestamp": object_created(),
            "labels": {"k8s-app": "aws-node", "controller-revision-hash": "5c8f9d7b6"},
        },
        "spec": {
            "nodeName": node,
            "hostNetwork": true,
            "containers": [
                {"name": "aws-node", "image": "602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon-k8s-cni:v1.19.2"},
                {"name": "aws-eks-nodeagent", "image": "602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon/aws-network-policy-agent:v1.2.0"},
            ],
        },
        "status": {
            "phase": "Running",
            "hostIP": ip,
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "True"},
                {"type": "ContainersReady", "status": "True"},
                {"type": "PodScheduled", "status": "True"},
            ],
            "containerStatuses": [
                aws_node,
                {"name": "aws-eks-nodeagent", "ready": true, "restartCount": 0, "started": true,
                 "state": {"running": {"startedAt": object_created()}}},
            ],
        },
    })
}

fn deployment(replicas: i64, ready: i64, updated: i64, available: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "cni-metrics-helper",
            "namespace": "kube-system",
            "creationTimestamp": object_created(),
            "labels": {"app.kubernetes.io/name": "cni-metrics-helper"},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"k8s-app": "cni-metrics-helper"}},
            "template": {
                "metadata": {"labels": {"k8s-app": "cni-metrics-helper"}},
                "spec": {
                    "serviceAccountName": "cni-metrics-helper",
                    "containers": [{
                        "name": "cni-metrics-helper",
                        "image": "602401143452.dkr.ecr.us-west-2.amazonaws.com/cni-metrics-helper:v1.19.2",
                    }],
                },
            },
        },
        "status": {
            "observedGeneration": 1,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "availableReplicas": available,
        },
    })
}

/// A server seeded like a small EKS cluster with the tool's objects deployed.
async fn seeded() -> (FakeApiServer, Kubectl) {
    let server = FakeApiServer::start()
        .await
        .expect("the fake API server starts");
    let created = object_created();
    let objects = vec![
        node(NODE_A, "10.0.1.23"),
        node(NODE_B, "10.0.2.45"),
        aws_node_pod("aws-node-7xk2p", NODE_A, "10.0.1.23", 0),
        aws_node_pod("aws-node-q9d4m", NODE_B, "10.0.2.45", 2),
        deployment(1, 1, 1, 1),
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "cni-metrics-helper", "namespace": "kube-system", "creationTimestamp": created},
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "cni-metrics-helper", "creationTimestamp": created},
            "rules": [{"apiGroups": [""], "resources": ["pods", "pods/proxy"], "verbs": ["get", "list", "watch"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "cni-metrics-helper", "creationTimestamp": created},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cni-metrics-helper"},
            "subjects": [{"kind": "ServiceAccount", "name": "cni-metrics-helper", "namespace": "kube-system"}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "cni-metrics-helper-leader-election", "namespace": "kube-system", "creationTimestamp": created},
            "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "cni-metrics-helper-leader-election", "namespace": "kube-system", "creationTimestamp": created},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cni-metrics-helper-leader-election"},
            "subjects": [
                {"kind": "ServiceAccount", "name": "cni-metrics-helper", "namespace": "kube-system"},
                {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:masters"},
            ],
        }),
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "cni-metrics-helper", "namespace": "kube-system", "creationTimestamp": created},
            "spec": {"holderIdentity": "cni-metrics-helper-6d5f8c9b7-x2x4z", "leaseDurationSeconds": 15},
        }),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "amazon-vpc-cni", "namespace": "kube-system", "creationTimestamp": created},
            "data": {"enable-network-policy-controller": "false", "enable-windows-ipam": "false", "warm-ip-target": "5"},
        }),
        json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "cni-metrics-helper.17f0a1b2c3d4e5f6", "namespace": "kube-system", "creationTimestamp": created},
            "involvedObject": {"kind": "Deployment", "name": "cni-metrics-helper", "namespace": "kube-system", "apiVersion": "apps/v1"},
            "reason": "ScalingReplicaSet",
            "message": "Scaled up replica set cni-metrics-helper-6d5f8c9b7 from 0 to 1",
            "type": "Normal",
            "source": {"component": "deployment-controller"},
            "firstTimestamp": created,
            "lastTimestamp": created,
            "count": 1,
        }),
    ];
    for object in objects {
        server.insert_json(object).expect("the object is seeded");
    }
    let kubectl = Kubectl::for_server(&server).expect("kubectl is configured");
    (server, kubectl)
}

/// Runs kubectl and insists on success.
async fn get(kubectl: &Kubectl, args: &[&str]) -> KubectlOutput {
    let output = kubectl.run(args).await.expect("kubectl runs");
    assert!(output.success(), "kubectl {args:?} failed:\n{output}");
    output
}

/// The cells of a printed table line: kubectl separates columns by at least three
/// spaces, while values and headers (`NOMINATED NODE`, `2 (3h ago)`) contain single
/// spaces.
fn cells(line: &str) -> Vec<String> {
    line.split("  ")
        .map(str::trim)
        .filter(|cell| !cell.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The printed table as rows of cells, header first.
fn table(output: &KubectlOutput) -> Vec<Vec<String>> {
    output.stdout.lines().map(cells).collect()
}

/// Asserts the whole table, printing kubectl's output when it differs.
fn assert_table(output: &KubectlOutput, expected: &[&[&str]]) {
    let expected: Vec<Vec<String>> = expected
        .iter()
        .map(|row| row.iter().map(|cell| (*cell).to_owned()).collect())
        .collect();
    assert_eq!(table(output), expected, "kubectl printed:\n{output}");
}

#[tokio::test]
async fn pods_print_ready_status_restarts_and_wide_columns() {
    let (_server, kubectl) = seeded().await;
    let output = get(&kubectl, &["get", "pods", "-n", "kube-system"]).await;
    assert_table(
        &output,
        &[
            &["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
            &["aws-node-7xk2p", "2/2", "Running", "0", OBJECT_AGE],
            &["aws-node-q9d4m", "2/2", "Running", "2 (3h ago)", OBJECT_AGE],
        ],
    );

    let wide = get(
        &kubectl,
        &["get", "pods", "-n", "kube-system", "-o", "wide"],
    )
    .await;
    assert_table(
        &wide,
        &[
            &[
                "NAME",
                "READY",
                "STATUS",
                "RESTARTS",
                "AGE",
                "IP",
                "NODE",
                "NOMINATED NODE",
                "READINESS GATES",
            ],
            &[
                "aws-node-7xk2p",
                "2/2",
                "Running",
                "0",
                OBJECT_AGE,
                "10.0.1.23",
                NODE_A,
                "<none>",
                "<none>",
            ],
            &[
                "aws-node-q9d4m",
                "2/2",
                "Running",
                "2 (3h ago)",
                OBJECT_AGE,
                "10.0.2.45",
                NODE_B,
                "<none>",
                "<none>",
            ],
        ],
    );
    println!("kubectl get pods -n kube-system -o wide:\n{}", wide.stdout);
}

#[tokio::test]
async fn a_single_pod_prints_as_a_table_too() {
    let (_server, kubectl) = seeded().await;
    let output = get(
        &kubectl,
        &["get", "pod", "-n", "kube-system", "aws-node-7xk2p"],
    )
    .await;
    assert_table(
        &output,
        &[
            &["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
            &["aws-node-7xk2p", "2/2", "Running", "0", OBJECT_AGE],
        ],
    );
}

#[tokio::test]
async fn deployments_print_ready_up_to_date_available_and_wide_columns() {
    let (_server, kubectl) = seeded().await;
    let output = get(&kubectl, &["get", "deployment", "-n", "kube-system"]).await;
    assert_table(
        &output,
        &[
            &["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
            &["cni-metrics-helper", "1/1", "1", "1", OBJECT_AGE],
        ],
    );
    let wide = get(
        &kubectl,
        &["get", "deploy", "-n", "kube-system", "-o", "wide"],
    )
    .await;
    assert_table(
        &wide,
        &[
            &[
                "NAME",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "AGE",
                "CONTAINERS",
                "IMAGES",
                "SELECTOR",
            ],
            &[
                "cni-metrics-helper",
                "1/1",
                "1",
                "1",
                OBJECT_AGE,
                "cni-metrics-helper",
                "602401143452.dkr.ecr.us-west-2.amazonaws.com/cni-metrics-helper:v1.19.2",
                "k8s-app=cni-metrics-helper",
            ],
        ],
    );
}

#[tokio::test]
async fn nodes_print_status_roles_version_and_wide_columns() {
    let (_server, kubectl) = seeded().await;
    let output = get(&kubectl, &["get", "nodes"]).await;
    assert_table(
        &output,
        &[
            &["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
            &[NODE_A, "Ready", "<none>", NODE_AGE, "v1.32.3-eks-473151a"],
            &[NODE_B, "Ready", "<none>", NODE_AGE, "v1.32.3-eks-473151a"],
        ],
    );
    let wide = get(&kubectl, &["get", "node", NODE_A, "-o", "wide"]).await;
    assert_table(
        &wide,
        &[
            &[
                "NAME",
                "STATUS",
                "ROLES",
                "AGE",
                "VERSION",
                "INTERNAL-IP",
                "EXTERNAL-IP",
                "OS-IMAGE",
                "KERNEL-VERSION",
                "CONTAINER-RUNTIME",
            ],
            &[
                NODE_A,
                "Ready",
                "<none>",
                NODE_AGE,
                "v1.32.3-eks-473151a",
                "10.0.1.23",
                "<none>",
                "Amazon Linux 2023.7.20250414",
                "6.1.132-147.221.amzn2023.x86_64",
                "containerd://1.7.27",
            ],
        ],
    );
}

#[tokio::test]
async fn the_kinds_the_tool_deploys_print_the_real_servers_columns() {
    let (server, kubectl) = seeded().await;
    let created = server
        .get_json(
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            None,
            "cni-metrics-helper",
        )
        .and_then(|role| {
            role["metadata"]["creationTimestamp"]
                .as_str()
                .map(str::to_owned)
        })
        .expect("the cluster role has a creation timestamp");

    let output = get(
        &kubectl,
        &[
            "get",
            "serviceaccount",
            "-n",
            "kube-system",
            "cni-metrics-helper",
        ],
    )
    .await;
    assert_table(
        &output,
        &[
            &["NAME", "SECRETS", "AGE"],
            &["cni-metrics-helper", "0", OBJECT_AGE],
        ],
    );

    // Roles and cluster roles have no printer on the real server: its default columns.
    let output = get(&kubectl, &["get", "clusterrole", "cni-metrics-helper"]).await;
    assert_table(
        &output,
        &[
            &["NAME", "CREATED AT"],
            &["cni-metrics-helper", created.as_str()],
        ],
    );
    let output = get(&kubectl, &["get", "roles", "-n", "kube-system"]).await;
    assert_table(
        &output,
        &[
            &["NAME", "CREATED AT"],
            &["cni-metrics-helper-leader-election", created.as_str()],
        ],
    );

    let output = get(
        &kubectl,
        &["get", "clusterrolebinding", "cni-metrics-helper"],
    )
    .await;
    assert_table(
        &output,
        &[
            &["NAME", "ROLE", "AGE"],
            &[
                "cni-metrics-helper",
                "ClusterRole/cni-metrics-helper",
                OBJECT_AGE,
            ],
        ],
    );
    let output = get(
        &kubectl,
        &[
            "get",
            "clusterrolebinding",
            "cni-metrics-helper",
            "-o",
            "wide",
        ],
    )
    .await;
    // USERS and GROUPS are empty cells, which the line splitting cannot see.
    assert_table(
        &output,
        &[
            &["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"],
            &[
                "cni-metrics-helper",
                "ClusterRole/cni-metrics-helper",
                OBJECT_AGE,
                "kube-system/cni-metrics-helper",
            ],
        ],
    );
    let output = get(
        &kubectl,
        &["get", "rolebindings", "-n", "kube-system", "-o", "wide"],
    )
    .await;
    assert_table(
        &output,
        &[
            &["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"],
            &[
                "cni-metrics-helper-leader-election",
                "Role/cni-metrics-helper-leader-election",
                OBJECT_AGE,
                "system:masters",
                "kube-system/cni-metrics-helper",
            ],
        ],
    );

    let output = get(&kubectl, &["get", "lease", "-n", "kube-system"]).await;
    assert_table(
        &output,
        &[
            &["NAME", "HOLDER", "AGE"],
            &[
                "cni-metrics-helper",
                "cni-metrics-helper-6d5f8c9b7-x2x4z",
                OBJECT_AGE,
            ],
        ],
    );

    let output = get(&kubectl, &["get", "configmap", "-n", "kube-system"]).await;
    assert_table(
        &output,
        &[
            &["NAME", "DATA", "AGE"],
            &["amazon-vpc-cni", "3", OBJECT_AGE],
        ],
    );

    let output = get(&kubectl, &["get", "events", "-n", "kube-system"]).await;
    assert_table(
        &output,
        &[
            &["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
            &[
                OBJECT_AGE,
                "Normal",
                "ScalingReplicaSet",
                "deployment/cni-metrics-helper",
                "Scaled up replica set cni-metrics-helper-6d5f8c9b7 from 0 to 1",
            ],
        ],
    );

    let output = get(&kubectl, &["get", "namespace", "kube-system"]).await;
    let rows = table(&output);
    assert_eq!(
        rows.first().map(Vec::as_slice),
        Some(&["NAME".to_owned(), "STATUS".to_owned(), "AGE".to_owned()][..]),
        "kubectl printed:\n{output}"
    );
    assert_eq!(
        rows.get(1).and_then(|row| row.get(..2)),
        Some(&["kube-system".to_owned(), "Active".to_owned()][..]),
        "kubectl printed:\n{output}"
    );

    let output = get(&kubectl, &["get", "replicasets", "-n", "kube-system"]).await;
    assert_eq!(
        output.stderr.trim(),
        "No resources found in kube-system namespace.",
        "kubectl printed:\n{output}"
    );
}

#[tokio::test]
async fn yaml_json_and_name_output_are_the_stored_objects() {
    let (server, kubectl) = seeded().await;
    let mut stored = server
        .get_json(
            "apps/v1",
            "Deployment",
            Some("kube-system"),
            "cni-metrics-helper",
        )
        .expect("the deployment is stored");
    // kubectl leaves managed fields out of its output unless asked for them.
    if let Some(metadata) = stored["metadata"].as_object_mut() {
        metadata.remove("managedFields");
    }

    let output = get(
        &kubectl,
        &[
            "get",
            "deploy",
            "-n",
            "kube-system",
            "cni-metrics-helper",
            "-o",
            "json",
        ],
    )
    .await;
    let printed: Value = serde_json::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("-o json is JSON ({error}):\n{output}"));
    assert_eq!(printed, stored, "kubectl printed:\n{output}");

    let output = get(
        &kubectl,
        &[
            "get",
            "deploy",
            "-n",
            "kube-system",
            "cni-metrics-helper",
            "-o",
            "yaml",
        ],
    )
    .await;
    let printed: Value = serde_yaml::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("-o yaml is YAML ({error}):\n{output}"));
    assert_eq!(printed, stored, "kubectl printed:\n{output}");

    let output = get(
        &kubectl,
        &["get", "deploy", "-n", "kube-system", "-o", "name"],
    )
    .await;
    assert_eq!(
        output.stdout, "deployment.apps/cni-metrics-helper\n",
        "kubectl printed:\n{output}"
    );

    // A list as JSON is a v1 List of complete objects, not a Table.
    let output = get(
        &kubectl,
        &["get", "pods", "-n", "kube-system", "-o", "json"],
    )
    .await;
    let printed: Value = serde_json::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("-o json is JSON ({error}):\n{output}"));
    assert_eq!(printed["kind"], "List", "kubectl printed:\n{output}");
    assert_eq!(
        printed["items"][0]["spec"]["nodeName"], NODE_A,
        "kubectl printed:\n{output}"
    );
}

#[tokio::test]
async fn errors_stay_statuses() {
    let (_server, kubectl) = seeded().await;
    let output = kubectl
        .run(&["get", "deployment", "-n", "kube-system", "missing"])
        .await
        .expect("kubectl runs");
    assert!(!output.success(), "kubectl should fail:\n{output}");
    assert_eq!(
        output.stderr.trim(),
        "Error from server (NotFound): deployments.apps \"missing\" not found",
        "kubectl printed:\n{output}"
    );
}

#[tokio::test]
async fn label_and_field_selectors_go_to_the_server() {
    let (server, kubectl) = seeded().await;
    server.clear_requests();
    let selector = format!("spec.nodeName={NODE_B}");
    let output = get(
        &kubectl,
        &[
            "get",
            "pods",
            "-n",
            "kube-system",
            "-l",
            "k8s-app=aws-node",
            "--field-selector",
            &selector,
        ],
    )
    .await;
    assert_table(
        &output,
        &[
            &["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
            &["aws-node-q9d4m", "2/2", "Running", "2 (3h ago)", OBJECT_AGE],
        ],
    );
    let requests = server.requests();
    let list = requests
        .iter()
        .find(|request| request.path == "/api/v1/namespaces/kube-system/pods")
        .unwrap_or_else(|| panic!("kubectl listed the pods; requests: {requests:#?}"));
    assert_eq!(
        list.query_value("labelSelector"),
        Some("k8s-app=aws-node"),
        "{list:#?}"
    );
    assert_eq!(
        list.query_value("fieldSelector"),
        Some(selector.as_str()),
        "{list:#?}"
    );
}

#[tokio::test]
async fn all_namespaces_adds_the_namespace_column() {
    let (_server, kubectl) = seeded().await;
    let output = get(&kubectl, &["get", "pods", "-A"]).await;
    assert_table(
        &output,
        &[
            &["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"],
            &[
                "kube-system",
                "aws-node-7xk2p",
                "2/2",
                "Running",
                "0",
                OBJECT_AGE,
            ],
            &[
                "kube-system",
                "aws-node-q9d4m",
                "2/2",
                "Running",
                "2 (3h ago)",
                OBJECT_AGE,
            ],
        ],
    );
    let output = get(&kubectl, &["get", "leases", "--all-namespaces"]).await;
    assert_table(
        &output,
        &[
            &["NAMESPACE", "NAME", "HOLDER", "AGE"],
            &[
                "kube-system",
                "cni-metrics-helper",
                "cni-metrics-helper-6d5f8c9b7-x2x4z",
                OBJECT_AGE,
            ],
        ],
    );
}

#[tokio::test]
async fn sorting_and_label_columns_use_the_objects_in_the_rows() {
    let (server, kubectl) = seeded().await;
    // Sorting makes kubectl ask for whole objects in the rows (includeObject=Object), as
    // the sort key may be any field; with only metadata it would find no podIP to sort by.
    server.clear_requests();
    let output = get(
        &kubectl,
        &[
            "get",
            "pods",
            "-n",
            "kube-system",
            "--sort-by=.status.podIP",
            "-L",
            "k8s-app",
        ],
    )
    .await;
    assert_table(
        &output,
        &[
            &["NAME", "READY", "STATUS", "RESTARTS", "AGE", "K8S-APP"],
            &[
                "aws-node-7xk2p",
                "2/2",
                "Running",
                "0",
                OBJECT_AGE,
                "aws-node",
            ],
            &[
                "aws-node-q9d4m",
                "2/2",
                "Running",
                "2 (3h ago)",
                OBJECT_AGE,
                "aws-node",
            ],
        ],
    );
    let requests = server.requests();
    assert!(
        requests
            .iter()
            .any(|request| request.query_value("includeObject") == Some("Object")),
        "kubectl asked for whole objects; requests: {requests:#?}"
    );

    // Labels come from the metadata the rows carry by default.
    let output = get(
        &kubectl,
        &["get", "deploy", "-n", "kube-system", "--show-labels"],
    )
    .await;
    assert_table(
        &output,
        &[
            &["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "LABELS"],
            &[
                "cni-metrics-helper",
                "1/1",
                "1",
                "1",
                OBJECT_AGE,
                "app.kubernetes.io/name=cni-metrics-helper",
            ],
        ],
    );
}

#[tokio::test]
async fn watch_prints_the_header_once_and_one_line_per_change() {
    let (server, kubectl) = seeded().await;
    let mut child = kubectl
        .spawn(&["get", "deployment", "-n", "kube-system", "--watch"])
        .expect("kubectl get --watch starts");
    let stdout = child.stdout.take().expect("kubectl's stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let mut printed: Vec<String> = Vec::new();
    let transcript = |printed: &[String]| printed.join("\n");

    // The list: header and the current state.
    while printed.len() < 2 {
        let line = tokio::time::timeout(PROMPTLY, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("kubectl printed only:\n{}", transcript(&printed)))
            .expect("kubectl's stdout is readable")
            .unwrap_or_else(|| panic!("kubectl exited after:\n{}", transcript(&printed)));
        printed.push(line);
    }
    assert_eq!(
        printed.iter().map(|line| cells(line)).collect::<Vec<_>>(),
        vec![
            cells("NAME   READY   UP-TO-DATE   AVAILABLE   AGE"),
            cells(&format!("cni-metrics-helper   1/1   1   1   {OBJECT_AGE}")),
        ],
        "kubectl printed:\n{}",
        transcript(&printed)
    );
    // Nothing more until something changes (kubectl's watch has started by now or will
    // start from the list's resourceVersion, so the change below is not missed).
    if let Ok(line) = tokio::time::timeout(QUIET, lines.next_line()).await {
        panic!(
            "kubectl printed {line:?} before any change, after:\n{}",
            transcript(&printed)
        );
    }

    server
        .insert_json(deployment(3, 2, 3, 2))
        .expect("the deployment is updated");
    let line = tokio::time::timeout(PROMPTLY, lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("no line for the change after:\n{}", transcript(&printed)))
        .expect("kubectl's stdout is readable")
        .unwrap_or_else(|| panic!("kubectl exited after:\n{}", transcript(&printed)));
    printed.push(line.clone());
    assert_eq!(
        cells(&line),
        cells(&format!("cni-metrics-helper   2/3   3   2   {OBJECT_AGE}")),
        "kubectl printed:\n{}",
        transcript(&printed)
    );
    if let Ok(line) = tokio::time::timeout(QUIET, lines.next_line()).await {
        panic!(
            "kubectl printed {line:?} after the one change, after:\n{}",
            transcript(&printed)
        );
    }
    child.kill().await.expect("kubectl is killed");
}
