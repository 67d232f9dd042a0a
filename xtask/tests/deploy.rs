//! `plan`, `deploy` and `destroy` end to end, against the sandbox: the moto emulator for
//! IAM, STS, EKS and CloudWatch, and the fake Kubernetes API server. The binary is run as a
//! user runs it, with the sandbox's environment and nothing from this machine's.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::world::{DASHBOARD, POLICY, ROLE, World, changed, default_alarms, stderr};

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_deploy_creates_everything_and_a_second_one_changes_nothing() {
    let world = World::start().await;
    let (code, plan) = world.plan_json(&[]).await;
    assert_eq!(code, Some(2), "a first plan has changes");
    // 3 IAM, 4 Kubernetes, 4 alarms (upstream's helper: no publisher or ipamd-error
    // alarms), 1 dashboard.
    assert_eq!(plan["summary"]["create"], 12, "{plan}");

    world.deploy(&[]).await;

    // IAM: the role trusts the cluster's OIDC provider, carries our tags, has the policy.
    let role = world
        .iam()
        .get_role()
        .role_name(ROLE)
        .send()
        .await
        .expect("role")
        .role
        .expect("role");
    let trust =
        xtask::documents::parse_iam_document(role.assume_role_policy_document().expect("trust"))
            .expect("JSON");
    let issuer = world
        .sandbox
        .oidc_issuer()
        .trim_start_matches("https://")
        .to_owned();
    assert_eq!(
        trust["Statement"][0]["Principal"]["Federated"],
        format!(
            "arn:aws:iam::{}:oidc-provider/{issuer}",
            world.sandbox.account()
        )
    );
    assert!(
        role.tags()
            .iter()
            .any(|tag| tag.key() == "managed-by" && tag.value() == "cni-metrics-xtask")
    );
    let attached = world
        .iam()
        .list_attached_role_policies()
        .role_name(ROLE)
        .send()
        .await
        .expect("attached");
    assert_eq!(
        attached.attached_policies()[0].policy_arn(),
        Some(world.policy_arn().as_str())
    );

    // Kubernetes: the service account is annotated for IRSA and regional STS.
    let client = world.kube().await;
    let account: ServiceAccount = Api::namespaced(client.clone(), "kube-system")
        .get("cni-metrics-helper")
        .await
        .expect("SA");
    let annotations = account.metadata.annotations.expect("annotations");
    assert_eq!(
        annotations["eks.amazonaws.com/role-arn"],
        format!("arn:aws:iam::{}:role/{ROLE}", world.sandbox.account())
    );
    assert_eq!(
        annotations["eks.amazonaws.com/sts-regional-endpoints"],
        "true"
    );
    let deployment: Deployment = Api::namespaced(client.clone(), "kube-system")
        .get("cni-metrics-helper")
        .await
        .expect("deployment");
    assert_eq!(
        deployment.metadata.labels.expect("labels")["app.kubernetes.io/managed-by"],
        "cni-metrics-xtask"
    );

    // The dashboard.
    let body = world
        .cloudwatch()
        .get_dashboard()
        .dashboard_name(DASHBOARD)
        .send()
        .await
        .expect("dashboard");
    assert!(
        body.dashboard_body()
            .expect("body")
            .contains("maxIPAddresses")
    );

    // The second deploy: zero mutating AWS calls, zero Kubernetes writes.
    world.clear_request_logs();
    world.deploy(&[]).await;
    assert_eq!(world.mutating_aws_calls(), Vec::<String>::new());
    assert_eq!(world.kubernetes_writes(), Vec::<String>::new());
    let dry_runs = world
        .sandbox
        .api()
        .requests()
        .iter()
        .filter(|request| request.dry_run)
        .count();
    assert_eq!(
        dry_runs, 4,
        "each object is planned with one server-side dry run"
    );
    let (code, plan) = world.plan_json(&[]).await;
    assert_eq!(code, Some(0), "{plan}");
    assert_eq!(plan["summary"]["unchanged"], 12);
    world.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_behind_the_tools_back_is_shown_exactly_and_repaired() {
    let world = World::start().await;
    world.deploy(&[]).await;

    // Someone edits the trust policy, the dashboard and the Deployment.
    let loose_trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
    world
        .iam()
        .update_assume_role_policy()
        .role_name(ROLE)
        .policy_document(loose_trust.to_string())
        .send()
        .await
        .expect("trust edited");
    let body = world
        .cloudwatch()
        .get_dashboard()
        .dashboard_name(DASHBOARD)
        .send()
        .await
        .expect("dashboard");
    let mut edited: Value =
        serde_json::from_str(body.dashboard_body().expect("body")).expect("JSON");
    edited["widgets"].as_array_mut().expect("widgets").pop();
    world
        .cloudwatch()
        .put_dashboard()
        .dashboard_name(DASHBOARD)
        .dashboard_body(edited.to_string())
        .send()
        .await
        .expect("dashboard edited");
    let deployments: Api<Deployment> = Api::namespaced(world.kube().await, "kube-system");
    let scale = json!({"spec": {"replicas": 3}});
    deployments
        .patch(
            "cni-metrics-helper",
            &PatchParams {
                field_manager: Some("kubectl-edit".to_owned()),
                ..PatchParams::default()
            },
            &Patch::Merge(&scale),
        )
        .await
        .expect("deployment edited");

    let (code, plan) = world.plan_json(&[]).await;
    assert_eq!(code, Some(2));
    assert_eq!(
        changed(&plan),
        BTreeSet::from([
            format!("update IAM role {ROLE}"),
            format!("update CloudWatch dashboard {DASHBOARD}"),
            "update Deployment kube-system/cni-metrics-helper".to_owned(),
        ])
    );
    let deployment_diff = plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["kind"] == "Deployment")
        .expect("deployment")["diff"]
        .to_string();
    assert!(
        deployment_diff.contains(".spec.replicas: 3 -> 1"),
        "{deployment_diff}"
    );

    world.deploy(&[]).await;
    let (code, plan) = world.plan_json(&[]).await;
    assert_eq!(code, Some(0), "deploy repaired the drift: {plan}");
    let live = deployments
        .get("cni-metrics-helper")
        .await
        .expect("deployment");
    assert_eq!(live.spec.expect("spec").replicas, Some(1));
    world.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn destroy_removes_only_what_is_ours_and_keeps_a_policy_still_in_use() {
    let world = World::start().await;
    world.deploy(&[]).await;
    let iam = world.iam();
    // Another cluster's role uses the shared policy; an unrelated role and ClusterRole exist.
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}).to_string();
    for role in ["other-cluster-role", "unrelated-role"] {
        iam.create_role()
            .role_name(role)
            .assume_role_policy_document(&trust)
            .send()
            .await
            .expect("role");
    }
    iam.attach_role_policy()
        .role_name("other-cluster-role")
        .policy_arn(world.policy_arn())
        .send()
        .await
        .expect("attached");
    let client = world.kube().await;
    let cluster_roles: Api<ClusterRole> = Api::all(client.clone());
    let unrelated = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "unrelated"}, "rules": []});
    cluster_roles
        .patch(
            "unrelated",
            &PatchParams::apply("someone-else"),
            &Patch::Apply(&unrelated),
        )
        .await
        .expect("unrelated");

    let output = world
        .xtask(&["destroy", "--cluster", "sandbox", "--yes"])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .contains("kept: still attached to other-cluster-role")
    );

    assert!(
        iam.get_role().role_name(ROLE).send().await.is_err(),
        "our role is gone"
    );
    assert!(
        iam.get_role()
            .role_name("unrelated-role")
            .send()
            .await
            .is_ok()
    );
    assert!(
        iam.get_policy()
            .policy_arn(world.policy_arn())
            .send()
            .await
            .is_ok(),
        "the shared policy is kept"
    );
    assert!(
        cluster_roles
            .get_opt("cni-metrics-helper")
            .await
            .expect("read")
            .is_none()
    );
    assert!(
        cluster_roles
            .get_opt("unrelated")
            .await
            .expect("read")
            .is_some()
    );
    let deployments: Api<Deployment> = Api::namespaced(client, "kube-system");
    assert!(
        deployments
            .get_opt("cni-metrics-helper")
            .await
            .expect("read")
            .is_none()
    );
    assert!(
        world
            .cloudwatch()
            .get_dashboard()
            .dashboard_name(DASHBOARD)
            .send()
            .await
            .is_err(),
        "the dashboard is gone"
    );

    // Once no other role uses it, the policy goes too, all versions included.
    iam.detach_role_policy()
        .role_name("other-cluster-role")
        .policy_arn(world.policy_arn())
        .send()
        .await
        .expect("detached");
    let output = world
        .xtask(&["destroy", "--cluster", "sandbox", "--yes"])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        iam.get_policy()
            .policy_arn(world.policy_arn())
            .send()
            .await
            .is_err(),
        "the policy is gone"
    );
    world.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_with_five_versions_loses_its_oldest_non_default_version() {
    let world = World::start().await;
    let iam = world.iam();
    let document = |n: u32| {
        json!({"Version": "2012-10-17", "Statement": [{"Sid": format!("V{n}"), "Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*"}]}).to_string()
    };
    let tag = aws_sdk_iam::types::Tag::builder()
        .key("managed-by")
        .value("cni-metrics-xtask")
        .build()
        .expect("tag");
    iam.create_policy()
        .policy_name(POLICY)
        .policy_document(document(1))
        .tags(tag)
        .send()
        .await
        .expect("policy");
    for n in 2..=5 {
        iam.create_policy_version()
            .policy_arn(world.policy_arn())
            .policy_document(document(n))
            .set_as_default(n == 5)
            .send()
            .await
            .expect("version");
    }
    world.deploy(&[]).await;
    let versions = iam
        .list_policy_versions()
        .policy_arn(world.policy_arn())
        .send()
        .await
        .expect("versions");
    let ids: BTreeSet<&str> = versions
        .versions()
        .iter()
        .filter_map(|v| v.version_id())
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from(["v2", "v3", "v4", "v5", "v6"]),
        "v1 was the oldest non-default version"
    );
    let default = versions
        .versions()
        .iter()
        .find(|v| v.is_default_version())
        .expect("default");
    assert_eq!(default.version_id(), Some("v6"));
    let (code, _) = world.plan_json(&[]).await;
    assert_eq!(code, Some(0));
    world.sandbox.shutdown().await;
}

