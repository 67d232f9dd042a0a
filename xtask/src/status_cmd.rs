//! `cargo xtask status`: where the helper stands — the live and the pinned version, the next
//! step on the upgrade path, the identity mode, drift, and the last rollout.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use crate::exit;
use crate::facts::ClusterRequirement;
use crate::flags::{ClusterInputs, OutputFormat, StatusFlags};
use crate::fleet::{self, Done, Finished};
use crate::plan::alarms::AlarmState;
use crate::plan::kubernetes::{self, RolloutState};
use crate::plan::{Scope, Summary};
use crate::prepare::prepare_checked;
use crate::settings::SERVICE_ACCOUNT;
use crate::terminal::runtime;
use crate::widgets;

#[derive(Debug, Serialize)]
pub struct Status {
    pub cluster: String,
    pub region: String,
    pub account: String,
    pub live_version: Option<String>,
    pub live_image: Option<String>,
    pub pinned_version: String,
    pub next_step: Option<String>,
    pub upgrade_path: Vec<String>,
    /// What the live service account says: `irsa` (role annotation) or `none`.
    pub live_identity: String,
    pub configured_identity: &'static str,
    /// Differences from the desired state at the live version (an upgrade is not drift).
    pub drift: Summary,
    pub last_rollout: Option<RolloutState>,
    /// The state of each alarm the deploy keeps, in the rendered order (`MISSING` when
    /// it is not there); empty with `--no-alarms` or without the alarms scope.
    pub alarms: Vec<AlarmState>,
    /// The PNG of each metric widget of the dashboard, with `--widgets DIR`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub widget_images: Option<Vec<PathBuf>>,
}

pub fn status(flags: StatusFlags) -> anyhow::Result<ExitCode> {
    if let Some(paths) = fleet::config_paths(&flags.cluster.config)? {
        let widgets = flags.widgets.clone();
        return fleet::drive(
            "status",
            &flags.cluster,
            paths,
            flags.fleet.parallel,
            false,
            move |inputs| status_member(inputs, widgets.clone()),
        );
    }
    runtime()?.block_on(async {
        let inputs = flags.cluster.inputs()?;
        let output = inputs.output;
        let status = gather(inputs, flags.widgets.as_deref()).await?;
        print_status(&status, output)?;
        Ok(exit::code(exit::SUCCESS))
    })
}

/// One cluster of a fleet `status`: `changes` is its drift. With `--widgets DIR`, each
/// cluster's images go to `DIR/<cluster>-<region>`.
async fn status_member(inputs: ClusterInputs, widgets: Option<PathBuf>) -> Finished {
    let result = async {
        let dir = widgets.map(|dir| {
            let name = inputs.target.cluster.clone().unwrap_or_default();
            let region = inputs.target.region.clone().unwrap_or_default();
            dir.join(format!("{name}-{region}"))
        });
        let status = gather(inputs, dir.as_deref()).await?;
        let text = status_text(&status);
        let done = Done {
            region: Some(status.region.clone()),
            live_version: status.live_version.clone(),
            pinned_version: Some(status.pinned_version.clone()),
            changes: status.drift.create + status.drift.update + status.drift.delete,
            detail: serde_json::to_value(&status).context("serialising the status")?,
        };
        anyhow::Ok((text, done))
    }
    .await;
    match result {
        Ok((text, done)) => Finished {
            text,
            result: Ok(done),
        },
        Err(error) => Finished {
            text: String::new(),
            result: Err(error),
        },
    }
}

