//! A sandbox with the xtask binary pointed at it, shared by the end-to-end tests of the
//! cluster commands.

use std::collections::BTreeSet;
use std::process::Output;

use kube::config::{KubeConfigOptions, Kubeconfig};
use sandbox::environment::{Sandbox, SandboxOptions};
use sandbox::python_tools::{PythonTools, workspace_root};
use serde_json::Value;

/// The default names for the cluster `sandbox` in the sandbox's default region, us-west-2.
pub const ROLE: &str = "AmazonEKSVPCCNIMetricsHelperRole-sandbox-us-west-2";
pub const POLICY: &str = "AmazonEKSVPCCNIMetricsHelperPolicy";
pub const DASHBOARD: &str = "CNI-Metrics-sandbox-us-west-2";

pub struct World {
    pub sandbox: Sandbox,
    home: tempfile::TempDir,
}

impl World {
    pub async fn start() -> World {
        World::start_with(|_| {}).await
    }

    /// A sandbox with its options changed by `adjust` first.
    pub async fn start_with(adjust: impl FnOnce(&mut SandboxOptions)) -> World {
        let tools = python_tools();
        let home = tempfile::tempdir().expect("temp dir");
        let mut options = SandboxOptions {
            nodes: 1,
            ..SandboxOptions::new(home.path().join("sandbox"))
        };
        adjust(&mut options);
        let sandbox = Sandbox::start(&tools, options)
            .await
            .expect("the sandbox starts");
        World { sandbox, home }
    }

    /// A second cluster of the same name in `region`, in the same AWS account: it uses
    /// `other`'s AWS emulator, with a Kubernetes API server and fleet of its own.
    pub async fn start_beside(other: &World, region: &str) -> World {
        World::start_with(|options| {
            options.region = region.to_owned();
            options.aws_endpoint = Some(other.sandbox.aws_endpoint().to_owned());
        })
        .await
    }

