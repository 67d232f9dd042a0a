//! `cargo xtask deploy`: the plan, shown, confirmed and carried out as it is. Several
//! `--config` make a fleet (see [`crate::fleet`]), which needs `--yes`.

use std::process::ExitCode;

use anyhow::Context;

use crate::exit;
use crate::facts::ClusterRequirement;
use crate::flags::{ClusterInputs, DeployFlags, OutputFormat};
use crate::fleet::{self, Finished, FleetError};
use crate::prepare::prepare_checked;
use crate::terminal::{confirm, print_plan, runtime};

pub fn run(flags: DeployFlags) -> anyhow::Result<ExitCode> {
    if let Some(paths) = fleet::config_paths(&flags.cluster.config)? {
        // Never a question per cluster, and never several at once on one terminal.
        if !flags.yes && !flags.dry_run {
            return Err(FleetError::NeedsYes { command: "deploy" }.into());
        }
        let dry_run = flags.dry_run;
        return fleet::drive(
            "deploy",
            &flags.cluster,
            paths,
            flags.fleet.parallel,
            false,
            move |inputs| deploy_member(inputs, dry_run),
        );
    }
    runtime()?.block_on(async {
        let inputs = flags.cluster.inputs()?;
        let output = inputs.output;
        let prepared = prepare_checked(&inputs, ClusterRequirement::MustExist).await?;
        let plan = prepared.plan(&inputs.options).await?;
        if let Err(conflicts) = plan.refuse_conflicts() {
            // Shown in full, so that every conflict can be seen with its reason; nothing
            // has been written anywhere.
            print_plan(&plan, output, Some(false))?;
            return Err(conflicts.into());
        }
        if flags.dry_run || !plan.has_changes() {
            print_plan(&plan, output, Some(false))?;
            if !plan.has_changes() {
                tracing::info!("nothing to change");
            }
            return Ok(exit::code(exit::SUCCESS));
        }
        if output == OutputFormat::Human {
            print_plan(&plan, output, None)?;
        }
        if !confirm("Apply this plan?", flags.yes)? {
            anyhow::bail!("not applied: the answer was not yes");
        }
        prepared.execute(&plan, &inputs.options).await.context(
            "deploy stopped; what was applied before this step stays, and running deploy again continues from there",
        )?;
        if output == OutputFormat::Json {
            print_plan(&plan, output, Some(true))?;
        }
        let summary = plan.summary();
        tracing::info!(
            created = summary.create,
            updated = summary.update,
            adopted = summary.adopt,
            unchanged = summary.unchanged,
            "deployed the CNI metrics helper to {}",
            prepared.target.cluster
        );
        Ok(exit::code(exit::SUCCESS))
    })
}

/// One cluster of a fleet `deploy --yes`: its plan as text; a conflict refuses this cluster
/// alone, with nothing written to it. `changes` counts what was applied (with `--dry-run`,
/// what would be).
async fn deploy_member(inputs: ClusterInputs, dry_run: bool) -> Finished {
    let mut text = String::new();
    let result = async {
            let prepared = prepare_checked(&inputs, ClusterRequirement::MustExist).await?;
            let plan = prepared.plan(&inputs.options).await?;
            text.push_str(&plan.to_human());
            plan.refuse_conflicts()?;
            let apply = plan.has_changes() && !dry_run;
            if apply {
                prepared.execute(&plan, &inputs.options).await.context(
                    "deploy stopped; what was applied before this step stays, and running deploy again continues from there",
                )?;
                text.push_str("Applied.\n");
            } else if !plan.has_changes() {
                text.push_str("Nothing to change.\n");
            }
            let mut detail = plan.to_json();
            if let Some(map) = detail.as_object_mut() {
                map.insert("applied".to_owned(), apply.into());
            }
            crate::plan_cmd::planned_row(&prepared, &plan, detail).await
        }
        .await;
    Finished { text, result }
}
