//! `cargo xtask`: a thin edge around the `xtask` library. It parses flags, sets up logging
//! on stderr and turns results into the documented exit codes (see `exit.rs`).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use xtask::exit;
use xtask::flags::{Command, Flags, ImageCommand, SandboxCommand};

fn main() -> ExitCode {
    let flags = match Flags::try_parse() {
        Ok(flags) => flags,
        Err(error) => return usage_error(&error),
    };
    init_logging(&flags);
    let result = match flags.command {
        Command::Render(render) => xtask::render_cmd::run(render),
        Command::Plan(plan) => xtask::plan_cmd::run(plan),
        Command::Deploy(deploy) => xtask::deploy_cmd::run(deploy),
        Command::Destroy(destroy) => xtask::destroy_cmd::run(destroy),
        Command::Preflight(preflight) => xtask::preflight_cmd::run(preflight),
        Command::Upgrade(upgrade) => xtask::upgrade_cmd::upgrade(upgrade),
        Command::Status(status) => xtask::status_cmd::status(status),
        Command::Test(test) => xtask::test_cmd::run(test),
        Command::Demo(demo) => xtask::demo_cmd::demo(demo),
        Command::Sandbox(SandboxCommand::Up(up)) => xtask::sandbox_cmd::up(up),
        Command::Image(ImageCommand::Build(build)) => xtask::image::run(build),
        Command::Image(ImageCommand::Push(push)) => xtask::image_push_cmd::run(push),
        Command::Bench(bench) => xtask::bench::run(bench),
    };
    result.unwrap_or_else(|error| {
        // One line with the whole cause chain: what failed, on what, and what to do.
        eprintln!("error: {error:#}");
        exit::code(exit::FAILURE)
    })
}

/// Help and version go to stdout with success; every usage mistake is one error line and
/// exit code 1 (clap's own 2 would read as "changes" to a CI drift check).
fn usage_error(error: &clap::Error) -> ExitCode {
    cni_metrics_publisher::edge::usage_error(error)
}

fn init_logging(flags: &Flags) {
    let default_level = match (flags.quiet, flags.verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_target(false)
        .without_time()
        .init();
}
