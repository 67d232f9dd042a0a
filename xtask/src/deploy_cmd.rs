//! `cargo xtask deploy`: the plan, shown, confirmed and carried out as it is.

use std::process::ExitCode;

use anyhow::Context;

use crate::exit;
use crate::facts::ClusterRequirement;
use crate::flags::{DeployFlags, OutputFormat};
use crate::prepare::prepare_checked;
use crate::terminal::{confirm, print_plan, runtime};

pub fn run(flags: DeployFlags) -> anyhow::Result<ExitCode> {
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
