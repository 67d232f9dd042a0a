//! Golden files: one snapshot per scenario holding all four rendered artifacts, so a review
//! sees every effect of a template change in one diff. Re-bless after an intended change:
//!
//!     UPDATE_SNAPSHOTS=1 cargo test -p xtask --test main snapshots
//!
//! and review `git diff xtask/tests/snapshots` before committing.

use std::fs;
use std::path::PathBuf;

use crate::support::{scenarios, stderr, xtask};

fn snapshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots")
}

#[test]
fn rendered_artifacts_match_their_snapshots() {
    let bless = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut stale = Vec::new();
    for scenario in scenarios() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut args = vec!["render", "--out", "out"];
        args.extend(scenario.args.iter().map(String::as_str));
        let output = xtask(dir.path(), &args);
        assert!(
            output.status.success(),
            "{}: {}",
            scenario.name,
            stderr(&output)
        );
        let mut snapshot = format!("# cargo xtask {}\n", args.join(" "));
        for file in [
            "iam-policy.json",
            "trust-policy.json",
            "manifests.yaml",
            "dashboard.json",
        ] {
            let text = fs::read_to_string(dir.path().join("out").join(file)).expect("rendered");
            snapshot.push_str(&format!("\n===== {file} =====\n{text}"));
        }
        let path = snapshot_dir().join(format!("{}.snap", scenario.name));
        if bless {
            fs::write(&path, &snapshot).expect("snapshot written");
            continue;
        }
        let expected = fs::read_to_string(&path).unwrap_or_default();
        if expected != snapshot {
            stale.push(format!(
                "{} ({} lines differ)",
                path.display(),
                diff_lines(&expected, &snapshot)
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "rendered output differs from the snapshots: {}\nif the change is intended, run \
         `UPDATE_SNAPSHOTS=1 cargo test -p xtask --test main snapshots` and review the diff",
        stale.join(", ")
    );
}

#[test]
fn every_snapshot_belongs_to_a_scenario() {
    let names: Vec<String> = scenarios()
        .iter()
        .map(|s| format!("{}.snap", s.name))
        .collect();
    for entry in fs::read_dir(snapshot_dir()).expect("snapshot dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        assert!(names.contains(&name), "{name} has no scenario; delete it");
    }
}

fn diff_lines(expected: &str, actual: &str) -> usize {
    let expected: Vec<&str> = expected.lines().collect();
    let actual: Vec<&str> = actual.lines().collect();
    let common = expected.iter().zip(&actual).filter(|(a, b)| a != b).count();
    common + expected.len().abs_diff(actual.len())
}
