//! Identity modes and preflight end to end in the sandbox: IRSA -> Pod Identity -> IRSA
//! converges with one restart per switch, `auto` follows the agent add-on, and every
//! preflight failure names its fix.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::Api;
use serde_json::Value;

use crate::world::{ROLE, World, changed, stderr};

async fn role_annotation(world: &World) -> Option<String> {
    let accounts: Api<ServiceAccount> = Api::namespaced(world.kube().await, "kube-system");
    let account = accounts
        .get("cni-metrics-helper")
        .await
        .expect("service account");
    account
        .metadata
        .annotations
        .and_then(|annotations| annotations.get("eks.amazonaws.com/role-arn").cloned())
}

async fn associations(world: &World) -> Vec<String> {
    let eks = aws_sdk_eks::Client::new(&world.sandbox.sdk_config());
    let listed = eks
        .list_pod_identity_associations()
        .cluster_name("sandbox")
        .namespace("kube-system")
        .service_account("cni-metrics-helper")
        .send()
        .await
        .expect("listed");
    let mut roles = Vec::new();
    for summary in listed.associations() {
        let described = eks
            .describe_pod_identity_association()
            .cluster_name("sandbox")
            .association_id(summary.association_id().expect("id"))
            .send()
            .await
            .expect("described");
        roles.push(
            described
                .association
                .and_then(|a| a.role_arn)
                .unwrap_or_default(),
        );
    }
    roles
}

#[tokio::test(flavor = "multi_thread")]
async fn switching_irsa_to_pod_identity_and_back_converges_with_one_restart_each() {
    let world = World::start().await;
    world
        .sandbox
        .install_pod_identity_agent()
        .await
        .expect("agent installed");
    let role_arn = format!("arn:aws:iam::{}:role/{ROLE}", world.sandbox.account());
    world.deploy(&[]).await;
    assert_eq!(
        role_annotation(&world).await.as_deref(),
        Some(role_arn.as_str())
    );
    assert!(associations(&world).await.is_empty());

    let (code, plan) = world.plan_json(&["--identity", "pod-identity"]).await;
    assert_eq!(code, Some(2));
    assert_eq!(
        changed(&plan),
        BTreeSet::from([
            format!("update IAM role {ROLE}"),
            "create EKS Pod Identity association kube-system/cni-metrics-helper".to_owned(),
            "update ServiceAccount kube-system/cni-metrics-helper".to_owned(),
            "update Deployment kube-system/cni-metrics-helper".to_owned(),
        ])
    );
    world.deploy(&["--identity", "pod-identity"]).await;
    assert_eq!(
        role_annotation(&world).await,
        None,
        "no IRSA annotation in pod-identity mode"
    );
    assert_eq!(associations(&world).await, std::slice::from_ref(&role_arn));
    let (code, _) = world.plan_json(&["--identity", "pod-identity"]).await;
    assert_eq!(code, Some(0), "pod-identity mode converged");

    let (code, plan) = world.plan_json(&["--identity", "irsa"]).await;
    assert_eq!(code, Some(2));
    assert!(
        changed(&plan)
            .contains("delete EKS Pod Identity association kube-system/cni-metrics-helper"),
        "{plan}"
    );
    assert!(
        changed(&plan).contains("update Deployment kube-system/cni-metrics-helper"),
        "{plan}"
    );
    world.deploy(&["--identity", "irsa"]).await;
    assert_eq!(
        role_annotation(&world).await.as_deref(),
        Some(role_arn.as_str())
    );
    assert!(
        associations(&world).await.is_empty(),
        "the old binding is removed"
    );
    let (code, _) = world.plan_json(&[]).await;
    assert_eq!(code, Some(0), "IRSA mode converged");
    world.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_picks_pod_identity_only_when_the_agent_is_active_and_says_why() {
    let world = World::start().await;
    let (output, plan) = world.json("plan", &["--identity", "auto"]).await;
    assert!(
        stderr(&output).contains(
            "identity auto: irsa, because the eks-pod-identity-agent add-on is not ACTIVE"
        ),
        "{}",
        stderr(&output)
    );
    assert_eq!(plan["identity"], "irsa");
    world
        .sandbox
        .install_pod_identity_agent()
        .await
        .expect("agent installed");
    let (output, plan) = world.json("plan", &["--identity", "auto"]).await;
    assert!(stderr(&output).contains(
        "identity auto: pod-identity, because the eks-pod-identity-agent add-on is ACTIVE"
    ));
    assert_eq!(plan["identity"], "pod-identity");
    world.sandbox.shutdown().await;
}

/// With the agent ACTIVE, auto still picks IRSA for an upstream helper too old to use Pod
/// Identity, and says why; an explicit pod-identity is refused there, changing nothing.
#[tokio::test(flavor = "multi_thread")]
async fn auto_picks_irsa_for_a_helper_too_old_for_pod_identity_and_says_why() {
    let world = World::start_with(|options| options.pod_identity_agent = true).await;
    let (output, plan) = world
        .json("plan", &["--identity", "auto", "--version", "v1.15.4"])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(
            "identity auto: irsa, because upstream's helper v1.15.4 cannot use Pod Identity \
             (v1.15.5 is the first release that can), although the eks-pod-identity-agent add-on is ACTIVE"
        ),
        "{}",
        stderr(&output)
    );
    assert_eq!(plan["identity"], "irsa");
    assert_eq!(plan["version"], "v1.15.4");

    let (output, plan) = world
        .json("plan", &["--identity", "auto", "--version", "v1.15.5"])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(
            "identity auto: pod-identity, because the eks-pod-identity-agent add-on is ACTIVE"
        ),
        "{}",
        stderr(&output)
    );
    assert_eq!(plan["identity"], "pod-identity");

    world.clear_request_logs();
    let output = world
        .xtask(&[
            "deploy",
            "--cluster",
            "sandbox",
            "--yes",
            "--identity",
            "pod-identity",
            "--version",
            "v1.14.1",
        ])
        .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output)
            .contains("upstream's cni-metrics-helper v1.14.1 cannot use EKS Pod Identity"),
        "{}",
        stderr(&output)
    );
    assert!(
        world.mutating_aws_calls().is_empty(),
        "nothing written to AWS"
    );
    assert!(
        world.kubernetes_writes().is_empty(),
        "nothing written to Kubernetes"
    );
    world.sandbox.shutdown().await;
}

