//! The size of the release-built publisher binary, which ships in the container image.

use std::path::Path;

use anyhow::Context;

use super::report::Report;

pub(super) fn run(binary: &Path, report: &mut Report) -> anyhow::Result<()> {
    let bytes = std::fs::metadata(binary)
        .with_context(|| format!("reading the size of {}", binary.display()))?
        .len();
    // The release profile strips symbols (`strip = true`), so this is the stripped size.
    let megabytes = bytes as f64 / 1e6;
    report.line(format!(
        "publisher binary (release, stripped): {:.2} MB",
        megabytes
    ));
    report.set("publisher_binary_mb", megabytes);
    report.target(
        "publisher binary <= 15 MB",
        megabytes <= 15.0,
        format!("{megabytes:.2} MB"),
    );
    Ok(())
}
