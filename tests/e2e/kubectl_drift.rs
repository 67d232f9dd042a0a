//! The real `kubectl` changing the helper's Deployment by hand, as an operator would
//! between two runs of the tool: scale, label, annotate, delete, and watching a rollout.

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};

use sandbox::kube_api::FakeApiServer;
use sandbox::kubectl::{Kubectl, KubectlOutput};
use serde_json::Value;

use crate::kubectl_access::{kubectl, rendered_manifests_yaml};

const NAMESPACE: &str = "kube-system";
const NAME: &str = "cni-metrics-helper";

/// How long a watch may take to report; generous for a loaded machine.
const PROMPTLY: Duration = Duration::from_secs(20);

/// A server with the rendered manifests created through kubectl, so that the Deployment
/// went through the API (defaults, status of a finished rollout) as the tool's would.
async fn deployed() -> (FakeApiServer, Kubectl) {
    let server = FakeApiServer::start().await.expect("server");
    let kc = Kubectl::for_server(&server).expect("kubectl");
    let path = kc
        .write_file("manifests.yaml", &rendered_manifests_yaml())
        .expect("write");
    let path = path.display().to_string();
    let created = kubectl(&kc, &["create", "-f", &path]).await;
    assert_eq!(created.code, 0, "create the manifests:\n{created}");
    assert!(
        created
            .stdout
            .contains("deployment.apps/cni-metrics-helper created"),
        "{created}"
    );
    (server, kc)
}

fn deployment(server: &FakeApiServer) -> Option<Value> {
    server.get_json("apps/v1", "Deployment", Some(NAMESPACE), NAME)
}

fn assert_ok(output: &KubectlOutput, stdout: &str) {
    assert_eq!(output.code, 0, "{output}");
    assert_eq!(output.stdout.trim_end(), stdout, "{output}");
}

