//! The offline `aggregate` command: runs rounds of saved expositions through the same
//! [`Aggregator`] the in-cluster loop uses and returns what each round would publish, the
//! self-metrics `podsScraped` and `scrapeErrors` included.
//!
//! Layout of a round directory: one exposition file per pod, whose file name is the pod's name
//! and also its identity (so the same file name in two rounds is the same pod, and a name
//! missing from a round is a pod that went away). For `--per-az`, a subdirectory of a round
//! directory is an availability zone: `ROUND/us-east-1a/aws-node-abc` is pod `aws-node-abc` in
//! zone `us-east-1a`; files directly in the round directory have no zone. Files and
//! directories whose names start with `.` are ignored. Pods are read in name order.
//!
//! A file that cannot be read or is not UTF-8 counts as a failed scrape of that pod and a file
//! that does not parse as a parse error, exactly as in a live round; neither is an error of the
//! command. Only a round directory that cannot be listed is. The rounds follow one another as
//! in `run`: a pod that failed stands in with the gauges of its last good round for at most
//! `stale_rounds` rounds (`--stale-rounds`, the same default as `run`), so replaying a run's
//! scrapes gives the datums it published. A single round, like `once`, has no earlier round
//! to take values from.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use thiserror::Error;

use crate::aggregate::{Aggregator, AggregatorOptions, PodScrape, RoundStats, ScrapeOutcome};
use crate::datum::{Round, Rounds};

/// Why the offline aggregation could not run.
#[derive(Debug, Error)]
pub enum OfflineError {
    #[error(
        "cannot read round directory {path}: {source} (each --round must be a directory holding one exposition file per pod)"
    )]
    ReadRoundDirectory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("round directory {path} has a file name that is not UTF-8: {name:?}")]
    NonUtf8FileName { path: PathBuf, name: String },
}

/// A pod file of a round, read into memory.
struct PodFile {
    name: String,
    zone: Option<String>,
    /// `None` when the file could not be read or is not UTF-8.
    body: Option<String>,
}

/// Runs the rounds in `round_dirs` in order through one aggregator for cluster `cluster_id` and
/// returns the datums each round would publish, stamped with the current time.
pub fn aggregate_rounds(
    round_dirs: &[PathBuf],
    cluster_id: &str,
    per_az: bool,
    stale_rounds: u32,
) -> Result<Rounds, OfflineError> {
    let rounds = aggregate_rounds_with_stats(round_dirs, cluster_id, per_az, stale_rounds)?
        .into_iter()
        .map(|(round, _stats)| round)
        .collect();
    Ok(Rounds { rounds })
}

/// Like [`aggregate_rounds`], and also returns each round's [`RoundStats`], so that the command
/// can report the pods that failed.
pub fn aggregate_rounds_with_stats(
    round_dirs: &[PathBuf],
    cluster_id: &str,
    per_az: bool,
    stale_rounds: u32,
) -> Result<Vec<(Round, RoundStats)>, OfflineError> {
    // Read every directory first, so that a bad one is reported before any work is done.
    let rounds = round_dirs
        .iter()
        .map(|directory| read_round(directory))
        .collect::<Result<Vec<_>, _>>()?;
    let mut aggregator = Aggregator::new(AggregatorOptions {
        cluster_id: cluster_id.to_owned(),
        per_az,
        max_series_per_pod: crate::aggregate::DEFAULT_MAX_SERIES_PER_POD,
        stale_rounds,
    });
    let mut results = Vec::with_capacity(rounds.len());
    for pod_files in &rounds {
        let mut round = aggregator.begin_round();
        for (position, file) in pod_files.iter().enumerate() {
            round.add(position, pod_scrape(file));
        }
        let (round, stats) = round.finish_with_self_metrics(SystemTime::now());
        round.warn_unpublishable();
        results.push((round, stats));
    }
    Ok(results)
}

/// A pod file as the aggregator takes it: a file that could not be read is a failed scrape.
fn pod_scrape(file: &PodFile) -> PodScrape<'_> {
    PodScrape {
        uid: &file.name,
        name: &file.name,
        zone: file.zone.as_deref(),
        outcome: file
            .body
            .as_deref()
            .map_or(ScrapeOutcome::Failed, ScrapeOutcome::Body),
    }
}

/// Reads the pod files of one round directory, zone subdirectories included, sorted by pod
/// name.
fn read_round(directory: &Path) -> Result<Vec<PodFile>, OfflineError> {
    let mut pods = Vec::new();
    for (name, path, is_directory) in list_directory(directory)? {
        if is_directory {
            for (pod_name, pod_path, pod_is_directory) in list_directory(&path)? {
                if !pod_is_directory {
                    pods.push(read_pod_file(pod_name, Some(name.clone()), &pod_path));
                }
            }
        } else {
            pods.push(read_pod_file(name, None, &path));
        }
    }
    pods.sort_by(|left, right| left.name.cmp(&right.name).then(left.zone.cmp(&right.zone)));
    Ok(pods)
}

/// The visible entries of `directory`: name, path and whether it is a directory.
fn list_directory(directory: &Path) -> Result<Vec<(String, PathBuf, bool)>, OfflineError> {
    let read_error = |source| OfflineError::ReadRoundDirectory {
        path: directory.to_owned(),
        source,
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(directory).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        let name =
            entry
                .file_name()
                .into_string()
                .map_err(|name| OfflineError::NonUtf8FileName {
                    path: directory.to_owned(),
                    name: name.to_string_lossy().into_owned(),
                })?;
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follows symbolic links, so a linked pod file or zone directory works.
        let is_directory = path.is_dir();
        entries.push((name, path, is_directory));
    }
    Ok(entries)
}

fn read_pod_file(name: String, zone: Option<String>, path: &Path) -> PodFile {
    PodFile {
        name,
        zone,
        body: std::fs::read_to_string(path).ok(),
    }
}