fn failed_checks(report: &Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|check| check["ok"] == false)
        .map(|check| {
            (
                check["name"].as_str().unwrap_or_default().to_owned(),
                check["fix"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_preflight_failure_names_its_fix_and_blocks_plan() {
    let world = World::start().await;
    let (output, report) = world.json("preflight", &[]).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "a healthy sandbox passes: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let names: Vec<&str> = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "caller",
            "cluster",
            "CloudWatch alarm permissions",
            "IAM OIDC provider",
            "kube context",
            "Kubernetes permissions",
            "scrape network path"
        ]
    );

    // Pod Identity without the agent add-on.
    let (output, report) = world
        .json("preflight", &["--identity", "pod-identity"])
        .await;
    assert_eq!(output.status.code(), Some(1));
    let failed = failed_checks(&report);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "Pod Identity agent");
    assert!(failed[0].1.contains(
        "aws eks create-addon --cluster-name sandbox --addon-name eks-pod-identity-agent"
    ));

    // Missing RBAC.
    world
        .sandbox
        .api()
        .deny("patch", "apps", "deployments", Some("kube-system"));
    let (output, report) = world.json("preflight", &[]).await;
    assert_eq!(output.status.code(), Some(1));
    let failed = failed_checks(&report);
    assert_eq!(
        failed.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
        ["Kubernetes permissions"]
    );
    let detail = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["ok"] == false)
        .expect("failed")["detail"]
        .to_string();
    assert!(
        detail.contains("patch deployments in kube-system"),
        "{detail}"
    );
    // ...and plan refuses with the same reason, changing nothing.
    let output = world.xtask(&["plan", "--cluster", "sandbox"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("preflight failed: Kubernetes permissions"),
        "{}",
        stderr(&output)
    );

    // The kubeconfig of another cluster, refused unless the context is chosen explicitly.
    let other = sandbox::kube_api::FakeApiServer::start()
        .await
        .expect("another API server");
    let other_kubeconfig = tempfile::NamedTempFile::new().expect("temp file");
    other
        .write_kubeconfig(other_kubeconfig.path())
        .expect("written");
    let path = other_kubeconfig.path().to_string_lossy().into_owned();
    let (output, report) = world.json("preflight", &["--kubeconfig", &path]).await;
    assert_eq!(output.status.code(), Some(1));
    let failed = failed_checks(&report);
    assert!(
        failed.iter().any(|(name, fix)| name == "kube context"
            && fix.contains("aws eks update-kubeconfig --name sandbox")),
        "{failed:?}"
    );
    let (_, report) = world
        .json(
            "preflight",
            &["--kubeconfig", &path, "--context", "sandbox"],
        )
        .await;
    let failed = failed_checks(&report);
    assert!(
        !failed.iter().any(|(name, _)| name == "kube context"),
        "{failed:?}"
    );
    other.shutdown().await;

    // A missing OIDC provider.
    let provider_arn = format!(
        "arn:aws:iam::{}:oidc-provider/{}",
        world.sandbox.account(),
        world.sandbox.oidc_issuer().trim_start_matches("https://")
    );
    world
        .iam()
        .delete_open_id_connect_provider()
        .open_id_connect_provider_arn(provider_arn)
        .send()
        .await
        .expect("deleted");
    let (_, report) = world.json("preflight", &[]).await;
    let failed = failed_checks(&report);
    assert!(
        failed.iter().any(|(name, fix)| name == "IAM OIDC provider"
            && fix.contains("eksctl utils associate-iam-oidc-provider")),
        "{failed:?}"
    );

    // No cluster at all: one failed prerequisite.
    let output = world
        .xtask(&["preflight", "--cluster", "nope", "--output", "json"])
        .await;
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("preflight prints JSON: {}", stderr(&output)));
    let failed = failed_checks(&report);
    assert_eq!(failed.len(), 1);
    world.sandbox.shutdown().await;
}

