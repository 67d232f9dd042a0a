//! The moto AWS emulator, run behind our CloudWatch RPCv2-CBOR translation layer
//! (`tests/support/moto_cbor_server.py`), one process per [`AwsEmulator`], on a port the
//! OS picks, so any number of emulators can run side by side.
//!
//! moto speaks IAM, STS and EKS to the Rust SDK as it is. CloudWatch is the exception:
//! `aws-sdk-cloudwatch` >= 1.100 uses Smithy RPCv2-CBOR, which moto 5.2.5 does not
//! understand, so the translation layer converts those calls to the awsJson1_0 protocol
//! moto does speak, in the same Python process.
//!
//! moto 5.2.5 does not route the EKS Pod Identity and add-on operations; the same layer
//! emulates them (CreatePodIdentityAssociation, List/Describe/Update/Delete, CreateAddon,
//! DescribeAddon, ListAddons, DeleteAddon) with state that lives and dies with moto's
//! cluster, and offers a sandbox-only control API: [`AwsEmulator::set_cluster_endpoint`]
//! makes DescribeCluster report a given Kubernetes endpoint, and
//! [`AwsEmulator::set_addon_status`] changes an emulated add-on's status.
//!
//! CloudWatch metric alarms are moto's, with what moto gets wrong fixed in the layer
//! (initial state, updates, tags, DescribeAlarms filters and pages), and
//! [`AwsEmulator::evaluate_alarms`] evaluates them, as CloudWatch does every period, when
//! a test asks. IAM's SimulatePrincipalPolicy, which moto lacks, is answered by the layer
//! from moto's IAM users, groups, roles and policies (Conditions are not evaluated).
//!
//! Every request is recorded (moto's `MOTO_ENABLE_RECORDING`) into a JSON-lines file in
//! the emulator's own temporary directory; [`AwsEmulator::recorded_requests`] parses it so
//! that tests can count the mutating calls a command made.
//!
//! # Sync and async
//!
//! [`AwsEmulator::start`] and [`AwsEmulator::reset`] are `async` (tokio): they wait for
//! the process and talk to it over HTTP. Everything else is synchronous and quick:
//! reading or truncating the recording, building an [`SdkConfig`], and stopping the
//! process. Dropping an [`AwsEmulator`] kills its process and waits for it, so none is
//! left behind; the process also exits by itself when our end of its stdin closes,
//! which covers a test binary that was killed before it could drop anything.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_iam::config::{Credentials, SharedCredentialsProvider};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::python_tools::PythonTools;

/// The account moto reports when none is configured.
pub const DEFAULT_ACCOUNT_ID: &str = "123456789012";

/// The dummy credentials the SDK signs with; moto does not check signatures.
pub const ACCESS_KEY_ID: &str = "testing";
pub const SECRET_ACCESS_KEY: &str = "testing";

/// The translation layer's source, written into each emulator's temporary directory so
/// that the emulator does not depend on where the source tree is at run time.
const SHIM_SOURCE: &str = include_str!("../support/moto_cbor_server.py");
const SHIM_FILE: &str = "moto_cbor_server.py";
const RECORDING_FILE: &str = "recording.jsonl";
const STDOUT_FILE: &str = "stdout.log";
const STDERR_FILE: &str = "stderr.log";
const LISTENING_PREFIX: &str = "listening on http://";

/// How long start-up may take. moto needs well under a second here; the bound is
/// generous because a loaded CI machine can be much slower, and waiting ends as soon as
/// the process reports its port.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const STARTUP_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long `stop` waits for a clean exit before it kills the process.
const STOP_GRACE_PERIOD: Duration = Duration::from_secs(5);
/// Bound on one call to moto's control API (`/moto-api/...`).
const MOTO_API_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of the emulator's stderr an error message quotes.
const STDERR_TAIL_BYTES: usize = 4000;

