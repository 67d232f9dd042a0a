//! The CloudWatch alarms: rendered requests that botocore accepts, deployed exactly and
//! idempotently, console edits shown and repaired, ownership kept (a same-named alarm that
//! is not ours is a conflict, `destroy` removes only ours), and the alarms doing their job:
//! evaluated by the sandbox's CloudWatch over what our publisher published, the critical
//! utilisation alarm fires when the fleet runs out of IPs, and the silent-publisher alarm
//! fires when the publisher stops.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use sandbox::python_tools::{PythonTools, workspace_root};
use serde_json::Value;

use crate::support::{rendered_scenarios, stderr, stdout, xtask};
use crate::world::{World, changed, named};

const PREFIX: &str = "CNI-Metrics-sandbox-us-west-2";
const PUBLISHER_IMAGE: &str = "registry.example.com/cni-metrics-publisher:v0.1.0";

/// Every request in `alarms` through botocore's own validation of PutMetricAlarm input:
/// the AWS CLI and SDKs refuse what it refuses. Returns botocore's report, empty when valid.
fn botocore_report(tools: &PythonTools, alarms: &Value) -> String {
    let script = r#"
import json, sys
import botocore.session
from botocore.validate import ParamValidator
model = botocore.session.get_session().get_service_model("cloudwatch")
shape = model.operation_model("PutMetricAlarm").input_shape
for request in json.load(sys.stdin):
    report = ParamValidator().validate(request, shape)
    if report.has_errors():
        print(request.get("AlarmName"), report.generate_report())
"#;
    let mut child = std::process::Command::new(tools.python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python runs");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(alarms.to_string().as_bytes())
            .expect("written");
    }
    let output = child.wait_with_output().expect("python ends");
    assert!(output.status.success(), "{}", stderr(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn every_rendered_alarm_is_a_put_metric_alarm_request_botocore_accepts() {
    let tools = PythonTools::find(&workspace_root()).unwrap_or_else(|error| panic!("{error}"));
    let dir = tempfile::tempdir().expect("temp dir");
    let mut seen = 0;
    for (name, rendered) in rendered_scenarios(dir.path()) {
        let alarms = &rendered["alarms.json"];
        seen += alarms.as_array().expect("a list").len();
        let report = botocore_report(&tools, alarms);
        assert!(report.is_empty(), "{name}: {report}");
    }
    assert!(seen > 50, "the scenarios render alarms ({seen})");
    // The check can fail: a request CloudWatch's model refuses is reported.
    let broken = serde_json::json!([{ "AlarmName": "x", "EvaluationPeriods": "three",
        "ComparisonOperator": "GreaterThanThreshold", "Threshold": 1, "Unknown": 1 }]);
    let report = botocore_report(&tools, &broken);
    assert!(report.contains("EvaluationPeriods"), "{report}");
    assert!(report.contains("Unknown"), "{report}");
}

#[test]
fn alarm_knobs_are_checked_before_anything_is_rendered() {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = [
        "render",
        "--region",
        "us-west-2",
        "--cluster",
        "prod",
        "--account",
        "111122223333",
        "--identity",
        "pod-identity",
        "--out",
        "out",
    ];
    for (extra, expected) in [
        (
            vec!["--alarm-action", "arn:aws:sns:eu-west-1:111122223333:t"],
            "another region",
        ),
        (
            vec!["--per-az", "--zone", "us-west-2a"],
            "our publisher only",
        ),
        (
            vec!["--publisher-image", PUBLISHER_IMAGE, "--per-az"],
            "--zone for each",
        ),
        (vec!["--zone", "us-west-2a"], "without --per-az"),
    ] {
        let mut args = base.to_vec();
        args.extend(extra.iter().copied());
        let output = xtask(dir.path(), &args);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(expected),
            "{expected} in {}",
            stderr(&output)
        );
        assert!(!dir.path().join("out").exists(), "nothing is written");
    }
    let config = dir.path().join("typo.yaml");
    std::fs::write(
        &config,
        "region: us-west-2\ncluster: prod\naccount: \"111122223333\"\nidentity: pod-identity\nalarms:\n  ip-utilisation-critcal:\n    threshold: 95\n",
    )
    .expect("written");
    let output = xtask(
        dir.path(),
        &["render", "--config", config.to_str().expect("utf-8")],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("ip-utilisation-critcal"),
        "{}",
        stderr(&output)
    );
}

/// The alarm names `args` render, from `render --output json`.
async fn rendered_names(world: &World, args: &[&str]) -> BTreeSet<String> {
    let mut render = vec![
        "render",
        "--cluster",
        "sandbox",
        "--region",
        "us-west-2",
        "--account",
        world.sandbox.account(),
        "--output",
        "json",
    ];
    render.extend(args);
    let output = world.xtask(&render).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let rendered: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    rendered["alarms.json"]
        .as_array()
        .expect("list")
        .iter()
        .map(|alarm| alarm["AlarmName"].as_str().expect("name").to_owned())
        .collect()
}

/// A boto3 script: `list PREFIX` prints `name<TAB>tags as JSON` per alarm; `threshold NAME
/// VALUE` re-puts the alarm as the console does when a threshold is edited; `put NAME`
/// makes an alarm of that name by hand, untagged.
const BOTO3_ALARMS: &str = r#"
import json, sys
import boto3
cloudwatch = boto3.client("cloudwatch")
command = sys.argv[1]
if command == "list":
    for page in cloudwatch.get_paginator("describe_alarms").paginate(AlarmNamePrefix=sys.argv[2], AlarmTypes=["MetricAlarm"]):
        for alarm in page["MetricAlarms"]:
            tags = cloudwatch.list_tags_for_resource(ResourceARN=alarm["AlarmArn"])["Tags"]
            print(alarm["AlarmName"] + "\t" + json.dumps({t["Key"]: t["Value"] for t in tags}, sort_keys=True) + "\t" + str(alarm["Threshold"]))
elif command == "threshold":
    alarm = cloudwatch.describe_alarms(AlarmNames=[sys.argv[2]])["MetricAlarms"][0]
    keep = ["AlarmName", "AlarmDescription", "ActionsEnabled", "OKActions", "AlarmActions",
            "InsufficientDataActions", "EvaluationPeriods", "DatapointsToAlarm",
            "ComparisonOperator", "TreatMissingData", "Metrics"]
    request = {key: alarm[key] for key in keep if key in alarm}
    request["Threshold"] = float(sys.argv[3])
    cloudwatch.put_metric_alarm(**request)
elif command == "put":
    cloudwatch.put_metric_alarm(AlarmName=sys.argv[2], Namespace="Kubernetes",
        MetricName="assignIPAddresses", Dimensions=[{"Name": "CLUSTER_ID", "Value": "sandbox"}],
        Statistic="Maximum", Period=300, EvaluationPeriods=1, Threshold=1000,
        ComparisonOperator="GreaterThanThreshold")
"#;

/// Each alarm under `prefix`, as boto3 reads it: name -> (tags, threshold).
async fn live_alarms(world: &World, prefix: &str) -> Vec<(String, Value, f64)> {
    let script = world.write_script("alarms.py", BOTO3_ALARMS);
    world
        .boto3(&script, &["list", prefix])
        .await
        .lines()
        .map(|line| {
            let mut fields = line.split('\t');
            let name = fields.next().expect("name").to_owned();
            let tags = serde_json::from_str(fields.next().expect("tags")).expect("JSON");
            let threshold = fields.next().expect("threshold").parse().expect("number");
            (name, tags, threshold)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn alarms_deploy_exactly_change_nothing_twice_and_console_edits_are_repaired() {
    let world = World::start().await;
    let account = world.sandbox.account().to_owned();
    let topic = format!("arn:aws:sns:us-west-2:{account}:oncall");
    let zones: Vec<String> = world
        .sandbox
        .fleet()
        .nodes()
        .iter()
        .map(|node| node.zone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut args = vec![
        "--identity",
        "pod-identity",
        "--publisher-image",
        PUBLISHER_IMAGE,
        "--alarm-action",
        &topic,
        "--per-az",
    ];
    for zone in &zones {
        args.extend(["--zone", zone.as_str()]);
    }
    world
        .sandbox
        .install_pod_identity_agent()
        .await
        .expect("agent");

    let expected = rendered_names(&world, &args).await;
    assert_eq!(expected.len(), 7 + 2 * zones.len(), "{expected:?}");
    world.deploy(&args).await;
    let live = live_alarms(&world, PREFIX).await;
    let names: BTreeSet<String> = live.iter().map(|(name, ..)| name.clone()).collect();
    assert_eq!(
        names, expected,
        "deploy creates exactly the rendered alarms"
    );
    for (name, tags, _) in &live {
        assert_eq!(tags["managed-by"], "cni-metrics-xtask", "{name}");
        assert_eq!(tags["cni-metrics-xtask/cluster"], "sandbox", "{name}");
        assert_eq!(tags["cni-metrics-xtask/region"], "us-west-2", "{name}");
    }
    let described = world
        .cloudwatch()
        .describe_alarms()
        .alarm_names(format!("{PREFIX}-ip-utilisation-critical"))
        .send()
        .await
        .expect("described");
    let critical = &described.metric_alarms()[0];
    assert_eq!(critical.alarm_actions(), std::slice::from_ref(&topic));
    assert_eq!(critical.ok_actions(), std::slice::from_ref(&topic));
    assert_eq!(critical.threshold(), Some(90.0));
    assert_eq!(
        critical.metrics()[2].expression(),
        Some("100 * assigned / capacity")
    );

    // The dashboard's alarm-status widget shows exactly these alarms, by their real ARNs.
    let body = world
        .cloudwatch()
        .get_dashboard()
        .dashboard_name(PREFIX)
        .send()
        .await
        .expect("dashboard");
    let body: Value = serde_json::from_str(body.dashboard_body().expect("body")).expect("JSON");
    let widget = body["widgets"]
        .as_array()
        .expect("widgets")
        .iter()
        .find(|widget| widget["type"] == "alarm")
        .expect("an alarm-status widget");
    let shown: BTreeSet<String> = widget["properties"]["alarms"]
        .as_array()
        .expect("ARNs")
        .iter()
        .map(|arn| arn.as_str().expect("an ARN").to_owned())
        .collect();
    let arns: BTreeSet<String> = expected
        .iter()
        .map(|name| format!("arn:aws:cloudwatch:us-west-2:{account}:alarm:{name}"))
        .collect();
    assert_eq!(shown, arns);
    let described = world
        .cloudwatch()
        .describe_alarms()
        .alarm_name_prefix(PREFIX)
        .send()
        .await
        .expect("described");
    let live_arns: BTreeSet<String> = described
        .metric_alarms()
        .iter()
        .map(|alarm| alarm.alarm_arn().expect("ARN").to_owned())
        .collect();
    assert_eq!(live_arns, arns, "the widget's ARNs are the alarms' own");

    // A second deploy: no call that writes.
    world.clear_request_logs();
    world.deploy(&args).await;
    assert_eq!(world.mutating_aws_calls(), Vec::<String>::new());

    // Someone raises the critical threshold in the console: drift, shown exactly...
    let script = world.write_script("alarms.py", BOTO3_ALARMS);
    let critical_name = format!("{PREFIX}-ip-utilisation-critical");
    world
        .boto3(&script, &["threshold", &critical_name, "97"])
        .await;
    let mut plan_args = vec!["--detailed-exitcode"];
    plan_args.extend(args.iter().copied());
    let (output, plan) = world.json("plan", &plan_args).await;
    assert_eq!(output.status.code(), Some(2), "{plan}");
    assert_eq!(
        changed(&plan),
        BTreeSet::from([format!("update CloudWatch alarm {critical_name}")])
    );
    let change = named(&plan["changes"], &critical_name);
    assert_eq!(
        change["diff"],
        serde_json::json!(["~ .Threshold: 97.0 -> 90.0"]),
        "{change}"
    );
    // ... and repaired with one call.
    world.clear_request_logs();
    world.deploy(&args).await;
    assert_eq!(
        world.mutating_aws_calls().len(),
        1,
        "{:?}",
        world.mutating_aws_calls()
    );
    let threshold = live_alarms(&world, &critical_name)
        .await
        .into_iter()
        .find(|(name, ..)| *name == critical_name)
        .map(|(.., threshold)| threshold);
    assert_eq!(threshold, Some(90.0));

    // Without --per-az the per-zone alarms are ours and no longer rendered: deleted.
    let without_zones = &args[..args.len() - 1 - 2 * zones.len()];
    let (_, plan) = world.json("plan", without_zones).await;
    let deleted: BTreeSet<String> = changed(&plan)
        .into_iter()
        .filter(|change| change.starts_with("delete CloudWatch alarm"))
        .collect();
    assert_eq!(deleted.len(), 2 * zones.len(), "{plan}");

    // An alarm of someone else's under our prefix survives destroy; all of ours go.
    let foreign = format!("{PREFIX}-team-b-own-alarm");
    world.boto3(&script, &["put", &foreign]).await;
    let output = world
        .xtask(&["destroy", "--cluster", "sandbox", "--yes"])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let left: Vec<String> = live_alarms(&world, PREFIX)
        .await
        .into_iter()
        .map(|(name, ..)| name)
        .collect();
    assert_eq!(left, [foreign]);
    world.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alarm_of_our_name_without_our_tag_is_a_conflict_until_adopted() {
    let world = World::start().await;
    let script = world.write_script("alarms.py", BOTO3_ALARMS);
    let name = format!("{PREFIX}-warm-pool-low");
    world.boto3(&script, &["put", &name]).await;

    // A plan shows the conflict, with its reason, and exits 1.
    let (code, plan) = world.plan_json(&[]).await;
    assert_eq!(code, Some(1));
    let change = named(&plan["changes"], &name);
    assert_eq!(change["action"], "conflict", "{change}");
    assert!(
        change["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("not tagged managed-by=cni-metrics-xtask")),
        "{change}"
    );

    world.clear_request_logs();
    let output = world
        .xtask(&["deploy", "--cluster", "sandbox", "--yes"])
        .await;
    assert_ne!(output.status.code(), Some(0));
    assert!(
        stderr(&output).contains(&format!("CloudWatch alarm {name}")),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        world.mutating_aws_calls(),
        Vec::<String>::new(),
        "a refused deploy changes nothing anywhere"
    );
    assert_eq!(world.kubernetes_writes(), Vec::<String>::new());

    // Adopted: converged to ours and tagged, then ours like any other.
    let (_, plan) = world.plan_json(&["--adopt"]).await;
    let change = named(&plan["changes"], &name);
    assert_eq!(change["action"], "adopt", "{change}");
    world.deploy(&["--adopt"]).await;
    let (tags, threshold) = live_alarms(&world, &name)
        .await
        .into_iter()
        .find(|(live, ..)| *live == name)
        .map(|(_, tags, threshold)| (tags, threshold))
        .expect("the alarm");
    assert_eq!(tags["managed-by"], "cni-metrics-xtask");
    assert_eq!(threshold, 10.0);
    let (code, plan) = world.plan_json(&[]).await;
    assert_eq!(code, Some(0), "{plan}");
    world.sandbox.shutdown().await;
}

/// Our publisher's binary, built like `cargo xtask demo` builds it.
fn publisher_binary() -> PathBuf {
    let root = workspace_root();
    let built = std::process::Command::new(std::env::var_os("CARGO").unwrap_or("cargo".into()))
        .args(["build", "--quiet", "--package", "cni-metrics-publisher"])
        .current_dir(&root)
        .status()
        .expect("cargo runs");
    assert!(built.success(), "building the publisher failed");
    xtask::cargo_tool::target_dir(&root).join("debug/cni-metrics-publisher")
}

/// One round of our publisher against the sandbox, published to its CloudWatch.
async fn publish_once(world: &World, publisher: &std::path::Path) {
    let output = tokio::process::Command::new(publisher)
        .args(["once", "--cluster-id", "sandbox", "--per-az"])
        .envs(world.sandbox.env_vars())
        .env("AWS_VPC_K8S_CNI_LOGLEVEL", "WARN")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("the publisher runs");
    assert!(output.status.success(), "{}", stderr(&output));
}

/// The state of each alarm after the emulator's evaluation as of `at`.
async fn evaluate(world: &World, at: SystemTime) -> std::collections::BTreeMap<String, String> {
    world
        .sandbox
        .emulator()
        .expect("own emulator")
        .evaluate_alarms(Some(at))
        .await
        .expect("evaluated")
        .into_iter()
        .map(|alarm| (alarm.alarm_name, alarm.state))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_critical_alarm_fires_when_the_fleet_runs_out_of_ips_and_silence_is_an_alarm() {
    let publisher = publisher_binary();
    let world = World::start_with(|options| options.nodes = 4).await;
    world
        .sandbox
        .install_pod_identity_agent()
        .await
        .expect("agent");
    let zones: BTreeSet<String> = world
        .sandbox
        .fleet()
        .nodes()
        .iter()
        .map(|node| node.zone())
        .collect();
    let zone = zones.first().expect("a zone").clone();
    // One-minute periods, one datapoint: the test does not wait for five of them.
    let config = world.write_script(
        "alarms.yaml",
        &format!(
            "identity: pod-identity\npublisher-image: {PUBLISHER_IMAGE}\nper-az: true\nzones: [{}]\n\
             alarms:\n  ip-utilisation-critical:\n    period: 60\n    evaluation-periods: 1\n",
            zones.iter().cloned().collect::<Vec<_>>().join(", ")
        ),
    );
    let config = config.to_str().expect("utf-8");
    world.deploy(&["--config", config]).await;
    let critical = format!("{PREFIX}-ip-utilisation-critical");
    let critical_zone = format!("{PREFIX}-ip-utilisation-critical-{zone}");
    let silent = format!("{PREFIX}-publisher-silent");

    // A cluster well within its capacity: not in alarm.
    for node in world.sandbox.fleet().nodes() {
        node.pin_load_percent(50);
    }
    publish_once(&world, &publisher).await;
    let states = evaluate(&world, SystemTime::now()).await;
    assert_eq!(states[&critical], "OK", "{states:?}");
    assert_eq!(states[&critical_zone], "OK", "{states:?}");
    assert_eq!(
        states[&silent], "OK",
        "a publisher that just published: {states:?}"
    );

    // Pods land until 95 % of the IPs the ENIs can hold are assigned.
    for node in world.sandbox.fleet().nodes() {
        node.pin_load_percent(95);
    }
    publish_once(&world, &publisher).await;
    let states = evaluate(&world, SystemTime::now()).await;
    assert_eq!(states[&critical], "ALARM", "{states:?}");
    assert_eq!(states[&critical_zone], "ALARM", "{states:?}");

    // `status` shows the states, for people and machines.
    let (output, status) = world.json("status", &["--config", config]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let shown = named(&status["alarms"], &critical);
    assert_eq!(shown["state"], "ALARM", "{shown}");
    assert!(
        shown["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("Threshold Crossed")),
        "{shown}"
    );
    let text = world
        .xtask(&["status", "--cluster", "sandbox", "--config", config])
        .await;
    assert!(
        stdout(&text).contains(&format!("ALARM             {critical}")),
        "{}",
        stdout(&text)
    );

    // The publisher stops: three minutes on, the silence itself is the alarm, and the
    // capacity alarms say they have no data rather than that all is well.
    let later = SystemTime::now() + Duration::from_secs(4 * 60);
    let states = evaluate(&world, later).await;
    assert_eq!(states[&silent], "ALARM", "{states:?}");
    assert_eq!(states[&critical], "INSUFFICIENT_DATA", "{states:?}");
    world.sandbox.shutdown().await;
}
