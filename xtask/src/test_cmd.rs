//! `cargo xtask test`: the README's test command. It provisions every tool the tests need
//! (nothing is skipped for want of a tool) and then runs the whole workspace's tests.

use std::process::{Command, ExitCode};

use anyhow::Context;
use sandbox::python_tools::{PythonTools, workspace_root};

use crate::flags::TestFlags;

/// A command-line tool the end-to-end tests run as a user would (a program we did not
/// write).
struct DebianTool {
    tool: &'static str,
    /// Arguments that make it print its version and exit 0 offline, to tell that it runs.
    check: &'static [&'static str],
    /// The Debian packages that provide it, tried in order.
    packages: &'static [&'static str],
}

/// Every tool the tests need. The image tests read the OCI layout with skopeo and umoci and
/// run the image with podman and runc (rootful, vfs storage, host network: nothing else of
/// podman's recommendations, such as uidmap or fuse-overlayfs, is used); podman accepts
/// crun or runc, so runc is named on its own.
const DEBIAN_TOOLS: &[DebianTool] = &[
    DebianTool {
        tool: "kubectl",
        check: &["version", "--client"],
        packages: &["kubectl", "kubernetes-client"],
    },
    DebianTool {
        tool: "skopeo",
        check: &["--version"],
        packages: &["skopeo"],
    },
    DebianTool {
        tool: "umoci",
        check: &["--version"],
        packages: &["umoci"],
    },
    DebianTool {
        tool: "podman",
        check: &["--version"],
        packages: &["podman"],
    },
    // The registry behind the sandbox's ECR (`image push`, `deploy --publisher ours`).
    DebianTool {
        tool: "docker-registry",
        check: &["--version"],
        packages: &["docker-registry"],
    },
    DebianTool {
        tool: "runc",
        check: &["--version"],
        packages: &["runc"],
    },
];

pub fn run(flags: TestFlags) -> anyhow::Result<ExitCode> {
    let root = workspace_root();
    let tools = PythonTools::ensure(&root).context("installing the Python test tools")?;
    tracing::info!(venv = %tools.venv().display(), "Python test tools are ready");
    for tool in DEBIAN_TOOLS {
        ensure_debian_tool(tool)?;
    }
    let cargo = crate::cargo_tool::cargo();
    // A shell's environment for cargo (see `cargo_command`), so that `cargo xtask test` and
    // a plain `cargo test` reuse each other's build.
    let status = crate::cargo_tool::cargo_command()
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

/// Whether `tool` runs: its version check exits 0.
fn runs(tool: &DebianTool) -> bool {
    Command::new(tool.tool)
        .args(tool.check)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Installs `tool` from the first of its packages that apt can install, when it is missing.
fn ensure_debian_tool(tool: &DebianTool) -> anyhow::Result<()> {
    if runs(tool) {
        return Ok(());
    }
    let DebianTool {
        tool: name,
        packages,
        ..
    } = tool;
    tracing::info!("{name} is missing; installing it with apt-get");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|status| status.success())
    };
    // A fresh machine's package lists may be empty or old.
    apt(&["update", "-qq"]);
    for package in packages.iter() {
        if apt(&["install", "-y", "-qq", package]) && runs(tool) {
            return Ok(());
        }
    }
    anyhow::bail!(
        "{name} is needed by the end-to-end tests and could not be installed with apt-get (tried {}); install it and run cargo xtask test again",
        packages.join(", ")
    )
}
