//! Safe on a shared account: what is not ours is never written without `--adopt`, the
//! same cluster name in two regions gets two sets of resources, `destroy` removes only our
//! parts, and a cluster set up by hand (the EKS user guide, upstream's manifest) can be
//! moved over. Everything runs the real binary against the sandbox; the foreign resources
//! are made with clients we did not write where that is how a user makes them (boto3 for
//! the user guide's IAM commands, kubectl for manifests).

use std::collections::BTreeMap;
use std::path::PathBuf;

use aws_sdk_iam::types::Tag;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::Api;
use serde_json::{Value, json};

use crate::world::{
    DASHBOARD, POLICY, ROLE, World, changed, default_alarms, default_names, stderr,
};

const PUBLISHER: [&str; 3] = [
    "--publisher-image",
    "registry.example.com/cni-metrics-publisher:v0.1.0",
    "--leader-elect",
];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn trust_for_ec2() -> String {
    json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
    .to_string()
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build().expect("tag")
}

/// The change planned for `kind name`, from `plan --output json`.
fn planned<'a>(plan: &'a Value, kind: &str, name: &str) -> &'a Value {
    plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|change| change["kind"] == kind && change["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {plan}"))
}

/// `deploy` with `args` is refused: exit 1, one error line naming `kind name` and the way
/// out, nothing written to AWS or Kubernetes; and `plan` shows the same resource as a
/// conflict and exits 1.
async fn assert_refused(world: &World, args: &[&str], kind: &str, name: &str, rename: &str) {
    world.clear_request_logs();
    let mut deploy = vec!["deploy", "--cluster", "sandbox", "--yes"];
    deploy.extend(args);
    let output = world.xtask(&deploy).await;
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{args:?}: {message}");
    let error: Vec<&str> = message
        .lines()
        .filter(|line| line.starts_with("error:"))
        .collect();
    assert_eq!(error.len(), 1, "{message}");
    assert!(
        error[0].contains(&format!("{kind} {name}")) && error[0].contains("--adopt"),
        "{args:?}: {message}"
    );
    assert!(error[0].contains(rename), "{args:?}: {message}");
    assert_eq!(world.mutating_aws_calls(), Vec::<String>::new(), "{args:?}");
    assert_eq!(world.kubernetes_writes(), Vec::<String>::new(), "{args:?}");

    let (output, plan) = world.json("plan", args).await;
    assert_eq!(output.status.code(), Some(1), "{plan}");
    assert_eq!(planned(&plan, kind, name)["action"], "conflict", "{plan}");
    assert!(plan["summary"]["conflict"].as_u64() >= Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_foreign_resource_is_a_conflict_until_adopted() {
    let world = World::start().await;
    let iam = world.iam();
    let cloudwatch = world.cloudwatch();
    let eks = aws_sdk_eks::Client::new(&world.sandbox.sdk_config());

    // The policy of our name, made by hand.
    let policy_document = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Action": "cloudwatch:PutMetricData", "Resource": "*"}]})
    .to_string();
    iam.create_policy()
        .policy_name(POLICY)
        .policy_document(&policy_document)
        .send()
        .await
        .expect("policy");
    assert_refused(&world, &[], "IAM policy", POLICY, "--policy-name").await;
    iam.delete_policy()
        .policy_arn(world.policy_arn())
        .send()
        .await
        .expect("deleted");

    // The role of our name: by hand, then made by this tool for the same cluster name in
    // another region, then by an earlier version (no region tag).
    let foreign_tags = [
        vec![],
        vec![
            tag("managed-by", "cni-metrics-xtask"),
            tag("cni-metrics-xtask/cluster", "sandbox"),
            tag("cni-metrics-xtask/region", "eu-west-1"),
        ],
        vec![
            tag("managed-by", "cni-metrics-xtask"),
            tag("cni-metrics-xtask/cluster", "sandbox"),
        ],
    ];
    for tags in foreign_tags {
        iam.create_role()
            .role_name(ROLE)
            .assume_role_policy_document(trust_for_ec2())
            .set_tags(Some(tags))
            .send()
            .await
            .expect("role");
        assert_refused(&world, &[], "IAM role", ROLE, "--role-name").await;
        iam.delete_role()
            .role_name(ROLE)
            .send()
            .await
            .expect("deleted");
    }

    // The dashboard of our name: someone else's, then ours for another region.
    let bodies = [
        json!({"widgets": [{"type": "text", "x": 0, "y": 0, "width": 6, "height": 2,
            "properties": {"markdown": "the network team's dashboard"}}]}),
        json!({"widgets": [{"type": "text", "x": 0, "y": 0, "width": 6, "height": 2,
            "properties": {"markdown": "Managed by `cni-metrics-xtask` for cluster `sandbox` in `eu-west-1`"}}]}),
    ];
    for body in bodies {
        cloudwatch
            .put_dashboard()
            .dashboard_name(DASHBOARD)
            .dashboard_body(body.to_string())
            .send()
            .await
            .expect("dashboard");
        assert_refused(
            &world,
            &[],
            "CloudWatch dashboard",
            DASHBOARD,
            "--dashboard-name",
        )
        .await;
        cloudwatch
            .delete_dashboards()
            .dashboard_names(DASHBOARD)
            .send()
            .await
            .expect("deleted");
    }

    // Each Kubernetes kind, made with kubectl as a user would: the upstream helper's
    // objects, then the publisher's namespaced ones. A ServiceAccount from `kubectl create`
    // has no field that would conflict with ours: only its missing label says it is not
    // ours.
    let upstream_mode: [(&[&str], &str, &str); 4] = [
        (
            &["serviceaccount", "cni-metrics-helper", "-n", "kube-system"],
            "ServiceAccount",
            "kube-system/cni-metrics-helper",
        ),
        (
            &[
                "clusterrole",
                "cni-metrics-helper",
                "--verb=get",
                "--resource=pods",
            ],
            "ClusterRole",
            "cni-metrics-helper",
        ),
        (
            &[
                "clusterrolebinding",
                "cni-metrics-helper",
                "--clusterrole=cni-metrics-helper",
                "--serviceaccount=kube-system:cni-metrics-helper",
            ],
            "ClusterRoleBinding",
            "cni-metrics-helper",
        ),
        (
            &[
                "deployment",
                "cni-metrics-helper",
                "-n",
                "kube-system",
                "--image=example.com/helper:old",
            ],
            "Deployment",
            "kube-system/cni-metrics-helper",
        ),
    ];
    let publisher_mode: [(&[&str], &str, &str); 4] = [
        (
            &[
                "role",
                "cni-metrics-helper",
                "-n",
                "kube-system",
                "--verb=get",
                "--resource=pods",
            ],
            "Role",
            "kube-system/cni-metrics-helper",
        ),
        (
            &[
                "rolebinding",
                "cni-metrics-helper",
                "-n",
                "kube-system",
                "--role=cni-metrics-helper",
                "--serviceaccount=kube-system:cni-metrics-helper",
            ],
            "RoleBinding",
            "kube-system/cni-metrics-helper",
        ),
        (
            &[
                "role",
                "cni-metrics-helper-leader-election",
                "-n",
                "kube-system",
                "--verb=get",
                "--resource=leases",
            ],
            "Role",
            "kube-system/cni-metrics-helper-leader-election",
        ),
        (
            &[
                "rolebinding",
                "cni-metrics-helper-leader-election",
                "-n",
                "kube-system",
                "--role=cni-metrics-helper-leader-election",
                "--serviceaccount=kube-system:cni-metrics-helper",
            ],
            "RoleBinding",
            "kube-system/cni-metrics-helper-leader-election",
        ),
    ];
    for (mode, objects) in [(&[][..], upstream_mode), (&PUBLISHER[..], publisher_mode)] {
        for (create, kind, name) in objects {
            world.kubectl_create(create).await;
            assert_refused(&world, mode, kind, name, "--adopt").await;
            let (namespace, short) = name.split_once('/').unwrap_or(("", name));
            let mut delete = vec!["delete", kind, short];
            if !namespace.is_empty() {
                delete.extend(["-n", namespace]);
            }
            world.kubectl(&delete).await;
        }
    }

    // A Pod Identity association for our service account, made by hand.
    world
        .sandbox
        .install_pod_identity_agent()
        .await
        .expect("agent");
    let someone_elses_role = format!(
        "arn:aws:iam::{}:role/someone-elses-role",
        world.sandbox.account()
    );
    eks.create_pod_identity_association()
        .cluster_name("sandbox")
        .namespace("kube-system")
        .service_account("cni-metrics-helper")
        .role_arn(&someone_elses_role)
        .send()
        .await
        .expect("association");
    assert_refused(
        &world,
        &["--identity", "pod-identity"],
        "EKS Pod Identity association",
        "kube-system/cni-metrics-helper",
        "--adopt",
    )
    .await;

    // All of them at once, then adopted: each is its own step in the plan, and deploy
    // marks them ours and converges them.
    iam.create_policy()
        .policy_name(POLICY)
        .policy_document(&policy_document)
        .send()
        .await
        .expect("policy");
    iam.create_role()
        .role_name(ROLE)
        .assume_role_policy_document(trust_for_ec2())
        .send()
        .await
        .expect("role");
    cloudwatch
        .put_dashboard()
        .dashboard_name(DASHBOARD)
        .dashboard_body(bodies_for_adoption())
        .send()
        .await
        .expect("dashboard");
    for (create, _, _) in upstream_mode {
        world.kubectl_create(create).await;
    }
    let args = ["--identity", "pod-identity", "--adopt"];
    let (output, plan) = world.json("plan", &args).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let adopted: Vec<(String, String)> = plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|change| change["action"] == "adopt")
        .map(|change| {
            (
                change["kind"].as_str().unwrap_or_default().to_owned(),
                change["name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(adopted.len(), 8, "{plan}");
    assert_eq!(plan["summary"]["adopt"], 8);
    assert_eq!(plan["summary"]["conflict"], 0);
    let role_diff = planned(&plan, "IAM role", ROLE)["diff"].to_string();
    assert!(
        role_diff.contains("+ tag cni-metrics-xtask/region=us-west-2")
            && role_diff.contains("trust policy"),
        "{role_diff}"
    );
    let account_diff =
        planned(&plan, "ServiceAccount", "kube-system/cni-metrics-helper")["diff"].to_string();
    assert!(
        account_diff.contains("app.kubernetes.io/managed-by"),
        "{account_diff}"
    );

    world.deploy(&args).await;
    let role = iam
        .get_role()
        .role_name(ROLE)
        .send()
        .await
        .expect("role")
        .role
        .expect("role");
    let role_tags: BTreeMap<&str, &str> = role
        .tags()
        .iter()
        .map(|tag| (tag.key(), tag.value()))
        .collect();
    assert_eq!(role_tags.get("managed-by"), Some(&"cni-metrics-xtask"));
    assert_eq!(role_tags.get("cni-metrics-xtask/cluster"), Some(&"sandbox"));
    assert_eq!(
        role_tags.get("cni-metrics-xtask/region"),
        Some(&"us-west-2")
    );
    let policy = iam
        .get_policy()
        .policy_arn(world.policy_arn())
        .send()
        .await
        .expect("policy")
        .policy
        .expect("policy");
    assert!(
        policy
            .tags()
            .iter()
            .any(|tag| tag.key() == "managed-by" && tag.value() == "cni-metrics-xtask")
    );
    let body = cloudwatch
        .get_dashboard()
        .dashboard_name(DASHBOARD)
        .send()
        .await
        .expect("dashboard");
    assert!(
        body.dashboard_body()
            .unwrap_or_default()
            .contains("Managed by `cni-metrics-xtask` for cluster `sandbox` in `us-west-2`")
    );
    let client = world.kube().await;
    let account: ServiceAccount = Api::namespaced(client.clone(), "kube-system")
        .get("cni-metrics-helper")
        .await
        .expect("SA");
    assert_eq!(
        account.metadata.labels.expect("labels")["app.kubernetes.io/managed-by"],
        "cni-metrics-xtask"
    );
    let association_id = eks
        .list_pod_identity_associations()
        .cluster_name("sandbox")
        .send()
        .await
        .expect("listed")
        .associations()[0]
        .association_id()
        .expect("id")
        .to_owned();
    let association = eks
        .describe_pod_identity_association()
        .cluster_name("sandbox")
        .association_id(association_id)
        .send()
        .await
        .expect("described")
        .association
        .expect("association");
    assert_eq!(
        association.role_arn(),
        Some(format!("arn:aws:iam::{}:role/{ROLE}", world.sandbox.account()).as_str())
    );
    assert_eq!(
        association.tags().and_then(|tags| tags.get("managed-by")),
        Some(&"cni-metrics-xtask".to_owned())
    );

    // Adopted means ours: the next plan, without --adopt, has nothing left to do.
    let (code, plan) = world.plan_json(&["--identity", "pod-identity"]).await;
    assert_eq!(code, Some(0), "{plan}");
    world.sandbox.shutdown().await;
}

fn bodies_for_adoption() -> String {
    json!({"widgets": [{"type": "text", "x": 0, "y": 0, "width": 6, "height": 2,
        "properties": {"markdown": "made in the console"}}]})
    .to_string()
}

/// What a cluster's deployment looks like from outside: its role (trust, tags, policies),
/// its dashboard, and its Kubernetes objects with their resource versions.
async fn snapshot(world: &World, role: &str, dashboard: &str) -> Value {
    let iam = world.iam();
    let live_role = iam.get_role().role_name(role).send().await.expect("role");
    let attached = iam
        .list_attached_role_policies()
        .role_name(role)
        .send()
        .await
        .expect("attached");
    let body = world
        .cloudwatch()
        .get_dashboard()
        .dashboard_name(dashboard)
        .send()
        .await
        .expect("dashboard");
    let client = world.kube().await;
    let account: ServiceAccount = Api::namespaced(client.clone(), "kube-system")
        .get("cni-metrics-helper")
        .await
        .expect("SA");
    let cluster_role: ClusterRole = Api::all(client.clone())
        .get("cni-metrics-helper")
        .await
        .expect("ClusterRole");
    let binding: ClusterRoleBinding = Api::all(client.clone())
        .get("cni-metrics-helper")
        .await
        .expect("ClusterRoleBinding");
    let deployment: Deployment = Api::namespaced(client, "kube-system")
        .get("cni-metrics-helper")
        .await
        .expect("Deployment");
    json!({
        "role": format!("{:?}", live_role.role),
        "attached": format!("{:?}", attached.attached_policies()),
        "dashboard": body.dashboard_body(),
        "objects": [account, cluster_role, binding, deployment.metadata],
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_cluster_name_in_two_regions_keeps_to_its_own_resources() {
    let west = World::start().await;
    let east = World::start_beside(&west, "eu-west-1").await;
    let (west_role, west_dashboard) = default_names("us-west-2");
    let (east_role, east_dashboard) = default_names("eu-west-1");
    assert_eq!(west_role, ROLE);
    assert_ne!(west_role, east_role);
    assert_ne!(west_dashboard, east_dashboard);

    west.deploy(&[]).await;
    east.deploy(&[]).await;

    // Dashboards are global: both are listed from either region, as on AWS.
    for world in [&west, &east] {
        let listed = world
            .cloudwatch()
            .list_dashboards()
            .send()
            .await
            .expect("listed");
        let names: Vec<&str> = listed
            .dashboard_entries()
            .iter()
            .filter_map(|entry| entry.dashboard_name())
            .collect();
        assert!(
            names.contains(&west_dashboard.as_str()) && names.contains(&east_dashboard.as_str()),
            "{names:?}"
        );
    }

    // Pointing one cluster at the other's names is the collision real AWS would have: a
    // conflict, not a take-over.
    let (output, plan) = west
        .json(
            "plan",
            &[
                "--role-name",
                &east_role,
                "--dashboard-name",
                &east_dashboard,
            ],
        )
        .await;
    assert_eq!(output.status.code(), Some(1));
    let role = planned(&plan, "IAM role", &east_role);
    assert_eq!(role["action"], "conflict");
    assert!(
        role["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("for cluster sandbox in eu-west-1")),
        "{role}"
    );
    assert_eq!(
        planned(&plan, "CloudWatch dashboard", &east_dashboard)["action"],
        "conflict"
    );

    let before = snapshot(&east, &east_role, &east_dashboard).await;
    let output = west
        .xtask(&["destroy", "--cluster", "sandbox", "--yes"])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .contains(&format!("kept: still attached to {east_role}")),
        "the shared policy stays while the other region's role uses it"
    );
    let after = snapshot(&east, &east_role, &east_dashboard).await;
    assert_eq!(
        before, after,
        "destroying us-west-2 left eu-west-1 as it was"
    );
    assert!(
        west.iam()
            .get_role()
            .role_name(&west_role)
            .send()
            .await
            .is_err()
    );
    assert!(
        west.cloudwatch()
            .get_dashboard()
            .dashboard_name(&west_dashboard)
            .send()
            .await
            .is_err()
    );
    let (code, plan) = east.plan_json(&[]).await;
    assert_eq!(code, Some(0), "{plan}");
    east.sandbox.shutdown().await;
    west.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn destroy_detaches_only_our_policy_and_keeps_a_role_someone_added_to() {
    let world = World::start().await;
    world.deploy(&[]).await;
    let iam = world.iam();
    let theirs = iam
        .create_policy()
        .policy_name("someone-elses-policy")
        .policy_document(
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Action": "s3:GetObject", "Resource": "*"}]})
            .to_string(),
        )
        .send()
        .await
        .expect("policy")
        .policy
        .and_then(|policy| policy.arn)
        .expect("arn");
    iam.attach_role_policy()
        .role_name(ROLE)
        .policy_arn(&theirs)
        .send()
        .await
        .expect("attached");
    iam.put_role_policy()
        .role_name(ROLE)
        .policy_name("someone-elses-inline")
        .policy_document(
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Action": "sqs:SendMessage", "Resource": "*"}]})
            .to_string(),
        )
        .send()
        .await
        .expect("inline");

    let output = world
        .xtask(&["destroy", "--cluster", "sandbox", "--yes"])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains(
            "kept: it also has attached policy someone-elses-policy, inline policy someone-elses-inline"
        ),
        "{printed}"
    );
    assert!(
        stderr(&output).contains("keeping the IAM role"),
        "{}",
        stderr(&output)
    );
    let attached = iam
        .list_attached_role_policies()
        .role_name(ROLE)
        .send()
        .await
        .expect("the role is kept");
    let arns: Vec<&str> = attached
        .attached_policies()
        .iter()
        .filter_map(|policy| policy.policy_arn())
        .collect();
    assert_eq!(arns, [theirs.as_str()], "only our policy was detached");
    assert!(iam.get_policy().policy_arn(&theirs).send().await.is_ok());
    assert!(
        iam.get_policy()
            .policy_arn(world.policy_arn())
            .send()
            .await
            .is_err(),
        "our policy, used by no role any more, is gone"
    );
    let deployments: Api<Deployment> = Api::namespaced(world.kube().await, "kube-system");
    assert!(
        deployments
            .get_opt("cni-metrics-helper")
            .await
            .expect("read")
            .is_none()
    );
    world.sandbox.shutdown().await;
}

/// The path from the EKS user guide's manual install (IAM made with the AWS CLI, the
/// upstream manifest applied with kubectl, the service account annotated by hand) to a
/// deployment this tool owns, and back out with destroy.
#[tokio::test(flavor = "multi_thread")]
async fn a_manual_install_from_the_user_guide_is_adopted_step_by_step() {
    let world = World::start().await;
    let guide_role = "AmazonEKSVPCCNIMetricsHelperRole";
    let role_arn = world
        .boto3(&fixture("user_guide_iam.py"), &["sandbox"])
        .await;
    assert!(role_arn.trim().ends_with(guide_role), "{role_arn}");
    let manifest = fixture("upstream-manifest.yaml");
    world
        .kubectl(&[
            "apply",
            "--validate=false",
            "-f",
            &manifest.display().to_string(),
        ])
        .await;
    world
        .kubectl(&[
            "annotate",
            "serviceaccount",
            "cni-metrics-helper",
            "-n",
            "kube-system",
            &format!("eks.amazonaws.com/role-arn={}", role_arn.trim()),
        ])
        .await;

    // 1. Without --adopt: every hand-made resource is a conflict, and plan exits 1.
    let adopt_args = ["--role-name", guide_role];
    let (output, plan) = world.json("plan", &adopt_args).await;
    assert_eq!(output.status.code(), Some(1), "{plan}");
    let conflicts: Vec<String> = plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|change| change["action"] == "conflict")
        .map(|change| {
            format!(
                "{} {}",
                change["kind"].as_str().unwrap_or(""),
                change["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        conflicts,
        [
            format!("IAM policy {POLICY}"),
            format!("IAM role {guide_role}"),
            "ServiceAccount kube-system/cni-metrics-helper".to_owned(),
            "ClusterRole cni-metrics-helper".to_owned(),
            "ClusterRoleBinding cni-metrics-helper".to_owned(),
            "Deployment kube-system/cni-metrics-helper".to_owned(),
        ]
    );
    assert!(
        planned(&plan, "Deployment", "kube-system/cni-metrics-helper")["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("kubectl-client-side-apply")),
        "{plan}"
    );

    // 2. With --adopt: each adoption is its own step, with its diff.
    let mut with_adopt = adopt_args.to_vec();
    with_adopt.push("--adopt");
    let (code, plan) = world.plan_json(&with_adopt).await;
    assert_eq!(code, Some(2), "{plan}");
    assert_eq!(plan["summary"]["adopt"], 6, "{plan}");
    let policy_diff = planned(&plan, "IAM policy", POLICY)["diff"].to_string();
    assert!(
        policy_diff.contains("cloudwatch:namespace") && policy_diff.contains("ec2:DescribeTags"),
        "the policy is narrowed to the namespace condition: {policy_diff}"
    );
    assert_eq!(
        changed(&plan)
            .into_iter()
            .filter(|change| change.starts_with("create"))
            .collect::<Vec<_>>(),
        default_alarms("create")
            .into_iter()
            .chain([format!("create CloudWatch dashboard {DASHBOARD}")])
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>(),
        "the guide's role already has the policy attached"
    );

    // 3. deploy --adopt converges.
    world.clear_request_logs();
    world.deploy(&with_adopt).await;
    let iam = world.iam();
    let policy = iam
        .get_policy()
        .policy_arn(world.policy_arn())
        .send()
        .await
        .expect("policy")
        .policy
        .expect("policy");
    assert_eq!(
        policy.default_version_id(),
        Some("v2"),
        "a new default version"
    );
    let version = iam
        .get_policy_version()
        .policy_arn(world.policy_arn())
        .version_id("v2")
        .send()
        .await
        .expect("version");
    let document = xtask::documents::parse_iam_document(
        version
            .policy_version()
            .and_then(|version| version.document())
            .expect("document"),
    )
    .expect("JSON");
    assert_eq!(
        document["Statement"][0]["Condition"]["StringEquals"]["cloudwatch:namespace"],
        "Kubernetes"
    );
    let client = world.kube().await;
    let deployment: Deployment = Api::namespaced(client.clone(), "kube-system")
        .get("cni-metrics-helper")
        .await
        .expect("deployment");
    assert_eq!(
        deployment.metadata.labels.as_ref().expect("labels")["app.kubernetes.io/managed-by"],
        "cni-metrics-xtask"
    );
    let managers: Vec<String> = deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|entry| entry.manager.clone())
        .collect();
    assert!(
        managers.contains(&"cni-metrics-xtask".to_owned()),
        "{managers:?}"
    );
    let container_env = serde_json::to_value(&deployment.spec.expect("spec").template)
        .expect("JSON")["spec"]["containers"][0]["env"]
        .clone();
    assert!(
        container_env
            .as_array()
            .expect("env")
            .contains(&json!({"name": "AWS_CLUSTER_ID", "value": "sandbox"})),
        "{container_env}"
    );
    let cluster_role: ClusterRole = Api::all(client.clone())
        .get("cni-metrics-helper")
        .await
        .expect("ClusterRole");
    assert_eq!(
        cluster_role.metadata.labels.expect("labels")["app.kubernetes.io/managed-by"],
        "cni-metrics-xtask"
    );

    // 4. From now on it is ours: a plan without --adopt has nothing to do.
    let (code, plan) = world.plan_json(&adopt_args).await;
    assert_eq!(code, Some(0), "{plan}");

    // 5. destroy removes what is now ours.
    let mut destroy = vec!["destroy", "--cluster", "sandbox", "--yes"];
    destroy.extend(adopt_args);
    let output = world.xtask(&destroy).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(iam.get_role().role_name(guide_role).send().await.is_err());
    assert!(
        iam.get_policy()
            .policy_arn(world.policy_arn())
            .send()
            .await
            .is_err()
    );
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "kube-system");
    assert!(
        accounts
            .get_opt("cni-metrics-helper")
            .await
            .expect("read")
            .is_none()
    );
    let cluster_roles: Api<ClusterRole> = Api::all(client);
    assert!(
        cluster_roles
            .get_opt("cni-metrics-helper")
            .await
            .expect("read")
            .is_none()
    );
    world.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn switching_modes_removes_the_rbac_no_longer_needed() {
    let world = World::start().await;
    world.deploy(&[]).await;
    let client = world.kube().await;
    let cluster_roles: Api<ClusterRole> = Api::all(client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let roles: Api<Role> = Api::namespaced(client.clone(), "kube-system");
    let role_bindings: Api<RoleBinding> = Api::namespaced(client.clone(), "kube-system");
    assert!(
        cluster_roles
            .get_opt("cni-metrics-helper")
            .await
            .expect("read")
            .is_some()
    );

    // Upstream helper -> our publisher with leader election: the cluster-wide pods/proxy
    // grant goes.
    let (code, plan) = world.plan_json(&PUBLISHER).await;
    assert_eq!(code, Some(2));
    let changes = changed(&plan);
    for expected in [
        "delete ClusterRole cni-metrics-helper",
        "delete ClusterRoleBinding cni-metrics-helper",
        "create Role kube-system/cni-metrics-helper",
        "create Role kube-system/cni-metrics-helper-leader-election",
    ] {
        assert!(changes.contains(expected), "{expected} in {changes:?}");
    }
    world.deploy(&PUBLISHER).await;
    assert!(
        cluster_roles
            .get_opt("cni-metrics-helper")
            .await
            .expect("read")
            .is_none()
    );
    assert!(
        bindings
            .get_opt("cni-metrics-helper")
            .await
            .expect("read")
            .is_none()
    );
    // The Lease Role reaches our Lease only, except for create, which cannot be
    // restricted by name.
    let lease_role = roles
        .get("cni-metrics-helper-leader-election")
        .await
        .expect("Lease Role");
    let rules = serde_json::to_value(lease_role.rules.expect("rules")).expect("JSON");
    assert_eq!(
        rules,
        json!([
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "resourceNames": ["cni-metrics-publisher"], "verbs": ["get", "update"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]}
        ])
    );

    // Dropping leader election removes its Role and RoleBinding; someone else's
    // ClusterRole of our name, made meanwhile, is neither touched nor mentioned.
    world
        .kubectl_create(&[
            "clusterrole",
            "cni-metrics-helper",
            "--verb=get",
            "--resource=pods",
        ])
        .await;
    let single = &PUBLISHER[..2];
    let (code, plan) = world.plan_json(single).await;
    assert_eq!(code, Some(2));
    assert_eq!(
        changed(&plan),
        [
            "delete Role kube-system/cni-metrics-helper-leader-election",
            "delete RoleBinding kube-system/cni-metrics-helper-leader-election",
            "update Deployment kube-system/cni-metrics-helper",
        ]
        .map(str::to_owned)
        .into(),
        "{plan}"
    );
    world.deploy(single).await;
    assert!(
        roles
            .get_opt("cni-metrics-helper-leader-election")
            .await
            .expect("read")
            .is_none()
    );
    assert!(
        role_bindings
            .get_opt("cni-metrics-helper-leader-election")
            .await
            .expect("read")
            .is_none()
    );

    // destroy, with the upstream helper's flags, still finds the publisher's Role: it
    // looks for everything the tool can make, not only what the flags render.
    let output = world
        .xtask(&["destroy", "--cluster", "sandbox", "--yes"])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        roles
            .get_opt("cni-metrics-helper")
            .await
            .expect("read")
            .is_none()
    );
    assert!(
        role_bindings
            .get_opt("cni-metrics-helper")
            .await
            .expect("read")
            .is_none()
    );
    assert!(
        cluster_roles
            .get_opt("cni-metrics-helper")
            .await
            .expect("read")
            .is_some(),
        "someone else's ClusterRole is kept"
    );
    world.sandbox.shutdown().await;
}
