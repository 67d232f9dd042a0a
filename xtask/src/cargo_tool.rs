//! How the commands that build or test the workspace (`test`, `demo`, `bench`) find cargo
//! and the build output.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The cargo that runs this xtask (cargo sets `CARGO` for the programs it runs), else the
/// one on the PATH.
pub fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// The variables cargo sets for the programs it runs (`cargo xtask` is `cargo run`; test
/// binaries run under `cargo test`), which a cargo started from such a program inherits.
const SET_FOR_RUN_PROGRAMS: [&str; 8] = [
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_CRATE_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

/// `cargo`, with the environment a person's shell gives it: without the variables cargo
/// set for this program. Build scripts track some of them (ring's reruns when
/// CARGO_MANIFEST_DIR changes), so a build started from here with them set and one started
/// from a shell without them would each find the other's output stale and rebuild it: for
/// the release publisher, minutes of fat LTO every time the two alternate.
pub fn cargo_command() -> std::process::Command {
    let mut command = std::process::Command::new(cargo());
    for name in SET_FOR_RUN_PROGRAMS {
        command.env_remove(name);
    }
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_") || name.starts_with("CARGO_BIN_") {
            command.env_remove(name.as_ref());
        }
    }
    command
}

/// Where cargo puts the workspace's build output: `CARGO_TARGET_DIR`, else `target/` in
/// the workspace root.
pub fn target_dir(workspace_root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root.join("target"), PathBuf::from)
}
