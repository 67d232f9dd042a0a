//! `cargo xtask preflight`: every check, passed or failed, each failure with its fix.

use std::process::ExitCode;

use anyhow::Context;

use crate::catalog::catalog;
use crate::exit;
use crate::facts::ClusterRequirement;
use crate::flags::{ClusterFlags, OutputFormat};
use crate::preflight::Check;
use crate::prepare::prepare;
use crate::terminal::runtime;

pub fn run(flags: ClusterFlags) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let inputs = flags.inputs()?;
        let checks = match prepare(
            catalog()?,
            &inputs.target,
            &inputs.deploy,
            &inputs.options,
            ClusterRequirement::MustExist,
        )
        .await
        {
            Ok(prepared) => prepared.checks,
            // A check that stops everything else (no credentials, no cluster) is the answer.
            Err(error) => vec![Check::fail(
                "prerequisites",
                crate::aws::one_line(&error),
                "see the message",
            )],
        };
        let ok = checks.iter().all(|check| check.ok);
        match inputs.output {
            OutputFormat::Json => println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "ok": ok, "checks": checks }))
                    .context("serialising the checks")?
            ),
            OutputFormat::Human => print_checks(&checks),
        }
        Ok(exit::code(if ok { exit::SUCCESS } else { exit::FAILURE }))
    })
}

fn print_checks(checks: &[Check]) {
    for check in checks {
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
