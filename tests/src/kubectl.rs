//! The real `kubectl` binary pointed at a [`FakeApiServer`], for end-to-end tests that
//! check the fake server against a client we did not write.
//!
//! Each [`Kubectl`] has its own kubeconfig and its own discovery and OpenAPI cache
//! directory, so that tests running in parallel (and a server that reuses a port) never
//! read each other's cached documents.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use crate::kube_api::{FakeApiServer, KubeApiError};

/// How long one kubectl command may take before the test calls it hung.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Failures to run kubectl at all (as opposed to kubectl exiting non-zero, which is an
/// outcome tests assert on).
#[derive(Debug, thiserror::Error)]
pub enum KubectlError {
    #[error("could not create a directory for kubectl's kubeconfig and cache: {0}")]
    TempDir(#[source] std::io::Error),
    #[error(transparent)]
    Kubeconfig(#[from] KubeApiError),
    #[error(
        "could not run `kubectl {args}`: {source}; `cargo xtask test` installs kubectl (Debian package `kubectl` or `kubernetes-client`)"
    )]
    Spawn {
        args: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not write {path} for kubectl: {source}")]
    WriteFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`kubectl {args}` did not finish within {seconds} s")]
    Timeout { args: String, seconds: u64 },
}

/// What one kubectl command did.
#[derive(Debug, Clone)]
pub struct KubectlOutput {
    /// The exit code, or -1 when kubectl was killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl KubectlOutput {
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

impl std::fmt::Display for KubectlOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// kubectl configured for one fake API server.
pub struct Kubectl {
    dir: tempfile::TempDir,
}

impl Kubectl {
    /// Writes the server's kubeconfig (context `sandbox`, namespace `default`) into a new
    /// temporary directory, next to kubectl's cache.
    pub fn for_server(server: &FakeApiServer) -> Result<Kubectl, KubectlError> {
        let dir = tempfile::tempdir().map_err(KubectlError::TempDir)?;
        server.write_kubeconfig(&dir.path().join("kubeconfig"))?;
        Ok(Kubectl { dir })
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// A directory that lives as long as this runner, for manifests the test writes.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("kubectl");
        command
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            // kubectl reads these; a developer's own settings must not change the output.
            .env_remove("KUBECONFIG")
            .env_remove("KUBECTL_EXTERNAL_DIFF")
            .env_remove("KUBECTL_EXPLAIN_OPENAPIV3")
            .env("HOME", self.dir.path())
            .kill_on_drop(true);
        command
    }

    /// Runs `kubectl ARGS` to completion.
    pub async fn run(&self, args: &[&str]) -> Result<KubectlOutput, KubectlError> {
        self.run_with_stdin(args, None).await
    }

    /// Runs `kubectl ARGS`, writing `stdin` to its standard input (for `-f -`).
    pub async fn run_with_stdin(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<KubectlOutput, KubectlError> {
        let joined = args.join(" ");
        let spawn_error = |source| KubectlError::Spawn {
            args: joined.clone(),
            source,
        };
        let mut command = self.command(args);
        command
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(spawn_error)?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).await.map_err(spawn_error)?;
            drop(pipe);
        }
        let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| KubectlError::Timeout {
                args: joined.clone(),
                seconds: COMMAND_TIMEOUT.as_secs(),
            })?
            .map_err(spawn_error)?;
        Ok(KubectlOutput {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// Starts `kubectl ARGS` with its output piped, for long-running commands such as
    /// `get --watch`; the process is killed when the [`Child`] is dropped.
    pub fn spawn(&self, args: &[&str]) -> Result<Child, KubectlError> {
        self.command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| KubectlError::Spawn {
                args: args.join(" "),
                source,
            })
    }

    /// Writes `text` to a file in this runner's directory and returns its path, for `-f`.
    pub fn write_file(&self, name: &str, text: &str) -> Result<PathBuf, KubectlError> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).map_err(|source| KubectlError::WriteFile {
            path: path.display().to_string(),
            source,
        })?;
        Ok(path)
    }
}
