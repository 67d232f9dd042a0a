//! A fleet: `plan`, `deploy`, `status` and `upgrade` given several `--config` files (or a
//! directory of them), one cluster each, worked on concurrently in this process.
//!
//! Each cluster's work is one tokio task, at most `--parallel` at a time. What a cluster
//! prints is captured and written when it finishes, every line prefixed with
//! `[<cluster>/<region>] `, one cluster's block at a time, so that lines never interleave;
//! its logs on stderr carry the same name as a span field. A cluster that fails (its config
//! unreadable, its kube context missing, its plan refused) is one failed row of the summary
//! and never stops the others. Then comes one summary table (or one JSON object) and one
//! exit code.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;
use tracing::Instrument;

use crate::exit;
use crate::flags::{ClusterFlags, ClusterInputs, OutputFormat};
use crate::settings::ConfigFile;

/// `--parallel`'s default. Each cluster's work is mostly waiting on AWS and its API server,
/// so a few at once hide most of that latency; more would mostly add to the load on the
/// shared, per-account AWS limits (IAM's are low and cross-region), and to the throttling
/// retries that slow everyone down, for little gain in a CI job.
pub const DEFAULT_PARALLEL: u16 = 4;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("cannot read the config directory {}: {error}", path.display())]
    ReadDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "the config directory {} holds no *.yaml or *.yml file: put one config file per cluster there",
        path.display()
    )]
    EmptyDir { path: PathBuf },
    #[error(
        "{flag} names one cluster, so it cannot apply to a fleet of {count} configs: set it in each config file instead"
    )]
    SingleClusterFlag { flag: &'static str, count: usize },
    #[error(
        "{} and {} both name cluster {cluster} in region {region} (account {account}): keep one config per cluster",
        first.display(),
        second.display()
    )]
    Duplicate {
        first: PathBuf,
        second: PathBuf,
        cluster: String,
        region: String,
        account: String,
    },
    #[error(
        "{command} on a fleet asks no question per cluster: review the changes with `cargo xtask plan` and the same --config, then re-run with --yes"
    )]
    NeedsYes { command: &'static str },
}

/// The config files `--config` names, when they make a fleet: several, or a directory
/// (every `*.yaml`/`*.yml` in it, sorted). `None` for no config or one file: one cluster,
/// as before fleets existed.
pub fn config_paths(args: &[PathBuf]) -> Result<Option<Vec<PathBuf>>, FleetError> {
    match args {
        [] => return Ok(None),
        [path] if !path.is_dir() => return Ok(None),
        [..] => {}
    }
    let mut paths = Vec::new();
    for arg in args {
        if arg.is_dir() {
            paths.extend(yaml_files(arg)?);
        } else {
            paths.push(arg.clone());
        }
    }
    Ok(Some(paths))
}

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, FleetError> {
    let read_error = |error| FleetError::ReadDir {
        path: dir.to_owned(),
        error,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        let yaml = path
            .extension()
            .and_then(|ext| ext.to_str())
            .is_some_and(|ext| ext == "yaml" || ext == "yml");
        if yaml && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(FleetError::EmptyDir {
            path: dir.to_owned(),
        });
    }
    files.sort();
    Ok(files)
}

/// One cluster of the fleet: its config file, the name it goes by, and its inputs (the
/// flags over the file), or why they could not be read.
pub struct Member {
    pub config: PathBuf,
    pub cluster: String,
    pub region: String,
    pub inputs: Result<ClusterInputs, String>,
}

impl Member {
    pub fn label(&self) -> String {
        format!("{}/{}", self.cluster, self.region)
    }
}