/// Where the helper stands on one cluster.
pub async fn gather(mut inputs: ClusterInputs, widgets: Option<&Path>) -> anyhow::Result<Status> {
    {
        // Status reads; a version difference is reported, not refused.
        inputs.options.allow_downgrade = true;
        let pinned = prepare_checked(&inputs, ClusterRequirement::MustExist).await?;
        let pinned_version = pinned.target.version;
        let live = pinned.live_deployment().await?;
        let live_version = live.as_ref().and_then(|live| live.version);
        let upgrade_path = match live_version {
            Some(live_version) if live_version < pinned_version => pinned
                .catalog
                .upgrade_path(live_version, pinned_version)
                .map(|path| path.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            Some(_) | None => Vec::new(),
        };
        // Drift is measured at the version that runs, so that a pending upgrade does not
        // show as drift of every object.
        let at_live = match live_version {
            Some(version) if version != pinned_version => pinned.at_version(version)?,
            Some(_) | None => pinned,
        };
        let drift = at_live.plan(&inputs.options).await?.summary();
        let live_identity = match at_live.kube() {
            Some(client) => {
                match kubernetes::live_irsa_role(client, &at_live.target.namespace, SERVICE_ACCOUNT)
                    .await?
                {
                    Some(_) => "irsa".to_owned(),
                    None => "none".to_owned(),
                }
            }
            None => "unknown".to_owned(),
        };
        let alarms = if inputs.options.scopes.contains(&Scope::Alarms) {
            crate::plan::alarms::states(
                &aws_sdk_cloudwatch::Client::new(&at_live.sdk),
                &at_live.target.alarms.name_prefix,
                &at_live.rendered.alarms,
            )
            .await?
        } else {
            Vec::new()
        };
        let widget_images = match widgets {
            Some(dir) => {
                let client = aws_sdk_cloudwatch::Client::new(&at_live.sdk);
                Some(widgets::save(&client, &at_live.target.dashboard_name, dir).await?)
            }
            None => None,
        };
        let status = Status {
            cluster: at_live.target.cluster.clone(),
            region: at_live.target.region.clone(),
            account: at_live.target.account.clone(),
            live_version: live_version.map(|version| version.to_string()),
            live_image: live.as_ref().and_then(|live| live.image.clone()),
            pinned_version: pinned_version.to_string(),
            next_step: upgrade_path.first().cloned(),
            upgrade_path,
            live_identity,
            configured_identity: at_live.target.identity.as_str(),
            drift,
            last_rollout: live.map(|live| live.rollout),
            alarms,
            widget_images,
        };
        Ok(status)
    }
}

fn print_status(status: &Status, output: OutputFormat) -> anyhow::Result<()> {
    if output == OutputFormat::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(status).context("serialising the status")?
        );
        return Ok(());
    }
    print!("{}", status_text(status));
    Ok(())
}

/// The status for people.
fn status_text(status: &Status) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    macro_rules! println {
        ($($arg:tt)*) => {{
            let _ = writeln!(out, $($arg)*);
        }};
    }
    let none = || "-".to_owned();
    println!(
        "Cluster {} in {} (account {})",
        status.cluster, status.region, status.account
    );
    println!(
        "  live version     {}",
        status
            .live_version
            .clone()
            .unwrap_or_else(|| "not deployed".to_owned())
    );
    println!(
        "  live image       {}",
        status.live_image.clone().unwrap_or_else(none)
    );
    println!("  pinned version   {}", status.pinned_version);
    match &status.next_step {
        Some(next) => println!(
            "  next step        {next} (path: {})",
            status.upgrade_path.join(" -> ")
        ),
        None => println!("  next step        none: on the pinned version"),
    }
    println!(
        "  identity         live {}, configured {}",
        status.live_identity, status.configured_identity
    );
    println!(
        "  drift            {} to create, {} to update, {} to delete, {} unchanged",
        status.drift.create, status.drift.update, status.drift.delete, status.drift.unchanged
    );
    match &status.last_rollout {
        Some(rollout) => println!(
            "  last rollout     {} ({}/{} ready, {} updated, generation {} observed {}{})",
            if rollout.complete {
                "complete"
            } else {
                "in progress or stuck"
            },
            rollout.ready_replicas,
            rollout.replicas,
            rollout.updated_replicas,
            rollout.generation,
            rollout.observed_generation,
            rollout
                .reason
                .as_ref()
                .map(|reason| format!(", {reason}"))
                .unwrap_or_default()
        ),
        None => println!("  last rollout     -"),
    }
    if !status.alarms.is_empty() {
        let firing = status
            .alarms
            .iter()
            .filter(|alarm| alarm.state != "OK")
            .count();
        println!(
            "  alarms           {} ({firing} not OK)",
            status.alarms.len()
        );
        for alarm in &status.alarms {
            println!(
                "    {:<17} {}{}",
                alarm.state,
                alarm.name,
                alarm
                    .since
                    .as_ref()
                    .map(|since| format!(" (since {since})"))
                    .unwrap_or_default()
            );
            if alarm.state != "OK"
                && let Some(reason) = &alarm.reason
            {
                println!("                      {reason}");
            }
        }
    }
    if let Some(paths) = &status.widget_images {
        println!("  widget images    {}", paths.len());
        for path in paths {
            println!("    {}", path.display());
        }
    }
    out
}
