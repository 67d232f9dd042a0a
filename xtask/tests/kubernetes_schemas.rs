//! Every rendered manifest against the official Kubernetes schemas of 1.29 to 1.34, offline,
//! with `kubernetes-validate --strict` from the project's Python tools (installed by
//! `cargo xtask test`).

use std::path::{Path, PathBuf};
use std::process::Command;

use sandbox::python_tools::{PythonTools, workspace_root};

use crate::support::{scenarios, stderr, xtask};

const KUBERNETES_VERSIONS: [&str; 6] = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0"];

fn tools() -> PythonTools {
    PythonTools::find(&workspace_root()).unwrap_or_else(|error| panic!("{error}"))
}

/// Validates `files` for every supported version. kubernetes-validate only warns (exit 0)
/// about a kind or apiVersion it has no schema for, so any WARN line is a failure here.
fn validate(tools: &PythonTools, files: &[PathBuf]) -> Result<usize, String> {
    let mut passed = 0;
    for version in KUBERNETES_VERSIONS {
        let output = Command::new(tools.bin("kubernetes-validate"))
            .args(["--strict", "-k", version])
            .args(files)
            .output()
            .map_err(|error| format!("running kubernetes-validate: {error}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if !output.status.success() || text.contains("WARN") || text.contains("ERROR") {
            return Err(format!("Kubernetes {version}: {text}"));
        }
        passed += text
            .lines()
            .filter(|line| line.contains(" passed "))
            .count();
    }
    Ok(passed)
}

fn render_scenario(dir: &Path, name: &str, args: &[String]) -> PathBuf {
    let out = dir.join(name);
    let out_arg = out.to_string_lossy().into_owned();
    let mut all = vec!["render", "--out", &out_arg];
    all.extend(args.iter().map(String::as_str));
    let output = xtask(dir, &all);
    assert!(output.status.success(), "{name}: {}", stderr(&output));
    out.join("manifests.yaml")
}

#[test]
fn every_rendered_manifest_is_valid_for_kubernetes_1_29_to_1_34() {
    let tools = tools();
    let dir = tempfile::tempdir().expect("temp dir");
    let files: Vec<PathBuf> = scenarios()
        .iter()
        .map(|scenario| render_scenario(dir.path(), scenario.name, &scenario.args(dir.path())))
        .collect();
    let passed = validate(&tools, &files).unwrap_or_else(|problem| panic!("{problem}"));
    // Every object of every file, each validated once per Kubernetes version.
    let objects: usize = files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file).expect("rendered");
            text.lines()
                .filter(|line| line.starts_with("kind: "))
                .count()
        })
        .sum();
    assert!(objects >= files.len() * 4);
    assert_eq!(passed, objects * KUBERNETES_VERSIONS.len());
}

#[test]
fn the_validation_fails_on_a_misspelt_field_and_on_an_unknown_api_version() {
    let tools = tools();
    let dir = tempfile::tempdir().expect("temp dir");
    let typo = dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: x\nautomountServiceAccountTokens: true\n",
    )
    .expect("written");
    assert!(
        validate(&tools, &[typo]).is_err(),
        "strict mode catches typos"
    );
    let removed = dir.path().join("removed.yaml");
    std::fs::write(
        &removed,
        "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata:\n  name: x\n",
    )
    .expect("written");
    assert!(
        validate(&tools, &[removed]).is_err(),
        "a removed apiVersion is a failure"
    );
}