/// Errors from starting, controlling or reading the AWS emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error(
        "could not create a temporary directory for the AWS emulator: {0}; check that \
         the temporary directory (TMPDIR) exists and is writable"
    )]
    TempDir(#[source] io::Error),

    #[error("could not {action} {path} for the AWS emulator: {source}")]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "could not start the AWS emulator with {python}: {source}; run `cargo xtask test` \
         to (re)install the Python test tools"
    )]
    Spawn {
        python: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "the AWS emulator exited during start-up ({status}); if a Python module is \
         missing, run `cargo xtask test` to reinstall the test tools. Its stderr:\n{stderr}"
    )]
    ExitedDuringStartup { status: ExitStatus, stderr: String },

    #[error(
        "the AWS emulator did not report its port within {timeout:?}; it was stopped. \
         Its stderr:\n{stderr}"
    )]
    StartupTimeout { timeout: Duration, stderr: String },

    #[error(
        "the AWS emulator at {endpoint} did not answer `{request}`: {detail}; check that \
         it is still running (its stderr is in {stderr_path})"
    )]
    MotoApi {
        endpoint: String,
        request: String,
        detail: String,
        stderr_path: PathBuf,
    },

    #[error(
        "the sandbox control API at {endpoint} did not answer `{request}`: {detail}; \
         check that the AWS emulator is still running"
    )]
    ControlUnreachable {
        endpoint: String,
        request: String,
        detail: String,
    },

    #[error(
        "the sandbox control API at {endpoint} refused `{request}` with HTTP {status}: \
         {body}"
    )]
    ControlRefused {
        endpoint: String,
        request: String,
        status: u16,
        body: String,
    },

    #[error(
        "the sandbox control API at {endpoint} answered `{request}` with something other \
         than what it documents: {detail}"
    )]
    ControlAnswer {
        endpoint: String,
        request: String,
        detail: String,
    },

    #[error(
        "{endpoint} is not an AWS emulator on loopback (`http://127.0.0.1:PORT`), so the \
         sandbox control API cannot be reached there"
    )]
    NotLoopback { endpoint: String },

    #[error(
        "line {line} of the emulator's request recording {path} is not a recorded \
         request: {detail}"
    )]
    BadRecording {
        path: PathBuf,
        line: usize,
        detail: String,
    },

    #[error("could not stop the AWS emulator (pid {pid}): {source}")]
    Stop {
        pid: u32,
        #[source]
        source: io::Error,
    },
}

/// How to start an emulator. `EmulatorOptions::default()` gives moto's defaults.
#[derive(Debug, Clone, Default)]
pub struct EmulatorOptions {
    /// The account moto reports (`MOTO_ACCOUNT_ID`); [`DEFAULT_ACCOUNT_ID`] when `None`.
    pub account_id: Option<String>,
    /// More environment variables for the emulator process, e.g.
    /// `MOTO_IAM_LOAD_MANAGED_POLICIES=true`. They are applied last, so they win over the
    /// ones the launcher sets.
    pub extra_env: Vec<(String, String)>,
}

impl EmulatorOptions {
    /// Sets the account moto reports.
    pub fn with_account_id(mut self, account_id: impl Into<String>) -> Self {
        self.account_id = Some(account_id.into());
        self
    }

    /// Adds one environment variable for the emulator process.
    pub fn with_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_env.push((name.into(), value.into()));
        self
    }
}

/// A running moto process with the CloudWatch translation layer in front.
#[derive(Debug)]
pub struct AwsEmulator {
    /// `None` once the process has been stopped.
    child: Option<Child>,
    pid: u32,
    port: u16,
    recording_path: PathBuf,
    stderr_path: PathBuf,
    /// Holds the script, the recording and the logs; removed on drop, after the
    /// process is gone.
    dir: TempDir,
}

impl AwsEmulator {
    /// Starts an emulator on 127.0.0.1 and a port the OS picks, and waits (at most 30 s)
    /// until it accepts connections.
    pub async fn start(
        tools: &PythonTools,
        options: EmulatorOptions,
    ) -> Result<AwsEmulator, EmulatorError> {
        let dir = tempfile::Builder::new()
            .prefix("cni-aws-emulator-")
            .tempdir()
            .map_err(EmulatorError::TempDir)?;
        let shim_path = dir.path().join(SHIM_FILE);
        let recording_path = dir.path().join(RECORDING_FILE);
        let stdout_path = dir.path().join(STDOUT_FILE);
        let stderr_path = dir.path().join(STDERR_FILE);
        fs::write(&shim_path, SHIM_SOURCE).map_err(|source| EmulatorError::File {
            action: "write",
            path: shim_path.clone(),
            source,
        })?;
        // The output goes to files rather than pipes: nobody has to keep reading them,
        // so a chatty emulator can never block on a full pipe.
        let stdout = create_file(&stdout_path)?;
        let stderr = create_file(&stderr_path)?;
        let account_id = options
            .account_id
            .unwrap_or_else(|| DEFAULT_ACCOUNT_ID.to_owned());

        let python = tools.python();
        let mut command = Command::new(&python);
        command
            .arg(&shim_path)
            .args(["-H", "127.0.0.1", "-p", "0", "--exit-when-stdin-closes"])
            .current_dir(dir.path())
            .env("MOTO_ENABLE_RECORDING", "true")
            .env("MOTO_RECORDER_FILEPATH", &recording_path)
            .env("MOTO_ACCOUNT_ID", &account_id)
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .envs(options.extra_env)
            // Our end of stdin stays open for as long as the Child is alive; when it
            // closes (stop, drop, or this process dying) the emulator shuts down.
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(stderr);
        let mut child = command
            .spawn()
            .map_err(|source| EmulatorError::Spawn { python, source })?;
        let pid = child.id();

        let port = match wait_for_port(&mut child, &stdout_path, &stderr_path).await {
            Ok(port) => port,
            Err(error) => {
                kill_and_reap(&mut child);
                return Err(error);
            }
        };
        tracing::debug!(pid, port, "AWS emulator started");
        Ok(AwsEmulator {
            child: Some(child),
            pid,
            port,
            recording_path,
            stderr_path,
            dir,
        })
    }

