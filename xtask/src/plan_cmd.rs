//! `cargo xtask plan`: what deploy would change, read from the live state and changing
//! nothing. Exit 0 no changes, 2 changes (with `--detailed-exitcode`), 1 error or conflict.

use std::process::ExitCode;

use crate::exit;
use crate::facts::ClusterRequirement;
use crate::flags::PlanFlags;
use crate::prepare::prepare_checked;
use crate::terminal::{print_plan, runtime};

pub fn run(flags: PlanFlags) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let inputs = flags.cluster.inputs()?;
        let prepared = prepare_checked(&inputs, ClusterRequirement::MustExist).await?;
        let plan = prepared.plan(&inputs.options).await?;
        print_plan(&plan, inputs.output, None)?;
        // The plan is shown in full first, so every conflict can be seen with its reason.
        plan.refuse_conflicts()?;
        Ok(exit::code(
            if flags.detailed_exitcode && plan.has_changes() {
                exit::CHANGES
            } else {
                exit::SUCCESS
            },
        ))
    })
}
