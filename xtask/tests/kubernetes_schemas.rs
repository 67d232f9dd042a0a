//! Every rendered manifest against the official Kubernetes schemas of 1.29 to 1.34, offline,
//! with `kubernetes-validate --strict` from the project's Python tools (installed by
//! `cargo xtask test`).

use std::collections::BTreeSet;
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

/// Every rendered manifest, sent by the real kubectl to the sandbox's API server as a
/// server-side dry run with strict validation: the server checks each object against the
/// served schemas (unknown fields refused) and stores nothing.
#[test]
fn every_rendered_manifest_passes_kubectl_server_dry_run_with_strict_validation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files: Vec<(String, PathBuf)> = scenarios()
        .iter()
        .map(|scenario| {
            let file = render_scenario(dir.path(), scenario.name, &scenario.args(dir.path()));
            (scenario.name.to_owned(), file)
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let server = sandbox::kube_api::FakeApiServer::start()
            .await
            .expect("the fake API server starts");
        let kubectl = sandbox::kubectl::Kubectl::for_server(&server).expect("kubectl is set up");
        for (name, file) in &files {
            let path = file.to_string_lossy().into_owned();
            // The manifests go into a namespace the user already has (the tool does not
            // create namespaces), so the test makes the ones a scenario names first.
            let text = std::fs::read_to_string(file).expect("rendered");
            let namespaces: BTreeSet<&str> = text
                .lines()
                .filter_map(|line| line.trim().strip_prefix("namespace: "))
                .map(|value| value.trim_matches('"'))
                .collect();
            for namespace in namespaces {
                if server
                    .get_json("v1", "Namespace", None, namespace)
                    .is_none()
                {
                    let manifest = format!(
                        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n"
                    );
                    let created = kubectl
                        .run_with_stdin(&["create", "-f", "-"], Some(&manifest))
                        .await
                        .expect("kubectl runs");
                    assert!(created.success(), "{name}: {created}");
                }
            }
            let output = kubectl
                .run(&[
                    "apply",
                    "--dry-run=server",
                    "--validate=strict",
                    "-f",
                    &path,
                ])
                .await
                .expect("kubectl runs");
            assert!(output.success(), "{name}: {output}");
            let objects = text
                .lines()
                .filter(|line| line.starts_with("kind: "))
                .count();
            let dry_runs = output
                .stdout
                .lines()
                .filter(|line| line.ends_with(" created (server dry run)"))
                .count();
            assert_eq!(dry_runs, objects, "{name}: {output}");
            assert!(
                !output.stderr.contains("Warning"),
                "{name}: the server warned: {output}"
            );
        }
        let stored_writes: Vec<String> = server
            .requests()
            .iter()
            .filter(|request| request.is_write() && !request.path.ends_with("/namespaces"))
            .map(|request| format!("{} {}", request.method, request.path))
            .collect();
        assert!(
            stored_writes.is_empty(),
            "a server dry run stores nothing: {stored_writes:?}"
        );
        server.shutdown().await;
    });
}