    /// The base URL of the emulator, e.g. `http://127.0.0.1:40123`, for every service.
    pub fn endpoint_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The emulator's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The emulator's temporary directory (script, recording and logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An SDK configuration that sends every service to this emulator; see
    /// [`sdk_config_for`].
    pub fn sdk_config(&self, region: &str) -> SdkConfig {
        sdk_config_for(&self.endpoint_url(), region)
    }

    /// Wipes all emulated AWS state (`POST /moto-api/reset`). The recording is kept;
    /// see [`AwsEmulator::clear_recording`].
    pub async fn reset(&self) -> Result<(), EmulatorError> {
        self.moto_api_post("/moto-api/reset").await
    }

    /// Every request the emulator received since start-up or the last
    /// [`AwsEmulator::clear_recording`], oldest first. moto appends each request before
    /// it answers it, so a call the SDK has seen an answer for is always included.
    pub fn recorded_requests(&self) -> Result<Vec<RecordedRequest>, EmulatorError> {
        let text = match fs::read_to_string(&self.recording_path) {
            Ok(text) => text,
            // moto creates the file on the first request.
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(EmulatorError::File {
                    action: "read",
                    path: self.recording_path.clone(),
                    source,
                });
            }
        };
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(index, line)| {
                RecordedRequest::from_recording_line(line).map_err(|detail| {
                    EmulatorError::BadRecording {
                        path: self.recording_path.clone(),
                        line: index + 1,
                        detail,
                    }
                })
            })
            .collect()
    }

    /// Empties the recording. moto reopens the file in append mode for every request,
    /// so truncating it from here is safe while the emulator runs.
    pub fn clear_recording(&self) -> Result<(), EmulatorError> {
        File::create(&self.recording_path)
            .map(drop)
            .map_err(|source| EmulatorError::File {
                action: "truncate",
                path: self.recording_path.clone(),
                source,
            })
    }

    /// Stops the emulator: closes its stdin, which makes it shut down cleanly, and kills
    /// it if it has not exited within 5 s. Blocks until the process is gone.
    pub fn stop(mut self) -> Result<(), EmulatorError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = self.pid;
        drop(child.stdin.take());
        let deadline = Instant::now() + STOP_GRACE_PERIOD;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(STARTUP_POLL_INTERVAL),
                Ok(None) => break,
                Err(source) => {
                    kill_and_reap(&mut child);
                    return Err(EmulatorError::Stop { pid, source });
                }
            }
        }
        child
            .kill()
            .map_err(|source| EmulatorError::Stop { pid, source })?;
        child
            .wait()
            .map(drop)
            .map_err(|source| EmulatorError::Stop { pid, source })
    }

    /// Makes DescribeCluster report `endpoint` as the Kubernetes API endpoint of every
    /// cluster named `cluster` (`POST /sandbox-api/clusters/{cluster}/endpoint`), so
    /// that a kubeconfig pointing at the fake API server matches what EKS reports. The
    /// cluster must exist; a reset or re-creating the cluster restores moto's default.
    /// This call is not an AWS API and does not appear in the recording.
    pub async fn set_cluster_endpoint(
        &self,
        cluster: &str,
        endpoint: &str,
    ) -> Result<(), EmulatorError> {
        set_cluster_endpoint_at(&self.endpoint_url(), cluster, None, endpoint).await
    }

    /// Sets the status (an EKS `AddonStatus`, e.g. `DEGRADED`) of the emulated add-on
    /// `addon` on every cluster named `cluster`
    /// (`POST /sandbox-api/clusters/{cluster}/addons/{addon}/status`), so a test can
    /// make an installed add-on unhealthy. Not recorded either.
    pub async fn set_addon_status(
        &self,
        cluster: &str,
        addon: &str,
        status: &str,
    ) -> Result<(), EmulatorError> {
        let body = serde_json::json!({ "status": status }).to_string();
        control_post(
            &self.endpoint_url(),
            self.port,
            &format!("/sandbox-api/clusters/{cluster}/addons/{addon}/status"),
            &body,
        )
        .await
    }

    /// Makes CloudWatch hang for `duration` (`POST /sandbox-api/cloudwatch/hang`): every
    /// PutMetricData that arrives meanwhile is accepted and held unanswered until the hang
    /// ends, then answered 503 ServiceUnavailable and not stored, as with a CloudWatch that
    /// never answered. `Duration::ZERO` ends a hang at once. Not recorded.
    pub async fn hang_cloudwatch(&self, duration: Duration) -> Result<(), EmulatorError> {
        let body = serde_json::json!({ "seconds": duration.as_secs_f64() }).to_string();
        control_post(
            &self.endpoint_url(),
            self.port,
            "/sandbox-api/cloudwatch/hang",
            &body,
        )
        .await
    }

    /// Points the emulated ECR at a real OCI registry (`POST /sandbox-api/ecr/registry`):
    /// GetAuthorizationToken names `endpoint` (`http://127.0.0.1:PORT`), repository URIs
    /// carry its host, and DescribeImages lists what was pushed there. `None` gives moto's
    /// own ECR back. Not recorded.
    pub async fn register_registry(&self, endpoint: Option<&str>) -> Result<(), EmulatorError> {
        let body = serde_json::json!({ "endpoint": endpoint }).to_string();
        control_post(
            &self.endpoint_url(),
            self.port,
            "/sandbox-api/ecr/registry",
            &body,
        )
        .await
    }

    /// Evaluates every CloudWatch metric alarm of the emulator as CloudWatch would at `at`
    /// (`None`: now), over the datapoints PutMetricData stored, and sets each alarm's
    /// state (StateValue, StateReason, StateReasonData, StateUpdatedTimestamp) when it
    /// changes (`POST /sandbox-api/cloudwatch/evaluate-alarms`). Real CloudWatch evaluates
    /// alarms by itself every period; the emulator only when asked, so a test decides when.
    /// The answer lists every metric alarm evaluated, in every region and account, sorted
    /// by account, region and name. Not recorded.
    pub async fn evaluate_alarms(
        &self,
        at: Option<SystemTime>,
    ) -> Result<Vec<EvaluatedAlarm>, EmulatorError> {
        evaluate_alarms_at(&self.endpoint_url(), at).await
    }

    /// Sends `POST <path>` to moto's control API and checks for a 2xx answer.
    async fn moto_api_post(&self, path: &str) -> Result<(), EmulatorError> {
        let request_line = format!("POST {path}");
        let failure = |detail: String| EmulatorError::MotoApi {
            endpoint: self.endpoint_url(),
            request: request_line.clone(),
            detail,
            stderr_path: self.stderr_path.clone(),
        };
        let (status, body) =
            tokio::time::timeout(MOTO_API_TIMEOUT, post_loopback(self.port, path, ""))
                .await
                .map_err(|_| failure(format!("no answer within {MOTO_API_TIMEOUT:?}")))?
                .map_err(|error| failure(error.to_string()))?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(failure(format!("it answered HTTP {status}: {body}")))
        }
    }
}

