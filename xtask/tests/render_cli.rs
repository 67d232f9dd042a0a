//! `cargo xtask render` as a user runs it: the files, the JSON output, the exit codes and
//! the refusals.

use std::fs;

use crate::support::{issuer_for, stderr, stdout, xtask};

const GOOD: [&str; 8] = [
    "render",
    "--region",
    "eu-west-1",
    "--cluster",
    "prod",
    "--account",
    "111122223333",
    "--oidc-issuer",
];

fn good_args(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = GOOD.iter().map(|s| s.to_string()).collect();
    args.push(issuer_for("eu-west-1", "amazonaws.com"));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn run(dir: &std::path::Path, args: &[String]) -> std::process::Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    xtask(dir, &args)
}

#[test]
fn render_writes_the_five_files_and_lists_them_on_stdout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = run(dir.path(), &good_args(&["--out", "out"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let listed: Vec<String> = stdout(&output).lines().map(String::from).collect();
    assert_eq!(
        listed,
        [
            "iam-policy.json",
            "trust-policy.json",
            "manifests.yaml",
            "dashboard.json",
            "alarms.json"
        ]
        .map(|name| format!("out/{name}"))
    );
    for name in [
        "iam-policy.json",
        "trust-policy.json",
        "manifests.yaml",
        "dashboard.json",
        "alarms.json",
    ] {
        let text = fs::read_to_string(dir.path().join("out").join(name)).expect("file written");
        assert!(text.ends_with('\n'), "{name} ends with a newline");
    }
    let names: Vec<_> = fs::read_dir(dir.path().join("out"))
        .expect("out dir")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(
        names.len(),
        5,
        "no staging files are left behind: {names:?}"
    );
    let manifests =
        fs::read_to_string(dir.path().join("out/manifests.yaml")).expect("manifests written");
    assert!(
        manifests
            .contains("602401143452.dkr.ecr.eu-west-1.amazonaws.com/cni-metrics-helper:v1.23.0")
    );
}

#[test]
fn render_defaults_to_the_rendered_directory_and_overwrites_on_a_second_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    assert!(run(dir.path(), &good_args(&[])).status.success());
    let second = run(dir.path(), &good_args(&["--version", "v1.22.4"]));
    assert!(second.status.success(), "{}", stderr(&second));
    let manifests =
        fs::read_to_string(dir.path().join("rendered/manifests.yaml")).expect("written");
    assert!(manifests.contains("cni-metrics-helper:v1.22.4"));
}

#[test]
fn output_json_prints_one_object_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = run(
        dir.path(),
        &good_args(&["--output", "json", "--out", "out"]),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let value: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("stdout is JSON");
    let object = value.as_object().expect("an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "alarms.json",
            "dashboard.json",
            "iam-policy.json",
            "manifests.yaml",
            "trust-policy.json"
        ]
    );
    let kinds: Vec<&str> = value["manifests.yaml"]
        .as_array()
        .expect("manifests are a list")
        .iter()
        .map(|object| object["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment"
        ]
    );
    assert_eq!(
        value["iam-policy.json"]["Statement"][0]["Action"],
        "cloudwatch:PutMetricData"
    );
    assert!(
        !dir.path().join("out").exists(),
        "--output json writes no files"
    );
}

