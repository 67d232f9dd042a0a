//! Every command-line flag of `cargo xtask`, in one place.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::settings::TargetInput;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Render, deploy and operate the Amazon VPC CNI metrics helper on EKS",
    after_help = crate::exit::HELP,
    disable_version_flag = true
)]
pub struct Flags {
    #[command(subcommand)]
    pub command: Command,
    /// More logging on stderr (-v debug, -vv trace); RUST_LOG overrides it
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

// Parsed once per process, so the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write iam-policy.json, trust-policy.json, manifests.yaml and dashboard.json for one cluster, offline
    #[command(after_help = RENDER_EXAMPLES)]
    Render(RenderFlags),
    /// Install the tools the tests need (a project-local Python virtualenv) and run every test
    Test(TestFlags),
    /// The local sandbox: an AWS emulator, a Kubernetes API server and simulated aws-node pods
    #[command(subcommand)]
    Sandbox(SandboxCommand),
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Start the sandbox, write DIR/kubeconfig and DIR/env, and run until interrupted
    Up(SandboxUpFlags),
}

#[derive(Debug, clap::Args)]
pub struct SandboxUpFlags {
    /// Number of simulated nodes, each with an aws-node pod serving ipamd metrics
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Name of the EKS cluster created in the emulator
    #[arg(long, default_value = "sandbox")]
    pub cluster: String,
    /// Region of the emulated cluster
    #[arg(long, default_value = "us-west-2")]
    pub region: String,
    /// Where to write kubeconfig and env
    #[arg(long, default_value = ".sandbox")]
    pub dir: std::path::PathBuf,
}

const RENDER_EXAMPLES: &str = "Example:\n  cargo xtask render --region eu-west-1 --cluster prod --account 111122223333 \\\n      --oidc-issuer https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE --out rendered/prod";

#[derive(Debug, clap::Args)]
pub struct RenderFlags {
    #[command(flatten)]
    pub target: TargetInput,
    /// YAML file with the same keys as the flags (region, cluster, oidc-issuer, ...); flags win
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory to write the four files into (created when missing) [default: rendered]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// human: write the files and list them; json: print the four artifacts as one JSON object on stdout and write nothing
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
}

#[derive(Debug, clap::Args)]
pub struct TestFlags {
    /// Extra arguments for `cargo test` (after --), e.g. a test name filter
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Human,
    Json,
}
