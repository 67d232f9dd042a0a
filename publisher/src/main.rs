//! The `cni-metrics-publisher` binary. The publisher itself is not implemented yet; until it
//! is, the binary says so and fails rather than pretending to publish.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "error: cni-metrics-publisher is not implemented yet; use the upstream cni-metrics-helper image \
         (cargo xtask render picks the right one for your region)"
    );
    ExitCode::FAILURE
}
