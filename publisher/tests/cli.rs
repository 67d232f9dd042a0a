//! The binary's command-line contract without a sandbox: help, clear one-line errors with
//! exit code 1 for bad configuration, and the offline `aggregate` command's JSON. The child
//! gets an empty environment plus what each test sets, never the test process's own.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_cni-metrics-publisher");

fn publisher(env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(BINARY)
        .env_clear()
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("the publisher binary runs")
}

/// Asserts exit code 1 and one stderr line containing every `needle`.
fn assert_fails_with(output: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {stderr}");
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "{needle:?} missing from: {stderr}"
        );
    }
    assert!(output.stdout.is_empty(), "an error printed data on stdout");
}

#[test]
fn help_lists_the_commands_and_exits_0() {
    let output = publisher(&[], &["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for command in [
        "run",
        "once",
        "aggregate",
        "--scrape-via",
        "--leader-elect",
        "--per-az",
    ] {
        assert!(
            help.contains(command),
            "{command} missing from help:\n{help}"
        );
    }
}

#[test]
fn a_missing_cluster_id_is_a_clear_error() {
    let output = publisher(&[("AWS_REGION", "us-west-2")], &["run"]);
    assert_fails_with(&output, &["cluster id", "AWS_CLUSTER_ID", "--cluster-id"]);
    // The default command is `run`, too.
    let output = publisher(&[("AWS_REGION", "us-west-2")], &[]);
    assert_fails_with(&output, &["AWS_CLUSTER_ID"]);
}

/// The environment upstream's stock manifest gives its helper, with the region as some
/// setups inject it (AWS_DEFAULT_REGION only).
const UPSTREAM_STOCK_ENV: [(&str, &str); 6] = [
    ("AWS_CLUSTER_ID", ""),
    ("AWS_VPC_K8S_CNI_LOGLEVEL", "INFO"),
    ("USE_CLOUDWATCH", "true"),
    ("USE_PROMETHEUS", "false"),
    ("AWS_DEFAULT_REGION", "us-west-2"),
    ("METRIC_UPDATE_INTERVAL", "30"),
];

#[test]
fn upstreams_stock_manifest_fails_with_one_line_naming_aws_cluster_id() {
    for args in [&[][..], &["run"][..], &["once"][..]] {
        let output = publisher(&UPSTREAM_STOCK_ENV, args);
        assert_fails_with(
            &output,
            &[
                "AWS_CLUSTER_ID",
                "--cluster-id",
                "instance metadata",
                "CLUSTER_ID dimension",
                "splitting",
            ],
        );
    }
}

#[test]
fn upstreams_env_with_a_cluster_id_gets_past_configuration() {
    let mut env = UPSTREAM_STOCK_ENV.to_vec();
    env[0] = ("AWS_CLUSTER_ID", "x");
    env.push(("HTTP_TIMEOUT", "10s"));
    // Configuration is complete, so the first thing missing is the cluster it would scrape
    // (these tests give it no Kubernetes configuration): AWS_DEFAULT_REGION stood in for
    // AWS_REGION and HTTP_TIMEOUT parsed.
    assert_fails_with(&publisher(&env, &["once"]), &["Kubernetes configuration"]);
    // Without AWS_DEFAULT_REGION the same command stops at the region, so the line above
    // came from the fallback.
    env.retain(|(name, _)| *name != "AWS_DEFAULT_REGION");
    assert_fails_with(
        &publisher(&env, &["once"]),
        &["no AWS region", "AWS_REGION", "AWS_DEFAULT_REGION"],
    );
}

#[test]
fn a_bad_http_timeout_names_the_variable_and_an_empty_one_is_unset() {
    let env = [
        ("AWS_CLUSTER_ID", "c"),
        ("AWS_REGION", "us-west-2"),
        ("HTTP_TIMEOUT", "soon"),
    ];
    assert_fails_with(
        &publisher(&env, &["once"]),
        &["HTTP_TIMEOUT", "CloudWatch", "10s"],
    );
    let env = [
        ("AWS_CLUSTER_ID", "c"),
        ("AWS_REGION", "us-west-2"),
        ("HTTP_TIMEOUT", ""),
    ];
    assert_fails_with(&publisher(&env, &["once"]), &["Kubernetes configuration"]);
}

#[test]
fn a_missing_region_is_a_clear_error() {
    let output = publisher(&[("AWS_CLUSTER_ID", "c")], &["once"]);
    assert_fails_with(&output, &["region", "AWS_REGION", "IMDS"]);
}

#[test]
fn a_bad_interval_is_a_clear_error() {
    let env = [
        ("AWS_CLUSTER_ID", "c"),
        ("AWS_REGION", "us-west-2"),
        ("METRIC_UPDATE_INTERVAL", "soon"),
    ];
    let output = publisher(&env, &["run"]);
    assert_fails_with(
        &output,
        &["METRIC_UPDATE_INTERVAL", "whole number of seconds"],
    );
    let output = publisher(&[("AWS_CLUSTER_ID", "c")], &["run", "--interval", "0"]);
    assert_fails_with(&output, &["--interval"]);
}

#[test]
fn a_round_timeout_longer_than_the_interval_is_a_clear_error() {
    let env = [("AWS_CLUSTER_ID", "c"), ("METRIC_UPDATE_INTERVAL", "10")];
    let output = publisher(&env, &["once", "--dry-run", "--round-timeout", "15s"]);
    assert_fails_with(
        &output,
        &[
            "round timeout (15s)",
            "interval (10s)",
            "--round-timeout",
            "--interval",
        ],
    );
}

#[test]
fn bad_upstream_booleans_and_transports_are_refused() {
    let env = [("AWS_CLUSTER_ID", "c"), ("USE_CLOUDWATCH", "maybe")];
    assert_fails_with(&publisher(&env, &["run"]), &["yes/true or no/false"]);
    let env = [("AWS_CLUSTER_ID", "c")];
    assert_fails_with(
        &publisher(&env, &["once", "--scrape-via", "carrier-pigeon"]),
        &["--scrape-via"],
    );
}

#[test]
fn no_kubernetes_configuration_is_a_clear_error() {
    let env = [("AWS_CLUSTER_ID", "c")];
    let output = publisher(&env, &["once", "--dry-run"]);
    assert_fails_with(&output, &["Kubernetes configuration"]);
}

const POD_A: &str = "\
# TYPE awscni_assigned_ip_addresses gauge
awscni_assigned_ip_addresses 3
# TYPE awscni_add_ip_req_count counter
awscni_add_ip_req_count 20
";
const POD_B: &str = "\
# TYPE awscni_assigned_ip_addresses gauge
awscni_assigned_ip_addresses 4
# TYPE awscni_add_ip_req_count counter
awscni_add_ip_req_count 50
";

fn write_round(dir: &Path, pods: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).expect("round dir");
    for (name, body) in pods {
        std::fs::write(dir.join(name), body).expect("pod file");
    }
}

