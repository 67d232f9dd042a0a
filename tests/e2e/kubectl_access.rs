//! The real `kubectl` against the fake API server: impersonation (`--as`) held to the
//! RBAC our tool renders, access and rules reviews, and `get --raw` through the pods
//! proxy to a running aws-node fleet.

use std::path::PathBuf;

use sandbox::fleet::{Fleet, FleetOptions, IPAMD_METRICS_PORT, NodeListeners};
use sandbox::kube_api::FakeApiServer;
use sandbox::kubectl::{Kubectl, KubectlOutput};
use serde_json::{Value, json};

/// The service account the rendered RBAC binds.
pub(crate) const HELPER: &str = "system:serviceaccount:kube-system:cni-metrics-helper";

/// The rendered manifests of the IRSA snapshot, one JSON object per YAML document, read
/// from the workspace so the test follows whatever the tool renders today.
pub(crate) fn rendered_manifests() -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../xtask/tests/snapshots/aws-us-west-2-irsa.snap");
    let snapshot = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    let (_, after) = snapshot
        .split_once("===== manifests.yaml =====\n")
        .expect("the snapshot has a manifests.yaml section");
    let section = after.split("\n===== ").next().unwrap_or(after);
    section
        .split("\n---\n")
        .filter(|document| !document.trim().is_empty())
        .map(|document| {
            let yaml: serde_yaml::Value = serde_yaml::from_str(document)
                .unwrap_or_else(|error| panic!("a YAML document: {error}\n{document}"));
            serde_json::to_value(yaml).expect("YAML that is JSON")
        })
        .collect()
}

/// The YAML text of the manifests section, for `kubectl create -f`.
pub(crate) fn rendered_manifests_yaml() -> String {
    rendered_manifests()
        .iter()
        .map(|object| serde_yaml::to_string(object).expect("serializes"))
        .collect::<Vec<_>>()
        .join("---\n")
}

pub(crate) async fn kubectl(kubectl: &Kubectl, args: &[&str]) -> KubectlOutput {
    kubectl
        .run(args)
        .await
        .unwrap_or_else(|error| panic!("kubectl {}: {error}", args.join(" ")))
}

fn seed_rbac(server: &FakeApiServer) {
    for object in rendered_manifests() {
        server
            .insert_json(object.clone())
            .unwrap_or_else(|error| panic!("seeding {object}: {error}"));
    }
}

fn assert_exit(output: &KubectlOutput, code: i32, what: &str) {
    assert_eq!(output.code, code, "{what}:\n{output}");
}