/// A deploy that stops halfway (here: the rollout never completes) leaves IAM and the
/// Kubernetes objects applied and the dashboard not; the next deploy picks up from there.
/// (Killing the emulator or the API server instead would lose their in-memory state, so the
/// failure is injected where it can be undone.)
#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_that_fails_midway_converges_on_the_next_run() {
    let world = World::start().await;
    world
        .sandbox
        .api()
        .set_rollout_stuck("kube-system", "cni-metrics-helper", true);
    let output = world
        .xtask(&[
            "deploy",
            "--cluster",
            "sandbox",
            "--yes",
            "--rollout-timeout",
            "2",
        ])
        .await;
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("did not complete within 2 s"), "{message}");
    assert!(
        message.contains("running deploy again continues from there"),
        "{message}"
    );
    assert!(
        world.iam().get_role().role_name(ROLE).send().await.is_ok(),
        "IAM went through"
    );
    world
        .sandbox
        .api()
        .set_rollout_stuck("kube-system", "cni-metrics-helper", false);
    let (code, plan) = world.plan_json(&[]).await;
    assert_eq!(code, Some(2));
    let mut rest: BTreeSet<String> = default_alarms("create").into_iter().collect();
    rest.insert(format!("create CloudWatch dashboard {DASHBOARD}"));
    assert_eq!(
        changed(&plan),
        rest,
        "the alarms and the dashboard come after the rollout"
    );
    world.deploy(&[]).await;
    let (code, _) = world.plan_json(&[]).await;
    assert_eq!(code, Some(0));
    world.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn only_kubernetes_touches_no_aws_resource() {
    let world = World::start().await;
    world.clear_request_logs();
    world.deploy(&["--only", "kubernetes"]).await;
    assert_eq!(world.mutating_aws_calls(), Vec::<String>::new());
    assert!(
        world.iam().get_role().role_name(ROLE).send().await.is_err(),
        "no role was created"
    );
    let deployments: Api<Deployment> = Api::namespaced(world.kube().await, "kube-system");
    assert!(
        deployments
            .get_opt("cni-metrics-helper")
            .await
            .expect("read")
            .is_some()
    );
    let (code, plan) = world.plan_json(&["--only", "iam,dashboard"]).await;
    assert_eq!(code, Some(2));
    assert_eq!(plan["summary"]["create"], 4, "{plan}");
    world.sandbox.shutdown().await;
}

