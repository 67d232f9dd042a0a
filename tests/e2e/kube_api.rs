//! Tests of the fake Kubernetes API server through the production `kube::Client`, built
//! from the kubeconfig the server writes, exactly as the tool builds it.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::Discovery;
use kube::runtime::wait::{Condition, await_condition, conditions::is_deployment_completed};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use sandbox::kube_api::FakeApiServer;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The upper bound for anything that should happen promptly; generous so that a loaded
/// CI machine does not cause failures.
const PROMPTLY: Duration = Duration::from_secs(20);

const APPLY: &str = "application/apply-patch+yaml";

/// A running server and a client connected to it through a kubeconfig file.
struct Sandbox {
    server: FakeApiServer,
    client: Client,
    _kubeconfig_dir: tempfile::TempDir,
}

async fn sandbox() -> Sandbox {
    sandbox_with_retries(true).await
}

/// Like [`sandbox`], choosing whether kube-rs retries 429, 503 and 504 answers by itself
/// (its default, up to 15 times with exponential backoff).
async fn sandbox_with_retries(default_retry: bool) -> Sandbox {
    let server = FakeApiServer::start()
        .await
        .expect("the fake API server starts");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("kubeconfig");
    server
        .write_kubeconfig(&path)
        .expect("the kubeconfig is written");
    let kubeconfig = Kubeconfig::read_from(&path).expect("the kubeconfig parses");
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kube-rs accepts the kubeconfig");
    assert_eq!(config.default_namespace, "default");
    config.default_retry = default_retry;
    let client = Client::try_from(config).expect("a kube client");
    Sandbox {
        server,
        client,
        _kubeconfig_dir: dir,
    }
}

fn typed<K: DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("the test object matches its type")
}

fn api_status(error: kube::Error) -> kube::core::Status {
    match error {
        kube::Error::Api(status) => *status,
        other => panic!("expected kube::Error::Api, got {other:?}"),
    }
}

fn service_account(name: &str, namespace: &str, labels: Value) -> ServiceAccount {
    typed(json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
    }))
}

fn deployment(name: &str, namespace: &str, replicas: i32, image: &str) -> Deployment {
    typed(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image}]},
            },
        },
    }))
}

fn pod(name: &str, namespace: &str, labels: Value, ip: &str, phase: &str) -> Pod {
    typed(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": format!("node-{name}"), "containers": [{"name": "main", "image": "busybox"}]},
        "status": {"phase": phase, "podIP": ip},
    }))
}

async fn apply_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace =
        typed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}));
    namespaces
        .patch(
            name,
            &PatchParams::apply("cni-deployer"),
            &Patch::Apply(&namespace),
        )
        .await
        .expect("the namespace applies");
}