/// [`AwsEmulator::set_cluster_endpoint`] for an emulator this process did not start,
/// given by its URL, which must be `http://127.0.0.1:PORT` or `http://localhost:PORT`:
/// the control API is only ever called on loopback. With `region`, only the cluster of
/// that name in that region changes (two sandboxes may share one emulator with the same
/// cluster name in two regions).
pub async fn set_cluster_endpoint_at(
    aws_endpoint_url: &str,
    cluster: &str,
    region: Option<&str>,
    endpoint: &str,
) -> Result<(), EmulatorError> {
    let port = loopback_port(aws_endpoint_url).ok_or_else(|| EmulatorError::NotLoopback {
        endpoint: aws_endpoint_url.to_owned(),
    })?;
    let mut body = serde_json::json!({ "endpoint": endpoint });
    if let Some(region) = region {
        body["region"] = region.into();
    }
    let body = body.to_string();
    control_post(
        aws_endpoint_url,
        port,
        &format!("/sandbox-api/clusters/{cluster}/endpoint"),
        &body,
    )
    .await
}

/// What [`AwsEmulator::evaluate_alarms`] found for one metric alarm.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvaluatedAlarm {
    pub alarm_name: String,
    pub region: String,
    /// `OK`, `ALARM` or `INSUFFICIENT_DATA`: the alarm's state after the evaluation.
    pub state: String,
    /// Why, in CloudWatch's words (`Threshold Crossed: 1 out of the last 1 datapoints
    /// [95.0 (02/12/26 12:00:00)] was greater than the threshold (90.0) ...`). It becomes
    /// the alarm's StateReason only when the state changes.
    pub reason: String,
    /// Whether the state changed (and with it StateReason and StateUpdatedTimestamp).
    pub changed: bool,
}

#[derive(serde::Deserialize)]
struct EvaluatedAlarms {
    alarms: Vec<EvaluatedAlarm>,
}