/// Every refusal: exit 1, a message that says what to do, and nothing changed anywhere.
#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let world = World::start().await;
    let iam = world.iam();
    let provider_arn = format!(
        "arn:aws:iam::{}:oidc-provider/{}",
        world.sandbox.account(),
        world.sandbox.oidc_issuer().trim_start_matches("https://")
    );
    let cases: Vec<(Vec<&str>, Vec<&str>, &str)> = vec![
        (
            vec!["deploy", "--cluster", "sandbox"],
            vec![],
            "re-run with --yes",
        ),
        (
            vec!["deploy", "--cluster", "nope", "--yes"],
            vec![],
            "EKS cluster nope was not found in us-west-2",
        ),
        (
            vec!["deploy", "--cluster", "sandbox", "--yes"],
            vec!["AWS_REGION"],
            "no AWS region",
        ),
        (
            vec![
                "deploy",
                "--cluster",
                "sandbox",
                "--account",
                "999999999999",
                "--yes",
            ],
            vec![],
            "is not the caller's account",
        ),
        (
            vec![
                "deploy",
                "--cluster",
                "sandbox",
                "--tag",
                "aws:x=y",
                "--yes",
            ],
            vec![],
            "reserved by AWS",
        ),
        (
            vec![
                "deploy",
                "--cluster",
                "sandbox",
                "--tag",
                "Managed-By=me",
                "--yes",
            ],
            vec![],
            "this tool sets that tag itself",
        ),
        (
            vec!["deploy", "--cluster", "sandbox", "--tag", "a*b=c", "--yes"],
            vec![],
            "IAM tags allow only",
        ),
        (
            vec![
                "deploy",
                "--cluster",
                "sandbox",
                "--dashboard-name",
                "bad name",
                "--yes",
            ],
            vec![],
            "invalid --dashboard-name",
        ),
        (
            vec![
                "deploy",
                "--cluster",
                "sandbox",
                "--only",
                "everything",
                "--yes",
            ],
            vec![],
            "invalid value 'everything'",
        ),
        (
            vec![
                "deploy",
                "--cluster",
                "sandbox",
                "--version",
                "v1.2.3",
                "--yes",
            ],
            vec![],
            "not a known release",
        ),
    ];
    for (args, remove, expected) in cases {
        world.clear_request_logs();
        let output = world.xtask_with_env(&args, &remove).await;
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {message}");
        assert!(
            message.contains(expected),
            "{args:?}: expected {expected:?} in {message}"
        );
        assert_eq!(world.mutating_aws_calls(), Vec::<String>::new(), "{args:?}");
        assert_eq!(world.kubernetes_writes(), Vec::<String>::new(), "{args:?}");
    }

    // The OIDC provider: missing, then present without our audience.
    iam.delete_open_id_connect_provider()
        .open_id_connect_provider_arn(&provider_arn)
        .send()
        .await
        .expect("deleted");
    world.clear_request_logs();
    let output = world
        .xtask(&["deploy", "--cluster", "sandbox", "--yes"])
        .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("eksctl utils associate-iam-oidc-provider --cluster sandbox"),
        "{}",
        stderr(&output)
    );
    iam.create_open_id_connect_provider()
        .url(world.sandbox.oidc_issuer())
        .client_id_list("sts.amazonaws.com.cn")
        .send()
        .await
        .expect("provider");
    world.clear_request_logs();
    let output = world
        .xtask(&["deploy", "--cluster", "sandbox", "--yes"])
        .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("does not list the audience sts.amazonaws.com"),
        "{}",
        stderr(&output)
    );
    assert!(stderr(&output).contains("add-client-id-to-open-id-connect-provider"));
    assert_eq!(world.mutating_aws_calls(), Vec::<String>::new());
    world.sandbox.shutdown().await;
}

