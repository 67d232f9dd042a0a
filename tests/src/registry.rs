//! A real OCI registry on loopback: Debian's `docker-registry` (the CNCF distribution
//! registry), which serves the OCI distribution API that ECR serves. The AWS emulator's ECR
//! points at it once registered ([`crate::aws_emulator::AwsEmulator::register_registry`]),
//! so an image pushed with ECR's authorization token lands here and `skopeo`, `podman` and
//! our own client can read it back.
//!
//! It runs without authentication: ECR's token is accepted by not being checked, which is
//! what a test of the client side needs. Its storage is a directory of the caller's.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The registry binary of Debian's `docker-registry` package.
pub const REGISTRY_BINARY: &str = "docker-registry";
/// How long the registry may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "cannot run {REGISTRY_BINARY}: {0}; install Debian's docker-registry package (cargo xtask test does)"
    )]
    Spawn(#[source] std::io::Error),
    #[error("cannot write the registry's configuration {}: {source}", path.display())]
    Config {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{REGISTRY_BINARY} did not say where it listens within {START_TIMEOUT:?}; its log: {log}"
    )]
    NoAddress { log: String },
}

/// Whether the registry binary runs on this machine.
pub fn available() -> bool {
    std::process::Command::new(REGISTRY_BINARY)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A running registry; stopped (its process killed, by PID) when dropped.
pub struct LocalRegistry {
    child: Child,
    address: String,
}

impl LocalRegistry {
    /// Starts a registry storing under `dir`, on a port the OS picks on 127.0.0.1.
    pub async fn start(dir: &Path) -> Result<LocalRegistry, RegistryError> {
        let config = dir.join("registry.yml");
        let storage = dir.join("registry");
        let text = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:0\n  secret: sandbox-registry\n",
            storage.display()
        );
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&config, text))
            .map_err(|source| RegistryError::Config {
                path: config.clone(),
                source,
            })?;
        let mut child = Command::new(REGISTRY_BINARY)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(RegistryError::Spawn)?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| RegistryError::NoAddress {
                log: "(no stderr)".to_owned(),
            })?;
        let mut lines = BufReader::new(stderr).lines();
        let mut log = Vec::new();
        let found = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(address) = listening_address(&line) {
                    return Some(address);
                }
                log.push(line);
            }
            None
        })
        .await
        .ok()
        .flatten();
        let Some(address) = found else {
            return Err(RegistryError::NoAddress {
                log: log.join("\n"),
            });
        };
        // Keep draining its log so that the registry never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(LocalRegistry { child, address })
    }

    /// `127.0.0.1:PORT`: the registry's host, as in image references.
    pub fn host(&self) -> &str {
        &self.address
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The registry process's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// The address in the registry's `msg="listening on 127.0.0.1:PORT"` log line.
fn listening_address(line: &str) -> Option<String> {
    let rest = line.split("listening on ").nth(1)?;
    let address: String = rest
        .chars()
        .take_while(|character| character.is_ascii_digit() || matches!(character, '.' | ':'))
        .collect();
    address.starts_with("127.").then_some(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_comes_from_the_listening_line() {
        let line = "time=\"2026-12-02T02:56:51Z\" level=info msg=\"listening on 127.0.0.1:35641\" go.version=go1.19.8";
        assert_eq!(listening_address(line).as_deref(), Some("127.0.0.1:35641"));
        assert_eq!(
            listening_address("level=info msg=\"redis not configured\""),
            None
        );
    }
}