/// Reads every config and lays `flags` over each. Flags that name one cluster are refused,
/// and so are two configs of the same cluster, before any work; a config that cannot be
/// read is a member that fails alone.
pub fn members(flags: &ClusterFlags, paths: Vec<PathBuf>) -> Result<Vec<Member>, FleetError> {
    let count = paths.len();
    let single: [(&'static str, bool); 7] = [
        ("--cluster", flags.target.cluster.is_some()),
        ("--region", flags.target.region.is_some()),
        ("--account", flags.target.account.is_some()),
        ("--oidc-issuer", flags.target.oidc_issuer.is_some()),
        ("--role-name", flags.target.role_name.is_some()),
        ("--dashboard-name", flags.deploy.dashboard_name.is_some()),
        ("--context", flags.deploy.context.is_some()),
    ];
    if let Some((flag, _)) = single.iter().find(|(_, given)| *given) {
        return Err(FleetError::SingleClusterFlag { flag, count });
    }
    let mut seen: BTreeMap<(String, String, String), PathBuf> = BTreeMap::new();
    let mut members = Vec::with_capacity(count);
    for config in paths {
        let stem = config
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| config.display().to_string());
        let member = match ConfigFile::load(&config) {
            Ok(file) => {
                let (cluster, region, account) = file.identity();
                let cluster = cluster.map_or(stem, str::to_owned);
                // Without a region in the file, the AWS CLI's chain decides, the same for all.
                let region = region.unwrap_or("default-region").to_owned();
                let key = (
                    cluster.clone(),
                    region.clone(),
                    account.unwrap_or("of the credentials").to_owned(),
                );
                if let Some(first) = seen.get(&key) {
                    return Err(FleetError::Duplicate {
                        first: first.clone(),
                        second: config,
                        cluster: key.0,
                        region: key.1,
                        account: key.2,
                    });
                }
                seen.insert(key, config.clone());
                Member {
                    inputs: Ok(flags.clone().over(file)),
                    config,
                    cluster,
                    region,
                }
            }
            Err(error) => Member {
                inputs: Err(crate::aws::one_line(&error)),
                config,
                cluster: stem,
                region: "-".to_owned(),
            },
        };
        members.push(member);
    }
    Ok(members)
}

/// What one cluster's operation found or did.
#[derive(Debug, Clone, Default)]
pub struct Done {
    /// The region as resolved (the file may leave it to the AWS CLI's chain).
    pub region: Option<String>,
    pub live_version: Option<String>,
    pub pinned_version: Option<String>,
    /// Resources to create, update, delete or adopt (plan), applied (deploy), drifted
    /// (status), or upgrade steps taken (upgrade).
    pub changes: usize,
    /// The command's own JSON for this cluster (its plan, status or upgrade report).
    pub detail: serde_json::Value,
}

/// One cluster's operation, finished: what it printed, and how it ended.
pub struct Finished {
    pub text: String,
    pub result: anyhow::Result<Done>,
}

/// How one cluster ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "result", content = "error")]
pub enum Outcome {
    Ok,
    Changes,
    Failed(String),
}

/// One row of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterResult {
    pub cluster: String,
    pub region: String,
    pub config: PathBuf,
    pub live_version: Option<String>,
    pub pinned_version: Option<String>,
    pub changes: usize,
    #[serde(flatten)]
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

/// Runs `operation` on every member, at most `parallel` at once, printing each cluster's
/// captured output (prefixed) as it finishes; the results are in the members' order.
pub async fn run<F, Fut>(
    members: Vec<Member>,
    parallel: u16,
    output: OutputFormat,
    operation: F,
) -> Vec<ClusterResult>
where
    F: Fn(ClusterInputs) -> Fut,
    Fut: Future<Output = Finished> + Send + 'static,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(usize::from(parallel.max(1))));
    let mut tasks = tokio::task::JoinSet::new();
    let mut task_rows = std::collections::HashMap::new();
    let mut rows: Vec<ClusterResult> = Vec::with_capacity(members.len());
    for (index, member) in members.into_iter().enumerate() {
        let label = member.label();
        rows.push(ClusterResult {
            cluster: member.cluster,
            region: member.region,
            config: member.config,
            live_version: None,
            pinned_version: None,
            changes: 0,
            outcome: Outcome::Failed("did not run".to_owned()),
            detail: serde_json::Value::Null,
        });
        let inputs = match member.inputs {
            Ok(inputs) => inputs,
            Err(error) => {
                rows[index].outcome = Outcome::Failed(error);
                continue;
            }
        };
        let work = operation(inputs);
        let permits = Arc::clone(&permits);
        let span = tracing::info_span!("cluster", name = %label);
        let handle = tasks.spawn(
            async move {
                // The semaphore is never closed, so the permit always comes.
                let _permit = permits.acquire_owned().await;
                (index, label, work.await)
            }
            .instrument(span),
        );
        task_rows.insert(handle.id(), index);
    }
    while let Some(joined) = tasks.join_next().await {
        let (index, label, finished) = match joined {
            Ok(done) => done,
            Err(error) => {
                // A bug (a panic): that cluster fails, saying so; the others go on.
                if let Some(&index) = task_rows.get(&error.id()) {
                    rows[index].outcome = Outcome::Failed(format!(
                        "stopped by an internal error ({error}); please report it"
                    ));
                }
                continue;
            }
        };
        let row = &mut rows[index];
        if output == OutputFormat::Human {
            print_prefixed(&label, &finished.text);
        }
        match finished.result {
            Ok(done) => {
                if let Some(region) = done.region {
                    row.region = region;
                }
                row.live_version = done.live_version;
                row.pinned_version = done.pinned_version;
                row.changes = done.changes;
                row.detail = done.detail;
                row.outcome = if done.changes > 0 {
                    Outcome::Changes
                } else {
                    Outcome::Ok
                };
            }
            Err(error) => {
                row.outcome = Outcome::Failed(format!("{error:#}"));
            }
        }
    }
    rows
}

