//! The `cni-metrics-publisher` binary: parses the command line, sets up logging on stderr and
//! the Tokio runtime, runs the command and turns any error into one line on stderr and exit
//! code 1. Data (the JSON of `once --dry-run` and `aggregate`) goes to stdout.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use cni_metrics_publisher::cli::{Cli, Command, LoggingArgs};
use cni_metrics_publisher::config::{Purpose, Settings, required_cluster_id};
use cni_metrics_publisher::edge::usage_error;
use cni_metrics_publisher::{cycle, datum, offline};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
    let command = cli.into_command();
    init_logging(logging_of(&command));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::debug!("failed: {error:?}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => {
            let settings = Settings::validate(args.requested(), Purpose::Run)?;
            cycle::run(&settings, shutdown_signal()?).await?;
        }
        Command::Once(once) => {
            let purpose = if once.dry_run {
                Purpose::DryRun
            } else {
                Purpose::Once
            };
            let settings = Settings::validate(once.publisher.requested(), purpose)?;
            let rounds = cycle::once(&settings, once.dry_run).await?;
            if once.dry_run {
                print_json(&rounds)?;
            }
        }
        Command::Aggregate(args) => {
            let cluster_id = required_cluster_id(args.cluster_id.as_deref())?;
            let rounds = offline::aggregate_rounds(
                &args.rounds,
                &cluster_id,
                args.per_az,
                args.stale_rounds,
            )?;
            print_json(&rounds)?;
        }
    }
    Ok(())
}

fn print_json(rounds: &datum::Rounds) -> anyhow::Result<()> {
    let text = serde_json::to_string(rounds).context("cannot serialize the datums")?;
    println!("{text}");
    Ok(())
}

/// Completes on SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C). The handlers are
/// installed here, before the first round, so that a signal arriving during start-up is
/// not lost to the default action (which would skip the lease release and the flush).
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received; shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM received; shutting down"),
        }
    })
}

fn logging_of(command: &Command) -> &LoggingArgs {
    match command {
        Command::Run(args) => &args.logging,
        Command::Once(once) => &once.publisher.logging,
        Command::Aggregate(args) => &args.logging,
    }
}

fn init_logging(logging: &LoggingArgs) {
    // Our own crate logs at the chosen level; dependencies one notch quieter at debug and
    // trace, so that a debug log shows the publisher's work rather than every HTTP frame.
    let ours = logging.log_level;
    let theirs = ours.min(tracing::Level::INFO);
    // kube's HTTP layer logs every 5xx answer at ERROR, which would repeat each failed
    // scrape (already reported once, with its pod) as an error; it speaks only at trace.
    let kube_http = if ours == tracing::Level::TRACE {
        "trace"
    } else {
        "off"
    };
    let filter = tracing_subscriber::EnvFilter::new(format!(
        "{theirs},cni_metrics_publisher={ours},kube_client::client::builder={kube_http}"
    ));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
