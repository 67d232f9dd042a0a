//! Fetches every target's `/metrics` concurrently, each bounded by a timeout and a body
//! limit, so one hung or misbehaving node costs at most the timeout and never the round.
//! The round as a whole is bounded too: every scrape ends by the round's deadline
//! (`--round-timeout`, by default 80% of the interval, counted from the round's start). A
//! hung node holds one of the `--scrape-concurrency` slots while it waits, so without the
//! deadline the hung nodes that come late in the target list would start late and end a
//! whole timeout after that.
//!
//! Results are yielded as they complete ([`Scraper::scrape_each`]), so a round can fold
//! each body into the aggregate and drop it at once: at most `concurrency` bodies are in
//! memory, not one per node.
//!
//! Bodies also share a byte budget (`--scrape-memory-budget`), so that memory stays bounded
//! whatever the nodes send, independently of the concurrency: once a node's response
//! headers arrive, its scrape reserves its Content-Length (or, for a chunked body, the body
//! limit) from the budget, waiting while other bodies hold it, and returns it when its
//! result is dropped, after the body was folded into the round. Each scrape reserves once,
//! up front, so scrapes can never deadlock on partial reservations; the budget is never
//! below the body limit (the settings check it), so any body within the limit fits alone.
//!
//! Two transports:
//! - **proxy** (default, upstream's path): `GET /api/v1/namespaces/{ns}/pods/{name}:61678/proxy/metrics`
//!   through the API server. Needs RBAC `get pods/proxy` and a security-group rule allowing
//!   the EKS control plane (cluster security group) to reach the nodes on tcp/61678.
//! - **direct**: `GET http://{hostIP}:61678/metrics` from the publisher pod, with a plain
//!   HTTP client and a new connection per scrape. No API-server load; needs the nodes' security group to allow
//!   tcp/61678 from the publisher pod's node (or its pod security group).
//!
//! The proxy transport uses a kube client with its built-in retries turned off: kube
//! retries 429/503/504 up to 15 times with backoff, and the API server answers 503 for an
//! unreachable node, which would otherwise cost minutes per node.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::discovery::ScrapeTarget;

/// How each scrape is made and bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrapeOptions {
    /// The port ipamd serves `/metrics` on.
    pub port: u16,
    /// How many pods are scraped at the same time.
    pub concurrency: usize,
    /// How long one pod's scrape may take.
    pub timeout: Duration,
    /// How long all scrapes of a round may take, counted from the round's start.
    pub round_timeout: Duration,
    /// The largest body accepted; a larger one fails that pod.
    pub body_limit: usize,
    /// The bytes all bodies being read or folded may hold together; at least `body_limit`.
    pub memory_budget: usize,
}

/// What ipamd's endpoint is asked for: the 0.0.4 text format this tool parses.
const ACCEPT_TEXT_FORMAT: &str = "text/plain;version=0.0.4;q=1,*/*;q=0.1";

/// Why one pod's scrape failed. The round goes on without it.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("no answer before the round's deadline ({0:?} after its start)")]
    RoundDeadline(Duration),
    #[error(
        "not scraped: the round's deadline ({0:?} after its start) passed before its turn; \
         raise --scrape-concurrency or --round-timeout"
    )]
    NotStarted(Duration),
    #[error("HTTP {status}: {snippet}")]
    Status { status: u16, snippet: String },
    #[error("the body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body is not UTF-8")]
    NotUtf8,
    #[error("the request failed: {0}")]
    Transport(String),
    /// No response arrived on the connection: it was refused, reset or closed before the
    /// answer (typically a kept-alive connection the other end had just closed).
    #[error("no response on the connection: {0}")]
    Unsent(String),
}

/// One target's outcome.
#[derive(Debug)]
pub struct ScrapeResult {
    pub target: ScrapeTarget,
    pub outcome: Result<String, ScrapeError>,
    /// How long the scrape took, success or failure; `None` when it was not started
    /// ([`ScrapeError::NotStarted`]).
    pub elapsed: Option<Duration>,
    /// The body's share of the memory budget, returned when the result is dropped.
    reservation: Option<OwnedSemaphorePermit>,
}