#[test]
fn a_config_file_supplies_values_and_flags_win() {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(
        dir.path().join("cluster.yaml"),
        "region: cn-northwest-1\ncluster: from-file\naccount: \"012345678901\"\nidentity: pod-identity\nnamespace: monitoring\nout: from-file-dir\n",
    )
    .expect("config written");
    let output = xtask(
        dir.path(),
        &[
            "render",
            "--config",
            "cluster.yaml",
            "--cluster",
            "from-flag",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let manifests =
        fs::read_to_string(dir.path().join("from-file-dir/manifests.yaml")).expect("written");
    assert!(
        manifests
            .contains("961992271922.dkr.ecr.cn-northwest-1.amazonaws.com.cn/cni-metrics-helper:")
    );
    assert!(
        manifests.contains("value: \"from-flag\""),
        "the flag wins over the file"
    );
    assert!(manifests.contains("namespace: \"monitoring\""));
}

/// Pod Identity needs an upstream helper built with an AWS SDK that knows the agent: the
/// refusal names the version and the first that can, and where the line is, nothing else
/// (a newer version, or our publisher at the old version) is refused.
#[test]
fn pod_identity_is_refused_for_an_upstream_helper_too_old_to_use_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = run(
        dir.path(),
        &good_args(&["--identity", "pod-identity", "--version", "v1.14.1"]),
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(
        stderr(&output),
        "error: upstream's cni-metrics-helper v1.14.1 cannot use EKS Pod Identity \
         (its AWS SDK predates the Pod Identity agent; v1.15.5 is the first release that can): \
         pass --version v1.15.5 or later, or --identity irsa, or run our publisher (--publisher ours)\n"
    );
    assert!(!dir.path().join("rendered").exists(), "nothing written");
    for extra in [
        ["--version", "v1.15.5"].as_slice(),
        &["--version", "v1.19.4"],
        &[
            "--version",
            "v1.11.0",
            "--publisher-image",
            "111122223333.dkr.ecr.eu-west-1.amazonaws.com/cni-metrics-publisher@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ],
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut args = vec!["--identity", "pod-identity", "--out", "out"];
        args.extend_from_slice(extra);
        let output = run(dir.path(), &good_args(&args));
        assert!(output.status.success(), "{extra:?}: {}", stderr(&output));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let output = run(
        dir.path(),
        &good_args(&["--identity", "irsa", "--version", "v1.11.0", "--out", "out"]),
    );
    assert!(
        output.status.success(),
        "irsa at v1.11.0: {}",
        stderr(&output)
    );
}

/// Each bad input: exit code 1, exactly one error line naming the problem, nothing written.
#[test]
fn bad_input_gets_one_clear_error_line_exit_1_and_writes_nothing() {
    let issuer = issuer_for("eu-west-1", "amazonaws.com");
    let base = |region: &str| -> Vec<String> {
        [
            "render",
            "--out",
            "out",
            "--region",
            region,
            "--cluster",
            "prod",
            "--account",
            "111122223333",
            "--oidc-issuer",
            &issuer,
        ]
        .map(String::from)
        .to_vec()
    };
    // Replaces the value of a flag that is already there, or appends the flag.
    let with = |mut args: Vec<String>, extra: &[&str]| {
        match args.iter().position(|arg| arg == extra[0]) {
            Some(at) if extra.len() == 2 => args[at + 1] = extra[1].to_owned(),
            _ => args.extend(extra.iter().map(|s| s.to_string())),
        }
        args
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (base("mars-east-1"), "unknown region 'mars-east-1'"),
        (
            base("us-west-"),
            "nearest known regions: us-west-1, us-west-2",
        ),
        (
            base("ap-southeast-9"),
            "no known ECR registry serves the cni-metrics-helper image in region 'ap-southeast-9'",
        ),
        (
            with(base("eu-west-1"), &["--account", "12345678901"]),
            "invalid --account '12345678901'",
        ),
        (
            with(base("eu-west-1"), &["--account", "11112222333a"]),
            "exactly 12 digits",
        ),
        (
            with(
                base("eu-west-1"),
                &[
                    "--oidc-issuer",
                    "http://oidc.eks.eu-west-1.amazonaws.com/id/X",
                ],
            ),
            "invalid --oidc-issuer",
        ),
        (
            with(
                base("eu-west-1"),
                &["--oidc-issuer", "oidc.eks.eu-west-1.amazonaws.com/id/X"],
            ),
            "expected an https URL",
        ),
        (
            with(base("eu-west-1"), &["--version", "1.23.0"]),
            "is not of the form vX.Y.Z",
        ),
        (
            with(base("eu-west-1"), &["--version", "v1.19.1"]),
            "v1.19.1 is not a known release; known releases nearby: v1.19.0, v1.19.2",
        ),
        (
            with(base("eu-west-1"), &["--version", "v9.0.0"]),
            "v9.0.0 is not a known release",
        ),
        (
            with(base("eu-west-1"), &["--identity", "kiam"]),
            "invalid value 'kiam' for '--identity",
        ),
        (
            with(base("eu-west-1"), &["--namespace", "Kube_System"]),
            "invalid --namespace",
        ),
        (
            with(base("eu-west-1"), &["--cluster", "prod.eu"]),
            "invalid --cluster 'prod.eu'",
        ),
        (
            with(base("eu-west-1"), &["--role-name", "role/with/slash"]),
            "invalid --role-name",
        ),
        (
            with(base("eu-west-1"), &["--image", "has space"]),
            "invalid --image",
        ),
        (
            with(base("eu-west-1"), &["--bogus"]),
            "unexpected argument '--bogus'",
        ),
        (
            with(base("eu-west-1"), &["--leader-elect"]),
            "--leader-elect needs our publisher (--publisher ours or --publisher-image)",
        ),
        (
            with(
                with(base("eu-west-1"), &["--image", "a/b:c"]),
                &["--publisher-image", "d/e:f"],
            ),
            "--image, --publisher-image and --publisher ours each choose the image",
        ),
        (
            with(base("eu-west-1"), &["--publisher-tag", "v1"]),
            "--publisher-repository and --publisher-tag choose the image of --publisher ours",
        ),
        (
            with(
                with(base("eu-west-1"), &["--publisher", "ours"]),
                &["--publisher-repository", "Upper/Case"],
            ),
            "invalid --publisher-repository 'Upper/Case'",
        ),
        (
            with(
                with(base("eu-west-1"), &["--publisher", "ours"]),
                &["--publisher-tag", ".bad"],
            ),
            "invalid --publisher-tag '.bad'",
        ),
        (
            with(
                with(base("eu-west-1"), &["--publisher", "ours"]),
                &["--publisher-image", "d/e:f"],
            ),
            "--image, --publisher-image and --publisher ours each choose the image",
        ),
        (
            with(base("eu-west-1"), &["--identity", "auto"]),
            "--identity auto is decided from the live cluster",
        ),
        (
            with(
                base("eu-west-1"),
                &["--identity", "pod-identity", "--version", "v1.15.4"],
            ),
            "upstream's cni-metrics-helper v1.15.4 cannot use EKS Pod Identity",
        ),
        (
            with(
                base("eu-west-1"),
                &[
                    "--identity",
                    "pod-identity",
                    "--version",
                    "v1.11.0",
                    "--image",
                    "mirror.example.com/cni-metrics-helper:v1.11.0",
                ],
            ),
            "upstream's cni-metrics-helper v1.11.0 cannot use EKS Pod Identity",
        ),
        (
            [
                "render",
                "--out",
                "out",
                "--region",
                "eu-west-1",
                "--cluster",
                "prod",
                "--account",
                "111122223333",
            ]
            .map(String::from)
            .to_vec(),
            "--oidc-issuer is required with --identity irsa",
        ),
        (
            ["render", "--out", "out", "--cluster", "prod"]
                .map(String::from)
                .to_vec(),
            "--region is required",
        ),
        (
            with(base("eu-west-1"), &["--config", "missing.yaml"]),
            "cannot read the config file missing.yaml",
        ),
    ];
    for (args, expected) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        let output = run(dir.path(), &args);
        let err = stderr(&output);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?} must exit 1; stderr: {err}"
        );
        assert!(
            err.contains(expected),
            "{args:?}: expected {expected:?} in {err:?}"
        );
        assert_eq!(
            err.lines().count(),
            1,
            "{args:?}: one error line, got {err:?}"
        );
        assert!(err.starts_with("error: "), "{err}");
        assert!(stdout(&output).is_empty(), "{args:?}: nothing on stdout");
        assert!(
            !dir.path().join("out").exists(),
            "{args:?}: nothing written"
        );
    }
}

#[test]
fn an_unknown_key_in_the_config_file_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(dir.path().join("c.yaml"), "regoin: eu-west-1\n").expect("written");
    let output = xtask(dir.path(), &["render", "--config", "c.yaml"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("unknown field `regoin`"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_unwritable_out_directory_is_an_error_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A regular file where the directory should be: creating the directory must fail.
    fs::write(dir.path().join("blocked"), "not a directory").expect("written");
    let output = run(dir.path(), &good_args(&["--out", "blocked/out"]));
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("cannot write the rendered files to blocked/out"),
        "{err}"
    );
    assert!(err.contains("choose a writable --out directory"), "{err}");
    assert_eq!(
        fs::read_to_string(dir.path().join("blocked")).expect("kept"),
        "not a directory"
    );
}

#[test]
fn help_exits_0_and_documents_the_exit_codes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = xtask(dir.path(), &["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(&output);
    assert!(text.contains("Exit codes:"), "{text}");
    assert!(text.contains("render"), "{text}");
}

/// Each refused pod knob: exit 1, one error line naming the key and what to do, nothing
/// written. The file holds the knob; the cluster comes from flags.
#[test]
fn a_bad_pod_knob_is_refused_with_its_key_before_anything_is_rendered() {
    let cases: [(&str, &[&str], &str); 10] = [
        (
            "tolerations:\n  - key: dedicated\n    operater: Exists\n",
            &[],
            "invalid tolerations: unknown fields [0].operater",
        ),
        (
            "replicas: 2\n",
            &["--publisher-image", "registry.example.com/p:v1"],
            "replicas 2 needs leader election",
        ),
        (
            "replicas: 2\n",
            &[],
            "upstream's cni-metrics-helper has no leader election, so it runs exactly 1 replica",
        ),
        (
            "pod-labels:\n  app.kubernetes.io/managed-by: helm\n",
            &[],
            "pod-labels 'app.kubernetes.io/managed-by' is a label the tool sets itself",
        ),
        (
            "",
            &["--pod-label", "k8s-app=other"],
            "pod-labels 'k8s-app' is a label the tool sets itself",
        ),
        (
            "extra-env:\n  - name: USE_PROMETHEUS\n    value: \"false\"\n",
            &[],
            "extra-env 'USE_PROMETHEUS' is rendered by the tool itself",
        ),
        (
            "log-level: verbose\n",
            &[],
            "invalid log-level 'verbose': expected DEBUG, INFO, WARN or ERROR",
        ),
        (
            "",
            &["--node-selector", "kubernetes.io/os=windows"],
            "node-selector kubernetes.io/os=windows: the helpers are Linux images",
        ),
        (
            "self-metrics: false\n",
            &[],
            "self-metrics: false applies to our publisher",
        ),
        (
            "",
            &["--self-metrics", "false"],
            "self-metrics: false applies to our publisher",
        ),
    ];
    for (config, flags, expected) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join("knobs.yaml"), config).expect("config written");
        let mut extra = vec!["--out", "out", "--config", "knobs.yaml"];
        extra.extend(flags);
        let output = run(dir.path(), &good_args(&extra));
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{config:?} {flags:?}: {err}");
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        assert_eq!(err.lines().count(), 1, "one error line: {err:?}");
        assert!(
            !dir.path().join("out").exists(),
            "{config:?}: nothing written"
        );
    }
}

/// Flags win over the file for single values; the log level is rendered upper case and
/// `prometheus` turns on the upstream helper's endpoint too.
#[test]
fn pod_knob_flags_win_over_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(
        dir.path().join("knobs.yaml"),
        "log-level: warn\ninterval: 30\nnode-selector:\n  pool: a\n",
    )
    .expect("config written");
    let output = run(
        dir.path(),
        &good_args(&[
            "--out",
            "out",
            "--config",
            "knobs.yaml",
            "--log-level",
            "error",
            "--interval",
            "90",
            "--node-selector",
            "pool=b",
            "--prometheus",
        ]),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let manifests = fs::read_to_string(dir.path().join("out/manifests.yaml")).expect("written");
    assert!(
        manifests.contains("- name: AWS_VPC_K8S_CNI_LOGLEVEL\n              value: \"ERROR\""),
        "{manifests}"
    );
    assert!(
        manifests.contains("- name: METRIC_UPDATE_INTERVAL\n              value: \"90\""),
        "{manifests}"
    );
    assert!(manifests.contains("\"pool\": \"b\""), "{manifests}");
    assert!(
        manifests.contains("- name: USE_PROMETHEUS\n              value: \"true\""),
        "{manifests}"
    );
}
