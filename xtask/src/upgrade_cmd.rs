//! `cargo xtask upgrade --to vX.Y.Z`: one minor version at a time, as AWS advises for the
//! VPC CNI and its metrics helper, each step through the newest patch of its minor. Every
//! step is a full deploy of that version (plan, apply, wait for the rollout, check the pods
//! are ready). A failed step stops the upgrade with the cluster on the last good version;
//! running the same command again resumes from the live version.
//!
//! Upstream's helper can use EKS Pod Identity only from v1.15.5 on (the versions table says
//! which release can). Every step is decided before the first one runs, so an upgrade with
//! `--identity pod-identity` through an older step is refused with nothing changed, and one
//! with `--identity auto` keeps IRSA until the first step that can use Pod Identity and
//! switches there: within one upgrade, each step runs with an identity its image can use.

use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use crate::catalog::{Version, catalog};
use crate::decide::DecideError;
use crate::exit;
use crate::facts::ClusterRequirement;
use crate::flags::{ClusterInputs, OutputFormat, UpgradeFlags};
use crate::fleet::{self, Done, Finished, FleetError};
use crate::prepare::{PrepareError, Prepared, prepare_checked};
use crate::settings::TargetInput;
use crate::terminal::{confirm, runtime};

/// One step of the upgrade, as `--output json` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub version: String,
    pub image: String,
    /// `irsa` or `pod-identity`: `--identity auto` may switch along the path.
    pub identity: &'static str,
    /// `complete`, or `failed`.
    pub rollout: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UpgradeReport {
    pub from: String,
    pub to: String,
    pub path: Vec<String>,
    pub steps: Vec<StepReport>,
    pub completed: bool,
}

fn at_version(target: &TargetInput, version: Version) -> TargetInput {
    TargetInput {
        version: Some(version.to_string()),
        ..target.clone()
    }
}

pub fn upgrade(flags: UpgradeFlags) -> anyhow::Result<ExitCode> {
    if let Some(paths) = fleet::config_paths(&flags.cluster.config)? {
        // Never a question per cluster, and never several at once on one terminal.
        if !flags.yes {
            return Err(FleetError::NeedsYes { command: "upgrade" }.into());
        }
        let to = flags.to.clone();
        return fleet::drive(
            "upgrade",
            &flags.cluster,
            paths,
            flags.fleet.parallel,
            false,
            move |inputs| upgrade_member(inputs, to.clone()),
        );
    }
    runtime()?.block_on(run(flags))
}

async fn run(flags: UpgradeFlags) -> anyhow::Result<ExitCode> {
    let inputs = flags.cluster.inputs()?;
    upgrade_cluster(inputs, &flags.to, flags.yes, &mut Out::Stdout).await?;
    Ok(exit::code(exit::SUCCESS))
}

/// Where an upgrade's human lines go: the terminal, or one fleet member's captured text.
enum Out {
    Stdout,
    Captured(String),
}

impl Out {
    fn line(&mut self, text: &str) {
        match self {
            Out::Stdout => println!("{text}"),
            Out::Captured(buffer) => {
                buffer.push_str(text);
                buffer.push('\n');
            }
        }
    }
}

/// One cluster of a fleet `upgrade --yes`: it steps on its own; `changes` counts the steps.
async fn upgrade_member(inputs: ClusterInputs, to: String) -> Finished {
    let mut out = Out::Captured(String::new());
    // The fleet prints its own JSON; each member's lines are for people.
    let inputs = ClusterInputs {
        output: OutputFormat::Human,
        ..inputs
    };
    let result = upgrade_cluster(inputs, &to, true, &mut out)
        .await
        .and_then(|(report, region)| {
            Ok(Done {
                region: Some(region),
                live_version: Some(if report.completed {
                    report.to.clone()
                } else {
                    report.from.clone()
                }),
                pinned_version: Some(report.to.clone()),
                changes: report.steps.len(),
                detail: serde_json::to_value(&report).context("serialising the upgrade report")?,
            })
        });
    let text = match out {
        Out::Captured(text) => text,
        Out::Stdout => String::new(),
    };
    Finished { text, result }
}

