//! `cargo xtask plan`: what deploy would change, read from the live state and changing
//! nothing. Exit 0 no changes, 2 changes (with `--detailed-exitcode`), 1 error or conflict.
//! Several `--config` make a fleet (see [`crate::fleet`]).

use std::process::ExitCode;

use crate::exit;
use crate::facts::ClusterRequirement;
use crate::flags::{ClusterInputs, PlanFlags};
use crate::fleet::{self, Done, Finished};
use crate::plan::Plan;
use crate::prepare::{Prepared, prepare_checked};
use crate::terminal::{print_plan, runtime};

pub fn run(flags: PlanFlags) -> anyhow::Result<ExitCode> {
    if let Some(paths) = fleet::config_paths(&flags.cluster.config)? {
        return fleet::drive(
            "plan",
            &flags.cluster,
            paths,
            flags.fleet.parallel,
            flags.detailed_exitcode,
            plan_member,
        );
    }
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

/// The resources a plan would create, update, delete or adopt.
pub fn changes_in(plan: &Plan) -> usize {
    let summary = plan.summary();
    summary.create + summary.update + summary.delete + summary.adopt
}

/// A fleet member's row after a plan (applied or not): the cluster's region, its live and
/// pinned versions, the plan's changes, and `detail` as its JSON.
pub async fn planned_row(
    prepared: &Prepared,
    plan: &Plan,
    detail: serde_json::Value,
) -> anyhow::Result<Done> {
    let live = prepared.live_deployment().await?;
    Ok(Done {
        region: Some(prepared.target.region.clone()),
        live_version: live
            .and_then(|live| live.version)
            .map(|version| version.to_string()),
        pinned_version: Some(prepared.target.version.to_string()),
        changes: changes_in(plan),
        detail,
    })
}

/// One cluster of a fleet `plan`: its plan as text, and a conflict as its failure.
async fn plan_member(inputs: ClusterInputs) -> Finished {
    let mut text = String::new();
    let result = async {
        let prepared = prepare_checked(&inputs, ClusterRequirement::MustExist).await?;
        let plan = prepared.plan(&inputs.options).await?;
        text.push_str(&plan.to_human());
        plan.refuse_conflicts()?;
        planned_row(&prepared, &plan, plan.to_json()).await
    }
    .await;
    Finished { text, result }
}