#[tokio::test]
async fn second_apply_of_typed_objects_changes_nothing() {
    let Sandbox { server, client, .. } = sandbox().await;
    apply_namespace(&client, "monitoring").await;
    let params = PatchParams::apply("cni-deployer").force();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "monitoring");
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "monitoring");
    let account = service_account(
        "cni-metrics-helper",
        "monitoring",
        json!({"app": "cni-metrics-helper"}),
    );
    let role: ClusterRole = typed(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "cni-metrics-helper"},
        "rules": [{"apiGroups": [""], "resources": ["pods", "pods/proxy"], "verbs": ["get", "list", "watch"]}],
    }));
    let binding: ClusterRoleBinding = typed(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "cni-metrics-helper"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cni-metrics-helper"},
        "subjects": [{"kind": "ServiceAccount", "name": "cni-metrics-helper", "namespace": "monitoring"}],
    }));
    let workload = deployment(
        "cni-metrics-helper",
        "monitoring",
        1,
        "example/cni-metrics-helper:v1.20.0",
    );

    let mut first_versions = Vec::new();
    for round in 0..2 {
        let versions = vec![
            accounts
                .patch("cni-metrics-helper", &params, &Patch::Apply(&account))
                .await
                .expect("sa applies")
                .resource_version(),
            roles
                .patch("cni-metrics-helper", &params, &Patch::Apply(&role))
                .await
                .expect("role applies")
                .resource_version(),
            bindings
                .patch("cni-metrics-helper", &params, &Patch::Apply(&binding))
                .await
                .expect("binding applies")
                .resource_version(),
            deployments
                .patch("cni-metrics-helper", &params, &Patch::Apply(&workload))
                .await
                .expect("deployment applies")
                .resource_version(),
        ];
        assert!(
            versions.iter().all(Option::is_some),
            "every applied object has a resourceVersion"
        );
        if round == 0 {
            first_versions = versions;
            server.clear_requests();
        } else {
            assert_eq!(
                versions, first_versions,
                "a repeated apply changes no resourceVersion"
            );
        }
    }
    let global_version = server.resource_version();
    let log = server.requests();
    assert_eq!(log.len(), 4, "one request per object: {log:#?}");
    for entry in &log {
        assert_eq!(entry.method, http::Method::PATCH);
        assert_eq!(entry.content_type.as_deref(), Some(APPLY));
        assert_eq!(entry.field_manager.as_deref(), Some("cni-deployer"));
        assert_eq!(entry.query_value("force"), Some("true"));
        assert_eq!(entry.status, 200);
        assert!(entry.is_write() && !entry.dry_run);
    }
    assert_eq!(
        log[0].path,
        "/api/v1/namespaces/monitoring/serviceaccounts/cni-metrics-helper"
    );
    assert_eq!(
        log[3].path,
        "/apis/apps/v1/namespaces/monitoring/deployments/cni-metrics-helper"
    );
    let stored = deployments
        .get("cni-metrics-helper")
        .await
        .expect("the deployment is readable");
    assert_eq!(
        stored.metadata.generation,
        Some(1),
        "no generation bump without a change"
    );
    assert_eq!(server.resource_version(), global_version);

    // A real change bumps resourceVersion and generation once.
    let changed = deployment(
        "cni-metrics-helper",
        "monitoring",
        1,
        "example/cni-metrics-helper:v1.21.0",
    );
    let updated = deployments
        .patch("cni-metrics-helper", &params, &Patch::Apply(&changed))
        .await
        .expect("the changed deployment applies");
    assert_eq!(updated.metadata.generation, Some(2));
    assert_ne!(updated.resource_version(), first_versions[3]);
    let managed = updated
        .metadata
        .managed_fields
        .expect("managedFields are exposed");
    assert!(
        managed
            .iter()
            .any(|entry| entry.manager.as_deref() == Some("cni-deployer")
                && entry.operation.as_deref() == Some("Apply"))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn dry_run_apply_changes_nothing_and_is_logged_as_dry_run() {
    let Sandbox { server, client, .. } = sandbox().await;
    let accounts: Api<ServiceAccount> = Api::default_namespaced(client.clone());
    let dry = PatchParams::apply("cni-deployer").dry_run();
    let account = service_account("publisher", "default", json!({"tier": "one"}));
    let before = server.resource_version();

    let preview = accounts
        .patch("publisher", &dry, &Patch::Apply(&account))
        .await
        .expect("dry-run apply works");
    assert_eq!(
        preview.labels().get("tier").map(String::as_str),
        Some("one")
    );
    let missing = accounts
        .get("publisher")
        .await
        .expect_err("a dry run creates nothing");
    assert_eq!(api_status(missing).code, 404);
    assert_eq!(server.resource_version(), before, "a dry run bumps nothing");

    let stored = accounts
        .patch(
            "publisher",
            &PatchParams::apply("cni-deployer"),
            &Patch::Apply(&account),
        )
        .await
        .expect("the real apply works");
    let changed = service_account("publisher", "default", json!({"tier": "two"}));
    let preview = accounts
        .patch("publisher", &dry, &Patch::Apply(&changed))
        .await
        .expect("dry-run apply works");
    assert_eq!(
        preview.labels().get("tier").map(String::as_str),
        Some("two"),
        "the preview shows the change"
    );
    let after = accounts.get("publisher").await.expect("still there");
    assert_eq!(
        after.labels().get("tier").map(String::as_str),
        Some("one"),
        "the stored object is unchanged"
    );
    assert_eq!(after.resource_version(), stored.resource_version());

    let dry_runs: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.dry_run)
        .collect();
    assert_eq!(dry_runs.len(), 2);
    assert!(
        dry_runs
            .iter()
            .all(|r| !r.is_write() && r.query_value("dryRun") == Some("All"))
    );

    // kube-rs puts a delete's dry run into the DeleteOptions body.
    accounts
        .delete(
            "publisher",
            &DeleteParams {
                dry_run: true,
                ..DeleteParams::default()
            },
        )
        .await
        .expect("dry-run delete works");
    accounts
        .get("publisher")
        .await
        .expect("a dry-run delete keeps the object");
    let deletes: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == http::Method::DELETE)
        .collect();
    assert!(deletes.len() == 1 && deletes[0].dry_run && !deletes[0].is_write());
    server.shutdown().await;
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists() {
    let Sandbox { server, client, .. } = sandbox().await;
    server
        .insert(&pod(
            "a",
            "kube-system",
            json!({"k8s-app": "aws-node", "tier": "x"}),
            "10.0.0.1",
            "Running",
        ))
        .expect("seed");
    server
        .insert(&pod(
            "b",
            "kube-system",
            json!({"k8s-app": "aws-node"}),
            "10.0.0.2",
            "Pending",
        ))
        .expect("seed");
    server
        .insert(&pod(
            "c",
            "kube-system",
            json!({"k8s-app": "kube-proxy", "tier": "y"}),
            "10.0.0.3",
            "Running",
        ))
        .expect("seed");
    server
        .insert(&pod(
            "d",
            "default",
            json!({"k8s-app": "aws-node"}),
            "10.0.0.4",
            "Running",
        ))
        .expect("seed");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let names = |list: kube::core::ObjectList<Pod>| {
        list.items.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    };
    for (selector, expected) in [
        ("k8s-app=aws-node", vec!["a", "b"]),
        ("k8s-app==aws-node", vec!["a", "b"]),
        ("k8s-app!=aws-node", vec!["c"]),
        ("tier", vec!["a", "c"]),
        ("!tier", vec!["b"]),
        ("k8s-app=aws-node,tier", vec!["a"]),
        ("k8s-app in (kube-proxy,other)", vec!["c"]),
    ] {
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .expect("list works");
        assert_eq!(names(list), expected, "labelSelector {selector}");
    }
    for (selector, expected) in [
        ("status.phase=Running", vec!["a", "c"]),
        ("metadata.name=b", vec!["b"]),
        ("spec.nodeName=node-c", vec!["c"]),
        (
            "status.phase!=Pending,metadata.namespace=kube-system",
            vec!["a", "c"],
        ),
    ] {
        let list = pods
            .list(&ListParams::default().fields(selector))
            .await
            .expect("list works");
        assert_eq!(names(list), expected, "fieldSelector {selector}");
    }
    let everywhere: Api<Pod> = Api::all(client.clone());
    let all = everywhere
        .list(&ListParams::default().labels("k8s-app=aws-node"))
        .await
        .expect("list works");
    assert_eq!(
        all.items.len(),
        3,
        "a list across namespaces sees every namespace"
    );

    // Pagination hands out continue tokens until the list is exhausted.
    let first = pods
        .list(&ListParams::default().limit(2))
        .await
        .expect("first page");
    assert_eq!(first.items.len(), 2);
    let token = first.metadata.continue_.clone().expect("a continue token");
    let second = pods
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect("second page");
    assert_eq!(names(second), vec!["c"]);

    let logged = server.requests();
    let first_list = logged
        .iter()
        .find(|r| r.query_value("labelSelector").is_some())
        .expect("logged");
    assert_eq!(
        first_list.query_value("labelSelector"),
        Some("k8s-app=aws-node"),
        "query values are decoded"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn conflicting_apply_needs_force_and_force_takes_ownership() {
    let Sandbox { server, client, .. } = sandbox().await;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let helm = deployment("web", "default", 2, "nginx:1");
    deployments
        .patch("web", &PatchParams::apply("helm"), &Patch::Apply(&helm))
        .await
        .expect("helm applies");

    // The same values from another manager are shared ownership, not a conflict.
    deployments
        .patch(
            "web",
            &PatchParams::apply("cni-deployer"),
            &Patch::Apply(&helm),
        )
        .await
        .expect("same values apply");

    let ours = deployment("web", "default", 3, "nginx:1");
    let error = deployments
        .patch(
            "web",
            &PatchParams::apply("cni-deployer"),
            &Patch::Apply(&ours),
        )
        .await
        .expect_err("a different value for a field helm owns conflicts");
    let status = api_status(error);
    assert_eq!(status.code, 409);
    assert_eq!(status.reason, "Conflict");
    assert_eq!(
        status.message,
        "Apply failed with 1 conflict: conflict with \"helm\" using apps/v1: .spec.replicas"
    );
    assert_eq!(
        deployments
            .get("web")
            .await
            .expect("readable")
            .spec
            .and_then(|s| s.replicas),
        Some(2)
    );

    let forced = deployments
        .patch(
            "web",
            &PatchParams::apply("cni-deployer").force(),
            &Patch::Apply(&ours),
        )
        .await
        .expect("force takes the field over");
    assert_eq!(forced.spec.as_ref().and_then(|s| s.replicas), Some(3));
    let managed = forced.metadata.managed_fields.unwrap_or_default();
    let owns_replicas = |manager: &str| {
        managed.iter().any(|entry| {
            entry.manager.as_deref() == Some(manager)
                && entry
                    .fields_v1
                    .as_ref()
                    .and_then(|f| f.0.pointer("/f:spec/f:replicas"))
                    .is_some()
        })
    };
    assert!(owns_replicas("cni-deployer"));
    assert!(
        !owns_replicas("helm"),
        "force took .spec.replicas away from helm"
    );

    // Now helm is the one that conflicts.
    let error = deployments
        .patch("web", &PatchParams::apply("helm"), &Patch::Apply(&helm))
        .await
        .expect_err("helm no longer owns replicas");
    assert!(
        api_status(error)
            .message
            .contains("conflict with \"cni-deployer\" using apps/v1: .spec.replicas")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn fields_dropped_from_an_apply_are_removed_unless_someone_else_owns_them() {
    let Sandbox { server, client, .. } = sandbox().await;
    let accounts: Api<ServiceAccount> = Api::default_namespaced(client.clone());
    let params = PatchParams::apply("cni-deployer");
    let full = service_account(
        "publisher",
        "default",
        json!({"a": "1", "b": "2", "shared": "s"}),
    );
    accounts
        .patch("publisher", &params, &Patch::Apply(&full))
        .await
        .expect("applies");
    let other = service_account(
        "publisher",
        "default",
        json!({"shared": "s", "theirs": "t"}),
    );
    accounts
        .patch(
            "publisher",
            &PatchParams::apply("someone-else"),
            &Patch::Apply(&other),
        )
        .await
        .expect("applies");

    let reduced = service_account("publisher", "default", json!({"a": "1"}));
    let result = accounts
        .patch("publisher", &params, &Patch::Apply(&reduced))
        .await
        .expect("applies");
    let labels = result.labels();
    assert_eq!(labels.get("a").map(String::as_str), Some("1"));
    assert!(
        !labels.contains_key("b"),
        "a field only we owned and no longer send is removed"
    );
    assert_eq!(
        labels.get("shared").map(String::as_str),
        Some("s"),
        "a co-owned field stays"
    );
    assert_eq!(
        labels.get("theirs").map(String::as_str),
        Some("t"),
        "another manager's field stays"
    );

    // A merge patch gives ownership to the updating manager, so a later apply of a
    // different value conflicts with it.
    let patch = json!({"metadata": {"labels": {"a": "patched"}}});
    let patched = accounts
        .patch(
            "publisher",
            &PatchParams {
                field_manager: Some("kubectl-edit".to_owned()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .expect("merge patch works");
    assert_eq!(
        patched.labels().get("a").map(String::as_str),
        Some("patched")
    );
    let error = accounts
        .patch("publisher", &params, &Patch::Apply(&reduced))
        .await
        .expect_err("conflicts");
    assert_eq!(api_status(error).code, 409);
    server.shutdown().await;
}

/// Serves every connection with one canned HTTP answer that echoes the request path.
async fn start_target_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("the target server binds");
    let port = listener.local_addr().expect("local address").port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0_u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => request.extend_from_slice(&buffer[..read]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let target = text
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                let body = format!("# TYPE awsAPILatency summary\nrequested {target}\n");
                let status = if target.starts_with("/missing") {
                    "404 Not Found"
                } else {
                    "200 OK"
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    port
}

async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    listener.local_addr().expect("local address").port()
    // The listener is dropped here, so nothing listens on the port.
}

#[tokio::test]
async fn pods_proxy_reaches_the_pod_and_reports_unreachable_pods() {
    // The 503 for an unreachable pod is one kube-rs would otherwise retry 15 times.
    let Sandbox { server, client, .. } = sandbox_with_retries(false).await;
    let port = start_target_server().await;
    server
        .insert(&pod(
            "aws-node-1",
            "kube-system",
            json!({"k8s-app": "aws-node"}),
            "127.0.0.1",
            "Running",
        ))
        .expect("seed");
    let path = format!("/api/v1/namespaces/kube-system/pods/aws-node-1:{port}/proxy/metrics?x=1");
    let text = client
        .request_text(http::Request::get(&path).body(Vec::new()).expect("request"))
        .await
        .expect("the proxy reaches the target");
    assert!(text.contains("requested /metrics?x=1"), "{text}");

    let missing = format!("/api/v1/namespaces/kube-system/pods/aws-node-1:{port}/proxy/missing");
    let error = client
        .request_text(
            http::Request::get(&missing)
                .body(Vec::new())
                .expect("request"),
        )
        .await
        .expect_err("the pod's 404 is passed through");
    assert_eq!(api_status(error).code, 404);

    let dead = closed_port().await;
    let unreachable =
        format!("/api/v1/namespaces/kube-system/pods/aws-node-1:{dead}/proxy/metrics");
    let error = client
        .request_text(
            http::Request::get(&unreachable)
                .body(Vec::new())
                .expect("request"),
        )
        .await
        .expect_err("an unreachable pod fails");
    let status = api_status(error);
    assert_eq!(status.code, 503);
    assert_eq!(status.reason, "ServiceUnavailable");

    let no_pod = format!("/api/v1/namespaces/kube-system/pods/nope:{port}/proxy/metrics");
    let error = client
        .request_text(
            http::Request::get(&no_pod)
                .body(Vec::new())
                .expect("request"),
        )
        .await
        .expect_err("a missing pod fails");
    assert_eq!(api_status(error).code, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn lease_replace_with_a_stale_resource_version_conflicts() {
    let Sandbox { server, client, .. } = sandbox().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let lease: Lease = typed(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "cni-metrics-publisher", "namespace": "kube-system"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
    }));
    let created = leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("the lease is created");
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    let again = leases
        .create(&PostParams::default(), &lease)
        .await
        .expect_err("a second create fails");
    let status = api_status(again);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );

    let mut fresh = leases
        .get("cni-metrics-publisher")
        .await
        .expect("the lease is readable");
    let stale = fresh.clone();
    fresh.spec.get_or_insert_default().holder_identity = Some("b".to_owned());
    let replaced = leases
        .replace("cni-metrics-publisher", &PostParams::default(), &fresh)
        .await
        .expect("a fresh replace works");
    assert_ne!(replaced.resource_version(), stale.resource_version());

    let mut late = stale;
    late.spec.get_or_insert_default().holder_identity = Some("c".to_owned());
    let error = leases
        .replace("cni-metrics-publisher", &PostParams::default(), &late)
        .await
        .expect_err("stale");
    let status = api_status(error);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(
        status.message.contains("the object has been modified"),
        "{}",
        status.message
    );
    let current = leases.get("cni-metrics-publisher").await.expect("readable");
    assert_eq!(
        current.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("b")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn deployment_rollouts_complete_unless_stuck() {
    let Sandbox { server, client, .. } = sandbox().await;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let params = PatchParams::apply("cni-deployer");
    deployments
        .patch(
            "healthy",
            &params,
            &Patch::Apply(&deployment("healthy", "default", 2, "img:1")),
        )
        .await
        .expect("applies");
    tokio::time::timeout(
        PROMPTLY,
        await_condition(deployments.clone(), "healthy", is_deployment_completed()),
    )
    .await
    .expect("the rollout completes promptly")
    .expect("the watch works");
    let status = deployments
        .get("healthy")
        .await
        .expect("readable")
        .status
        .expect("a status");
    assert_eq!(
        (
            status.observed_generation,
            status.ready_replicas,
            status.available_replicas
        ),
        (Some(1), Some(2), Some(2))
    );

    server.set_rollout_stuck("default", "healthy", true);
    let updated = deployments
        .patch(
            "healthy",
            &params,
            &Patch::Apply(&deployment("healthy", "default", 2, "img:2")),
        )
        .await
        .expect("applies");
    let stuck_status = updated.status.expect("a status");
    assert_eq!(updated.metadata.generation, Some(2));
    assert_eq!(
        stuck_status.observed_generation,
        Some(2),
        "the new generation is observed, but its pods never become available"
    );
    assert_eq!(stuck_status.updated_replicas, Some(1));
    assert_eq!(stuck_status.unavailable_replicas, Some(1));
    let progressing = stuck_status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Progressing")
        .expect("a Progressing condition");
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_deref()),
        ("False", Some("ProgressDeadlineExceeded"))
    );
    let waited = tokio::time::timeout(
        Duration::from_millis(500),
        await_condition(deployments.clone(), "healthy", is_deployment_completed()),
    )
    .await;
    assert!(waited.is_err(), "a stuck rollout never completes");

    // Unsticking completes the pending rollout, and a waiting watcher sees it.
    let waiter = tokio::spawn(await_condition(
        deployments.clone(),
        "healthy",
        is_deployment_completed(),
    ));
    server.set_rollout_stuck("default", "healthy", false);
    let done = tokio::time::timeout(PROMPTLY, waiter)
        .await
        .expect("completes promptly")
        .expect("the task finishes")
        .expect("the watch works")
        .expect("the deployment exists");
    assert_eq!(done.status.and_then(|s| s.observed_generation), Some(2));

    // A Deployment created while stuck starts out stuck.
    server.set_rollout_stuck("default", "fresh", true);
    let fresh = deployments
        .patch(
            "fresh",
            &params,
            &Patch::Apply(&deployment("fresh", "default", 1, "img:1")),
        )
        .await
        .expect("applies");
    assert!(!is_deployment_completed().matches_object(Some(&fresh)));
    server.shutdown().await;
}

#[tokio::test]
async fn watchers_and_reflectors_see_added_modified_and_deleted_pods() {
    let Sandbox { server, client, .. } = sandbox().await;
    server
        .insert(&pod(
            "aws-node-a",
            "kube-system",
            json!({"k8s-app": "aws-node"}),
            "10.0.0.1",
            "Running",
        ))
        .expect("seed");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let config = watcher::Config::default().labels("k8s-app=aws-node");
    let (reader, writer) = reflector::store::<Pod>();
    let mut events = Box::pin(reflector(writer, watcher(pods.clone(), config)).default_backoff());
    let mut next = async || {
        tokio::time::timeout(PROMPTLY, events.try_next())
            .await
            .expect("an event arrives promptly")
            .expect("the watcher does not fail")
            .expect("the stream does not end")
    };
    // The initial list.
    loop {
        if let watcher::Event::InitDone = next().await {
            break;
        }
    }
    assert_eq!(reader.state().len(), 1);

    server
        .insert(&pod(
            "aws-node-b",
            "kube-system",
            json!({"k8s-app": "aws-node"}),
            "10.0.0.2",
            "Pending",
        ))
        .expect("seed");
    match next().await {
        watcher::Event::Apply(p) => assert_eq!(p.name_any(), "aws-node-b"),
        other => panic!("expected the added pod, got {other:?}"),
    }
    server
        .insert(&pod(
            "aws-node-b",
            "kube-system",
            json!({"k8s-app": "aws-node"}),
            "10.0.0.2",
            "Running",
        ))
        .expect("seed");
    match next().await {
        watcher::Event::Apply(p) => {
            assert_eq!(p.status.and_then(|s| s.phase).as_deref(), Some("Running"))
        }
        other => panic!("expected the modified pod, got {other:?}"),
    }
    // A pod of another app is not seen; a pod that stops matching is seen as deleted.
    server
        .insert(&pod(
            "kube-proxy",
            "kube-system",
            json!({"k8s-app": "kube-proxy"}),
            "10.0.0.9",
            "Running",
        ))
        .expect("seed");
    server
        .insert(&pod(
            "aws-node-a",
            "kube-system",
            json!({"k8s-app": "renamed"}),
            "10.0.0.1",
            "Running",
        ))
        .expect("seed");
    match next().await {
        watcher::Event::Delete(p) => assert_eq!(p.name_any(), "aws-node-a"),
        other => panic!("expected aws-node-a to leave the selection, got {other:?}"),
    }
    assert!(server.remove("v1", "Pod", Some("kube-system"), "aws-node-b"));
    match next().await {
        watcher::Event::Delete(p) => assert_eq!(p.name_any(), "aws-node-b"),
        other => panic!("expected the deleted pod, got {other:?}"),
    }
    assert!(
        reader.state().is_empty(),
        "the reflector's cache followed every event"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn raw_watches_resume_from_a_resource_version() {
    let Sandbox { server, client, .. } = sandbox().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let start = nodes
        .list(&ListParams::default())
        .await
        .expect("list works")
        .metadata
        .resource_version
        .expect("a version");
    let node: Node =
        typed(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "ip-10-0-0-1"}}));
    server.insert(&node).expect("seed");
    nodes
        .delete("ip-10-0-0-1", &DeleteParams::default())
        .await
        .expect("delete works");

    let params = WatchParams::default().timeout(5);
    let mut stream = Box::pin(
        nodes
            .watch(&params, &start)
            .await
            .expect("the watch starts"),
    );
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = tokio::time::timeout(PROMPTLY, stream.next())
            .await
            .expect("prompt")
            .expect("not ended")
            .expect("valid");
        match event {
            WatchEvent::Added(n) => seen.push(format!("ADDED {}", n.name_any())),
            WatchEvent::Deleted(n) => seen.push(format!("DELETED {}", n.name_any())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["ADDED ip-10-0-0-1", "DELETED ip-10-0-0-1"]);
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.is_watch() && r.query_value("resourceVersion") == Some(start.as_str()))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn errors_come_back_as_api_errors() {
    let Sandbox { server, client, .. } = sandbox().await;
    let accounts: Api<ServiceAccount> = Api::default_namespaced(client.clone());
    let status = api_status(accounts.get("nope").await.expect_err("missing"));
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(status.message, "serviceaccounts \"nope\" not found");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "no-such-namespace");
    let error = deployments
        .patch(
            "x",
            &PatchParams::apply("m"),
            &Patch::Apply(&deployment("x", "no-such-namespace", 1, "i")),
        )
        .await
        .expect_err("the namespace does not exist");
    let status = api_status(error);
    assert_eq!(
        (status.code, status.message.as_str()),
        (404, "namespaces \"no-such-namespace\" not found")
    );

    let raw = |path: &str, content_type: &str, body: &str| {
        http::Request::patch(path)
            .header("content-type", content_type)
            .body(body.as_bytes().to_vec())
            .expect("request")
    };
    let path = "/api/v1/namespaces/default/serviceaccounts/x";
    let no_manager = client
        .request::<Value>(raw(
            path,
            APPLY,
            "{\"apiVersion\":\"v1\",\"kind\":\"ServiceAccount\"}",
        ))
        .await;
    let status = api_status(no_manager.expect_err("apply needs a field manager"));
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(status.message.contains("fieldManager: Required value"));
    let bad_yaml = client
        .request::<Value>(raw(
            &format!("{path}?fieldManager=m"),
            APPLY,
            "kind: [unclosed",
        ))
        .await;
    assert_eq!(api_status(bad_yaml.expect_err("bad YAML")).code, 400);
    let bad_type = client
        .request::<Value>(raw(path, "application/vnd.kubernetes.protobuf", "x"))
        .await;
    assert_eq!(
        api_status(bad_type.expect_err("protobuf is not served")).code,
        415
    );

    // YAML apply bodies and JSON patches work too.
    let yaml =
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: x\n  labels:\n    from: yaml\n";
    let created: Value = client
        .request(raw(&format!("{path}?fieldManager=m"), APPLY, yaml))
        .await
        .expect("YAML apply");
    assert_eq!(
        created.pointer("/metadata/labels/from"),
        Some(&json!("yaml"))
    );
    let ops = r#"[{"op":"replace","path":"/metadata/labels/from","value":"json-patch"}]"#;
    let patched: Value = client
        .request(raw(path, "application/json-patch+json", ops))
        .await
        .expect("JSON patch");
    assert_eq!(
        patched.pointer("/metadata/labels/from"),
        Some(&json!("json-patch"))
    );

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let status = api_status(
        namespaces
            .delete("kube-system", &DeleteParams::default())
            .await
            .expect_err("protected"),
    );
    assert_eq!(status.code, 403);
    server.shutdown().await;
}

#[tokio::test]
async fn discovery_finds_every_kind() {
    let Sandbox { server, client, .. } = sandbox().await;
    let version = client.apiserver_version().await.expect("/version works");
    assert_eq!(version.major, "1");
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery runs");
    for (group, kind, plural, namespaced) in [
        ("", "ServiceAccount", "serviceaccounts", true),
        ("", "Pod", "pods", true),
        ("", "Node", "nodes", false),
        ("", "Namespace", "namespaces", false),
        ("rbac.authorization.k8s.io", "Role", "roles", true),
        (
            "rbac.authorization.k8s.io",
            "ClusterRole",
            "clusterroles",
            false,
        ),
        (
            "rbac.authorization.k8s.io",
            "RoleBinding",
            "rolebindings",
            true,
        ),
        (
            "rbac.authorization.k8s.io",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
        ),
        ("apps", "Deployment", "deployments", true),
        ("coordination.k8s.io", "Lease", "leases", true),
    ] {
        let gvk = kube::core::GroupVersionKind::gvk(group, "v1", kind);
        let (resource, capabilities) = discovery
            .resolve_gvk(&gvk)
            .unwrap_or_else(|| panic!("{kind} is discovered"));
        assert_eq!(resource.plural, plural);
        let scope_namespaced = capabilities.scope == kube::discovery::Scope::Namespaced;
        assert_eq!(scope_namespaced, namespaced, "{kind} scope");
        assert!(
            capabilities.supports_operation(kube::discovery::verbs::PATCH),
            "{kind} can be patched"
        );
    }
    let (_, pods) = discovery
        .resolve_gvk(&kube::core::GroupVersionKind::gvk("", "v1", "Pod"))
        .expect("pods are discovered");
    assert!(
        pods.subresources
            .iter()
            .any(|(sub, _)| sub.plural == "proxy"),
        "pods/proxy is listed"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn injected_faults_fail_the_next_matching_requests() {
    let Sandbox { server, client, .. } = sandbox().await;
    let accounts: Api<ServiceAccount> = Api::default_namespaced(client.clone());
    server.fail_next(
        http::Method::PATCH,
        "/api/v1/namespaces/default/serviceaccounts",
        500,
        2,
    );
    let account = service_account("publisher", "default", json!({}));
    let params = PatchParams::apply("cni-deployer");
    for _ in 0..2 {
        let status = api_status(
            accounts
                .patch("publisher", &params, &Patch::Apply(&account))
                .await
                .expect_err("injected"),
        );
        assert_eq!(
            (status.code, status.reason.as_str()),
            (500, "InternalError")
        );
    }
    accounts
        .get("publisher")
        .await
        .expect_err("failed requests change nothing");
    accounts
        .patch("publisher", &params, &Patch::Apply(&account))
        .await
        .expect("the third attempt works");
    let statuses: Vec<u16> = server
        .requests()
        .iter()
        .filter(|r| r.method == http::Method::PATCH)
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [500, 500, 201]);

    // kube-rs retries 503 by itself, so two injected 503s only show in the log.
    server.clear_requests();
    server.fail_next(
        http::Method::GET,
        "/api/v1/namespaces/default/serviceaccounts/publisher",
        503,
        2,
    );
    accounts
        .get("publisher")
        .await
        .expect("kube-rs retries past two 503s");
    let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 200]);
    server.shutdown().await;
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_objects_and_returns_them() {
    let Sandbox { server, client, .. } = sandbox().await;
    apply_namespace(&client, "monitoring").await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "monitoring");
    let account = service_account("publisher", "monitoring", json!({}));
    accounts
        .create(&PostParams::default(), &account)
        .await
        .expect("created");
    let deleted = accounts
        .delete("publisher", &DeleteParams::default())
        .await
        .expect("deleted");
    assert_eq!(
        deleted.left().map(|sa| sa.name_any()).as_deref(),
        Some("publisher")
    );
    accounts
        .create(&PostParams::default(), &account)
        .await
        .expect("created again");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete("monitoring", &DeleteParams::default())
        .await
        .expect("namespace deleted");
    assert!(
        server
            .get_json("v1", "ServiceAccount", Some("monitoring"), "publisher")
            .is_none()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn status_is_written_only_through_the_status_subresource() {
    let Sandbox { server, client, .. } = sandbox().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let mut created = pods
        .create(
            &PostParams::default(),
            &pod("p", "default", json!({}), "10.0.0.7", "Running"),
        )
        .await
        .expect("created");
    let status = created.status.clone().expect("a status");
    assert_eq!(
        status.phase.as_deref(),
        Some("Pending"),
        "status sent with a create is ignored"
    );
    assert_eq!(status.pod_ip, None);

    created.metadata.labels = Some([("a".to_owned(), "b".to_owned())].into());
    created.status.get_or_insert_default().phase = Some("Failed".to_owned());
    let replaced = pods
        .replace("p", &PostParams::default(), &created)
        .await
        .expect("replaced");
    assert_eq!(replaced.labels().get("a").map(String::as_str), Some("b"));
    assert_eq!(
        replaced.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );

    let patch = json!({"status": {"phase": "Running", "podIP": "10.0.0.7"}});
    let patched = pods
        .patch_status("p", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("status patched");
    let status = patched.status.expect("a status");
    assert_eq!(
        (status.phase.as_deref(), status.pod_ip.as_deref()),
        (Some("Running"), Some("10.0.0.7"))
    );
    assert_eq!(
        patched.metadata.generation,
        Some(1),
        "a status change is no generation change"
    );
    let read = pods.get_status("p").await.expect("status readable");
    assert_eq!(
        read.status.and_then(|s| s.phase).as_deref(),
        Some("Running")
    );
    server.shutdown().await;
}

fn access_review(
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> k8s_openapi::api::authorization::v1::SelfSubjectAccessReview {
    typed(json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {
            "verb": verb,
            "group": group,
            "resource": resource,
            "namespace": namespace,
        }},
    }))
}

/// Asks the server through the production client whether `verb` on `resource` is
/// allowed; returns `allowed` and the reason.
async fn can_i(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> (bool, Option<String>) {
    let reviews: Api<k8s_openapi::api::authorization::v1::SelfSubjectAccessReview> =
        Api::all(client.clone());
    let answer = reviews
        .create(
            &PostParams::default(),
            &access_review(verb, group, resource, namespace),
        )
        .await
        .expect("the review is answered");
    let status = answer.status.expect("the answer has a status");
    (status.allowed, status.reason)
}

#[tokio::test]
async fn access_reviews_allow_everything_unless_a_test_denies_it() {
    let Sandbox { server, client, .. } = sandbox().await;
    assert_eq!(
        can_i(
            &client,
            "create",
            "apps",
            "deployments",
            Some("kube-system")
        )
        .await,
        (true, Some("the sandbox allows everything".to_owned()))
    );

    server.deny("patch", "apps", "deployments", Some("kube-system"));
    server.deny("*", "rbac.authorization.k8s.io", "clusterroles", None);
    let (allowed, reason) =
        can_i(&client, "patch", "apps", "deployments", Some("kube-system")).await;
    assert!(!allowed);
    let reason = reason.expect("a denial says why");
    assert!(
        reason.contains("deployments.apps") && reason.contains("kube-system"),
        "{reason}"
    );
    // Other namespaces, verbs and resources are unaffected.
    assert!(
        can_i(&client, "patch", "apps", "deployments", Some("default"))
            .await
            .0
    );
    assert!(
        can_i(&client, "get", "apps", "deployments", Some("kube-system"))
            .await
            .0
    );
    assert!(
        can_i(&client, "patch", "", "serviceaccounts", Some("kube-system"))
            .await
            .0
    );
    // A wildcard verb and no namespace deny at every scope.
    assert!(
        !can_i(
            &client,
            "create",
            "rbac.authorization.k8s.io",
            "clusterroles",
            None
        )
        .await
        .0
    );
    assert!(
        !can_i(
            &client,
            "delete",
            "rbac.authorization.k8s.io",
            "clusterroles",
            None
        )
        .await
        .0
    );

    // A denial only changes the answer to reviews; the sandbox has no RBAC.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "kube-system");
    let created = deployments
        .create(
            &PostParams::default(),
            &typed(json!({
                "metadata": {"name": "probe"},
                "spec": {
                    "selector": {"matchLabels": {"app": "probe"}},
                    "template": {
                        "metadata": {"labels": {"app": "probe"}},
                        "spec": {"containers": [{"name": "probe", "image": "busybox"}]},
                    },
                },
            })),
        )
        .await;
    assert!(created.is_ok(), "{created:?}");

    server.clear_denials();
    assert!(
        can_i(&client, "patch", "apps", "deployments", Some("kube-system"))
            .await
            .0
    );
    server.shutdown().await;
}

#[tokio::test]
async fn access_reviews_are_discovered_and_are_not_writes() {
    let Sandbox { server, client, .. } = sandbox().await;
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery runs");
    let gvk =
        kube::core::GroupVersionKind::gvk("authorization.k8s.io", "v1", "SelfSubjectAccessReview");
    let (resource, capabilities) = discovery
        .resolve_gvk(&gvk)
        .expect("SelfSubjectAccessReview is discovered");
    assert_eq!(resource.plural, "selfsubjectaccessreviews");
    assert_eq!(capabilities.scope, kube::discovery::Scope::Cluster);
    assert!(capabilities.supports_operation("create"));
    assert!(!capabilities.supports_operation("get"));

    server.clear_requests();
    can_i(&client, "create", "", "configmaps", Some("default")).await;
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].method, http::Method::POST);
    assert_eq!(requests[0].status, 201);
    assert!(requests[0].is_access_review());
    assert!(!requests[0].is_write(), "a review stores nothing");

    // Only POST is served there, and a review must say what it asks about.
    let request = http::Request::get("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
        .body(Vec::new())
        .expect("request");
    let status = api_status(
        client
            .request::<Value>(request)
            .await
            .expect_err("GET is not served"),
    );
    assert_eq!(status.code, 405);
    let reviews: Api<k8s_openapi::api::authorization::v1::SelfSubjectAccessReview> =
        Api::all(client.clone());
    let empty = reviews
        .create(&PostParams::default(), &typed(json!({"spec": {}})))
        .await
        .expect_err("an empty review is invalid");
    assert_eq!(api_status(empty).code, 422);
    server.shutdown().await;
}

/// A kube-rs client without retries that authenticates with `token`.
async fn client_with_token(server: &FakeApiServer, token: &str) -> Client {
    let kubeconfig =
        Kubeconfig::from_yaml(&server.kubeconfig_yaml_for(token)).expect("the kubeconfig parses");
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kube-rs accepts the kubeconfig");
    config.default_retry = false;
    Client::try_from(config).expect("a kube client")
}

#[tokio::test]
async fn client_faults_hang_or_fail_only_that_clients_matching_requests() {
    const LEASES: &str = "/apis/coordination.k8s.io/";
    let server = FakeApiServer::start()
        .await
        .expect("the fake API server starts");
    let cut_off: Api<Lease> = Api::default_namespaced(client_with_token(&server, "cut-off").await);
    let cut_off_pods: Api<Pod> =
        Api::default_namespaced(client_with_token(&server, "cut-off").await);
    let other: Api<Lease> = Api::default_namespaced(client_with_token(&server, "other").await);

    server.set_client_fault(
        "cut-off",
        LEASES,
        Some(sandbox::kube_api::ClientFaultBehaviour::Hang),
    );
    let hung =
        tokio::time::timeout(Duration::from_secs(1), cut_off.list(&ListParams::default())).await;
    assert!(hung.is_err(), "the request was answered: {hung:?}");
    other
        .list(&ListParams::default())
        .await
        .expect("another client is served");
    cut_off_pods
        .list(&ListParams::default())
        .await
        .expect("other paths of the cut-off client are served");

    // A held request is answered as soon as the fault is cleared.
    let held = tokio::spawn({
        let cut_off = cut_off.clone();
        async move {
            let started = std::time::Instant::now();
            let listed = cut_off.list(&ListParams::default()).await;
            (listed.map(|list| list.items.len()), started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.set_client_fault("cut-off", LEASES, None);
    let (listed, took) = tokio::time::timeout(PROMPTLY, held)
        .await
        .expect("the held request is answered")
        .expect("the task ends");
    assert_eq!(listed.expect("answered normally"), 0);
    assert!(
        took >= Duration::from_millis(500),
        "answered after {took:?}"
    );

    server.set_client_fault(
        "cut-off",
        LEASES,
        Some(sandbox::kube_api::ClientFaultBehaviour::Fail(503)),
    );
    let status = api_status(cut_off.get("any").await.expect_err("the fault answers 503"));
    assert_eq!(
        (status.code, status.reason.as_str()),
        (503, "ServiceUnavailable")
    );

    let tokens: std::collections::BTreeSet<Option<String>> = server
        .requests()
        .iter()
        .map(|request| request.token.clone())
        .collect();
    assert_eq!(
        tokens,
        [Some("cut-off".to_owned()), Some("other".to_owned())]
            .into_iter()
            .collect()
    );
    server.shutdown().await;
}

/// The pods proxy answers a sequential client on one kept-alive connection without the
/// ~40 ms stall of a response written in pieces without TCP_NODELAY: 200 GETs of a real
/// ipamd page (as upstream's helper makes them, one after another) take well under 2 s,
/// where the stall alone would add 8 s.
#[tokio::test]
async fn two_hundred_sequential_proxied_scrapes_on_one_connection_do_not_stall() {
    use http_body_util::{BodyExt, Empty};
    use sandbox::fleet::{Fleet, FleetOptions};

    let server = FakeApiServer::start().await.expect("the server starts");
    let fleet = Fleet::start(FleetOptions {
        nodes: 1,
        ..FleetOptions::default()
    })
    .await
    .expect("the fleet starts");
    server.host_fleet(&fleet).expect("seed the aws-node pod");
    let pod = fleet.node(0).pod_name();
    let path = format!("/api/v1/namespaces/kube-system/pods/{pod}:61678/proxy/metrics");

    // A client that leaves Nagle on, like most: only the server's writes decide.
    let stream = tokio::net::TcpStream::connect(server.url().trim_start_matches("http://"))
        .await
        .expect("connects");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let started = std::time::Instant::now();
    for _ in 0..200 {
        let request = http::Request::get(&path)
            .header(http::header::HOST, "sandbox")
            .body(Empty::<bytes::Bytes>::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("an answer");
        assert_eq!(response.status(), 200);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        assert!(
            body.windows(b"awscni_".len()).any(|w| w == b"awscni_"),
            "an ipamd page came back"
        );
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(2),
        "200 sequential proxied GETs took {elapsed:?}"
    );
    fleet.shutdown().await;
    server.shutdown().await;
}

/// A fleet larger than the open-file limit serves every node from one listener, and the
/// API server's pods proxy reaches each node through it by the node's own address: each
/// pod's proxy path answers with that node's page (what it records as served), and nothing
/// listens on the nodes' addresses themselves.
#[tokio::test]
async fn a_fleet_on_one_listener_is_reached_through_the_pods_proxy_node_by_node() {
    use http_body_util::{BodyExt, Empty};
    use sandbox::fleet::{Fleet, FleetOptions, NodeListeners};

    let server = FakeApiServer::start().await.expect("the server starts");
    let fleet = Fleet::start(FleetOptions {
        nodes: 5,
        listeners: NodeListeners::Shared,
        ..FleetOptions::default()
    })
    .await
    .expect("the fleet starts");
    let listener = fleet.shared_listener().expect("one listener for the fleet");
    server.host_fleet(&fleet).expect("seed the fleet");
    // The route is set once; hosting the fleet set it.
    assert!(!server.route_pod_proxy_via(listener));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    for node in fleet.nodes() {
        let uri = format!(
            "{}/api/v1/namespaces/kube-system/pods/{}:61678/proxy/metrics",
            server.url(),
            node.pod_name()
        );
        let response = client
            .get(uri.parse().expect("a URI"))
            .await
            .expect("an answer");
        assert_eq!(response.status(), 200, "{}", node.pod_name());
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        let served = node.last_served().expect("the node served its page");
        assert_eq!(body, served.body.as_bytes(), "{}", node.pod_name());
        assert_eq!(node.scrape_count(), 1, "{}", node.pod_name());
        // Nothing listens on the node's own address.
        assert!(
            tokio::net::TcpStream::connect(node.address())
                .await
                .is_err(),
            "{} is only a name",
            node.address()
        );
    }
    // A Host the fleet does not know is refused, not served by some other node.
    let stranger = client
        .request(
            http::Request::get(format!("http://{listener}/metrics"))
                .header(http::header::HOST, "127.0.0.1:61678")
                .body(Empty::new())
                .expect("a request"),
        )
        .await
        .expect("an answer");
    assert_eq!(stranger.status(), 421);
    fleet.shutdown().await;
    server.shutdown().await;
}

/// Listing page by page walks the objects once, in order, from where the last page ended:
/// every pod of a 2,500-pod list comes exactly once, with a label selector (no remaining
/// count, as the real server) and without one (the count of what is left).
#[tokio::test]
async fn pages_of_a_large_list_continue_where_the_last_one_ended() {
    let server = FakeApiServer::start().await.expect("the server starts");
    for index in 0..2500 {
        server
            .insert_json(serde_json::json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": format!("pod-{index:05}"),
                    "namespace": "kube-system",
                    "labels": {"k8s-app": if index % 5 == 0 { "other" } else { "aws-node" }},
                },
            }))
            .expect("seed a pod");
    }
    // A pod in another namespace never leaks into a namespaced list.
    server
        .insert_json(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "pod-00001", "namespace": "default", "labels": {"k8s-app": "aws-node"}},
        }))
        .expect("seed a pod elsewhere");
    let client = client_with_token(&server, "pager").await;
    let pods: Api<Pod> = Api::namespaced(client, "kube-system");
    for (selector, expected) in [(Some("k8s-app=aws-node"), 2000), (None, 2500)] {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut params = ListParams::default().limit(500);
            if let Some(selector) = selector {
                params = params.labels(selector);
            }
            if let Some(token) = &token {
                params = params.continue_token(token);
            }
            let page = pods.list(&params).await.expect("a page");
            pages += 1;
            names.extend(
                page.items
                    .iter()
                    .filter_map(|pod| pod.metadata.name.clone()),
            );
            match (selector, page.metadata.remaining_item_count) {
                (Some(_), count) => assert_eq!(count, None, "no count with a selector"),
                (None, Some(count)) => {
                    assert_eq!(count as usize, expected - names.len(), "page {pages}")
                }
                (None, None) => assert!(page.metadata.continue_.is_none(), "page {pages}"),
            }
            token = page.metadata.continue_.clone();
            if token.is_none() {
                break;
            }
        }
        assert_eq!(names.len(), expected, "{selector:?}");
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, names, "in order, each once ({selector:?})");
        assert_eq!(pages, expected.div_ceil(500), "{selector:?}");
    }
    let error = pods
        .list(&ListParams::default().limit(10).continue_token("no-slash"))
        .await
        .expect_err("a token the server never gave");
    assert!(
        error.to_string().contains("invalid continue token"),
        "{error}"
    );
    server.shutdown().await;
}
