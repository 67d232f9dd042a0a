//! What the cluster commands share at the terminal: the async runtime they run in, the
//! plan printed for people or machines, and the question before anything changes.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;

use crate::flags::OutputFormat;
use crate::plan::Plan;

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Prints `plan`; in JSON with `applied` when the caller knows whether it was applied.
pub fn print_plan(plan: &Plan, output: OutputFormat, applied: Option<bool>) -> anyhow::Result<()> {
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
pub fn confirm(question: &str, yes: bool) -> anyhow::Result<bool> {
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
