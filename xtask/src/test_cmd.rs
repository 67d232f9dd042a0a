//! `cargo xtask test`: the README's test command. It provisions every tool the tests need
//! (nothing is skipped for want of a tool) and then runs the whole workspace's tests.

use std::process::{Command, ExitCode};

use anyhow::Context;
use sandbox::python_tools::{PythonTools, workspace_root};

use crate::flags::TestFlags;

pub fn run(flags: TestFlags) -> anyhow::Result<ExitCode> {
    let root = workspace_root();
    let tools = PythonTools::ensure(&root).context("installing the Python test tools")?;
    tracing::info!(venv = %tools.venv().display(), "Python test tools are ready");
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
