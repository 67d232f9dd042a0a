//! How the commands that build or test the workspace (`test`, `demo`, `bench`) find cargo
//! and the build output.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The cargo that runs this xtask (cargo sets `CARGO` for the programs it runs), else the
/// one on the PATH.
pub fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Where cargo puts the workspace's build output: `CARGO_TARGET_DIR`, else `target/` in
/// the workspace root.
pub fn target_dir(workspace_root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root.join("target"), PathBuf::from)
}
