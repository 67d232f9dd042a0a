//! `cargo xtask destroy`: removes what this tool created, and only our parts of it.

use std::process::ExitCode;

use anyhow::Context;

use crate::exit;
use crate::facts::ClusterRequirement;
use crate::flags::{DestroyFlags, OutputFormat};
use crate::prepare::prepare_checked;
use crate::terminal::{confirm, print_plan, runtime};

pub fn run(flags: DestroyFlags) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let inputs = flags.cluster.inputs()?;
        let output = inputs.output;
        let prepared = prepare_checked(&inputs, ClusterRequirement::MayBeGone).await?;
        let plan = prepared.plan_destroy(&inputs.options).await?;
        if !plan.has_changes() {
            print_plan(&plan, output, Some(false))?;
            tracing::info!("nothing of ours to delete");
            return Ok(exit::code(exit::SUCCESS));
        }
        if output == OutputFormat::Human {
            print_plan(&plan, output, None)?;
        }
        if !confirm("Delete these resources?", flags.yes)? {
            anyhow::bail!("nothing deleted: the answer was not yes");
        }
        prepared
            .execute(&plan, &inputs.options)
            .await
            .context("destroy stopped; running destroy again continues from there")?;
        if output == OutputFormat::Json {
            print_plan(&plan, output, Some(true))?;
        }
        Ok(exit::code(exit::SUCCESS))
    })
}