impl ScrapeResult {
    /// The bytes of the memory budget this result holds until it is dropped.
    pub fn reserved_bytes(&self) -> usize {
        self.reservation
            .as_ref()
            .map_or(0, |permit| permit.num_permits())
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
    options: ScrapeOptions,
    /// The memory budget, one permit per byte.
    budget: Arc<Semaphore>,
}

impl Scraper {
    /// A scraper through the API server's pods proxy. `config` is turned into a client with
    /// retries off; the caller's other clients keep theirs.
    pub fn via_proxy(
        mut config: kube::Config,
        options: &ScrapeOptions,
    ) -> Result<Scraper, kube::Error> {
        config.default_retry = false;
        // The per-scrape timeout bounds each request; the client's own read timeout would
        // only be a second, less precise bound.
        config.read_timeout = Some(options.timeout);
        let client = kube::Client::try_from(config)?;
        Ok(Scraper::new(Transport::Proxy(client), options))
    }

    /// A scraper that talks to `hostIP:port` directly with a plain HTTP/1 client.
    ///
    /// Connections are not kept between scrapes. Each node is scraped once per interval
    /// (30-60 s), so a pooled connection would sit idle almost all the time while holding
    /// its read and write buffers (tens of KiB) in the publisher: 5,000 nodes made that the
    /// largest part of the publisher's memory (BENCHMARKS.md). A new TCP connection costs
    /// one round trip, well under a millisecond inside a VPC.
    pub fn direct(options: &ScrapeOptions) -> Scraper {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(options.timeout));
        connector.set_nodelay(true);
        let client = HttpClient::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        Scraper::new(Transport::Direct(Box::new(client)), options)
    }

    fn new(transport: Transport, options: &ScrapeOptions) -> Scraper {
        let memory_budget = options
            .memory_budget
            .max(options.body_limit)
            .min(Semaphore::MAX_PERMITS);
        Scraper {
            transport,
            options: ScrapeOptions {
                concurrency: options.concurrency.max(1),
                memory_budget,
                ..*options
            },
            budget: Arc::new(Semaphore::new(memory_budget)),
        }
    }

    /// The options in effect (the concurrency at least 1, the budget at least the body limit).
    pub fn options(&self) -> &ScrapeOptions {
        &self.options
    }

