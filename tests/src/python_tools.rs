//! The project-local virtualenv that holds the Python test tools: moto (the AWS
//! emulator), cbor2 (for our CloudWatch translation layer), matplotlib (which draws its
//! GetMetricWidgetImage answers), kubernetes-validate, parliament and openapi-spec-validator
//! (which checks the fake API server's OpenAPI documents).
//!
//! The virtualenv lives in `<workspace root>/.venv-test` (git-ignored), or wherever the
//! `CNI_SANDBOX_VENV` environment variable points. [`PythonTools::ensure`] creates and
//! fills it; [`PythonTools::find`] only checks that it is there and up to date, so that
//! tests never install anything behind the user's back.
//!
//! Freshness is decided by a stamp file inside the virtualenv that holds the exact text
//! of `tests/support/requirements.txt` that was installed. The requirements are
//! embedded at compile time, so the check reads one small file and runs no command.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// The pinned Python requirements, exactly as they are installed.
pub const REQUIREMENTS: &str = include_str!("../support/requirements.txt");

/// Environment variable that points the sandbox at another virtualenv.
pub const VENV_ENV_VAR: &str = "CNI_SANDBOX_VENV";

/// Name of the virtualenv directory under the workspace root.
pub const DEFAULT_VENV_DIR: &str = ".venv-test";

/// File inside the virtualenv recording which requirements were installed into it.
const STAMP_FILE: &str = "cni-sandbox-requirements.stamp";

/// Copy of the requirements inside the virtualenv, the file `pip install -r` reads.
const REQUIREMENTS_COPY: &str = "cni-sandbox-requirements.txt";

/// The command that installs the tools; named in every error that asks for it.
const INSTALL_HINT: &str = "run `cargo xtask test` (it installs them)";

/// Errors from locating or installing the Python test tools.
#[derive(Debug, thiserror::Error)]
pub enum PythonToolsError {
    #[error("the Python test tools are not installed in {venv}: {INSTALL_HINT}")]
    NotInstalled { venv: PathBuf },

    #[error(
        "the Python test tools in {venv} were installed from other requirements than \
         tests/support/requirements.txt: {INSTALL_HINT}"
    )]
    Outdated { venv: PathBuf },

    #[error(
        "could not start `{command}`: {source}; install Python 3 with its venv module \
         (on Debian: `apt-get install python3 python3-venv`) and try again"
    )]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },

    #[error(
        "`{command}` failed ({status}); its output is above. Check that PyPI is reachable \
         and the disk has room, then run `cargo xtask test` again (delete {venv} to start \
         from scratch)"
    )]
    CommandFailed {
        command: String,
        status: ExitStatus,
        venv: PathBuf,
    },

    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A virtualenv that holds the pinned Python test tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonTools {
    venv: PathBuf,
}

impl PythonTools {
    /// Returns the tools, creating the virtualenv and installing the requirements when
    /// they are missing or outdated.
    ///
    /// This blocks while `python3 -m venv` and `pip install` run (about 30 s the first
    /// time); pip's output goes to stderr. When the stamp matches, it returns at once.
    pub fn ensure(workspace_root: &Path) -> Result<PythonTools, PythonToolsError> {
        let tools = PythonTools {
            venv: venv_path(workspace_root),
        };
        if !tools.python().exists() {
            let mut create = Command::new("python3");
            create.arg("-m").arg("venv").arg(&tools.venv);
            tools.run(create)?;
        }
        if !tools.stamp_matches()? {
            tools.install_requirements()?;
        }
        Ok(tools)
    }

    /// Returns the tools if they are installed and match the pinned requirements. Never
    /// installs anything; the error says how to install them.
    pub fn find(workspace_root: &Path) -> Result<PythonTools, PythonToolsError> {
        let tools = PythonTools {
            venv: venv_path(workspace_root),
        };
        if !tools.python().exists() {
            return Err(PythonToolsError::NotInstalled { venv: tools.venv });
        }
        if !tools.stamp_matches()? {
            return Err(PythonToolsError::Outdated { venv: tools.venv });
        }
        Ok(tools)
    }

    /// The virtualenv's Python interpreter.
    pub fn python(&self) -> PathBuf {
        self.bin("python")
    }