/// [`AwsEmulator::evaluate_alarms`] for an emulator this process did not start, given by
/// its URL, which must be `http://127.0.0.1:PORT` or `http://localhost:PORT`: the
/// control API is only ever called on loopback.
pub async fn evaluate_alarms_at(
    aws_endpoint_url: &str,
    at: Option<SystemTime>,
) -> Result<Vec<EvaluatedAlarm>, EmulatorError> {
    let port = loopback_port(aws_endpoint_url).ok_or_else(|| EmulatorError::NotLoopback {
        endpoint: aws_endpoint_url.to_owned(),
    })?;
    let mut body = serde_json::json!({});
    if let Some(at) = at {
        let seconds = match at.duration_since(UNIX_EPOCH) {
            Ok(after) => after.as_secs_f64(),
            Err(before) => -before.duration().as_secs_f64(),
        };
        body["at"] = seconds.into();
    }
    let path = "/sandbox-api/cloudwatch/evaluate-alarms";
    let answer = control_post_answer(aws_endpoint_url, port, path, &body.to_string()).await?;
    serde_json::from_str::<EvaluatedAlarms>(&answer)
        .map(|evaluated| evaluated.alarms)
        .map_err(|error| EmulatorError::ControlAnswer {
            endpoint: aws_endpoint_url.to_owned(),
            request: format!("POST {path}"),
            detail: format!("{error}: {answer}"),
        })
}

/// Sends one JSON `POST` to the sandbox control API and checks for a 2xx answer.
async fn control_post(
    endpoint_url: &str,
    port: u16,
    path: &str,
    body: &str,
) -> Result<(), EmulatorError> {
    control_post_answer(endpoint_url, port, path, body)
        .await
        .map(drop)
}

/// Sends one JSON `POST` to the sandbox control API and returns the body of its 2xx answer.
async fn control_post_answer(
    endpoint_url: &str,
    port: u16,
    path: &str,
    body: &str,
) -> Result<String, EmulatorError> {
    let request = format!("POST {path}");
    let (status, answer) = tokio::time::timeout(MOTO_API_TIMEOUT, post_loopback(port, path, body))
        .await
        .map_err(|_| EmulatorError::ControlUnreachable {
            endpoint: endpoint_url.to_owned(),
            request: request.clone(),
            detail: format!("no answer within {MOTO_API_TIMEOUT:?}"),
        })?
        .map_err(|error| EmulatorError::ControlUnreachable {
            endpoint: endpoint_url.to_owned(),
            request: request.clone(),
            detail: error.to_string(),
        })?;
    if (200..300).contains(&status) {
        Ok(answer)
    } else {
        Err(EmulatorError::ControlRefused {
            endpoint: endpoint_url.to_owned(),
            request,
            status,
            body: answer,
        })
    }
}

/// Sends `POST <path>` with a JSON body (or none when `body` is empty) to
/// `127.0.0.1:port` with a minimal HTTP/1.1 client, and returns the status code and the
/// body of the answer. The server closes the connection after answering
/// (`Connection: close`), which is what delimits the answer.
async fn post_loopback(port: u16, path: &str, body: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let content_type = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/json\r\n".to_owned()
    };
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{content_type}Content-Length: {length}\r\n\
         Connection: close\r\n\r\n{body}",
        length = body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response);
    let (head, answer) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the answer does not start with an HTTP status line: `{status_line}`"),
            )
        })?;
    Ok((status, answer.trim().to_owned()))
}

/// The port of `http://127.0.0.1:PORT` or `http://localhost:PORT` (a trailing slash is
/// fine), or None for any other URL.
fn loopback_port(url: &str) -> Option<u16> {
    let authority = url.strip_prefix("http://")?.trim_end_matches('/');
    let (host, port) = authority.rsplit_once(':')?;
    matches!(host, "127.0.0.1" | "localhost")
        .then(|| port.parse().ok())
        .flatten()
}

impl Drop for AwsEmulator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }
}

/// An SDK configuration that sends every service to `endpoint_url` (an emulator, or
/// any other AWS stand-in): static dummy credentials, the given region, and an explicit
/// rustls + ring HTTP client (the workspace builds the AWS crates without a default
/// client, and the builder also speaks plain `http://`).
///
/// It reads nothing from the environment or from `~/.aws`, so the developer's own AWS
/// settings cannot leak into a test.
pub fn sdk_config_for(endpoint_url: &str, region: &str) -> SdkConfig {
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let credentials = Credentials::new(
        ACCESS_KEY_ID,
        SECRET_ACCESS_KEY,
        None,
        None,
        "cni-sandbox-aws-emulator",
    );
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(endpoint_url)
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .http_client(http_client)
        .build()
}

