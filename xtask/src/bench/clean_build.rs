//! The time of a clean debug build of the workspace: measured in a scratch target
//! directory with `--clean-build`, otherwise read from BENCHMARKS.md.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};

use super::report::Report;
use crate::cargo_tool::cargo;

/// The marker in BENCHMARKS.md that holds the recorded clean build time.
const CLEAN_BUILD_MARKER: &str = "clean_debug_build_s:";

/// The value recorded after the marker in BENCHMARKS.md, e.g.
/// `<!-- clean_debug_build_s: 412 -->`.
pub fn recorded_clean_build_seconds(benchmarks_md: &str) -> Option<f64> {
    let start = benchmarks_md.find(CLEAN_BUILD_MARKER)? + CLEAN_BUILD_MARKER.len();
    benchmarks_md[start..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Measures `cargo build --workspace` (debug) in a fresh target directory under /tmp when
/// asked, and deletes it afterwards; otherwise reports the value recorded in BENCHMARKS.md.
pub(super) fn run(root: &Path, measure_now: bool, report: &mut Report) -> anyhow::Result<()> {
    if !measure_now {
        let recorded = std::fs::read_to_string(root.join("BENCHMARKS.md"))
            .ok()
            .as_deref()
            .and_then(recorded_clean_build_seconds);
        match recorded {
            Some(seconds) => report.line(format!(
                "clean debug build: {seconds} s (recorded in BENCHMARKS.md; --clean-build measures it again)"
            )),
            None => report.line("clean debug build: not measured (pass --clean-build)"),
        }
        report.set("clean_debug_build_s", recorded);
        report.set("clean_debug_build_measured_now", false);
        return Ok(());
    }
    let scratch = tempfile::Builder::new()
        .prefix("cni-clean-build")
        .tempdir_in("/tmp")
        .context("creating a scratch target directory")?;
    eprintln!("Measuring a clean debug build of the workspace (minutes)...");
    let started = Instant::now();
    let status = std::process::Command::new(cargo())
        .args(["build", "--quiet", "--workspace"])
        .env("CARGO_TARGET_DIR", scratch.path())
        .current_dir(root)
        .status()
        .context("running the clean build")?;
    let seconds = started.elapsed().as_secs_f64();
    drop(scratch);
    if !status.success() {
        bail!("the clean debug build failed ({status})");
    }
    report.line(format!("clean debug build: {seconds:.0} s (measured now)"));
    report.set("clean_debug_build_s", seconds);
    report.set("clean_debug_build_measured_now", true);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorded_clean_build_time_is_read_from_its_marker() {
        let text = "# Benchmarks\n<!-- clean_debug_build_s: 412.5 -->\n";
        assert_eq!(recorded_clean_build_seconds(text), Some(412.5));
        assert_eq!(recorded_clean_build_seconds("# Benchmarks\n"), None);
    }
}
