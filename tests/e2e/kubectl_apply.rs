//! The fake API server driven by the real `kubectl` for the commands that need its
//! OpenAPI documents: `apply` (client-side and server-side, with kubectl's default
//! validation), `apply --dry-run=server`, `diff` and `explain`, and field validation.

use sandbox::kube_api::FakeApiServer;
use sandbox::kubectl::Kubectl;
use serde_json::Value;

use crate::kubectl_access::kubectl as run;

const SERVICE_ACCOUNT: &str = "\
apiVersion: v1
kind: ServiceAccount
metadata:
  name: cni-metrics-helper
  namespace: kube-system
  labels:
    app.kubernetes.io/name: cni-metrics-helper
";

fn deployment(image: &str, extra_env: &str) -> String {
    format!(
        "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: cni-metrics-helper
  namespace: kube-system
spec:
  replicas: 1
  selector:
    matchLabels:
      k8s-app: cni-metrics-helper
  template:
    metadata:
      labels:
        k8s-app: cni-metrics-helper
    spec:
      serviceAccountName: cni-metrics-helper
      containers:
      - name: cni-metrics-helper
        image: {image}
        env:
        - name: AWS_CLUSTER_ID
          value: prod
{extra_env}"
    )
}

async fn setup() -> (FakeApiServer, Kubectl) {
    let server = FakeApiServer::start()
        .await
        .expect("the fake API server starts");
    let kubectl = Kubectl::for_server(&server).expect("kubectl is configured");
    (server, kubectl)
}

fn path_arg(path: &std::path::Path) -> String {
    path.to_string_lossy().into_owned()
}

fn stored_deployment(server: &FakeApiServer) -> Value {
    server
        .get_json(
            "apps/v1",
            "Deployment",
            Some("kube-system"),
            "cni-metrics-helper",
        )
        .expect("the Deployment is stored")
}