    /// Scrapes every target, at most `concurrency` at a time, and yields each result with
    /// the target's position in `targets` as soon as it completes. The round's deadline
    /// starts now: a scrape still waiting for its answer then fails with
    /// [`ScrapeError::RoundDeadline`], and a target not started by then fails at once with
    /// [`ScrapeError::NotStarted`].
    pub fn scrape_each(
        &self,
        targets: Vec<ScrapeTarget>,
    ) -> impl Stream<Item = (usize, ScrapeResult)> + '_ {
        let round_deadline = Instant::now() + self.options.round_timeout;
        futures::stream::iter(targets.into_iter().enumerate())
            .map(move |(position, target)| async move {
                (position, self.scrape_by(target, round_deadline).await)
            })
            .buffer_unordered(self.options.concurrency)
    }

    /// Scrapes one target within the timeout.
    pub async fn scrape(&self, target: ScrapeTarget) -> ScrapeResult {
        self.scrape_by(target, Instant::now() + self.options.timeout)
            .await
    }

    /// Scrapes one target within the timeout and before `round_deadline`.
    async fn scrape_by(&self, target: ScrapeTarget, round_deadline: Instant) -> ScrapeResult {
        let started = Instant::now();
        if started >= round_deadline {
            tracing::debug!(pod = %target.name, "not scraped: the round's deadline passed");
            return ScrapeResult {
                target,
                outcome: Err(ScrapeError::NotStarted(self.options.round_timeout)),
                elapsed: None,
                reservation: None,
            };
        }
        let own_deadline = started + self.options.timeout;
        let (deadline, expired) = if own_deadline <= round_deadline {
            (own_deadline, ScrapeError::Timeout(self.options.timeout))
        } else {
            (
                round_deadline,
                ScrapeError::RoundDeadline(self.options.round_timeout),
            )
        };
        let mut fetched = tokio::time::timeout_at(deadline, self.fetch(&target)).await;
        if let Ok(Err(ScrapeError::Unsent(reason))) = &fetched {
            // A kept-alive connection closed by the other end just as it was reused fails
            // without an answer; one more try, on another connection and within the same
            // deadline, turns that race into a scrape instead of a missing pod. A GET of
            // /metrics changes nothing, so a request that did arrive may be sent again.
            tracing::debug!(pod = %target.name, "no response ({reason}); trying once more");
            fetched = tokio::time::timeout_at(deadline, self.fetch(&target)).await;
        }
        let (outcome, reservation) = match fetched {
            Ok(Ok((body, reservation))) => (Ok(body), Some(reservation)),
            Ok(Err(error)) => (Err(error), None),
            Err(_) => (Err(expired), None),
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
            elapsed: Some(elapsed),
            reservation,
        }
    }

    /// Reserves a body's bytes from the memory budget: `Content-Length` when the response
    /// has one, else the body limit; a body announced above the limit fails at once.
    async fn reserve(
        &self,
        headers: &http::HeaderMap,
    ) -> Result<(OwnedSemaphorePermit, usize), ScrapeError> {
        let limit = self.options.body_limit;
        let announced = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        let bytes = match announced {
            Some(length) if length > limit as u64 => return Err(ScrapeError::TooLarge { limit }),
            // Within the limit, so it fits a usize.
            Some(length) => usize::try_from(length).unwrap_or(limit),
            None => limit,
        };
        // Never more than the budget, which the constructor made at least the body limit;
        // a semaphore counts in u32.
        let permits = u32::try_from(bytes.min(self.options.memory_budget))
            .map_err(|_| ScrapeError::TooLarge { limit })?;
        let permit = Arc::clone(&self.budget)
            .acquire_many_owned(permits)
            .await
            .map_err(|_| {
                ScrapeError::Transport("the scrape memory budget was closed".to_owned())
            })?;
        Ok((permit, bytes))
    }

    async fn fetch(
        &self,
        target: &ScrapeTarget,
    ) -> Result<(String, OwnedSemaphorePermit), ScrapeError> {
        let (status, body, reservation) = match &self.transport {
            Transport::Proxy(client) => {
                let path = format!(
                    "/api/v1/namespaces/{}/pods/{}:{}/proxy/metrics",
                    target.namespace, target.name, self.options.port
                );
                let request = http::Request::get(path)
                    .header(http::header::ACCEPT, ACCEPT_TEXT_FORMAT)
                    .body(kube::client::Body::empty())
                    .map_err(|error| ScrapeError::Transport(error.to_string()))?;
                let response = client
                    .send(request)
                    .await
                    .map_err(|error| ScrapeError::Unsent(error.to_string()))?;
                let (parts, body) = response.into_parts();
                let (reservation, bytes) = self.reserve(&parts.headers).await?;
                (parts.status, read_limited(body, bytes).await?, reservation)
            }
            Transport::Direct(client) => {
                let uri = direct_uri(&target.host_ip, self.options.port);
                let request = http::Request::get(uri)
                    .header(http::header::ACCEPT, ACCEPT_TEXT_FORMAT)
                    .body(Empty::<Bytes>::new())
                    .map_err(|error| ScrapeError::Transport(error.to_string()))?;
                let response = client
                    .request(request)
                    .await
                    .map_err(|error| ScrapeError::Unsent(innermost(&error)))?;
                let (parts, body) = response.into_parts();
                let (reservation, bytes) = self.reserve(&parts.headers).await?;
                (parts.status, read_limited(body, bytes).await?, reservation)
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
        let body = String::from_utf8(body).map_err(|_| ScrapeError::NotUtf8)?;
        Ok((body, reservation))
    }
}

/// The median of `durations` (the upper one of the two middle values for an even count),
/// `None` when there are none. Reorders `durations`.
pub fn median_duration(durations: &mut [Duration]) -> Option<Duration> {
    if durations.is_empty() {
        return None;
    }
    let middle = durations.len() / 2;
    let (_, median, _) = durations.select_nth_unstable(middle);
    Some(*median)
}

/// How long a round of `pods` scrapes needs at `concurrency` when each takes `per_scrape`:
/// `ceil(pods / concurrency)` waves of scrapes, one after another. A lower bound for rounds
/// whose slow scrapes are spread over the waves; the round deadline should not be below it.
pub fn round_time_estimate(pods: usize, concurrency: usize, per_scrape: Duration) -> Duration {
    let waves = pods.div_ceil(concurrency.max(1));
    per_scrape.saturating_mul(u32::try_from(waves).unwrap_or(u32::MAX))
}

/// `http://{ip}:{port}/metrics`, with IPv6 addresses in brackets.
fn direct_uri(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("http://[{ip}]:{port}/metrics")
    } else {
        format!("http://{ip}:{port}/metrics")
    }
}

