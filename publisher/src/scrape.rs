//! Fetches every target's `/metrics` concurrently, each bounded by a timeout and a body
//! limit, so one hung or misbehaving node costs at most the timeout and never the round.
//!
//! Two transports:
//! - **proxy** (default, upstream's path): `GET /api/v1/namespaces/{ns}/pods/{name}:61678/proxy/metrics`
//!   through the API server. Needs RBAC `get pods/proxy` and a security-group rule allowing
//!   the EKS control plane (cluster security group) to reach the nodes on tcp/61678.
//! - **direct**: `GET http://{hostIP}:61678/metrics` from the publisher pod, with a pooled
//!   plain HTTP client. No API-server load; needs the nodes' security group to allow
//!   tcp/61678 from the publisher pod's node (or its pod security group).
//!
//! The proxy transport uses a kube client with its built-in retries turned off: kube
//! retries 429/503/504 up to 15 times with backoff, and the API server answers 503 for an
//! unreachable node, which would otherwise cost minutes per node.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::ScrapeSettings;
use crate::discovery::ScrapeTarget;

/// What ipamd's endpoint is asked for: the 0.0.4 text format this tool parses.
const ACCEPT_TEXT_FORMAT: &str = "text/plain;version=0.0.4;q=1,*/*;q=0.1";

/// Why one pod's scrape failed. The round goes on without it.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP {status}: {snippet}")]
    Status { status: u16, snippet: String },
    #[error("the body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body is not UTF-8")]
    NotUtf8,
    #[error("the request failed: {0}")]
    Transport(String),
}

/// One target's outcome.
#[derive(Debug)]
pub struct ScrapeResult {
    pub target: ScrapeTarget,
    pub outcome: Result<String, ScrapeError>,
    pub elapsed: Duration,
}

impl ScrapeResult {
    /// The scrape as the aggregator takes it: the body, or a failed pod.
    pub fn as_pod_scrape(&self) -> crate::aggregate::PodScrape<'_> {
        crate::aggregate::PodScrape {
            uid: &self.target.uid,
            name: &self.target.name,
            zone: self.target.zone.as_deref(),
            outcome: match &self.outcome {
                Ok(body) => crate::aggregate::ScrapeOutcome::Body(body),
                Err(_) => crate::aggregate::ScrapeOutcome::Failed,
            },
        }
    }
}

/// The transport scrapes go through.
#[derive(Clone)]
enum Transport {
    Proxy(kube::Client),
    Direct(Box<HttpClient<HttpConnector, Empty<Bytes>>>),
}

/// Scrapes targets with the configured transport, concurrency, timeout and body limit.
#[derive(Clone)]
pub struct Scraper {
    transport: Transport,
    port: u16,
    concurrency: usize,
    timeout: Duration,
    body_limit: usize,
}

impl Scraper {
    /// A scraper through the API server's pods proxy. `config` is turned into a client with
    /// retries off; the caller's other clients keep theirs.
    pub fn via_proxy(
        mut config: kube::Config,
        settings: &ScrapeSettings,
    ) -> Result<Scraper, kube::Error> {
        config.default_retry = false;
        // The per-scrape timeout bounds each request; the client's own read timeout would
        // only be a second, less precise bound.
        config.read_timeout = Some(settings.timeout);
        let client = kube::Client::try_from(config)?;
        Ok(Scraper::new(Transport::Proxy(client), settings))
    }