/// One request as moto recorded it (after CloudWatch translation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// URL path without the query, e.g. `/` or `/clusters/demo`.
    pub path: String,
    /// The signing name from the `Authorization` credential scope: `iam`, `sts`, `eks`,
    /// `monitoring` (CloudWatch). `None` for unsigned requests.
    pub service: Option<String>,
    /// The operation: the `Action=` form field (query protocol: IAM, STS), or the
    /// operation of the `X-Amz-Target` header (CloudWatch). `None` for rest-json (EKS),
    /// whose operation is given by method and path.
    pub action: Option<String>,
    /// Request headers, names lower-cased. A CloudWatch request the SDK compressed has
    /// `x-cbor-shim-original-content-encoding: gzip`.
    pub headers: BTreeMap<String, String>,
    /// The request body; for CloudWatch it is the translated awsJson1_0 body.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// When a CloudWatch request arrived at the emulator (its wall clock, before any
    /// sandbox hang held it); `None` for the other services, whose requests moto records
    /// without it.
    pub fn received_at(&self) -> Option<std::time::SystemTime> {
        let seconds: f64 = self.headers.get("x-sandbox-received-at")?.parse().ok()?;
        std::time::Duration::try_from_secs_f64(seconds)
            .ok()
            .map(|since_epoch| std::time::UNIX_EPOCH + since_epoch)
    }

    /// Whether the request changes state: an action that does not start with `Get`,
    /// `List`, `Describe` or `Simulate` (IAM's policy simulations), or, without an action
    /// (EKS), a method other than GET/HEAD.
    pub fn is_mutating(&self) -> bool {
        match &self.action {
            Some(action) => !["Get", "List", "Describe", "Simulate"]
                .iter()
                .any(|read_prefix| action.starts_with(read_prefix)),
            None => !matches!(self.method.as_str(), "GET" | "HEAD"),
        }
    }

    /// The EKS operation of a rest-json request, from its method and path, e.g.
    /// `CreatePodIdentityAssociation` for `POST /clusters/demo/pod-identity-associations`.
    /// Covers the cluster, Pod Identity, add-on and tagging operations; `None` for any
    /// other request, and for requests not signed for `eks`.
    pub fn eks_operation(&self) -> Option<&'static str> {
        if self.service.as_deref() != Some("eks") {
            return None;
        }
        let segments: Vec<&str> = self
            .path
            .trim_matches('/')
            .split('/')
            .filter(|segment| !segment.is_empty())
            .collect();
        let method = self.method.as_str();
        let operation = match (segments.as_slice(), method) {
            (["clusters"], "POST") => "CreateCluster",
            (["clusters"], "GET") => "ListClusters",
            (["clusters", _], "GET") => "DescribeCluster",
            (["clusters", _], "DELETE") => "DeleteCluster",
            (["clusters", _, "update-config"], "POST") => "UpdateClusterConfig",
            (["clusters", _, "pod-identity-associations"], "POST") => {
                "CreatePodIdentityAssociation"
            }
            (["clusters", _, "pod-identity-associations"], "GET") => "ListPodIdentityAssociations",
            (["clusters", _, "pod-identity-associations", _], "GET") => {
                "DescribePodIdentityAssociation"
            }
            (["clusters", _, "pod-identity-associations", _], "POST") => {
                "UpdatePodIdentityAssociation"
            }
            (["clusters", _, "pod-identity-associations", _], "DELETE") => {
                "DeletePodIdentityAssociation"
            }
            (["clusters", _, "addons"], "POST") => "CreateAddon",
            (["clusters", _, "addons"], "GET") => "ListAddons",
            (["clusters", _, "addons", _], "GET") => "DescribeAddon",
            (["clusters", _, "addons", _], "DELETE") => "DeleteAddon",
            (["clusters", _, "addons", _, "update"], "POST") => "UpdateAddon",
            (["tags", ..], "POST") => "TagResource",
            (["tags", ..], "DELETE") => "UntagResource",
            (["tags", ..], "GET") => "ListTagsForResource",
            _ => return None,
        };
        Some(operation)
    }

    /// The body parsed as JSON, when it is JSON (CloudWatch and EKS requests).
    pub fn json_body(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    fn from_recording_line(line: &str) -> Result<RecordedRequest, String> {
        let entry: serde_json::Value =
            serde_json::from_str(line).map_err(|error| error.to_string())?;
        let text_field = |name: &str| {
            entry
                .get(name)
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| format!("the field `{name}` is missing or not a string"))
        };
        let method = text_field("method")?.to_owned();
        let path = url_path(text_field("url")?).to_owned();
        let headers: BTreeMap<String, String> = entry
            .get("headers")
            .and_then(serde_json::Value::as_object)
            .map(|headers| {
                headers
                    .iter()
                    .filter_map(|(name, value)| {
                        value
                            .as_str()
                            .map(|value| (name.to_ascii_lowercase(), value.to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let raw_body = entry
            .get("body")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        let body_is_base64 = entry
            .get("body_encoded")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        let body = if body_is_base64 {
            decode_base64(raw_body).ok_or("the body is marked as base64 but is not")?
        } else {
            raw_body.as_bytes().to_vec()
        };
        let service = headers
            .get("authorization")
            .and_then(|authorization| credential_scope_service(authorization));
        let action = recorded_action(&headers, &body);
        Ok(RecordedRequest {
            method,
            path,
            service,
            action,
            headers,
            body,
        })
    }
}

/// The operation named by a query-protocol form body or an `X-Amz-Target` header.
fn recorded_action(headers: &BTreeMap<String, String>, body: &[u8]) -> Option<String> {
    if let Some(target) = headers.get("x-amz-target") {
        return target.rsplit('.').next().map(str::to_owned);
    }
    let is_form = headers
        .get("content-type")
        .is_some_and(|content_type| content_type.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        return form_urlencoded::parse(body)
            .find(|(name, _)| name == "Action")
            .map(|(_, value)| value.into_owned());
    }
    None
}

/// The service of a SigV4 `Authorization` header:
/// `AWS4-HMAC-SHA256 Credential=AKID/20260101/us-west-2/iam/aws4_request, ...` -> `iam`.
fn credential_scope_service(authorization: &str) -> Option<String> {
    let credential = authorization
        .split([' ', ','])
        .find_map(|part| part.strip_prefix("Credential="))?;
    let scope: Vec<&str> = credential.split('/').collect();
    // AKID / date / region / service / aws4_request
    (scope.len() == 5).then(|| scope[3].to_owned())
}

/// The path of a recorded URL (`http://127.0.0.1:1234/clusters?x=1` -> `/clusters`).
fn url_path(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path_and_query = after_scheme
        .find('/')
        .map_or("/", |start| &after_scheme[start..]);
    path_and_query
        .split_once('?')
        .map_or(path_and_query, |(path, _)| path)
}

/// Decodes standard base64 (with or without padding), as moto's recorder writes bodies.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    fn sextet(symbol: u8) -> Option<u32> {
        match symbol {
            b'A'..=b'Z' => Some(u32::from(symbol - b'A')),
            b'a'..=b'z' => Some(u32::from(symbol - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(symbol - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let symbols = text.trim().trim_end_matches('=').as_bytes();
    let mut decoded = Vec::with_capacity(symbols.len() * 3 / 4);
    for chunk in symbols.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut bits = 0u32;
        for (index, &symbol) in chunk.iter().enumerate() {
            bits |= sextet(symbol)? << (18 - 6 * index);
        }
        let bytes = bits.to_be_bytes();
        decoded.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(decoded)
}

fn create_file(path: &Path) -> Result<File, EmulatorError> {
    File::create(path).map_err(|source| EmulatorError::File {
        action: "create",
        path: path.to_path_buf(),
        source,
    })
}

/// Waits until the emulator prints `listening on http://HOST:PORT` and returns the port.
async fn wait_for_port(
    child: &mut Child,
    stdout_path: &Path,
    stderr_path: &Path,
) -> Result<u16, EmulatorError> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        // A missing or half-written line just means "not yet".
        let stdout = fs::read_to_string(stdout_path).unwrap_or_default();
        if let Some(port) = listening_port(&stdout) {
            return Ok(port);
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                return Err(EmulatorError::ExitedDuringStartup {
                    status,
                    stderr: stderr_tail(stderr_path),
                });
            }
            Ok(None) => {}
            Err(source) => {
                return Err(EmulatorError::Stop {
                    pid: child.id(),
                    source,
                });
            }
        }
        if Instant::now() >= deadline {
            return Err(EmulatorError::StartupTimeout {
                timeout: STARTUP_TIMEOUT,
                stderr: stderr_tail(stderr_path),
            });
        }
        tokio::time::sleep(STARTUP_POLL_INTERVAL).await;
    }
}

/// The port of a complete `listening on http://127.0.0.1:PORT` line.
fn listening_port(stdout: &str) -> Option<u16> {
    // Only lines that end in a newline are complete; the last one may still be written.
    let complete = &stdout[..stdout.rfind('\n')?];
    complete
        .lines()
        .find_map(|line| line.trim().strip_prefix(LISTENING_PREFIX))
        .and_then(|address| address.rsplit(':').next())
        .and_then(|port| port.parse().ok())
}

fn stderr_tail(stderr_path: &Path) -> String {
    let stderr = fs::read(stderr_path).unwrap_or_default();
    let start = stderr.len().saturating_sub(STDERR_TAIL_BYTES);
    let tail = String::from_utf8_lossy(&stderr[start..]).into_owned();
    if tail.trim().is_empty() {
        "(empty)".to_owned()
    } else {
        tail
    }
}

/// Kills a child we started (by its own handle, so by its PID) and reaps it. Errors are
/// ignored: they mean the process is already gone.
fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_what_python_writes() {
        assert_eq!(decode_base64("").as_deref(), Some(&b""[..]));
        assert_eq!(decode_base64("Zg==").as_deref(), Some(&b"f"[..]));
        assert_eq!(decode_base64("Zm8=").as_deref(), Some(&b"fo"[..]));
        assert_eq!(decode_base64("Zm9v").as_deref(), Some(&b"foo"[..]));
        assert_eq!(
            decode_base64("QWN0aW9uPUdldFJvbGUmVmVyc2lvbj0yMDEwLTA1LTA4").as_deref(),
            Some(&b"Action=GetRole&Version=2010-05-08"[..])
        );
        assert_eq!(decode_base64("Zm9v!"), None);
    }

    #[test]
    fn credential_scope_names_the_service() {
        let header = "AWS4-HMAC-SHA256 Credential=testing/20261125/us-west-2/monitoring/aws4_request, \
                      SignedHeaders=host, Signature=abc";
        assert_eq!(
            credential_scope_service(header).as_deref(),
            Some("monitoring")
        );
        assert_eq!(credential_scope_service("Bearer x"), None);
    }

    #[test]
    fn url_path_drops_origin_and_query() {
        assert_eq!(url_path("http://127.0.0.1:4000/"), "/");
        assert_eq!(url_path("http://127.0.0.1:4000"), "/");
        assert_eq!(
            url_path("http://127.0.0.1:4000/clusters/demo?x=1"),
            "/clusters/demo"
        );
    }

    #[test]
    fn only_loopback_urls_reach_the_control_api() {
        assert_eq!(loopback_port("http://127.0.0.1:4566"), Some(4566));
        assert_eq!(loopback_port("http://localhost:4566/"), Some(4566));
        assert_eq!(loopback_port("https://127.0.0.1:4566"), None);
        assert_eq!(loopback_port("http://10.0.0.1:4566"), None);
        assert_eq!(loopback_port("http://127.0.0.1"), None);
    }

    #[test]
    fn eks_operations_are_named_by_method_and_path() {
        let request = |method: &str, path: &str| RecordedRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            service: Some("eks".to_owned()),
            action: None,
            headers: BTreeMap::new(),
            body: Vec::new(),
        };
        let cases = [
            (
                "POST",
                "/clusters/c/pod-identity-associations",
                "CreatePodIdentityAssociation",
            ),
            (
                "GET",
                "/clusters/c/pod-identity-associations",
                "ListPodIdentityAssociations",
            ),
            (
                "GET",
                "/clusters/c/pod-identity-associations/a-1",
                "DescribePodIdentityAssociation",
            ),
            (
                "POST",
                "/clusters/c/pod-identity-associations/a-1",
                "UpdatePodIdentityAssociation",
            ),
            (
                "DELETE",
                "/clusters/c/pod-identity-associations/a-1",
                "DeletePodIdentityAssociation",
            ),
            ("POST", "/clusters/c/addons", "CreateAddon"),
            ("GET", "/clusters/c/addons/x", "DescribeAddon"),
            ("GET", "/clusters/c", "DescribeCluster"),
        ];
        for (method, path, operation) in cases {
            assert_eq!(
                request(method, path).eks_operation(),
                Some(operation),
                "{method} {path}"
            );
        }
        let mut unsigned = request("GET", "/clusters/c");
        unsigned.service = None;
        assert_eq!(unsigned.eks_operation(), None);
    }

    #[test]
    fn listening_line_needs_its_newline() {
        assert_eq!(listening_port("listening on http://127.0.0.1:4312"), None);
        assert_eq!(
            listening_port("listening on http://127.0.0.1:4312\n"),
            Some(4312)
        );
    }

    #[test]
    fn recorded_lines_are_classified() {
        let iam = r#"{"headers": {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8", "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20261125/us-west-2/iam/aws4_request, SignedHeaders=host, Signature=x"}, "method": "POST", "url": "http://127.0.0.1:1/", "body": "QWN0aW9uPUNyZWF0ZVJvbGUmUm9sZU5hbWU9cg==", "body_encoded": true}"#;
        let request = RecordedRequest::from_recording_line(iam).expect("valid line");
        assert_eq!(request.service.as_deref(), Some("iam"));
        assert_eq!(request.action.as_deref(), Some("CreateRole"));
        assert!(request.is_mutating());

        let cloudwatch = r#"{"headers": {"X-Amz-Target": "GraniteServiceVersion20100801.GetDashboard"}, "method": "POST", "url": "http://127.0.0.1:1/", "body": "{}", "body_encoded": false}"#;
        let request = RecordedRequest::from_recording_line(cloudwatch).expect("valid line");
        assert_eq!(request.action.as_deref(), Some("GetDashboard"));
        assert!(!request.is_mutating());

        // Action=SimulatePrincipalPolicy&PolicySourceArn=arn
        let simulation = r#"{"headers": {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8", "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20261125/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=x"}, "method": "POST", "url": "http://127.0.0.1:1/", "body": "QWN0aW9uPVNpbXVsYXRlUHJpbmNpcGFsUG9saWN5JlBvbGljeVNvdXJjZUFybj1hcm4=", "body_encoded": true}"#;
        let request = RecordedRequest::from_recording_line(simulation).expect("valid line");
        assert_eq!(request.action.as_deref(), Some("SimulatePrincipalPolicy"));
        assert!(!request.is_mutating());

        let eks = r#"{"headers": {}, "method": "GET", "url": "http://127.0.0.1:1/clusters/demo", "body": "", "body_encoded": false}"#;
        let request = RecordedRequest::from_recording_line(eks).expect("valid line");
        assert_eq!(request.action, None);
        assert_eq!(request.path, "/clusters/demo");
        assert!(!request.is_mutating());
    }
}