#[tokio::test]
async fn kubectl_scale_goes_through_the_scale_subresource() {
    let (server, kc) = deployed().await;
    let before = deployment(&server).expect("deployed");
    let generation = before["metadata"]["generation"]
        .as_i64()
        .expect("generation");

    let scale_path = format!("/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{NAME}/scale");
    let read = kubectl(&kc, &["get", "--raw", &scale_path]).await;
    assert_eq!(read.code, 0, "{read}");
    let scale: Value = serde_json::from_str(&read.stdout).expect("JSON");
    assert_eq!(scale["apiVersion"], "autoscaling/v1", "{read}");
    assert_eq!(scale["kind"], "Scale", "{read}");
    assert_eq!(scale["spec"]["replicas"], 1, "{read}");
    assert_eq!(
        scale["status"]["selector"], "k8s-app=cni-metrics-helper",
        "{read}"
    );

    // A watcher started before the scale sees the Deployment change.
    let mut watcher = kc
        .spawn(&[
            "get",
            "deployment",
            NAME,
            "-n",
            NAMESPACE,
            "--watch",
            "-o",
            "jsonpath={.spec.replicas}{\"\\n\"}",
        ])
        .expect("kubectl get --watch starts");
    let mut lines = BufReader::new(watcher.stdout.take().expect("piped stdout")).lines();
    let first = tokio::time::timeout(PROMPTLY, lines.next_line())
        .await
        .expect("the watch lists promptly")
        .expect("reads");
    assert_eq!(first.as_deref(), Some("1"), "the watch's first line");

    server.clear_requests();
    let scaled = kubectl(
        &kc,
        &[
            "scale",
            &format!("deployment/{NAME}"),
            "-n",
            NAMESPACE,
            "--replicas=3",
        ],
    )
    .await;
    assert_ok(&scaled, "deployment.apps/cni-metrics-helper scaled");
    let scale_writes: Vec<(String, Option<String>)> = server
        .requests()
        .into_iter()
        .filter(|request| request.is_write())
        .map(|request| {
            (
                format!("{} {}", request.method, request.path),
                request.content_type,
            )
        })
        .collect();
    assert_eq!(
        scale_writes,
        [(
            format!("PATCH {scale_path}"),
            Some("application/merge-patch+json".to_owned())
        )],
        "{scaled}"
    );
    let seen = tokio::time::timeout(PROMPTLY, lines.next_line())
        .await
        .expect("the watch sees the change promptly")
        .expect("reads");
    assert_eq!(seen.as_deref(), Some("3"), "the watch after:\n{scaled}");
    drop(watcher);
    let after = deployment(&server).expect("still there");
    assert_eq!(after["spec"]["replicas"], 3, "{scaled}\n{after}");
    assert_eq!(
        after["metadata"]["generation"],
        generation + 1,
        "{scaled}\n{after}"
    );
    assert_eq!(after["status"]["replicas"], 3, "{scaled}\n{after}");
    assert_eq!(
        after["status"]["observedGeneration"],
        generation + 1,
        "{scaled}\n{after}"
    );

    // With a precondition kubectl reads the Scale, compares, and writes it back with PUT.
    let stale = kubectl(
        &kc,
        &[
            "scale",
            &format!("deployment/{NAME}"),
            "-n",
            NAMESPACE,
            "--replicas=2",
            "--resource-version=1",
        ],
    )
    .await;
    assert_eq!(stale.code, 1, "{stale}");
    let current = after["metadata"]["resourceVersion"]
        .as_str()
        .expect("a resourceVersion");
    assert!(
        stale
            .stderr
            .contains(&format!("Expected resource version to be 1, was {current}")),
        "{stale}"
    );
    server.clear_requests();
    let precondition = format!("--resource-version={current}");
    let put = kubectl(
        &kc,
        &[
            "scale",
            &format!("deployment/{NAME}"),
            "-n",
            NAMESPACE,
            "--replicas=2",
            &precondition,
        ],
    )
    .await;
    assert_ok(&put, "deployment.apps/cni-metrics-helper scaled");
    let methods: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|request| request.path == scale_path)
        .map(|request| request.method.to_string())
        .collect();
    assert_eq!(
        methods,
        ["GET", "PUT"],
        "read, compared, then replaced:\n{put}"
    );
    let last = deployment(&server).expect("still there");
    assert_eq!(last["spec"]["replicas"], 2, "{put}\n{last}");
    assert_eq!(
        last["metadata"]["generation"],
        generation + 2,
        "{put}\n{last}"
    );

    // ReplicaSets have the subresource too.
    server
        .insert_json(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "by-hand", "namespace": NAMESPACE},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "by-hand"}},
                "template": {
                    "metadata": {"labels": {"app": "by-hand"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            },
        }))
        .expect("seed");
    let replica_set = kubectl(
        &kc,
        &[
            "scale",
            "replicaset/by-hand",
            "-n",
            NAMESPACE,
            "--replicas=4",
        ],
    )
    .await;
    assert_ok(&replica_set, "replicaset.apps/by-hand scaled");
    let stored = server
        .get_json("apps/v1", "ReplicaSet", Some(NAMESPACE), "by-hand")
        .expect("there");
    assert_eq!(stored["spec"]["replicas"], 4, "{replica_set}\n{stored}");
    server.shutdown().await;
}