/// Reads a body of at most `limit` bytes into one buffer; reading stops as soon as the limit
/// is crossed, so an oversized body never sits in memory whole. The buffer grows by
/// doubling but never past `limit`, and the frames are copied into it as they arrive, so a
/// body takes about its own size (not twice, as collecting the frames first would).
async fn read_limited<B>(body: B, limit: usize) -> Result<Vec<u8>, ScrapeError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = std::pin::pin!(body);
    let mut buffer: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            let error: Box<dyn std::error::Error + Send + Sync> = error.into();
            ScrapeError::Transport(innermost(error.as_ref()))
        })?;
        // Trailers carry nothing ipamd sends; only data counts.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let wanted = buffer.len() + bytes::Buf::remaining(&data);
        if wanted > limit {
            return Err(ScrapeError::TooLarge { limit });
        }
        if wanted > buffer.capacity() {
            let grown = wanted.max(buffer.capacity().saturating_mul(2)).min(limit);
            buffer.reserve_exact(grown - buffer.len());
        }
        let mut data = data;
        while bytes::Buf::has_remaining(&data) {
            let chunk = bytes::Buf::chunk(&data);
            buffer.extend_from_slice(chunk);
            let advanced = chunk.len();
            bytes::Buf::advance(&mut data, advanced);
        }
    }
    Ok(buffer)
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

    #[test]
    fn the_median_is_the_middle_scrape_time() {
        let ms = Duration::from_millis;
        assert_eq!(median_duration(&mut []), None);
        assert_eq!(median_duration(&mut [ms(7)]), Some(ms(7)));
        // A few slow scrapes do not move the median: it describes the typical scrape.
        assert_eq!(
            median_duration(&mut [ms(3000), ms(100), ms(90), ms(110), ms(3000)]),
            Some(ms(110))
        );
        assert_eq!(
            median_duration(&mut [ms(40), ms(10), ms(30), ms(20)]),
            Some(ms(30))
        );
    }

    #[test]
    fn a_round_needs_one_median_scrape_per_wave_of_concurrent_scrapes() {
        let ms = Duration::from_millis;
        // The numbers: 5,000 nodes at concurrency 64, 100 ms each: 79 waves, 7.9 s,
        // more than the old 5 s default deadline.
        assert_eq!(round_time_estimate(5000, 64, ms(100)), ms(7900));
        assert_eq!(round_time_estimate(64, 64, ms(100)), ms(100));
        assert_eq!(round_time_estimate(65, 64, ms(100)), ms(200));
        assert_eq!(round_time_estimate(0, 64, ms(100)), Duration::ZERO);
        // A concurrency of 0 is treated as 1, as the scraper does.
        assert_eq!(round_time_estimate(3, 0, ms(100)), ms(300));
        // No overflow on absurd inputs.
        assert_eq!(
            round_time_estimate(usize::MAX, 1, Duration::MAX),
            Duration::MAX
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
            b"up 1\n"
        );
        let body = http_body_util::Full::new(Bytes::from(vec![b'#'; 1024]));
        assert_eq!(
            read_limited(body, 1024)
                .await
                .expect("a body of exactly the limit")
                .len(),
            1024
        );
    }
}