fn env_names(deployment: &Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .map(|env| {
            env.iter()
                .filter_map(|e| e["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn client_side_apply_creates_configures_and_leaves_unchanged_objects_alone() {
    let (server, kubectl) = setup().await;
    let manifest = format!(
        "{SERVICE_ACCOUNT}---\n{}",
        deployment("example.com/helper:v1.0", "")
    );
    let file = path_arg(
        &kubectl
            .write_file("helper.yaml", &manifest)
            .expect("written"),
    );

    let created = run(&kubectl, &["apply", "-f", &file]).await;
    assert!(created.success(), "{created}");
    assert_eq!(
        created.stdout,
        "serviceaccount/cni-metrics-helper created\ndeployment.apps/cni-metrics-helper created\n",
        "{created}"
    );
    assert!(
        !created.stderr.contains("Warning"),
        "kubectl found something to warn about: {created}"
    );
    let live = stored_deployment(&server);
    assert!(
        live["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string(),
        "{live}"
    );

    let again = run(&kubectl, &["apply", "-f", &file]).await;
    assert!(again.success(), "{again}");
    assert_eq!(
        again.stdout,
        "serviceaccount/cni-metrics-helper unchanged\ndeployment.apps/cni-metrics-helper unchanged\n",
        "{again}"
    );

    // A field someone else added to the live object survives the next apply (the patch is
    // three-way and merges the env list by name); a field the file drops is removed.
    let patched = run(
        &kubectl,
        &[
            "set",
            "env",
            "-n",
            "kube-system",
            "deployment/cni-metrics-helper",
            "ADDED_BY_HAND=1",
        ],
    )
    .await;
    assert!(patched.success(), "{patched}");
    let changed = deployment(
        "example.com/helper:v1.1",
        "        - name: USE_CLOUDWATCH\n          value: \"true\"\n",
    );
    let changed_file = path_arg(
        &kubectl
            .write_file("changed.yaml", &changed)
            .expect("written"),
    );
    let configured = run(&kubectl, &["apply", "-f", &changed_file]).await;
    assert!(configured.success(), "{configured}");
    assert_eq!(
        configured.stdout, "deployment.apps/cni-metrics-helper configured\n",
        "{configured}"
    );
    // kubectl computed the patch from the served schemas (it warns when it cannot and
    // falls back to its compiled-in types).
    assert_eq!(configured.stderr, "", "{configured}");
    let fetched: Vec<String> = server
        .requests()
        .into_iter()
        .map(|r| r.path)
        .filter(|path| path.starts_with("/openapi"))
        .collect();
    assert!(
        fetched
            .iter()
            .any(|path| path == "/openapi/v3/apis/apps/v1"),
        "{fetched:?}"
    );
    let live = stored_deployment(&server);
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["image"],
        "example.com/helper:v1.1"
    );
    assert_eq!(
        env_names(&live),
        ["AWS_CLUSTER_ID", "USE_CLOUDWATCH", "ADDED_BY_HAND"],
        "{live}"
    );

    let dropped = run(
        &kubectl,
        &[
            "apply",
            "-f",
            &path_arg(
                &kubectl
                    .write_file("v1.yaml", &deployment("example.com/helper:v1.1", ""))
                    .expect("written"),
            ),
        ],
    )
    .await;
    assert!(dropped.success(), "{dropped}");
    assert_eq!(
        env_names(&stored_deployment(&server)),
        ["AWS_CLUSTER_ID", "ADDED_BY_HAND"]
    );
}

#[tokio::test]
async fn server_side_apply_and_server_dry_run_through_kubectl() {
    let (server, kubectl) = setup().await;
    let file = path_arg(
        &kubectl
            .write_file("sa.yaml", SERVICE_ACCOUNT)
            .expect("written"),
    );

    let dry = run(&kubectl, &["apply", "--dry-run=server", "-f", &file]).await;
    assert!(dry.success(), "{dry}");
    assert_eq!(
        dry.stdout, "serviceaccount/cni-metrics-helper created (server dry run)\n",
        "{dry}"
    );
    assert!(
        server
            .get_json(
                "v1",
                "ServiceAccount",
                Some("kube-system"),
                "cni-metrics-helper"
            )
            .is_none(),
        "a server dry run stored the object"
    );
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.dry_run && r.method == http::Method::POST),
        "kubectl's dry run reached the server as dryRun=All"
    );

    let applied = run(&kubectl, &["apply", "--server-side", "-f", &file]).await;
    assert!(applied.success(), "{applied}");
    assert_eq!(
        applied.stdout, "serviceaccount/cni-metrics-helper serverside-applied\n",
        "{applied}"
    );
    let apply_request = server
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.method == http::Method::PATCH)
        .expect("the apply reached the server");
    assert_eq!(apply_request.field_manager.as_deref(), Some("kubectl"));
    assert_eq!(
        apply_request.query_value("fieldValidation"),
        Some("Strict"),
        "kubectl found that the server validates fields itself"
    );
    let stored = server
        .get_json(
            "v1",
            "ServiceAccount",
            Some("kube-system"),
            "cni-metrics-helper",
        )
        .expect("stored");
    assert_eq!(
        stored["metadata"]["managedFields"][0]["manager"], "kubectl",
        "{stored}"
    );

    let dry_apply = run(
        &kubectl,
        &["apply", "--server-side", "--dry-run=server", "-f", &file],
    )
    .await;
    assert!(dry_apply.success(), "{dry_apply}");
    assert_eq!(
        dry_apply.stdout,
        "serviceaccount/cni-metrics-helper serverside-applied (server dry run)\n"
    );
}

#[tokio::test]
async fn diff_exits_0_when_nothing_would_change_and_1_when_something_would() {
    let (_server, kubectl) = setup().await;
    let manifest = deployment("example.com/helper:v1.0", "");
    let file = path_arg(&kubectl.write_file("d.yaml", &manifest).expect("written"));

    let before = run(&kubectl, &["diff", "-f", &file]).await;
    assert_eq!(before.code, 1, "a missing object is a difference: {before}");
    assert!(
        before.stdout.contains("+  name: cni-metrics-helper"),
        "{before}"
    );

    let applied = run(&kubectl, &["apply", "-f", &file]).await;
    assert!(applied.success(), "{applied}");
    let same = run(&kubectl, &["diff", "-f", &file]).await;
    assert_eq!(same.code, 0, "{same}");
    assert_eq!(same.stdout, "", "{same}");

    let changed = path_arg(
        &kubectl
            .write_file("d2.yaml", &deployment("example.com/helper:v2.0", ""))
            .expect("written"),
    );
    let differs = run(&kubectl, &["diff", "-f", &changed]).await;
    assert_eq!(differs.code, 1, "{differs}");
    assert!(
        differs
            .stdout
            .contains("-        image: example.com/helper:v1.0")
            && differs
                .stdout
                .contains("+        image: example.com/helper:v2.0"),
        "{differs}"
    );
    // As on a real server: the dry run bumps the generation for the new spec, keeps the
    // resourceVersion, and starts no rollout, so the status is untouched.
    assert!(
        differs
            .stdout
            .contains("-  generation: 1\n+  generation: 2"),
        "{differs}"
    );
    let changed_lines: Vec<&str> = differs
        .stdout
        .lines()
        .filter(|line| {
            (line.starts_with('-') || line.starts_with('+'))
                && !line.starts_with("---")
                && !line.starts_with("+++")
        })
        .collect();
    assert_eq!(
        changed_lines,
        [
            "-  generation: 1",
            "+  generation: 2",
            "-        image: example.com/helper:v1.0",
            "+        image: example.com/helper:v2.0"
        ],
        "{differs}"
    );

    // Server-side: the dry-run apply would only change who owns the fields, which diff
    // does not show. A changed value is a field the client-side apply owns, which a
    // server-side apply has to take (as on a real cluster).
    let server_side = run(&kubectl, &["diff", "--server-side", "-f", &file]).await;
    assert_eq!(server_side.code, 0, "{server_side}");
    let server_side_changed = run(
        &kubectl,
        &["diff", "--server-side", "--force-conflicts", "-f", &changed],
    )
    .await;
    assert_eq!(server_side_changed.code, 1, "{server_side_changed}");
    assert!(
        server_side_changed
            .stdout
            .contains("+        image: example.com/helper:v2.0"),
        "{server_side_changed}"
    );
}

#[tokio::test]
async fn explain_walks_the_served_schemas() {
    let (_server, kubectl) = setup().await;
    let explained = run(
        &kubectl,
        &["explain", "deployment.spec.template.spec.containers"],
    )
    .await;
    assert!(explained.success(), "{explained}");
    for expected in [
        "GROUP:      apps",
        "KIND:       Deployment",
        "VERSION:    v1",
        "FIELD: containers <[]Container>",
        "image\t<string>",
        "imagePullPolicy\t<string>",
    ] {
        assert!(
            explained.stdout.contains(expected),
            "{expected:?} missing: {explained}"
        );
    }

    // The same through the v2 document, which client-go reads in its protobuf form.
    let from_v2 = run(
        &kubectl,
        &[
            "explain",
            "deployment.spec.template.spec.containers",
            "--output",
            "plaintext-openapiv2",
        ],
    )
    .await;
    assert!(from_v2.success(), "{from_v2}");
    for expected in [
        "KIND:     Deployment",
        "RESOURCE: containers <[]Object>",
        "image\t<string>",
    ] {
        assert!(
            from_v2.stdout.contains(expected),
            "{expected:?} missing: {from_v2}"
        );
    }

    let recursive = run(&kubectl, &["explain", "lease.spec", "--recursive"]).await;
    assert!(recursive.success(), "{recursive}");
    assert!(
        recursive.stdout.contains("holderIdentity\t<string>"),
        "{recursive}"
    );

    let unknown = run(&kubectl, &["explain", "deployment.spec.replicaz"]).await;
    assert_eq!(unknown.code, 1, "{unknown}");
    assert!(
        unknown.stderr.contains("field \"replicaz\" does not exist"),
        "{unknown}"
    );
}

#[tokio::test]
async fn strict_validation_refuses_unknown_fields_and_warn_drops_them_with_a_warning() {
    let (server, kubectl) = setup().await;
    let typo =
        deployment("example.com/helper:v1.0", "").replace("  replicas: 1\n", "  replicaz: 1\n");
    let file = path_arg(&kubectl.write_file("typo.yaml", &typo).expect("written"));

    let refused = run(&kubectl, &["apply", "-f", &file]).await;
    assert_eq!(refused.code, 1, "{refused}");
    assert!(
        refused.stderr.contains(
            "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.replicaz\""
        ),
        "{refused}"
    );
    assert!(
        refused.stderr.contains("Error from server (BadRequest)"),
        "{refused}"
    );
    assert!(
        server
            .get_json(
                "apps/v1",
                "Deployment",
                Some("kube-system"),
                "cni-metrics-helper"
            )
            .is_none()
    );

    let server_side = run(&kubectl, &["apply", "--server-side", "-f", &file]).await;
    assert_eq!(server_side.code, 1, "{server_side}");
    assert!(
        server_side.stderr.contains(
            "failed to create typed patch object (kube-system/cni-metrics-helper; apps/v1, Kind=Deployment): .spec.replicaz: field not declared in schema"
        ),
        "{server_side}"
    );

    let warned = run(&kubectl, &["apply", "--validate=warn", "-f", &file]).await;
    assert!(warned.success(), "{warned}");
    assert!(
        warned
            .stderr
            .contains("Warning: unknown field \"spec.replicaz\""),
        "{warned}"
    );
    let stored = stored_deployment(&server);
    assert!(stored["spec"].get("replicaz").is_none(), "{stored}");
    assert_eq!(stored["spec"]["replicas"], 1, "the server's default");

    let typo_patch = run(
        &kubectl,
        &[
            "patch",
            "-n",
            "kube-system",
            "deployment/cni-metrics-helper",
            "--type=merge",
            "-p",
            r#"{"spec":{"paused":true,"pausd":true}}"#,
        ],
    )
    .await;
    assert!(typo_patch.success(), "{typo_patch}");
    assert!(
        typo_patch
            .stderr
            .contains("Warning: unknown field \"spec.pausd\""),
        "the default is Warn: {typo_patch}"
    );
    assert_eq!(stored_deployment(&server)["spec"]["paused"], true);
}