/// Writes `text` with every line prefixed by `[label] `, in one write under stdout's lock,
/// so that two clusters' lines never interleave.
fn print_prefixed(label: &str, text: &str) {
    let mut block = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        block.push('[');
        block.push_str(label);
        block.push_str("] ");
        block.push_str(line);
        block.push('\n');
    }
    let mut stdout = std::io::stdout().lock();
    // A closed stdout leaves nobody to tell; the summary's own write reports it.
    let _ = stdout.write_all(block.as_bytes());
    let _ = stdout.flush();
}

/// The exit code of a fleet: 1 if any cluster failed; else, with `--detailed-exitcode`, 2
/// if any has changes; else 0.
pub fn exit_code(results: &[ClusterResult], detailed: bool) -> u8 {
    let failed = results
        .iter()
        .any(|row| matches!(row.outcome, Outcome::Failed(_)));
    let changes = results
        .iter()
        .any(|row| matches!(row.outcome, Outcome::Changes));
    if failed {
        exit::FAILURE
    } else if detailed && changes {
        exit::CHANGES
    } else {
        exit::SUCCESS
    }
}

/// The summary: a table after the clusters' output, or one JSON object with every row.
pub fn print_summary(
    command: &str,
    results: &[ClusterResult],
    output: OutputFormat,
) -> anyhow::Result<()> {
    let count =
        |wanted: fn(&Outcome) -> bool| results.iter().filter(|r| wanted(&r.outcome)).count();
    let ok = count(|o| matches!(o, Outcome::Ok));
    let changes = count(|o| matches!(o, Outcome::Changes));
    let failed = count(|o| matches!(o, Outcome::Failed(_)));
    match output {
        OutputFormat::Json => {
            let value = serde_json::json!({
                "command": command,
                "clusters": results,
                "ok": ok,
                "changes": changes,
                "failed": failed,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&value).context("serialising the fleet summary")?
            );
        }
        OutputFormat::Human => print!("{}", summary_table(command, results, (ok, changes, failed))),
    }
    Ok(())
}

