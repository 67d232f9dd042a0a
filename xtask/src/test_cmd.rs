//! `cargo xtask test`: the README's test command. It provisions every tool the tests need
//! (nothing is skipped for want of a tool) and then runs the whole workspace's tests.

use std::process::{Command, ExitCode};

use anyhow::Context;
use sandbox::python_tools::{PythonTools, workspace_root};

use crate::flags::TestFlags;

/// The command-line tools the end-to-end tests run as a user would (clients we did not
/// write), each with the Debian packages that provide it, tried in order.
const DEBIAN_TOOLS: &[(&str, &[&str])] = &[("kubectl", &["kubectl", "kubernetes-client"])];

pub fn run(flags: TestFlags) -> anyhow::Result<ExitCode> {
    let root = workspace_root();
    let tools = PythonTools::ensure(&root).context("installing the Python test tools")?;
    tracing::info!(venv = %tools.venv().display(), "Python test tools are ready");
    for (tool, packages) in DEBIAN_TOOLS {
        ensure_debian_tool(tool, packages)?;
    }
    let cargo = crate::cargo_tool::cargo();
    let status = Command::new(&cargo)
        .args(["test", "--workspace", "--locked"])
        .args(&flags.cargo_test_args)
        .current_dir(&root)
        .status()
        .with_context(|| format!("running {} test", cargo.to_string_lossy()))?;
    if status.success() {
        Ok(crate::exit::code(crate::exit::SUCCESS))
    } else {
        anyhow::bail!("cargo test failed ({status}); the failing tests are listed above")
    }
}

/// Whether `tool` runs (`tool version --client` for kubectl, which exits 0 offline).
fn runs(tool: &str) -> bool {
    Command::new(tool)
        .args(["version", "--client"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Installs `tool` from the first of `packages` that apt can install, when it is missing.
fn ensure_debian_tool(tool: &str, packages: &[&str]) -> anyhow::Result<()> {
    if runs(tool) {
        return Ok(());
    }
    tracing::info!("{tool} is missing; installing it with apt-get");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|status| status.success())
    };
    // A fresh machine's package lists may be empty or old.
    apt(&["update", "-qq"]);
    for package in packages {
        if apt(&["install", "-y", "-qq", package]) && runs(tool) {
            return Ok(());
        }
    }
    anyhow::bail!(
        "{tool} is needed by the end-to-end tests and could not be installed with apt-get (tried {}); install it and run cargo xtask test again",
        packages.join(", ")
    )
}