#[tokio::test]
async fn auth_can_i_as_the_helper_follows_the_rendered_rbac() {
    let server = FakeApiServer::start().await.expect("server");
    seed_rbac(&server);
    let kc = Kubectl::for_server(&server).expect("kubectl");

    let proxy = kubectl(&kc, &["auth", "can-i", "get", "pods/proxy", "--as", HELPER]).await;
    assert_exit(&proxy, 0, "get pods/proxy is granted");
    assert_eq!(proxy.stdout.trim(), "yes", "{proxy}");

    let delete = kubectl(&kc, &["auth", "can-i", "delete", "pods", "--as", HELPER]).await;
    assert_exit(&delete, 1, "delete pods is not granted");
    assert_eq!(delete.stdout.trim(), "no", "{delete}");

    let list_all = kubectl(
        &kc,
        &[
            "auth",
            "can-i",
            "list",
            "pods",
            "--all-namespaces",
            "--as",
            HELPER,
        ],
    )
    .await;
    assert_exit(&list_all, 0, "list pods everywhere is granted");
    assert_eq!(list_all.stdout.trim(), "yes", "{list_all}");

    let deployments = kubectl(
        &kc,
        &[
            "auth",
            "can-i",
            "patch",
            "deployments.apps",
            "-n",
            "kube-system",
            "--as",
            HELPER,
        ],
    )
    .await;
    assert_exit(&deployments, 1, "patch deployments is not granted");

    // The review's reason names the binding, as the real RBAC authorizer's does.
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {
            "verb": "get", "resource": "pods", "subresource": "proxy",
            "namespace": "kube-system", "name": "aws-node-x",
        }},
    })
    .to_string();
    let created = kc
        .run_with_stdin(
            // kubectl's validation finds no PATCH operation for a review in the OpenAPI
            // documents (a real server has none either) and then lists CRDs to rule out a
            // custom kind, which the helper may not: on a real cluster too, this create
            // needs --validate=false.
            &[
                "create",
                "--validate=false",
                "-f",
                "-",
                "-o",
                "json",
                "--as",
                HELPER,
            ],
            Some(&review),
        )
        .await
        .expect("kubectl runs");
    assert_exit(&created, 0, "a review is created");
    let answer: Value = serde_json::from_str(&created.stdout).expect("JSON");
    assert_eq!(
        answer["status"],
        json!({
            "allowed": true,
            "reason": "RBAC: allowed by ClusterRoleBinding \"cni-metrics-helper\" of ClusterRole \
                       \"cni-metrics-helper\" to ServiceAccount \"cni-metrics-helper/kube-system\"",
        }),
        "{created}"
    );

    let list = kubectl(
        &kc,
        &[
            "auth",
            "can-i",
            "--list",
            "-n",
            "kube-system",
            "--as",
            HELPER,
        ],
    )
    .await;
    assert_exit(&list, 0, "the rules review answers");
    let rows: Vec<Vec<&str>> = list
        .stdout
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert!(
        rows.contains(&vec!["pods/proxy", "[]", "[]", "[get]"]),
        "{list}"
    );
    assert!(
        rows.contains(&vec!["pods", "[]", "[]", "[get", "list", "watch]"]),
        "{list}"
    );
    assert!(
        rows.contains(&vec![
            "selfsubjectaccessreviews.authorization.k8s.io",
            "[]",
            "[]",
            "[create]"
        ]),
        "{list}"
    );
    assert!(!list.stdout.contains("deployments"), "{list}");
    server.shutdown().await;
}

#[tokio::test]
async fn whoami_shows_the_impersonated_service_account_and_its_groups() {
    let server = FakeApiServer::start().await.expect("server");
    let kc = Kubectl::for_server(&server).expect("kubectl");
    let whoami = kubectl(&kc, &["auth", "whoami", "--as", HELPER, "-o", "json"]).await;
    assert_exit(&whoami, 0, "whoami answers");
    let review: Value = serde_json::from_str(&whoami.stdout).expect("JSON");
    assert_eq!(
        review["status"]["userInfo"],
        json!({
            "username": HELPER,
            "groups": [
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
                "system:authenticated",
            ],
        }),
        "{whoami}"
    );
    let table = kubectl(
        &kc,
        &["auth", "whoami", "--as", "alice", "--as-group", "ops"],
    )
    .await;
    assert_exit(&table, 0, "whoami answers");
    let rows: Vec<Vec<&str>> = table
        .stdout
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert!(rows.contains(&vec!["Username", "alice"]), "{table}");
    assert!(
        rows.contains(&vec!["Groups", "[ops", "system:authenticated]"]),
        "{table}"
    );
    let admin = kubectl(&kc, &["auth", "whoami"]).await;
    assert_exit(&admin, 0, "whoami answers the admin");
    assert!(admin.stdout.contains("kubernetes-admin"), "{admin}");
    assert!(admin.stdout.contains("system:masters"), "{admin}");
    server.shutdown().await;
}

#[tokio::test]
async fn requests_as_the_helper_are_authorized_and_refused_like_a_real_server() {
    let server = FakeApiServer::start().await.expect("server");
    seed_rbac(&server);
    let kc = Kubectl::for_server(&server).expect("kubectl");

    let get = kubectl(&kc, &["get", "pods", "-n", "kube-system", "--as", HELPER]).await;
    assert_exit(&get, 0, "the helper lists pods");
    assert!(
        get.stderr
            .contains("No resources found in kube-system namespace."),
        "{get}"
    );

    let delete = kubectl(
        &kc,
        &["delete", "pod", "x", "-n", "kube-system", "--as", HELPER],
    )
    .await;
    assert_exit(&delete, 1, "the helper may not delete pods");
    assert!(
        delete.stderr.contains(
            "Error from server (Forbidden): pods \"x\" is forbidden: User \
             \"system:serviceaccount:kube-system:cni-metrics-helper\" cannot delete resource \
             \"pods\" in API group \"\" in the namespace \"kube-system\""
        ),
        "{delete}"
    );

    let deployments = kubectl(
        &kc,
        &["get", "deployments", "-n", "kube-system", "--as", HELPER],
    )
    .await;
    assert_exit(&deployments, 1, "the helper may not list deployments");
    assert!(
        deployments.stderr.contains(
            "Error from server (Forbidden): deployments.apps is forbidden: User \
             \"system:serviceaccount:kube-system:cni-metrics-helper\" cannot list resource \
             \"deployments\" in API group \"apps\" in the namespace \"kube-system\""
        ),
        "{deployments}"
    );

    // The sandbox's own user is not held to RBAC.
    let admin = kubectl(&kc, &["get", "deployments", "-n", "kube-system"]).await;
    assert_exit(&admin, 0, "the admin lists deployments");
    server.shutdown().await;
}