    /// Runs the real `kubectl` against this sandbox's API server, as a user would after
    /// `source .sandbox/env`; the test fails, with kubectl's stderr, when it fails.
    pub async fn kubectl(&self, args: &[&str]) -> String {
        let output = tokio::process::Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", self.sandbox.kubeconfig_path())
            .env("HOME", self.home.path())
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .expect("kubectl runs (cargo xtask test installs it)");
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}",
            stderr(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `kubectl create KIND ...` as a user types it. kubectl sends the objects of such
    /// generator commands as protobuf, which the sandbox's API server does not speak; the
    /// same object, generated client-side as YAML and created from a file, is sent as JSON.
    pub async fn kubectl_create(&self, args: &[&str]) {
        let mut generate = vec!["create"];
        generate.extend(args);
        generate.extend(["--dry-run=client", "-o", "yaml"]);
        let yaml = self.kubectl(&generate).await;
        let file = self.home.path().join("kubectl-create.yaml");
        std::fs::write(&file, yaml).expect("written");
        // The sandbox serves no OpenAPI documents for kubectl to validate against yet.
        self.kubectl(&[
            "create",
            "--validate=false",
            "-f",
            &file.display().to_string(),
        ])
        .await;
    }

    /// Runs a Python script with boto3 (installed with the emulator) against this
    /// sandbox's AWS endpoint, as the AWS CLI a user follows the EKS user guide with would;
    /// `args` go to the script.
    pub async fn boto3(&self, script: &std::path::Path, args: &[&str]) -> String {
        let mut command = self.command(python_tools().python(), &[]);
        command.arg(script).args(args);
        // botocore reads the region from AWS_DEFAULT_REGION only.
        command.env("AWS_DEFAULT_REGION", self.sandbox.region());
        let output = command.output().await.expect("python runs");
        assert!(
            output.status.success(),
            "{} failed: {}",
            script.display(),
            stderr(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Writes a script into this world's home directory and returns its path.
    pub fn write_script(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.home.path().join(name);
        std::fs::write(&path, text).expect("the script is written");
        path
    }

    /// The Python interpreter with boto3 (the test tools' virtual environment).
    pub fn python(&self) -> std::path::PathBuf {
        python_tools().python()
    }

    /// Runs xtask with the sandbox's environment only.
    pub async fn xtask(&self, args: &[&str]) -> Output {
        self.xtask_with_env(args, &[]).await
    }

    pub async fn xtask_with_env(&self, args: &[&str], remove: &[&str]) -> Output {
        let mut command = self.command(env!("CARGO_BIN_EXE_xtask").into(), remove);
        command.args(args);
        command.output().await.expect("xtask runs")
    }

    /// `program` with the sandbox's environment only (less `remove`), as a user who
    /// sourced `.sandbox/env` in a clean shell runs it.
    fn command(&self, program: std::path::PathBuf, remove: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(program);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .stdin(std::process::Stdio::null());
        for (name, value) in self.sandbox.env_vars() {
            if !remove.contains(&name.as_str()) {
                command.env(name, value);
            }
        }
        command
    }

    pub fn iam(&self) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&self.sandbox.sdk_config())
    }

    pub fn cloudwatch(&self) -> aws_sdk_cloudwatch::Client {
        aws_sdk_cloudwatch::Client::new(&self.sandbox.sdk_config())
    }

    pub async fn kube(&self) -> kube::Client {
        let kubeconfig = Kubeconfig::read_from(self.sandbox.kubeconfig_path()).expect("kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("config");
        kube::Client::try_from(config).expect("client")
    }

    pub fn policy_arn(&self) -> String {
        format!("arn:aws:iam::{}:policy/{POLICY}", self.sandbox.account())
    }

    /// Forgets the requests seen so far, so that a count covers one command.
    pub fn clear_request_logs(&self) {
        self.sandbox
            .emulator()
            .expect("own emulator")
            .clear_recording()
            .expect("cleared");
        self.sandbox.api().clear_requests();
    }

    pub fn mutating_aws_calls(&self) -> Vec<String> {
        self.sandbox
            .emulator()
            .expect("own emulator")
            .recorded_requests()
            .expect("recording")
            .into_iter()
            .filter(|request| request.is_mutating())
            .map(|request| format!("{} {:?} {}", request.method, request.action, request.path))
            .collect()
    }

    pub fn kubernetes_writes(&self) -> Vec<String> {
        self.sandbox
            .api()
            .requests()
            .into_iter()
            .filter(|request| request.is_write())
            .map(|request| format!("{} {}", request.method, request.path))
            .collect()
    }

    /// Runs `command --cluster sandbox --output json` with `extra`, and parses what it
    /// prints; the test fails, with the command's stderr, when that is not JSON.
    pub async fn json(&self, command: &str, extra: &[&str]) -> (Output, Value) {
        let mut args = vec![command, "--cluster", "sandbox", "--output", "json"];
        args.extend(extra);
        let output = self.xtask(&args).await;
        let value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|_| panic!("{command} prints JSON; stderr: {}", stderr(&output)));
        (output, value)
    }

    pub async fn plan_json(&self, extra: &[&str]) -> (Option<i32>, Value) {
        let mut args = vec!["--detailed-exitcode"];
        args.extend(extra);
        let (output, value) = self.json("plan", &args).await;
        (output.status.code(), value)
    }

    pub async fn deploy(&self, extra: &[&str]) {
        let mut args = vec!["deploy", "--cluster", "sandbox", "--yes"];
        args.extend(extra);
        let output = self.xtask(&args).await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "deploy failed: {}",
            stderr(&output)
        );
    }
}

pub use crate::support::stderr;

fn python_tools() -> PythonTools {
    PythonTools::find(&workspace_root()).unwrap_or_else(|error| panic!("{error}"))
}

/// The role and dashboard names `deploy` picks for the cluster `sandbox` in `region`.
pub fn default_names(region: &str) -> (String, String) {
    (
        xtask::settings::default_role_name("sandbox", region),
        xtask::settings::default_dashboard_name("sandbox", region),
    )
}

/// The alarms a deploy of upstream's helper makes for the cluster `sandbox` in
/// us-west-2, as plan lines with `action`: ipamd's counters are not alarmed on from
/// upstream's helper, and its publisher alarms watch `maxIPAddresses`.
pub fn default_alarms(action: &str) -> Vec<String> {
    [
        "ip-utilisation-warning",
        "ip-utilisation-critical",
        "warm-pool-low",
        "publisher-silent",
    ]
    .iter()
    .map(|alarm| format!("{action} CloudWatch alarm {DASHBOARD}-{alarm}"))
    .collect()
}

/// The entry of a JSON list (a plan's `changes`, a status's `alarms`) whose `name` is
/// `name`; the test fails, showing the list, when there is none.
pub fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .and_then(|items| items.iter().find(|item| item["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

/// The `kind name` of every change that is not a no-op.
pub fn changed(plan: &Value) -> BTreeSet<String> {
    plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|change| change["action"] != "no-op")
        .map(|change| {
            format!(
                "{} {} {}",
                change["action"].as_str().unwrap_or(""),
                change["kind"].as_str().unwrap_or(""),
                change["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}