#[test]
fn aggregate_prints_one_json_round_per_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = dir.path().join("round-1");
    let second = dir.path().join("round-2");
    write_round(&first, &[("aws-node-a", POD_A), ("aws-node-b", POD_B)]);
    let later_a = POD_A.replace(" 20\n", " 25\n");
    let later_b = POD_B.replace(" 50\n", " 55\n");
    write_round(
        &second,
        &[("aws-node-a", &later_a), ("aws-node-b", &later_b)],
    );
    let output = publisher(
        &[],
        &[
            "aggregate",
            "--round",
            &first.display().to_string(),
            "--round",
            &second.display().to_string(),
            "--cluster-id",
            "offline",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "aggregate failed: {stderr}");
    let printed: Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    let rounds = printed["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 2);
    let value = |round: usize, name: &str| {
        rounds[round]["datums"]
            .as_array()
            .and_then(|datums| datums.iter().find(|datum| datum["MetricName"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing from round {round}: {printed}"))
    };
    assert_eq!(
        value(0, "assignIPAddresses"),
        serde_json::json!({"MetricName": "assignIPAddresses", "Value": 7.0, "Unit": "Count",
                           "Dimensions": [{"Name": "CLUSTER_ID", "Value": "offline"}]})
    );
    assert_eq!(value(0, "addReqCount")["Value"], 0.0);
    assert_eq!(value(1, "addReqCount")["Value"], 10.0);
}

#[test]
fn aggregate_takes_stale_rounds_like_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = dir.path().join("round-1");
    let second = dir.path().join("round-2");
    write_round(&first, &[("aws-node-a", POD_A), ("aws-node-b", POD_B)]);
    // b's file does not parse in the second round.
    write_round(
        &second,
        &[
            ("aws-node-a", POD_A),
            ("aws-node-b", "awscni_assigned_ip_addresses{"),
        ],
    );
    let assigned_in_round_2 = |extra: &[&str]| {
        let (first, second) = (first.display().to_string(), second.display().to_string());
        let mut args = vec!["aggregate", "--round", &first, "--round", &second];
        args.extend_from_slice(extra);
        let output = publisher(&[("AWS_CLUSTER_ID", "c")], &args);
        assert!(output.status.success(), "{output:?}");
        let printed: Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
        printed["rounds"][1]["datums"]
            .as_array()
            .and_then(|datums| {
                datums
                    .iter()
                    .find(|datum| datum["MetricName"] == "assignIPAddresses")
            })
            .and_then(|datum| datum["Value"].as_f64())
    };
    // By default b's round-1 gauge (4) stands in for it, as `run` would publish.
    assert_eq!(assigned_in_round_2(&[]), Some(7.0));
    assert_eq!(assigned_in_round_2(&["--stale-rounds", "0"]), Some(3.0));
}

#[test]
fn aggregate_refuses_a_missing_directory() {
    let output = publisher(
        &[("AWS_CLUSTER_ID", "c")],
        &["aggregate", "--round", "/nonexistent/round-1"],
    );
    assert_fails_with(&output, &["/nonexistent/round-1"]);
    let output = publisher(&[], &["aggregate", "--round", "/tmp"]);
    assert_fails_with(&output, &["AWS_CLUSTER_ID"]);
}