#[tokio::test]
async fn without_the_bindings_the_helper_may_do_nothing() {
    let server = FakeApiServer::start().await.expect("server");
    let kc = Kubectl::for_server(&server).expect("kubectl");

    let proxy = kubectl(&kc, &["auth", "can-i", "get", "pods/proxy", "--as", HELPER]).await;
    assert_exit(&proxy, 1, "nothing is granted");
    assert_eq!(proxy.stdout.trim(), "no", "{proxy}");

    let get = kubectl(&kc, &["get", "pods", "--as", HELPER]).await;
    assert_exit(&get, 1, "listing is refused");
    assert!(
        get.stderr.contains(
            "Error from server (Forbidden): pods is forbidden: User \
             \"system:serviceaccount:kube-system:cni-metrics-helper\" cannot list resource \
             \"pods\" in API group \"\" in the namespace \"default\""
        ),
        "{get}"
    );

    // A binding to a group the impersonated user is in grants too.
    let group_role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "reader", "namespace": "default"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
    });
    let group_binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "ops-read", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "ops"}],
    });
    server.insert_json(group_role).expect("seed");
    server.insert_json(group_binding).expect("seed");
    let as_ops = kubectl(
        &kc,
        &[
            "auth",
            "can-i",
            "list",
            "pods",
            "--as",
            "alice",
            "--as-group",
            "ops",
        ],
    )
    .await;
    assert_exit(&as_ops, 0, "the group's RoleBinding grants");
    let elsewhere = kubectl(
        &kc,
        &[
            "auth",
            "can-i",
            "list",
            "pods",
            "-n",
            "kube-system",
            "--as",
            "alice",
            "--as-group",
            "ops",
        ],
    )
    .await;
    assert_exit(&elsewhere, 1, "a RoleBinding grants only in its namespace");
    let alone = kubectl(&kc, &["auth", "can-i", "list", "pods", "--as", "alice"]).await;
    assert_exit(&alone, 1, "alice without the group");
    server.shutdown().await;
}

/// Creates `object` with `kubectl create -f -` as user alice in group ops.
async fn create_as_alice(kc: &Kubectl, object: &Value) -> KubectlOutput {
    let args = ["create", "-f", "-", "--as", "alice", "--as-group", "ops"];
    kc.run_with_stdin(&args, Some(&object.to_string()))
        .await
        .unwrap_or_else(|error| panic!("kubectl {}: {error}", args.join(" ")))
}

fn cluster_role(name: &str, rules: Value) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name}, "rules": rules,
    })
}

/// A ClusterRoleBinding of the ClusterRole `role` to a User or Group.
fn cluster_role_binding(name: &str, role: &str, kind: &str, subject: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject}],
    })
}

