//! `cargo xtask plan`, `deploy` and `destroy`: the same preparation, then a plan that is
//! printed and, for deploy and destroy, confirmed and executed as it is.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::catalog::catalog;
use crate::deployer::{self, ClusterRequirement, DeployOptions, Prepared};
use crate::exit;
use crate::flags::{ClusterFlags, DeployFlags, DestroyFlags, OutputFormat, PlanFlags};
use crate::plan::{Plan, Scope};
use crate::settings::{ConfigFile, DeployInput, TargetInput};

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The inputs of a cluster command: flags over the config file.
pub(crate) struct Inputs {
    pub target: TargetInput,
    pub deploy: DeployInput,
    pub options: DeployOptions,
    pub output: OutputFormat,
}

pub(crate) fn inputs(flags: ClusterFlags) -> anyhow::Result<Inputs> {
    let file = match &flags.config {
        Some(path) => ConfigFile::load(path)?,
        None => ConfigFile::default(),
    };
    let scopes = if flags.only.is_empty() {
        Scope::ALL.to_vec()
    } else {
        flags.only.clone()
    };
    let options = DeployOptions {
        scopes,
        adopt: flags.adopt,
        rollout_timeout: Duration::from_secs(flags.rollout_timeout),
        allow_downgrade: flags.allow_downgrade,
    };
    Ok(Inputs {
        target: flags.target.or(file.target()),
        deploy: flags.deploy.or(file.deploy()),
        options,
        output: flags.output,
    })
}

async fn prepare(
    flags: ClusterFlags,
    requirement: ClusterRequirement,
) -> anyhow::Result<(Prepared, DeployOptions, OutputFormat)> {
    let inputs = inputs(flags)?;
    let prepared = deployer::prepare(
        catalog()?,
        inputs.target,
        inputs.deploy,
        &inputs.options,
        requirement,
    )
    .await?;
    for check in &prepared.checks {
        tracing::debug!(ok = check.ok, "preflight {}: {}", check.name, check.detail);
    }
    // Destroy also cleans up after a broken or deleted cluster, so only the others insist.
    if requirement == ClusterRequirement::MustExist {
        prepared.require_preflight()?;
    }
    Ok((prepared, inputs.options, inputs.output))
}

/// `cargo xtask preflight`: every check, passed or failed, each failure with its fix.
pub fn preflight(flags: ClusterFlags) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let inputs = inputs(flags)?;
        let output = inputs.output;
        let checks = match deployer::prepare(
            catalog()?,
            inputs.target,
            inputs.deploy,
            &inputs.options,
            ClusterRequirement::MustExist,
        )
        .await
        {
            Ok(prepared) => prepared.checks,
            // A check that stops everything else (no credentials, no cluster) is the answer.
            Err(error) => vec![crate::preflight::Check::fail(
                "prerequisites",
                crate::aws::one_line(&error),
                "see the message",
            )],
        };
        let ok = checks.iter().all(|check| check.ok);
        match output {
            OutputFormat::Json => println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "ok": ok, "checks": checks }))
                    .context("serialising the checks")?
            ),
            OutputFormat::Human => {
                for check in &checks {
                    println!(
                        "{} {}: {}",
                        if check.ok { "✓" } else { "✗" },
                        check.name,
                        check.detail
                    );
                    if let Some(fix) = &check.fix {
                        println!("    fix: {fix}");
                    }
                }
            }
        }
        Ok(exit::code(if ok { exit::SUCCESS } else { exit::FAILURE }))
    })
}

pub(crate) fn print_plan(
    plan: &Plan,
    output: OutputFormat,
    applied: Option<bool>,
) -> anyhow::Result<()> {
    match output {
        OutputFormat::Human => print!("{}", plan.to_human()),
        OutputFormat::Json => {
            let mut value = plan.to_json();
            if let (Some(applied), Some(map)) = (applied, value.as_object_mut()) {
                map.insert("applied".to_owned(), applied.into());
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&value).context("serialising the plan")?
            );
        }
    }
    Ok(())
}

/// Asks on the terminal; refuses outright when nobody can answer.
pub(crate) fn confirm(question: &str, yes: bool) -> anyhow::Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "refusing to change anything without confirmation: stdin is not a terminal; review the plan above and re-run with --yes"
        );
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("reading the answer")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

pub fn plan(flags: PlanFlags) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let (prepared, options, output) =
            prepare(flags.cluster, ClusterRequirement::MustExist).await?;
        let plan = deployer::plan(&prepared, &options).await?;
        print_plan(&plan, output, None)?;
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

pub fn deploy(flags: DeployFlags) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let (prepared, options, output) = prepare(flags.cluster, ClusterRequirement::MustExist).await?;
        let plan = deployer::plan(&prepared, &options).await?;
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
        deployer::execute(&prepared, &plan, &options).await.context(
            "deploy stopped; what was applied before this step stays, and running deploy again continues from there",
        )?;
        if output == OutputFormat::Json {
            print_plan(&plan, output, Some(true))?;
        }
        let summary = plan.summary();
        tracing::info!(
            created = summary.create,
            updated = summary.update,
            unchanged = summary.unchanged,
            "deployed the CNI metrics helper to {}",
            prepared.target.cluster
        );
        Ok(exit::code(exit::SUCCESS))
    })
}

pub fn destroy(flags: DestroyFlags) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let (prepared, options, output) =
            prepare(flags.cluster, ClusterRequirement::MayBeGone).await?;
        let plan = deployer::plan_destroy(&prepared, &options).await?;
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
        deployer::execute(&prepared, &plan, &options)
            .await
            .context("destroy stopped; running destroy again continues from there")?;
        if output == OutputFormat::Json {
            print_plan(&plan, output, Some(true))?;
        }
        Ok(exit::code(exit::SUCCESS))
    })
}