/// The upgrade of one cluster to `to`; its report, and the cluster's region.
async fn upgrade_cluster(
    inputs: ClusterInputs,
    to: &str,
    yes: bool,
    out: &mut Out,
) -> anyhow::Result<(UpgradeReport, String)> {
    let output = inputs.output;
    let catalog = catalog()?;
    let flags_to = to;
    let to = catalog.known_version(flags_to).context("invalid --to")?;
    if let Some(pinned) = &inputs.target.version
        && pinned.as_str() != flags_to
    {
        anyhow::bail!(
            "--version {pinned} (or the config file's version) disagrees with --to {to}; pin the version you upgrade to"
        );
    }
    let inputs = ClusterInputs {
        target: at_version(&inputs.target, to),
        ..inputs
    };
    let first = prepare_checked(&inputs, ClusterRequirement::MustExist).await?;
    let (from, path) = upgrade_path(&first, to).await?;
    let mut report = UpgradeReport {
        from: from.to_string(),
        to: to.to_string(),
        path: path.iter().map(ToString::to_string).collect(),
        steps: Vec::new(),
        completed: false,
    };
    let region = first.target.region.clone();
    if path.is_empty() {
        report.completed = true;
        print_report(&report, output, out)?;
        tracing::info!("already on {to}; nothing to do");
        return Ok((report, region));
    }
    // Every step decided before any runs: a step that cannot run refuses the whole path.
    let steps = path
        .iter()
        .map(|version| {
            first
                .at_version(*version)
                .map_err(|error| step_refused(*version, to, error))
        })
        .collect::<anyhow::Result<Vec<Prepared>>>()?;
    if output == OutputFormat::Human {
        let path: Vec<String> = steps
            .iter()
            .map(|step| {
                format!(
                    "{} ({})",
                    step.target.version,
                    step.target.identity.as_str()
                )
            })
            .collect();
        out.line(&format!("Upgrade path: {} -> {}", from, path.join(" -> ")));
    }
    if !confirm("Upgrade along this path?", yes)? {
        anyhow::bail!("not upgraded: the answer was not yes");
    }
    // A path that starts at the live version finishes a rollout an earlier run left.
    let mut last_good = (path.first() != Some(&from)).then_some(from);
    for prepared in &steps {
        let version = prepared.target.version;
        tracing::info!(%version, image = %prepared.rendered.image, identity = prepared.target.identity.as_str(), "upgrading");
        if let Some(reason) = &prepared.target.identity_reason {
            tracing::info!(
                "identity auto at {version}: {}, because {reason}",
                prepared.target.identity.as_str()
            );
        }
        let outcome = step(prepared, &inputs).await;
        report.steps.push(StepReport {
            version: version.to_string(),
            image: prepared.rendered.image.clone(),
            identity: prepared.target.identity.as_str(),
            rollout: if outcome.is_ok() {
                "complete"
            } else {
                "failed"
            },
            error: outcome.as_ref().err().map(|error| format!("{error:#}")),
        });
        if let Err(error) = outcome {
            print_report(&report, output, out)?;
            let last_good = last_good.map_or_else(
                || "unknown (the rollout before this run had not completed)".to_owned(),
                |v| v.to_string(),
            );
            anyhow::bail!(
                "the step to {version} failed: {error:#}; the last version that rolled out is {last_good}. \
                 Fix the cause, then run `cargo xtask upgrade --to {to}` again to resume from the live version"
            );
        }
        last_good = Some(version);
    }
    report.completed = true;
    print_report(&report, output, out)?;
    Ok((report, region))
}

/// Why a step of the path cannot run; for Pod Identity on a step whose upstream helper
/// cannot use it, what to run instead.
fn step_refused(version: Version, to: Version, error: PrepareError) -> anyhow::Error {
    match error {
        PrepareError::Decide(DecideError::PodIdentityUnsupported { since, .. }) => {
            anyhow::format_err!(
                "the upgrade to {to} steps through {version}, whose upstream helper cannot use EKS Pod Identity \
                 ({since} is the first release that can), so nothing was changed: run `cargo xtask upgrade --to {to} --identity auto`, \
                 which keeps IRSA until {since} and switches to Pod Identity there, or upgrade with --identity irsa \
                 and switch afterwards with `cargo xtask deploy --identity pod-identity`"
            )
        }
        PrepareError::NoRegion
        | PrepareError::Settings(_)
        | PrepareError::Facts(_)
        | PrepareError::Decide(_)
        | PrepareError::Render(_)
        | PrepareError::Preflight(_)
        | PrepareError::Profile(_) => {
            anyhow::Error::new(error).context(format!("cannot prepare the step to {version}"))
        }
    }
}

/// The live version and the versions to step through to `to`; a rollout left unfinished by
/// an earlier, failed run is finished (and checked) first, so it starts the path.
async fn upgrade_path(first: &Prepared, to: Version) -> anyhow::Result<(Version, Vec<Version>)> {
    if first.kube().is_none() {
        anyhow::bail!(
            "upgrade changes the Kubernetes objects: do not leave kubernetes out of --only"
        );
    }
    let live = first.live_deployment().await?.with_context(|| {
        format!(
            "the helper is not deployed in {}/{}: run `cargo xtask deploy --version {to}` first",
            first.target.namespace,
            crate::settings::SERVICE_ACCOUNT
        )
    })?;
    let from = live
        .version
        .context("cannot tell the live version: the Deployment has no app.kubernetes.io/version label and no vX.Y.Z image tag; deploy a version explicitly with `cargo xtask deploy --version vX.Y.Z`")?;
    let mut path = first.catalog.upgrade_path(from, to)?;
    if !live.rollout.complete {
        path.insert(0, from);
    }
    Ok((from, path))
}

/// One step: a full deploy of that version, its rollout, and its pods ready.
async fn step(prepared: &Prepared, inputs: &ClusterInputs) -> anyhow::Result<()> {
    let options = &inputs.options;
    let plan = prepared.plan(options).await?;
    prepared.execute(&plan, options).await?;
    prepared.wait_for_rollout(options.rollout_timeout).await?;
    match prepared.live_deployment().await? {
        Some(live)
            if live.rollout.complete && live.rollout.ready_replicas >= live.rollout.replicas =>
        {
            Ok(())
        }
        Some(live) => Err(anyhow::format_err!(
            "the new pods are not ready ({}/{} ready)",
            live.rollout.ready_replicas,
            live.rollout.replicas
        )),
        None => Err(anyhow::format_err!(
            "the Deployment disappeared during the upgrade"
        )),
    }
}

fn print_report(report: &UpgradeReport, output: OutputFormat, out: &mut Out) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => {
            out.line(&serde_json::to_string_pretty(report).context("serialising the report")?)
        }
        OutputFormat::Human => {
            for step in &report.steps {
                out.line(&format!(
                    "  {} {:<8} {}",
                    if step.rollout == "complete" {
                        "✓"
                    } else {
                        "✗"
                    },
                    step.version,
                    step.image
                ));
            }
            if report.completed {
                out.line(&format!("On {}.", report.to));
            }
        }
    }
    Ok(())
}