#[tokio::test]
async fn an_impersonated_user_cannot_grant_what_it_does_not_hold() {
    let server = FakeApiServer::start().await.expect("server");
    let kc = Kubectl::for_server(&server).expect("kubectl");
    for object in [
        cluster_role(
            "rbac-writer",
            json!([
                {"apiGroups": ["rbac.authorization.k8s.io"],
                 "resources": ["clusterroles", "clusterrolebindings"], "verbs": ["create", "get"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
            ]),
        ),
        cluster_role_binding("rbac-writer", "rbac-writer", "Group", "ops"),
        cluster_role(
            "pod-deleter",
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]}]),
        ),
    ] {
        server.insert_json(object).expect("seed");
    }
    let pods = |verbs: Value| json!([{"apiGroups": [""], "resources": ["pods"], "verbs": verbs}]);

    let held = create_as_alice(
        &kc,
        &cluster_role("pod-reader", pods(json!(["get", "list"]))),
    )
    .await;
    assert_exit(&held, 0, "a role with rules alice holds");
    assert!(
        held.stdout
            .contains("clusterrole.rbac.authorization.k8s.io/pod-reader created"),
        "{held}"
    );
    let escalating =
        create_as_alice(&kc, &cluster_role("my-deleter", pods(json!(["delete"])))).await;
    assert_exit(&escalating, 1, "a role with rules alice lacks");
    assert!(
        escalating.stderr.contains(
            "Error from server (Forbidden): error when creating \"STDIN\": \
             clusterroles.rbac.authorization.k8s.io \"my-deleter\" is forbidden: user \"alice\" \
             (groups=[\"ops\" \"system:authenticated\"]) is attempting to grant RBAC permissions \
             not currently held:\n{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}"
        ),
        "{escalating}"
    );
    assert!(
        server
            .get_json(
                "rbac.authorization.k8s.io/v1",
                "ClusterRole",
                None,
                "my-deleter"
            )
            .is_none(),
        "not stored:\n{escalating}"
    );

    let bound = create_as_alice(
        &kc,
        &cluster_role_binding("bob-reads", "pod-reader", "User", "bob"),
    )
    .await;
    assert_exit(&bound, 0, "binding a role alice holds");
    let deletes = cluster_role_binding("bob-deletes", "pod-deleter", "User", "bob");
    let refused = create_as_alice(&kc, &deletes).await;
    assert_exit(&refused, 1, "binding a role alice does not hold");
    assert!(
        refused.stderr.contains(
            "clusterrolebindings.rbac.authorization.k8s.io \"bob-deletes\" is forbidden: user \
             \"alice\" (groups=[\"ops\" \"system:authenticated\"]) is attempting to grant RBAC \
             permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"pods\"], \
             Verbs:[\"delete\"]}"
        ),
        "{refused}"
    );

    // The bind verb on that role lifts the check, as on a real server.
    server
        .insert_json(cluster_role(
            "binder",
            json!([{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
                    "verbs": ["bind"], "resourceNames": ["pod-deleter"]}]),
        ))
        .expect("seed");
    server
        .insert_json(cluster_role_binding("binder", "binder", "Group", "ops"))
        .expect("seed");
    let allowed = create_as_alice(&kc, &deletes).await;
    assert_exit(&allowed, 0, "bind granted");
    let bob = kubectl(&kc, &["auth", "can-i", "delete", "pods", "--as", "bob"]).await;
    assert_exit(&bob, 0, "bob may now delete pods");
    server.shutdown().await;
}