    /// A scraper that talks to `hostIP:port` directly with a pooled HTTP/1 client.
    pub fn direct(settings: &ScrapeSettings) -> Scraper {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.timeout));
        connector.set_nodelay(true);
        let client = HttpClient::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Scraper::new(Transport::Direct(Box::new(client)), settings)
    }

    fn new(transport: Transport, settings: &ScrapeSettings) -> Scraper {
        Scraper {
            transport,
            port: settings.port,
            concurrency: settings.concurrency.max(1),
            timeout: settings.timeout,
            body_limit: settings.body_limit,
        }
    }

    /// Scrapes every target, at most `concurrency` at a time. The results come back in the
    /// order of `targets`.
    pub async fn scrape_all(&self, targets: Vec<ScrapeTarget>) -> Vec<ScrapeResult> {
        let mut results: Vec<(usize, ScrapeResult)> =
            futures::stream::iter(targets.into_iter().enumerate())
                .map(|(position, target)| async move { (position, self.scrape(target).await) })
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
        results.sort_by_key(|(position, _)| *position);
        results.into_iter().map(|(_, result)| result).collect()
    }

    /// Scrapes one target within the timeout.
    pub async fn scrape(&self, target: ScrapeTarget) -> ScrapeResult {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(self.timeout, self.fetch(&target)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(ScrapeError::Timeout(self.timeout)),
        };
        let elapsed = started.elapsed();
        match &outcome {
            Ok(body) => {
                tracing::debug!(pod = %target.name, bytes = body.len(), ?elapsed, "scraped");
                tracing::trace!(pod = %target.name, body = %body, "scrape body");
            }
            Err(error) => {
                tracing::warn!(pod = %target.name, ip = %target.host_ip, ?elapsed, "scrape failed: {error}");
            }
        }
        ScrapeResult {
            target,
            outcome,
            elapsed,
        }
    }

    async fn fetch(&self, target: &ScrapeTarget) -> Result<String, ScrapeError> {
        let (status, body) = match &self.transport {
            Transport::Proxy(client) => {
                let path = format!(
                    "/api/v1/namespaces/{}/pods/{}:{}/proxy/metrics",
                    target.namespace, target.name, self.port
                );
                let request = http::Request::get(path)
                    .header(http::header::ACCEPT, ACCEPT_TEXT_FORMAT)
                    .body(kube::client::Body::empty())
                    .map_err(|error| ScrapeError::Transport(error.to_string()))?;
                let response = client
                    .send(request)
                    .await
                    .map_err(|error| ScrapeError::Transport(error.to_string()))?;
                let (parts, body) = response.into_parts();
                (parts.status, read_limited(body, self.body_limit).await?)
            }
            Transport::Direct(client) => {
                let uri = direct_uri(&target.host_ip, self.port);
                let request = http::Request::get(uri)
                    .header(http::header::ACCEPT, ACCEPT_TEXT_FORMAT)
                    .body(Empty::<Bytes>::new())
                    .map_err(|error| ScrapeError::Transport(error.to_string()))?;
                let response = client
                    .request(request)
                    .await
                    .map_err(|error| ScrapeError::Transport(innermost(&error)))?;
                let (parts, body) = response.into_parts();
                (parts.status, read_limited(body, self.body_limit).await?)
            }
        };
        if !status.is_success() {
            // One line of the answer is enough to say what went wrong (promhttp's gather
            // errors, the API server's Status); whole bodies belong in trace logs only.
            let text = String::from_utf8_lossy(&body);
            let snippet: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
            return Err(ScrapeError::Status {
                status: status.as_u16(),
                snippet: snippet.chars().take(200).collect(),
            });
        }
        String::from_utf8(body.to_vec()).map_err(|_| ScrapeError::NotUtf8)
    }
}

/// `http://{ip}:{port}/metrics`, with IPv6 addresses in brackets.
fn direct_uri(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("http://[{ip}]:{port}/metrics")
    } else {
        format!("http://{ip}:{port}/metrics")
    }
}

/// Reads a body up to `limit` bytes; reading stops as soon as the limit is crossed, so an
/// oversized body never sits in memory whole.
async fn read_limited<B>(body: B, limit: usize) -> Result<Bytes, ScrapeError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(ScrapeError::TooLarge { limit })
        }
        Err(error) => Err(ScrapeError::Transport(innermost(error.as_ref()))),
    }
}

/// The innermost cause of an error, which names what went wrong (e.g. "Connection refused").
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_uris_bracket_ipv6() {
        assert_eq!(
            direct_uri("10.0.0.1", 61678),
            "http://10.0.0.1:61678/metrics"
        );
        assert_eq!(
            direct_uri("fd00::1", 61678),
            "http://[fd00::1]:61678/metrics"
        );
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused() {
        let body = http_body_util::Full::new(Bytes::from(vec![b'#'; 2048]));
        assert!(matches!(
            read_limited(body, 1024).await,
            Err(ScrapeError::TooLarge { limit: 1024 })
        ));
        let body = http_body_util::Full::new(Bytes::from_static(b"up 1\n"));
        assert_eq!(
            read_limited(body, 1024).await.expect("small body"),
            "up 1\n"
        );
    }
}
