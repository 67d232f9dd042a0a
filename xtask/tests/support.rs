//! Shared helpers: running the real `xtask` binary, and the rendering scenarios.

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `xtask` binary built for this test run with `args`, in `dir`.
pub fn xtask(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("the xtask binary runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A made-up issuer in the shape EKS uses for `region`'s partition.
pub fn issuer_for(region: &str, dns_suffix: &str) -> String {
    format!("https://oidc.eks.{region}.{dns_suffix}/id/EXAMPLED539D4633E53DE1B71EXAMPLE")
}

/// The render flags of one scenario, and the config file (from `tests/fixtures`) it reads.
pub struct Scenario {
    pub name: &'static str,
    flags: Vec<String>,
    config: Option<&'static str>,
}

impl Scenario {
    /// The scenario's arguments for a run in `dir`: its config file is copied there, so
    /// that the arguments (and the snapshot header showing them) name it relative to `dir`.
    pub fn args(&self, dir: &Path) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(config) = self.config {
            let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(config);
            std::fs::copy(&fixture, dir.join(config)).expect("the fixture is copied");
            args.extend(["--config".to_owned(), config.to_owned()]);
        }
        args.extend(self.flags.iter().cloned());
        args
    }
}

/// One scenario per partition (IRSA), plus the other identity mode and the overrides.
/// Every scenario's artifacts, from `render --output json` run in `dir`, with its name.
pub fn rendered_scenarios(dir: &Path) -> Vec<(&'static str, serde_json::Value)> {
    scenarios()
        .into_iter()
        .map(|scenario| {
            let scenario_args = scenario.args(dir);
            let mut args = vec!["render", "--output", "json"];
            args.extend(scenario_args.iter().map(String::as_str));
            let output = xtask(dir, &args);
            assert!(
                output.status.success(),
                "{}: {}",
                scenario.name,
                stderr(&output)
            );
            let rendered = serde_json::from_str(&stdout(&output))
                .unwrap_or_else(|error| panic!("{}: not JSON: {error}", scenario.name));
            (scenario.name, rendered)
        })
        .collect()
}

pub fn scenarios() -> Vec<Scenario> {
    let irsa = |name: &'static str, region: &str, suffix: &str| Scenario {
        name,
        config: None,
        flags: [
            "--region",
            region,
            "--cluster",
            "prod",
            "--account",
            "111122223333",
            "--oidc-issuer",
            &issuer_for(region, suffix),
        ]
        .map(String::from)
        .to_vec(),
    };
    let mut all = vec![
        irsa("aws-us-west-2-irsa", "us-west-2", "amazonaws.com"),
        irsa("aws-cn-cn-north-1-irsa", "cn-north-1", "amazonaws.com.cn"),
        irsa(
            "aws-us-gov-us-gov-west-1-irsa",
            "us-gov-west-1",
            "amazonaws.com",
        ),
        irsa(
            "aws-eusc-eusc-de-east-1-irsa",
            "eusc-de-east-1",
            "amazonaws.eu",
        ),
        irsa("aws-iso-us-iso-east-1-irsa", "us-iso-east-1", "c2s.ic.gov"),
        irsa(
            "aws-iso-b-us-isob-east-1-irsa",
            "us-isob-east-1",
            "sc2s.sgov.gov",
        ),
        irsa(
            "aws-iso-e-eu-isoe-west-1-irsa",
            "eu-isoe-west-1",
            "cloud.adc-e.uk",
        ),
        irsa(
            "aws-iso-f-us-isof-south-1-irsa",
            "us-isof-south-1",
            "csp.hci.ic.gov",
        ),
    ];
    all.push(Scenario {
        config: None,
        name: "aws-il-central-1-pod-identity",
        flags: [
            "--region",
            "il-central-1",
            "--cluster",
            "payments",
            "--account",
            "012345678901",
            "--identity",
            "pod-identity",
            "--version",
            "v1.19.6",
        ]
        .map(String::from)
        .to_vec(),
    });
    all.push(Scenario {
        config: None,
        name: "aws-us-west-2-publisher-leader-election",
        flags: [
            "--region",
            "us-west-2",
            "--cluster",
            "prod",
            "--account",
            "111122223333",
            "--identity",
            "pod-identity",
            "--publisher-image",
            "registry.example.com/cni-metrics-publisher:v0.1.0",
            "--leader-elect",
        ]
        .map(String::from)
        .to_vec(),
    });
    all.push(Scenario {
        config: None,
        name: "aws-eu-west-1-overrides",
        flags: [
            "--region",
            "eu-west-1",
            "--cluster",
            "a-cluster-name-that-is-far-too-long-to-fit-in-an-iam-role-name",
            "--account",
            "111122223333",
            "--oidc-issuer",
            &issuer_for("eu-west-1", "amazonaws.com"),
            "--namespace",
            "monitoring",
            "--image",
            "registry.example.com/mirror/cni-metrics-helper:v1.22.4",
            "--version",
            "v1.22.4",
        ]
        .map(String::from)
        .to_vec(),
    });
    all.push(Scenario {
        name: "aws-us-west-2-knobs",
        config: Some("knobs.yaml"),
        // Flags add to the file's maps and lists.
        flags: [
            "--pod-label",
            "tier=platform",
            "--image-pull-secret",
            "mirror-pull",
        ]
        .map(String::from)
        .to_vec(),
    });
    all.push(Scenario {
        name: "aws-us-west-2-alarms-per-az",
        config: Some("alarms.yaml"),
        // The flag's action adds to the file's, except where an alarm names its own.
        flags: [
            "--alarm-action",
            "arn:aws:sns:us-west-2:111122223333:platform-team",
        ]
        .map(String::from)
        .to_vec(),
    });
    all.push(Scenario {
        config: None,
        name: "aws-us-west-2-no-alarms",
        flags: [
            "--region",
            "us-west-2",
            "--cluster",
            "prod",
            "--account",
            "111122223333",
            "--identity",
            "pod-identity",
            "--no-alarms",
        ]
        .map(String::from)
        .to_vec(),
    });
    all
}