/// The preflight check of the caller's own CloudWatch alarm permissions, as `--output json`
/// shows it, when run with the credentials of AWS profile `profile` (or the sandbox's).
async fn alarm_permissions(world: &World, profile: Option<&str>) -> (Option<i32>, Value) {
    let extra = match profile {
        Some(profile) => vec!["--profile", profile],
        None => Vec::new(),
    };
    let (output, report) = world.json("preflight", &extra).await;
    let check = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|check| check["name"] == "CloudWatch alarm permissions")
        .unwrap_or_else(|| panic!("the alarm permissions check: {report}"))
        .clone();
    (output.status.code(), check)
}

#[tokio::test(flavor = "multi_thread")]
async fn preflight_simulates_the_callers_alarm_permissions() {
    let world = World::start().await;
    let iam = world.iam();
    // The sandbox's own caller is moto's default, no IAM principal: not simulated, and
    // that is no reason to refuse.
    let (code, check) = alarm_permissions(&world, None).await;
    assert_eq!(code, Some(0), "{check}");
    assert_eq!(check["ok"], true);
    let detail = check["detail"].as_str().expect("detail");
    assert!(
        detail.starts_with("not verified: ") && detail.contains("cloudwatch:PutMetricAlarm"),
        "{detail}"
    );

    // An IAM user without policies, through a profile of its keys.
    iam.create_user()
        .user_name("deployer")
        .send()
        .await
        .expect("user");
    let user_key = iam
        .create_access_key()
        .user_name("deployer")
        .send()
        .await
        .expect("access key")
        .access_key
        .expect("the key");
    // A role with a path, assumed: the assumed-role ARN omits the path.
    iam.create_role()
        .role_name("alarm-deployer")
        .path("/team/")
        .assume_role_policy_document(format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{}:root"}},"Action":"sts:AssumeRole"}}]}}"#,
            world.sandbox.account()
        ))
        .send()
        .await
        .expect("role");
    let session = aws_sdk_sts::Client::new(&world.sandbox.sdk_config())
        .assume_role()
        .role_arn(format!(
            "arn:aws:iam::{}:role/team/alarm-deployer",
            world.sandbox.account()
        ))
        .role_session_name("alice")
        .send()
        .await
        .expect("assumed")
        .credentials
        .expect("credentials");
    let home = world
        .write_script("alarm-permissions", "")
        .parent()
        .expect("the home directory")
        .to_owned();
    std::fs::create_dir_all(home.join(".aws")).expect("~/.aws");
    std::fs::write(
        home.join(".aws/credentials"),
        format!(
            "[deployer]\naws_access_key_id = {}\naws_secret_access_key = {}\n\
             [alarm-deployer]\naws_access_key_id = {}\naws_secret_access_key = {}\naws_session_token = {}\n",
            user_key.access_key_id(),
            user_key.secret_access_key(),
            session.access_key_id(),
            session.secret_access_key(),
            session.session_token(),
        ),
    )
    .expect("credentials written");

    let (code, check) = alarm_permissions(&world, Some("deployer")).await;
    assert_eq!(code, Some(1), "{check}");
    assert_eq!(check["ok"], false);
    let detail = check["detail"].as_str().expect("detail");
    assert!(
        detail.contains(":user/deployer")
            && detail.contains(
                "cloudwatch:PutMetricAlarm, cloudwatch:DeleteAlarms, cloudwatch:DescribeAlarms, cloudwatch:TagResource, cloudwatch:ListTagsForResource (no policy allows them)"
            ),
        "{detail}"
    );
    // The fix is the statement to attach; attached, the check passes.
    let fix = check["fix"].as_str().expect("fix");
    let statement = fix
        .rsplit_once(": ")
        .map(|(_, statement)| statement)
        .expect("a statement");
    assert!(
        statement.starts_with(r#"{"Effect":"Allow","Action":["cloudwatch:PutMetricAlarm""#),
        "{fix}"
    );
    iam.put_user_policy()
        .user_name("deployer")
        .policy_name("alarms")
        .policy_document(format!(
            r#"{{"Version":"2012-10-17","Statement":[{statement}]}}"#
        ))
        .send()
        .await
        .expect("policy");
    let (code, check) = alarm_permissions(&world, Some("deployer")).await;
    assert_eq!(code, Some(0), "{check}");
    assert_eq!(check["ok"], true);
    let detail = check["detail"].as_str().expect("detail");
    assert!(
        detail.starts_with("IAM's policy simulation allows arn:aws:iam::"),
        "{detail}"
    );

    // An explicit Deny is not fixed by an Allow: the fix says to remove it.
    iam.put_user_policy()
        .user_name("deployer")
        .policy_name("no-deletes")
        .policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"cloudwatch:DeleteAlarms","Resource":"*"}]}"#,
        )
        .send()
        .await
        .expect("policy");
    let (code, check) = alarm_permissions(&world, Some("deployer")).await;
    assert_eq!(code, Some(1), "{check}");
    let fix = check["fix"].as_str().expect("fix");
    assert!(
        fix.starts_with("remove the Deny of cloudwatch:DeleteAlarms"),
        "{fix}"
    );
    // ...and plan refuses on it.
    let output = world
        .xtask(&["plan", "--cluster", "sandbox", "--profile", "deployer"])
        .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("CloudWatch alarm permissions"),
        "{}",
        stderr(&output)
    );

    // The assumed role is simulated as the role, path and all (GetRole's ARN).
    let (code, check) = alarm_permissions(&world, Some("alarm-deployer")).await;
    assert_eq!(code, Some(1), "{check}");
    let detail = check["detail"].as_str().expect("detail");
    assert!(detail.contains(":role/team/alarm-deployer"), "{detail}");
    iam.put_role_policy()
        .role_name("alarm-deployer")
        .policy_name("alarms")
        .policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"cloudwatch:*","Resource":"*"}]}"#,
        )
        .send()
        .await
        .expect("policy");
    let (code, check) = alarm_permissions(&world, Some("alarm-deployer")).await;
    assert_eq!(code, Some(0), "{check}");
    assert_eq!(check["ok"], true);
    world.sandbox.shutdown().await;
}