#[tokio::test]
async fn kubectl_label_and_annotate_store_what_they_say() {
    let (server, kc) = deployed().await;
    // Each step: the command (the target is inserted after the verb), what kubectl
    // prints, and the label or annotation stored afterwards.
    let steps: [(&[&str], &str, &str, Value); 7] = [
        (
            &["label", "team=x"],
            "labeled",
            "/metadata/labels/team",
            "x".into(),
        ),
        (
            &["label", "--overwrite", "team=y"],
            "labeled",
            "/metadata/labels/team",
            "y".into(),
        ),
        (
            &["label", "team-"],
            "unlabeled",
            "/metadata/labels/team",
            Value::Null,
        ),
        (
            &["annotate", "note=by-hand"],
            "annotated",
            "/metadata/annotations/note",
            "by-hand".into(),
        ),
        (
            &["annotate", "--overwrite", "note=again"],
            "annotated",
            "/metadata/annotations/note",
            "again".into(),
        ),
        (
            &["annotate", "note-"],
            "annotated",
            "/metadata/annotations/note",
            Value::Null,
        ),
        // The rendered labels are untouched by all this.
        (
            &["label", "team=z"],
            "labeled",
            "/metadata/labels/k8s-app",
            NAME.into(),
        ),
    ];
    for (command, verb, pointer, expected) in steps {
        let mut args = vec![command[0], "deployment", NAME, "-n", NAMESPACE];
        args.extend_from_slice(&command[1..]);
        let output = kubectl(&kc, &args).await;
        assert_ok(
            &output,
            &format!("deployment.apps/cni-metrics-helper {verb}"),
        );
        let live = deployment(&server).expect("still there");
        assert_eq!(
            live.pointer(pointer).cloned().unwrap_or(Value::Null),
            expected,
            "after kubectl {}:\n{output}\n{live}",
            args.join(" ")
        );
        if args.join(" ").contains("team=x") {
            // Without --overwrite kubectl refuses to change a set label.
            let refused = kubectl(
                &kc,
                &["label", "deployment", NAME, "-n", NAMESPACE, "team=other"],
            )
            .await;
            assert_eq!(refused.code, 1, "{refused}");
            assert!(
                refused
                    .stderr
                    .contains("'team' already has a value (x), and --overwrite is false"),
                "{refused}"
            );
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn kubectl_delete_returns_promptly_and_a_second_delete_is_not_found() {
    let (server, kc) = deployed().await;
    let started = Instant::now();
    let deleted = kubectl(&kc, &["delete", "deployment", NAME, "-n", NAMESPACE]).await;
    assert_ok(&deleted, "deployment.apps \"cni-metrics-helper\" deleted");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}:\n{deleted}",
        started.elapsed()
    );
    assert!(deployment(&server).is_none(), "gone after:\n{deleted}");

    let again = kubectl(&kc, &["delete", "deployment", NAME, "-n", NAMESPACE]).await;
    assert_eq!(again.code, 1, "{again}");
    assert!(
        again.stderr.contains(
            "Error from server (NotFound): deployments.apps \"cni-metrics-helper\" not found"
        ),
        "{again}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn kubectl_rollout_status_sees_finished_and_stuck_rollouts() {
    let (server, kc) = deployed().await;
    let deployment_ref = format!("deployment/{NAME}");
    let status = kubectl(
        &kc,
        &["rollout", "status", &deployment_ref, "-n", NAMESPACE],
    )
    .await;
    assert_ok(
        &status,
        "deployment \"cni-metrics-helper\" successfully rolled out",
    );

    // The status fields kubectl reads are those of a finished rollout.
    let live = deployment(&server).expect("deployed");
    let field = |name: &str| live["status"][name].clone();
    assert_eq!(
        field("observedGeneration"),
        live["metadata"]["generation"],
        "{status}\n{live}"
    );
    for counted in [
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
    ] {
        assert_eq!(
            field(counted),
            live["spec"]["replicas"],
            "{counted}:\n{status}\n{live}"
        );
    }
    let conditions = field("conditions");
    let condition = |kind: &str| {
        conditions
            .as_array()
            .and_then(|all| all.iter().find(|c| c["type"] == kind))
            .cloned()
            .unwrap_or_else(|| panic!("a {kind} condition:\n{status}\n{live}"))
    };
    assert_eq!(
        (
            condition("Available")["status"].clone(),
            condition("Available")["reason"].clone()
        ),
        ("True".into(), "MinimumReplicasAvailable".into()),
        "{status}\n{live}"
    );
    assert_eq!(
        (
            condition("Progressing")["status"].clone(),
            condition("Progressing")["reason"].clone()
        ),
        ("True".into(), "NewReplicaSetAvailable".into()),
        "{status}\n{live}"
    );

    // A spec change that never becomes available fails the status check.
    server.set_rollout_stuck(NAMESPACE, NAME, true);
    let patched = kubectl(
        &kc,
        &[
            "patch",
            &deployment_ref,
            "-n",
            NAMESPACE,
            "--type=merge",
            "-p",
            r#"{"spec":{"template":{"metadata":{"annotations":{"restarted":"now"}}}}}"#,
        ],
    )
    .await;
    assert_ok(&patched, "deployment.apps/cni-metrics-helper patched");
    let stuck = kubectl(
        &kc,
        &[
            "rollout",
            "status",
            &deployment_ref,
            "-n",
            NAMESPACE,
            "--timeout=20s",
        ],
    )
    .await;
    assert_eq!(stuck.code, 1, "{stuck}");
    // What kubectl read: the new generation observed, its pods not available, and the
    // Progressing condition timed out.
    let live = deployment(&server).expect("still there");
    assert_eq!(
        live["status"]["observedGeneration"], live["metadata"]["generation"],
        "{stuck}\n{live}"
    );
    let progressing = live["status"]["conditions"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["type"] == "Progressing"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (&progressing["status"], &progressing["reason"]),
        (&"False".into(), &"ProgressDeadlineExceeded".into()),
        "{stuck}\n{live}"
    );
    assert!(
        stuck
            .stderr
            .contains("error: deployment \"cni-metrics-helper\" exceeded its progress deadline"),
        "{stuck}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn kubectl_create_generators_store_what_they_say() {
    let server = FakeApiServer::start().await.expect("server");
    let kc = Kubectl::for_server(&server).expect("kubectl");
    // Each generator posts its object as protobuf; each line is what kubectl prints.
    let steps: [(&[&str], &str); 6] = [
        (
            &["create", "namespace", "by-hand"],
            "namespace/by-hand created",
        ),
        (
            &["create", "serviceaccount", "by-hand", "-n", NAMESPACE],
            "serviceaccount/by-hand created",
        ),
        (
            &[
                "create",
                "configmap",
                "by-hand",
                "-n",
                NAMESPACE,
                "--from-literal=a=1",
                "--from-literal=b=2",
            ],
            "configmap/by-hand created",
        ),
        (
            &[
                "create",
                "clusterrole",
                "by-hand",
                "--verb=get,list",
                "--resource=pods,deployments.apps",
            ],
            "clusterrole.rbac.authorization.k8s.io/by-hand created",
        ),
        (
            &[
                "create",
                "clusterrolebinding",
                "by-hand",
                "--clusterrole=by-hand",
                "--serviceaccount=kube-system:by-hand",
            ],
            "clusterrolebinding.rbac.authorization.k8s.io/by-hand created",
        ),
        (
            &[
                "create",
                "rolebinding",
                "by-hand",
                "-n",
                NAMESPACE,
                "--clusterrole=by-hand",
                "--user=alice",
                "--group=ops",
            ],
            "rolebinding.rbac.authorization.k8s.io/by-hand created",
        ),
    ];
    let mut outputs = Vec::new();
    for (args, printed) in steps {
        let output = kubectl(&kc, args).await;
        assert_ok(&output, printed);
        outputs.push(output.to_string());
    }
    let all = outputs.join("\n");
    let rbac = "rbac.authorization.k8s.io/v1";
    let get = |api_version: &str, kind: &str, namespace: Option<&str>| {
        server
            .get_json(api_version, kind, namespace, "by-hand")
            .unwrap_or_else(|| panic!("{kind} stored:\n{all}"))
    };
    assert_eq!(
        get("v1", "ConfigMap", Some(NAMESPACE))["data"],
        serde_json::json!({"a": "1", "b": "2"}),
        "{all}"
    );
    assert_eq!(
        get(rbac, "ClusterRole", None)["rules"],
        serde_json::json!([
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]},
        ]),
        "{all}"
    );
    let binding = get(rbac, "ClusterRoleBinding", None);
    assert_eq!(
        (&binding["roleRef"], &binding["subjects"]),
        (
            &serde_json::json!({"apiGroup": rbac.trim_end_matches("/v1"), "kind": "ClusterRole", "name": "by-hand"}),
            &serde_json::json!([{"kind": "ServiceAccount", "name": "by-hand", "namespace": "kube-system"}]),
        ),
        "{all}"
    );
    get("v1", "Namespace", None);
    get("v1", "ServiceAccount", Some(NAMESPACE));
    get(rbac, "RoleBinding", Some(NAMESPACE));

    // What the generators created takes effect: the service account may now list pods.
    let can = kubectl(
        &kc,
        &[
            "auth",
            "can-i",
            "list",
            "deployments.apps",
            "--as",
            "system:serviceaccount:kube-system:by-hand",
        ],
    )
    .await;
    assert_ok(&can, "yes");
    let alice = kubectl(
        &kc,
        &[
            "auth", "can-i", "get", "pods", "-n", NAMESPACE, "--as", "alice",
        ],
    )
    .await;
    assert_ok(&alice, "yes");
    server.shutdown().await;
}
