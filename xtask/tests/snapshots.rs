//! Golden files: one snapshot per scenario holding all five rendered artifacts, so a review
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
        let scenario_args = scenario.args(dir.path());
        let mut args = vec!["render", "--out", "out"];
        args.extend(scenario_args.iter().map(String::as_str));
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
            "alarms.json",
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
                "{}:\n{}",
                path.display(),
                unified_diff(&expected, &snapshot, scenario.name)
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "rendered output differs from the snapshots:\n{}\nif the change is intended, run \
         `UPDATE_SNAPSHOTS=1 cargo test -p xtask --test main snapshots` and review the diff",
        stale.join("\n")
    );
}

#[test]
fn every_snapshot_belongs_to_a_scenario() {
    let mut names: Vec<String> = scenarios()
        .iter()
        .map(|s| format!("{}.snap", s.name))
        .collect();
    // The image's layer listing lives here too; `image.rs` owns it.
    names.push(crate::image::SNAPSHOT.to_owned());
    for entry in fs::read_dir(snapshot_dir()).expect("snapshot dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        assert!(names.contains(&name), "{name} has no scenario; delete it");
    }
}

/// What changed, as `diff -u` shows it: the snapshot as `-`, the new output as `+`.
fn unified_diff(expected: &str, actual: &str, name: &str) -> String {
    similar::TextDiff::from_lines(expected, actual)
        .unified_diff()
        .context_radius(3)
        .header(&format!("{name}.snap"), &format!("{name} (rendered now)"))
        .to_string()
}

#[test]
fn a_stale_snapshot_is_reported_with_the_lines_that_changed() {
    let diff = unified_diff("a\nb\nc\n", "a\nB\nc\n", "x");
    assert!(diff.contains("-b\n+B\n"), "{diff}");
    assert!(
        diff.starts_with("--- x.snap\n+++ x (rendered now)\n"),
        "{diff}"
    );
}
