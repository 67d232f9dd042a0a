//! `upgrade` and `status` end to end in the sandbox: one minor version at a time, every
//! rollout awaited, a failed step resumed, skips refused.

use serde_json::Value;

use crate::world::{World, stderr};

/// The live Deployment's image.
async fn live_image(world: &World) -> String {
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(world.kube().await, "kube-system");
    let live = deployments
        .get("cni-metrics-helper")
        .await
        .expect("deployment");
    live.spec
        .and_then(|s| s.template.spec)
        .expect("pod spec")
        .containers[0]
        .image
        .clone()
        .expect("image")
}

fn steps(report: &Value) -> Vec<(String, String, String)> {
    report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|step| {
            let text = |key: &str| step[key].as_str().unwrap_or_default().to_owned();
            (text("version"), text("image"), text("rollout"))
        })
        .collect()
}

fn image(version: &str) -> String {
    format!("602401143452.dkr.ecr.us-west-2.amazonaws.com/cni-metrics-helper:{version}")
}

/// The versions table starts at v1.11, so the "1.9 -> 1.11 goes through 1.10" is
/// exercised as 1.19 -> 1.21 through the newest 1.20 patch.
#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_two_minors_up_goes_through_the_one_between_and_waits_for_each_rollout() {
    let world = World::start().await;
    world.deploy(&["--version", "v1.19.0"]).await;
    world.sandbox.api().clear_requests();
    let (output, report) = world.json("upgrade", &["--to", "v1.21.1", "--yes"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(report["from"], "v1.19.0");
    assert_eq!(report["path"], serde_json::json!(["v1.20.5", "v1.21.1"]));
    assert_eq!(
        steps(&report),
        [
            (
                "v1.20.5".to_owned(),
                image("v1.20.5"),
                "complete".to_owned()
            ),
            (
                "v1.21.1".to_owned(),
                image("v1.21.1"),
                "complete".to_owned()
            ),
        ]
    );
    assert_eq!(live_image(&world).await, image("v1.21.1"));
    // Each Deployment write is followed by a watch on it before the next write: the waits.
    let sequence: Vec<&str> = world
        .sandbox
        .api()
        .requests()
        .iter()
        .filter(|request| request.path.contains("/deployments"))
        .filter_map(|request| {
            if request.is_write() {
                Some("write")
            } else if request.is_watch() || request.path.ends_with("/deployments") {
                Some("wait")
            } else {
                None
            }
        })
        .collect::<Vec<_>>()
        .chunk_by(|a, b| a == b)
        .map(|run| run[0])
        .collect();
    assert_eq!(
        sequence,
        ["write", "wait", "write", "wait"],
        "a wait after each of the two writes"
    );
    world.sandbox.shutdown().await;
}

/// Upstream's helper can use Pod Identity from v1.15.5 on: an upgrade with
/// `--identity pod-identity` through an older step is refused before anything changes;
/// `--identity auto` keeps IRSA for the older step and switches at v1.15.5.
#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_across_the_pod_identity_line_keeps_irsa_until_the_first_step_that_can() {
    let world = World::start_with(|options| options.pod_identity_agent = true).await;
    world.deploy(&["--version", "v1.13.4"]).await;
    world.clear_request_logs();
    let output = world
        .xtask(&[
            "upgrade",
            "--cluster",
            "sandbox",
            "--to",
            "v1.15.5",
            "--identity",
            "pod-identity",
            "--yes",
        ])
        .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(
            "the upgrade to v1.15.5 steps through v1.14.1, whose upstream helper cannot use EKS Pod Identity \
             (v1.15.5 is the first release that can), so nothing was changed: \
             run `cargo xtask upgrade --to v1.15.5 --identity auto`"
        ),
        "{}",
        stderr(&output)
    );
    assert_eq!(world.mutating_aws_calls(), Vec::<String>::new());
    assert_eq!(world.kubernetes_writes(), Vec::<String>::new());
    assert_eq!(live_image(&world).await, image("v1.13.4"));

    let (output, report) = world
        .json(
            "upgrade",
            &["--to", "v1.15.5", "--identity", "auto", "--yes"],
        )
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let identities: Vec<(&str, &str)> = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|step| {
            (
                step["version"].as_str().unwrap_or_default(),
                step["identity"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        identities,
        [("v1.14.1", "irsa"), ("v1.15.5", "pod-identity")]
    );
    assert!(
        stderr(&output).contains(
            "identity auto at v1.14.1: irsa, because upstream's helper v1.14.1 cannot use Pod Identity"
        ),
        "{}",
        stderr(&output)
    );
    assert_eq!(live_image(&world).await, image("v1.15.5"));
    // Converged in pod-identity mode: nothing left to change.
    let (code, _) = world
        .plan_json(&["--identity", "pod-identity", "--version", "v1.15.5"])
        .await;
    assert_eq!(code, Some(0));
    world.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_that_skips_a_minor_or_goes_back_is_refused_with_the_path() {
    let world = World::start().await;
    world.deploy(&["--version", "v1.19.0"]).await;
    world.clear_request_logs();
    let output = world
        .xtask(&[
            "deploy",
            "--cluster",
            "sandbox",
            "--version",
            "v1.21.1",
            "--yes",
        ])
        .await;
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("v1.19.0 -> v1.21.1 skips a minor version")
            && message.contains(
                "cargo xtask upgrade --to v1.21.1`, which goes v1.19.0 -> v1.20.5 -> v1.21.1"
            ),
        "{message}"
    );
    let output = world
        .xtask(&["plan", "--cluster", "sandbox", "--version", "v1.18.6"])
        .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("is a downgrade; pass --allow-downgrade"),
        "{}",
        stderr(&output)
    );
    assert_eq!(world.mutating_aws_calls(), Vec::<String>::new());
    assert_eq!(world.kubernetes_writes(), Vec::<String>::new());
    // A patch jump and an allowed downgrade go through.
    world.deploy(&["--version", "v1.19.6"]).await;
    world
        .deploy(&["--version", "v1.18.6", "--allow-downgrade"])
        .await;
    assert_eq!(live_image(&world).await, image("v1.18.6"));
    world.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_step_stops_the_upgrade_and_running_it_again_resumes() {
    let world = World::start().await;
    world.deploy(&["--version", "v1.19.0"]).await;
    world
        .sandbox
        .api()
        .set_rollout_stuck("kube-system", "cni-metrics-helper", true);
    let args = ["--to", "v1.21.1", "--yes", "--rollout-timeout", "2"];
    let (output, report) = world.json("upgrade", &args).await;
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("the step to v1.20.5 failed"), "{message}");
    assert!(
        message.contains("the last version that rolled out is v1.19.0"),
        "{message}"
    );
    assert!(
        message.contains("run `cargo xtask upgrade --to v1.21.1` again"),
        "{message}"
    );
    assert_eq!(
        steps(&report),
        [("v1.20.5".to_owned(), image("v1.20.5"), "failed".to_owned())]
    );

    // Still stuck: the unfinished rollout of v1.20.5 is the first step again, and fails.
    let (output, report) = world.json("upgrade", &args).await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(report["from"], "v1.20.5");
    assert_eq!(report["path"], serde_json::json!(["v1.20.5", "v1.21.1"]));
    assert_eq!(
        steps(&report),
        [("v1.20.5".to_owned(), image("v1.20.5"), "failed".to_owned())]
    );

    // The cause fixed, the v1.20.5 rollout completes and the upgrade resumes from there.
    world
        .sandbox
        .api()
        .set_rollout_stuck("kube-system", "cni-metrics-helper", false);
    let (output, report) = world.json("upgrade", &args).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(report["from"], "v1.20.5", "resumed from the live version");
    assert_eq!(
        steps(&report),
        [(
            "v1.21.1".to_owned(),
            image("v1.21.1"),
            "complete".to_owned()
        )]
    );
    assert_eq!(live_image(&world).await, image("v1.21.1"));
    world.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_reports_versions_next_step_identity_drift_and_rollout() {
    let world = World::start().await;
    world.deploy(&["--version", "v1.19.0"]).await;
    let (output, status) = world.json("status", &["--version", "v1.21.1"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(status["live_version"], "v1.19.0");
    assert_eq!(status["pinned_version"], "v1.21.1");
    assert_eq!(status["next_step"], "v1.20.5");
    assert_eq!(
        status["upgrade_path"],
        serde_json::json!(["v1.20.5", "v1.21.1"])
    );
    assert_eq!(status["live_identity"], "irsa");
    assert_eq!(
        status["drift"]["unchanged"], 12,
        "a pending upgrade is not drift: {status}"
    );
    assert_eq!(status["last_rollout"]["complete"], true);
    let human = world
        .xtask(&["status", "--cluster", "sandbox", "--version", "v1.21.1"])
        .await;
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("next step        v1.20.5 (path: v1.20.5 -> v1.21.1)"),
        "{text}"
    );
    world.sandbox.shutdown().await;
}