/// A new identity (here: another role) restarts the pods exactly once, through the pod
/// template's identity annotation; nothing else in the Deployment changes.
#[tokio::test(flavor = "multi_thread")]
async fn a_changed_identity_rolls_the_pods_once() {
    let world = World::start().await;
    world.deploy(&[]).await;
    let (code, plan) = world
        .plan_json(&["--role-name", "cni-metrics-helper-v2"])
        .await;
    assert_eq!(code, Some(2));
    assert_eq!(
        changed(&plan),
        BTreeSet::from([
            "create IAM role cni-metrics-helper-v2".to_owned(),
            "create IAM role policy attachment cni-metrics-helper-v2 -> AmazonEKSVPCCNIMetricsHelperPolicy".to_owned(),
            "update ServiceAccount kube-system/cni-metrics-helper".to_owned(),
            "update Deployment kube-system/cni-metrics-helper".to_owned(),
        ])
    );
    let deployment_diff = plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["kind"] == "Deployment")
        .expect("deployment")["diff"]
        .clone();
    assert_eq!(
        deployment_diff.as_array().map(Vec::len),
        Some(1),
        "{deployment_diff}"
    );
    assert!(
        deployment_diff[0]
            .as_str()
            .is_some_and(|line| line.contains("cni-metrics-xtask/identity")),
        "{deployment_diff}"
    );
    world
        .deploy(&["--role-name", "cni-metrics-helper-v2"])
        .await;
    let (code, _) = world
        .plan_json(&["--role-name", "cni-metrics-helper-v2"])
        .await;
    assert_eq!(code, Some(0));
    world.sandbox.shutdown().await;
}