fn summary_table(
    command: &str,
    results: &[ClusterResult],
    (ok, changes, failed): (usize, usize, usize),
) -> String {
    let dash = || "-".to_owned();
    let mut rows = vec![[
        "CLUSTER".to_owned(),
        "REGION".to_owned(),
        "LIVE".to_owned(),
        "PINNED".to_owned(),
        "CHANGES".to_owned(),
        "RESULT".to_owned(),
    ]];
    for row in results {
        let (changes, result) = match &row.outcome {
            Outcome::Ok => (row.changes.to_string(), "ok"),
            Outcome::Changes => (row.changes.to_string(), "changes"),
            Outcome::Failed(_) => (dash(), "FAILED"),
        };
        rows.push([
            row.cluster.clone(),
            row.region.clone(),
            row.live_version.clone().unwrap_or_else(dash),
            row.pinned_version.clone().unwrap_or_else(dash),
            changes,
            result.to_owned(),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0))
        .collect();
    let mut out = format!(
        "\nFleet {command}: {} clusters, {ok} ok, {changes} with changes, {failed} failed\n",
        results.len()
    );
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    let failures: Vec<&ClusterResult> = results
        .iter()
        .filter(|row| matches!(row.outcome, Outcome::Failed(_)))
        .collect();
    if !failures.is_empty() {
        out.push_str("Failed:\n");
        for row in failures {
            if let Outcome::Failed(error) = &row.outcome {
                out.push_str(&format!(
                    "  {}/{} ({}): {error}\n",
                    row.cluster,
                    row.region,
                    row.config.display()
                ));
            }
        }
    }
    out
}

/// A whole fleet command: the members read, `operation` run on each, the summary printed,
/// and the exit code.
pub fn drive<F, Fut>(
    command: &'static str,
    flags: &ClusterFlags,
    paths: Vec<PathBuf>,
    parallel: u16,
    detailed_exitcode: bool,
    operation: F,
) -> anyhow::Result<ExitCode>
where
    F: Fn(ClusterInputs) -> Fut,
    Fut: Future<Output = Finished> + Send + 'static,
{
    let members = members(flags, paths)?;
    let output = flags.output;
    let results = crate::terminal::runtime()?.block_on(run(members, parallel, output, operation));
    print_summary(command, &results, output)?;
    Ok(exit::code(exit_code(&results, detailed_exitcode)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cluster: &str, outcome: Outcome) -> ClusterResult {
        ClusterResult {
            cluster: cluster.to_owned(),
            region: "us-west-2".to_owned(),
            config: PathBuf::from(format!("{cluster}.yaml")),
            live_version: Some("v1.20.0".to_owned()),
            pinned_version: Some("v1.21.0".to_owned()),
            changes: usize::from(outcome == Outcome::Changes),
            outcome,
            detail: serde_json::Value::Null,
        }
    }

    #[test]
    fn exit_code_is_failure_then_changes_then_success() {
        let ok = row("a", Outcome::Ok);
        let changes = row("b", Outcome::Changes);
        let failed = row("c", Outcome::Failed("boom".to_owned()));
        assert_eq!(exit_code(std::slice::from_ref(&ok), true), exit::SUCCESS);
        assert_eq!(
            exit_code(&[ok.clone(), changes.clone()], true),
            exit::CHANGES
        );
        assert_eq!(
            exit_code(&[ok.clone(), changes.clone()], false),
            exit::SUCCESS
        );
        assert_eq!(exit_code(&[changes, failed, ok], true), exit::FAILURE);
    }

    #[test]
    fn the_table_names_every_cluster_and_every_failure_with_its_reason() {
        let rows = [
            row("a", Outcome::Ok),
            row("b", Outcome::Failed("no context".to_owned())),
        ];
        let table = summary_table("plan", &rows, (1, 0, 1));
        assert!(table.contains("1 ok, 0 with changes, 1 failed"), "{table}");
        assert!(table.contains("FAILED"), "{table}");
        assert!(
            table.contains("b/us-west-2 (b.yaml): no context"),
            "{table}"
        );
        let json = serde_json::to_value(&rows[1]).expect("serialises");
        assert_eq!(json["result"], "failed");
        assert_eq!(json["error"], "no context");
    }

    #[test]
    fn a_directory_is_its_yaml_files_sorted_and_an_empty_one_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(matches!(
            config_paths(&[dir.path().to_owned()]),
            Err(FleetError::EmptyDir { .. })
        ));
        for name in ["b.yaml", "a.yml", "notes.txt"] {
            std::fs::write(dir.path().join(name), "cluster: x\n").expect("written");
        }
        let paths = config_paths(&[dir.path().to_owned()])
            .expect("read")
            .expect("a fleet");
        assert_eq!(paths, [dir.path().join("a.yml"), dir.path().join("b.yaml")]);
        assert_eq!(
            config_paths(&[dir.path().join("a.yml")]).expect("one file"),
            None
        );
    }
}