    /// An executable installed in the virtualenv, e.g. `bin("kubernetes-validate")`.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.venv.join("bin").join(name)
    }

    /// The virtualenv directory.
    pub fn venv(&self) -> &Path {
        &self.venv
    }

    fn stamp_path(&self) -> PathBuf {
        self.venv.join(STAMP_FILE)
    }

    fn stamp_matches(&self) -> Result<bool, PythonToolsError> {
        let stamp = self.stamp_path();
        match fs::read_to_string(&stamp) {
            Ok(installed) => Ok(installed == REQUIREMENTS),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(PythonToolsError::Io {
                action: "read",
                path: stamp,
                source,
            }),
        }
    }

    fn install_requirements(&self) -> Result<(), PythonToolsError> {
        // pip reads requirements from a file, so the embedded text is written next to
        // the stamp; the file on disk in the source tree may have changed since the
        // build, and the stamp must describe exactly what was installed.
        let requirements = self.venv.join(REQUIREMENTS_COPY);
        write_file(&requirements, REQUIREMENTS)?;
        // A stale stamp must not survive a failed install.
        remove_if_present(&self.stamp_path())?;
        let mut install = Command::new(self.python());
        install.args([
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "-r",
        ]);
        install.arg(&requirements);
        self.run(install)?;
        write_file(&self.stamp_path(), REQUIREMENTS)
    }

    /// Runs a command to completion with its output on our stderr, so that progress is
    /// visible and stdout stays free for data.
    fn run(&self, mut command: Command) -> Result<(), PythonToolsError> {
        let display = display_command(&command);
        command
            .stdin(Stdio::null())
            .stdout(io::stderr())
            .stderr(io::stderr());
        let status = command.status().map_err(|source| PythonToolsError::Spawn {
            command: display.clone(),
            source,
        })?;
        if status.success() {
            Ok(())
        } else {
            Err(PythonToolsError::CommandFailed {
                command: display,
                status,
                venv: self.venv.clone(),
            })
        }
    }
}

/// The workspace root: the parent of this package's directory.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

/// The virtualenv location: `CNI_SANDBOX_VENV` when set (relative paths are taken from
/// the workspace root, so the answer does not depend on the current directory),
/// otherwise `<workspace root>/.venv-test`.
fn venv_path(workspace_root: &Path) -> PathBuf {
    match std::env::var_os(VENV_ENV_VAR) {
        Some(path) if !path.is_empty() => workspace_root.join(path),
        _ => workspace_root.join(DEFAULT_VENV_DIR),
    }
}

fn write_file(path: &Path, contents: &str) -> Result<(), PythonToolsError> {
    fs::write(path, contents).map_err(|source| PythonToolsError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

fn remove_if_present(path: &Path) -> Result<(), PythonToolsError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(PythonToolsError::Io {
            action: "remove",
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn display_command(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_pin_every_tool() {
        for pin in [
            "moto[server]==5.2.5",
            "cbor2==6.3.0",
            "kubernetes-validate==1.37.0",
            "parliament==1.6.4",
            "openapi-spec-validator==0.9.0",
        ] {
            assert!(
                REQUIREMENTS.lines().any(|line| line.trim() == pin),
                "requirements.txt lacks {pin}"
            );
        }
    }

    #[test]
    fn find_reports_a_missing_venv_with_the_install_command() {
        let empty = tempfile::tempdir().expect("temp dir");
        // Only the default location is checked here; CNI_SANDBOX_VENV may be set by the
        // user and is not touched, since tests share the process environment.
        if std::env::var_os(VENV_ENV_VAR).is_some() {
            return;
        }
        let error = PythonTools::find(empty.path()).expect_err("no venv in an empty dir");
        let message = error.to_string();
        assert!(message.contains(".venv-test"), "{message}");
        assert!(message.contains("cargo xtask test"), "{message}");
    }

    #[test]
    fn find_rejects_a_stale_stamp() {
        if std::env::var_os(VENV_ENV_VAR).is_some() {
            return;
        }
        let root = tempfile::tempdir().expect("temp dir");
        let venv = root.path().join(DEFAULT_VENV_DIR);
        fs::create_dir_all(venv.join("bin")).expect("bin dir");
        fs::write(venv.join("bin/python"), "").expect("fake python");
        fs::write(venv.join(STAMP_FILE), "moto==0.1\n").expect("stamp");
        assert!(matches!(
            PythonTools::find(root.path()),
            Err(PythonToolsError::Outdated { .. })
        ));
        fs::write(venv.join(STAMP_FILE), REQUIREMENTS).expect("stamp");
        let tools = PythonTools::find(root.path()).expect("fresh stamp is accepted");
        assert_eq!(tools.python(), venv.join("bin/python"));
        assert_eq!(tools.bin("parliament"), venv.join("bin/parliament"));
    }
}