#[tokio::test]
async fn the_admin_may_do_everything_unless_a_test_denies_it() {
    let server = FakeApiServer::start().await.expect("server");
    let kc = Kubectl::for_server(&server).expect("kubectl");
    let delete = kubectl(&kc, &["auth", "can-i", "delete", "pods"]).await;
    assert_exit(&delete, 0, "the admin may delete pods");
    assert_eq!(delete.stdout.trim(), "yes", "{delete}");

    server.deny("delete", "", "pods", None);
    let denied = kubectl(&kc, &["auth", "can-i", "delete", "pods"]).await;
    assert_exit(&denied, 1, "a test denied it");
    assert!(denied.stdout.starts_with("no"), "{denied}");

    let list = kubectl(&kc, &["auth", "can-i", "--list"]).await;
    assert_exit(&list, 0, "the admin's rules");
    assert!(
        list.stdout
            .lines()
            .any(|line| line.split_whitespace().collect::<Vec<_>>() == ["*.*", "[]", "[]", "[*]"]),
        "{list}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn get_raw_through_the_pods_proxy_prints_what_the_pod_served() {
    let server = FakeApiServer::start().await.expect("server");
    let fleet = Fleet::start(FleetOptions {
        nodes: 2,
        ..FleetOptions::default()
    })
    .await
    .expect("the fleet starts");
    server.host_fleet(&fleet).expect("register the fleet");
    let kc = Kubectl::for_server(&server).expect("kubectl");
    let node = fleet.node(1);
    let pod = node.pod_name();
    let path =
        format!("/api/v1/namespaces/kube-system/pods/{pod}:{IPAMD_METRICS_PORT}/proxy/metrics");
    let raw = kubectl(&kc, &["get", "--raw", &path]).await;
    assert_exit(&raw, 0, "the proxy reaches the pod");
    let served = node.last_served().expect("the node served a scrape");
    assert_eq!(raw.stdout, served.body, "{raw}");
    assert_eq!(served.pod_name, pod, "{raw}");

    let closed = format!(
        "/api/v1/namespaces/kube-system/pods/{pod}:{}/proxy/metrics",
        IPAMD_METRICS_PORT + 1
    );
    let refused = kubectl(&kc, &["get", "--raw", &closed]).await;
    assert_exit(&refused, 1, "a closed port");
    let ip = node.address().ip().to_string();
    assert!(
        refused.stderr.contains(&format!(
            "Error from server (ServiceUnavailable): error trying to reach service: dial tcp \
             {ip}:{}: connect: connection refused",
            IPAMD_METRICS_PORT + 1
        )),
        "{refused}"
    );

    let mut without_ip = fleet.pod_object(0);
    without_ip.metadata.name = Some("aws-node-pending".to_owned());
    if let Some(status) = without_ip.status.as_mut() {
        status.pod_ip = None;
        status.pod_ips = None;
    }
    server.insert(&without_ip).expect("seed");
    let pending = kubectl(
        &kc,
        &[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/kube-system/pods/aws-node-pending:{IPAMD_METRICS_PORT}/proxy/metrics"),
        ],
    )
    .await;
    assert_exit(&pending, 1, "a pod without an IP");
    assert!(
        pending
            .stderr
            .contains("Error from server (BadRequest): address not allowed"),
        "{pending}"
    );

    // Impersonating the helper, the proxy needs its RBAC: refused without, allowed with.
    let refused_proxy = kubectl(&kc, &["get", "--raw", &path, "--as", HELPER]).await;
    assert_exit(&refused_proxy, 1, "no RBAC yet");
    assert!(
        refused_proxy.stderr.contains(&format!(
            "Error from server (Forbidden): pods \"{pod}:{IPAMD_METRICS_PORT}\" is forbidden: \
             User \"{HELPER}\" cannot get resource \"pods/proxy\" in API group \"\" in the \
             namespace \"kube-system\""
        )),
        "{refused_proxy}"
    );
    seed_rbac(&server);
    let as_helper = kubectl(&kc, &["get", "--raw", &path, "--as", HELPER]).await;
    assert_exit(&as_helper, 0, "the helper may get pods/proxy");
    let served = node.last_served().expect("served again");
    assert_eq!(as_helper.stdout, served.body, "{as_helper}");
    fleet.shutdown().await;
    server.shutdown().await;
}

/// A fleet served from one listener (as the 100,000-node benchmark runs it) answers
/// kubectl's `get --raw` through the pods proxy exactly like one listener per node: each
/// pod's path prints that node's page.
#[tokio::test]
async fn get_raw_through_the_pods_proxy_reaches_a_fleet_on_one_listener() {
    let server = FakeApiServer::start().await.expect("server");
    let fleet = Fleet::start(FleetOptions {
        nodes: 3,
        listeners: NodeListeners::Shared,
        ..FleetOptions::default()
    })
    .await
    .expect("the fleet starts");
    server.host_fleet(&fleet).expect("register the fleet");
    let kc = Kubectl::for_server(&server).expect("kubectl");
    for node in fleet.nodes() {
        let pod = node.pod_name();
        let path =
            format!("/api/v1/namespaces/kube-system/pods/{pod}:{IPAMD_METRICS_PORT}/proxy/metrics");
        let raw = kubectl(&kc, &["get", "--raw", &path]).await;
        assert_exit(
            &raw,
            0,
            "the proxy reaches the pod through the shared listener",
        );
        let served = node.last_served().expect("the node served a scrape");
        assert_eq!(raw.stdout, served.body, "{raw}");
        assert_eq!(served.pod_name, pod, "{raw}");
    }
    fleet.shutdown().await;
    server.shutdown().await;
}
