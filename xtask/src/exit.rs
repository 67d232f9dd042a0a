//! Exit codes: a contract with scripts and CI pipelines, documented in `--help` and the
//! README, and tested. They follow Terraform's `-detailed-exitcode` convention.

use std::process::ExitCode;

/// The command did what was asked; for `plan --detailed-exitcode`, there is nothing to change.
pub const SUCCESS: u8 = 0;
/// An error: bad input, an unreachable service, a failed step. Nothing half-done is left
/// behind that the next run cannot converge from. For a fleet (several `--config`): any
/// cluster failed; the others still ran, and the summary names the failed ones.
pub const FAILURE: u8 = 1;
/// `plan --detailed-exitcode` only: the plan has changes (drift, or a first deployment);
/// for a fleet, no cluster failed and at least one has changes.
pub const CHANGES: u8 = 2;

/// The text appended to `--help`.
pub const HELP: &str = "Exit codes:\n  0  success (with plan --detailed-exitcode: no changes)\n  1  error: bad input or a failed step; the message says what failed and what to do\n     (several --config, a fleet: any cluster failed; the others still ran)\n  2  plan --detailed-exitcode only: there are changes to apply (a fleet: on any cluster, none failed)";

pub fn code(code: u8) -> ExitCode {
    ExitCode::from(code)
}
