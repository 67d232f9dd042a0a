//! The benchmark driver behind `cargo xtask bench`. It is built in release mode and run as
//! several processes, so that the peak RSS of the publisher side is measured without the
//! simulated fleet's memory in it:
//!
//! - `fleet` ([`fleet`]): a sandbox (AWS emulator, fake Kubernetes API server, simulated
//!   aws-node fleet) that prints one JSON line when ready and then obeys one command per
//!   stdin line (faults, churn, request-log summaries), answering each with one JSON line.
//!   It stops when its stdin closes.
//! - `round` ([`rounds`]): one measuring process. It discovers the pods from the fake API
//!   server, then runs rounds (discover, scrape, parse, aggregate, build the CloudWatch
//!   batches) with the publisher's own library code and prints the timings and its peak RSS
//!   as JSON.
//! - `scale` ([`scale`]): starts one `fleet` and runs `round` processes against it: plain
//!   runs (scraping directly and, when asked for, through the pods proxy), a sequential
//!   run (concurrency 1) and runs with 1% of the nodes hung.
//! - `parser` ([`parser`]): our exposition parser against the `prometheus-parse` crate on
//!   the same bytes.
//! - `soak` ([`soak`]): thousands of rounds against a churning fleet, watching RSS and the
//!   per-pod state.
//! - `cloudwatch` ([`cloudwatch`]): rounds published to the emulator, counting
//!   PutMetricData calls from its request recording.
//!
//! Every subcommand but `fleet` prints exactly one JSON object on stdout, a type of
//! [`sandbox::bench_report`]; `cargo xtask bench` reads it and computes the medians and
//! ratios. Nothing here is timed by a test.

mod cloudwatch;
mod fleet;
mod parser;
mod rounds;
mod scale;
mod soak;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sandbox::bench_report::print_report;
use serde::Serialize;

/// The CLUSTER_ID every benchmark round publishes under.
const CLUSTER_ID: &str = "bench";

#[derive(Debug, Parser)]
#[command(about = "Benchmark driver for `cargo xtask bench`; prints one JSON object")]
struct Arguments {
    #[command(subcommand)]
    command: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Serve a sandbox and obey commands on stdin (internal)
    Fleet {
        #[arg(long)]
        nodes: usize,
        /// Serve every node from one listener behind the pods proxy (no direct scrapes)
        #[arg(long)]
        shared_listener: bool,
    },
    /// One measuring process: rounds against a running fleet (internal)
    Round(rounds::RoundOptions),
    /// Rounds at one fleet size: plain, sequential and hung runs
    Scale(scale::ScaleOptions),
    /// Our parser against prometheus-parse on the same bytes
    Parser {
        /// Seconds each parser runs per measurement
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// Measurements per parser, interleaved
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Many rounds against a churning fleet
    Soak {
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        #[arg(long, default_value_t = 2000)]
        rounds: usize,
        /// The round whose RSS is the baseline
        #[arg(long, default_value_t = 100)]
        baseline_round: usize,
    },
    /// Rounds published to the emulator, then a backlog flushed at once
    Cloudwatch {
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Rounds queued while "CloudWatch is unreachable", then flushed in one go
        #[arg(long, default_value_t = 100)]
        backlog_rounds: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let arguments = Arguments::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the Tokio runtime")?;
    runtime.block_on(async {
        match arguments.command {
            Scenario::Fleet {
                nodes,
                shared_listener,
            } => fleet::serve(nodes, fleet::node_listeners(shared_listener)).await,
            Scenario::Round(options) => print(rounds::measure(&options).await),
            Scenario::Scale(options) => print(scale::run(&options).await),
            Scenario::Parser { seconds, runs } => print(parser::run(seconds, runs).await),
            Scenario::Soak {
                nodes,
                rounds,
                baseline_round,
            } => print(soak::run(nodes, rounds, baseline_round).await),
            Scenario::Cloudwatch {
                nodes,
                rounds,
                backlog_rounds,
            } => print(cloudwatch::run(nodes, rounds, backlog_rounds).await),
        }
    })
}

/// Prints a scenario's report for `cargo xtask bench`, or passes its error on.
fn print(report: anyhow::Result<impl Serialize>) -> anyhow::Result<()> {
    Ok(print_report(&report?)?)
}