/// Our publisher instead of the upstream helper: a namespaced Role instead of the
/// ClusterRole, leader election with its Lease Role, two replicas.
#[tokio::test(flavor = "multi_thread")]
async fn the_publisher_image_deploys_with_its_narrower_rbac_and_converges() {
    let world = World::start().await;
    let publisher = [
        "--publisher-image",
        "registry.example.com/cni-metrics-publisher:v0.1.0",
        "--leader-elect",
    ];
    world.deploy(&publisher).await;
    let client = world.kube().await;
    let roles: Api<k8s_openapi::api::rbac::v1::Role> =
        Api::namespaced(client.clone(), "kube-system");
    let role = roles.get("cni-metrics-helper").await.expect("the Role");
    let resources: Vec<String> = role
        .rules
        .unwrap_or_default()
        .into_iter()
        .flat_map(|rule| rule.resources.unwrap_or_default())
        .collect();
    assert_eq!(resources, ["pods", "pods/proxy"]);
    let lease_role = roles
        .get("cni-metrics-helper-leader-election")
        .await
        .expect("the Lease Role");
    assert_eq!(
        lease_role.rules.expect("rules")[0].resources.as_deref(),
        Some(&["leases".to_owned()][..])
    );
    let cluster_roles: Api<ClusterRole> = Api::all(client.clone());
    assert!(
        cluster_roles
            .get_opt("cni-metrics-helper")
            .await
            .expect("read")
            .is_none(),
        "no cluster-wide role"
    );
    let deployments: Api<Deployment> = Api::namespaced(client, "kube-system");
    let live = deployments
        .get("cni-metrics-helper")
        .await
        .expect("deployment");
    assert_eq!(live.spec.as_ref().and_then(|spec| spec.replicas), Some(2));
    let (code, _) = world.plan_json(&publisher).await;
    assert_eq!(code, Some(0), "converged");
    world.sandbox.shutdown().await;
}

/// The pod knobs from a config file deploy and converge; a knob changed in the file is
/// drift `plan` shows field by field, and `deploy` repairs it.
#[tokio::test(flavor = "multi_thread")]
async fn pod_knobs_deploy_converge_and_a_changed_knob_is_drift() {
    let world = World::start().await;
    let knobs = "priority-class-name: system-cluster-critical\n\
                 log-level: debug\n\
                 node-selector:\n  node-pool: system\n\
                 pod-labels:\n  team: networking\n\
                 tolerations:\n  - key: CriticalAddonsOnly\n    operator: Exists\n\
                 resources:\n  requests:\n    cpu: 100m\n    memory: 128Mi\n";
    let config = world.write_script("knobs.yaml", knobs);
    let config = config.to_string_lossy().into_owned();
    let with_config = ["--config", config.as_str()];
    world.deploy(&with_config).await;
    let (code, plan) = world.plan_json(&with_config).await;
    assert_eq!(code, Some(0), "converged: {plan}");

    let deployments: Api<Deployment> = Api::namespaced(world.kube().await, "kube-system");
    let live = deployments
        .get("cni-metrics-helper")
        .await
        .expect("deployment");
    let pod = live.spec.expect("spec").template.spec.expect("pod spec");
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-cluster-critical")
    );
    assert_eq!(pod.node_selector.expect("selector")["node-pool"], "system");
    assert_eq!(
        pod.tolerations.expect("tolerations")[0].key.as_deref(),
        Some("CriticalAddonsOnly")
    );

    // The file changes: another toleration.
    std::fs::write(&config, knobs.replace("CriticalAddonsOnly", "dedicated"))
        .expect("config rewritten");
    let (code, plan) = world.plan_json(&with_config).await;
    assert_eq!(code, Some(2), "{plan}");
    assert_eq!(
        changed(&plan),
        BTreeSet::from(["update Deployment kube-system/cni-metrics-helper".to_owned()])
    );
    let deployment_diff = plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["kind"] == "Deployment")
        .expect("deployment")["diff"]
        .to_string();
    assert!(
        deployment_diff.contains(".spec.template.spec.tolerations")
            && deployment_diff.contains("CriticalAddonsOnly")
            && deployment_diff.contains("dedicated"),
        "the drift names the field, the live and the desired value: {deployment_diff}"
    );
    world.deploy(&with_config).await;
    let (code, plan) = world.plan_json(&with_config).await;
    assert_eq!(code, Some(0), "deploy repaired the drift: {plan}");
    let live = deployments
        .get("cni-metrics-helper")
        .await
        .expect("deployment");
    let tolerations = live
        .spec
        .and_then(|spec| spec.template.spec)
        .and_then(|pod| pod.tolerations)
        .expect("tolerations");
    assert_eq!(tolerations[0].key.as_deref(), Some("dedicated"));
    world.sandbox.shutdown().await;
}
