//! The rendered identity policy through `parliament`, an offline IAM policy linter, on top
//! of the exact assertions of the snapshot tests. (parliament does not understand trust
//! policies, so those are covered by the snapshots alone.)

use std::io::Write;
use std::process::{Command, Stdio};

use sandbox::python_tools::{PythonTools, workspace_root};

use crate::support::rendered_scenarios;

/// Runs parliament on `policy`; Ok when it reports nothing. The policy goes on stdin:
/// parliament's `--file` refuses to run when stdin is not a terminal, as on CI.
fn lint(tools: &PythonTools, policy: &str) -> Result<(), String> {
    let mut child = Command::new(tools.bin("parliament"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("running parliament: {error}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(policy.as_bytes())
        .map_err(|error| format!("writing to parliament: {error}"))?;
    let output = child
        .wait_with_output()
        .map_err(|error| format!("waiting for parliament: {error}"))?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() && report.trim().is_empty() {
        Ok(())
    } else {
        Err(report)
    }
}

#[test]
fn the_identity_policy_has_no_findings_in_any_scenario() {
    let tools = PythonTools::find(&workspace_root()).unwrap_or_else(|error| panic!("{error}"));
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, rendered) in rendered_scenarios(dir.path()) {
        let policy = rendered["iam-policy.json"].to_string();
        lint(&tools, &policy).unwrap_or_else(|report| panic!("{name}: {report}"));
    }
}

#[test]
fn the_linter_does_report_a_bad_policy() {
    let tools = PythonTools::find(&workspace_root()).unwrap_or_else(|error| panic!("{error}"));
    let bad = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"cloudwatch:PutMetricDatum","Resource":"*"}]}"#;
    assert!(lint(&tools, bad).is_err());
}
