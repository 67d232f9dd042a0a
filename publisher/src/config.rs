//! The publisher's domain settings: the types a round and its outputs are configured with,
//! their defaults, and the rules that make them coherent (cluster id and region present,
//! leader-election settings sound, at least one output). Everything a round needs is checked
//! before any network traffic, so a misconfigured pod fails at once with one clear line
//! instead of half-working. The command line only turns its flags into a [`Requested`].

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::scrape::ScrapeOptions;

/// The port ipamd serves `/metrics` on.
pub const DEFAULT_IPAMD_METRICS_PORT: u16 = 61678;
/// The port upstream's helper serves its Prometheus endpoint on when `USE_PROMETHEUS=true`.
pub const DEFAULT_PROMETHEUS_PORT: u16 = 61681;
/// The per-scrape timeout when `--scrape-timeout` is not given.
pub const DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// The timeout of one CloudWatch request attempt, and its floor: upstream's HTTP_TIMEOUT
/// (the timeout of its AWS SDK's HTTP client) defaults to 10 s and is never below it.
pub const DEFAULT_CLOUDWATCH_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The CloudWatch namespace upstream publishes to.
pub const CLOUDWATCH_NAMESPACE: &str = "Kubernetes";

/// The default round deadline, as a share of the interval: 80 %. The scrapes of a round
/// must end before the next round is due, and the rest of the interval is left for
/// folding the last bodies in, queueing for CloudWatch and refreshing `/metrics`. A deadline
/// tied to the per-scrape timeout instead (5 s) dropped about a third of a 5,000-node
/// cluster every round through the pods proxy (~100 ms per scrape at concurrency 64 needs
/// ~8 s), and with it a third of the capacity totals.
pub fn default_round_timeout(interval: Duration) -> Duration {
    interval * 4 / 5
}

/// Why the settings are unusable. Each message names the flag and the variable to set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "no cluster id: set AWS_CLUSTER_ID to the cluster's name (or pass --cluster-id); \
         upstream's stock manifest leaves it empty. It is not guessed from instance metadata \
         (IMDS): an instance does not reliably tell which cluster it is in, and a wrong guess \
         would become the CLUSTER_ID dimension of every datum, silently splitting the \
         cluster's metrics into another series"
    )]
    MissingClusterId,
    #[error(
        "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION) or pass --region (IMDS is \
         never asked for the region)"
    )]
    MissingRegion,
    #[error(
        "the label selector {selector:?} is empty; pass --aws-node-selector, e.g. k8s-app=aws-node"
    )]
    EmptySelector { selector: String },
    #[error(
        "the lease duration {lease:?} is too short: leader election needs at least 1s so that \
         renewals can happen in time"
    )]
    LeaseTooShort { lease: Duration },
    #[error(
        "nothing to do: CloudWatch is off (USE_CLOUDWATCH=false) and no Prometheus endpoint is \
         served (USE_PROMETHEUS / --listen); enable at least one"
    )]
    NoOutput,
    #[error(
        "the scrape memory budget ({budget} bytes) is below the scrape body limit ({limit} \
         bytes), so a body within the limit could never be read; raise \
         --scrape-memory-budget or lower --scrape-body-limit"
    )]
    BudgetBelowBodyLimit { budget: usize, limit: usize },
    #[error(
        "the round timeout ({round_timeout:?}) is longer than the interval ({interval:?}), so \
         a round could still be scraping when the next one is due; pass a --round-timeout of \
         at most the interval (by default it is 80% of it) or raise --interval \
         (METRIC_UPDATE_INTERVAL)"
    )]
    RoundTimeoutOverInterval {
        round_timeout: Duration,
        interval: Duration,
    },
}

/// How scrapes reach ipamd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScrapeVia {
    /// Through the API server's pods proxy (upstream's path); needs control plane -> nodes
    /// tcp/61678.
    Proxy,
    /// Straight to `hostIP:61678`; needs publisher pod -> nodes tcp/61678.
    Direct,
}

/// Where the metrics go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudWatchSettings {
    pub region: String,
    pub namespace: String,
    pub queue_capacity: usize,
    pub batch_datums: usize,
    pub batch_bytes: usize,
    /// One PutMetricData attempt's timeout (upstream's HTTP_TIMEOUT).
    pub attempt_timeout: Duration,
}

/// How pods are found and scraped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeSettings {
    pub namespace: String,
    pub selector: String,
    pub via: ScrapeVia,
    /// The port, concurrency, timeouts and body limit of each scrape.
    pub scraper: ScrapeOptions,
    /// The most counter series kept per pod; see [`crate::aggregate::AggregatorOptions`].
    pub max_series_per_pod: usize,
    /// How many rounds in a row a pod's last good gauge values stand in for it; see
    /// [`crate::aggregate::AggregatorOptions`].
    pub stale_rounds: u32,
}

/// Leader election through a coordination.k8s.io Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderSettings {
    pub lease_name: String,
    /// `None`: the kube client's default namespace (the pod's own one in a cluster).
    pub lease_namespace: Option<String>,
    pub lease_duration: Duration,
    pub identity: String,
}

/// Everything `run` and `once` need, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub cluster_id: String,
    pub per_az: bool,
    pub interval: Duration,
    pub scrape: ScrapeSettings,
    /// `None` when USE_CLOUDWATCH is off.
    pub cloudwatch: Option<CloudWatchSettings>,
    /// Whether the self-metrics go to CloudWatch (and into what `once --dry-run` prints,
    /// which is what `once` would send); `/metrics` and the logs have them either way.
    pub self_metrics: bool,
    /// Where to serve /metrics, /healthz and /readyz, if anywhere.
    pub listen: Option<SocketAddr>,
    /// `--max-connections`: the endpoint's connection limit; derived from the open-file limit
    /// when `None` (see [`crate::serve::ServeOptions::for_this_process`]).
    pub max_connections: Option<usize>,
    /// `None` unless `--leader-elect`.
    pub leader: Option<LeaderSettings>,
    pub shutdown_timeout: Duration,
}

/// What a command is for: `once --dry-run` needs neither region nor any output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Run,
    Once,
    DryRun,
}

/// What the command line asks for, before the rules that need more than one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    pub cluster_id: Option<String>,
    pub per_az: bool,
    pub interval: Duration,
    pub scrape: ScrapeSettings,
    /// The CloudWatch side, when USE_CLOUDWATCH is on.
    pub cloudwatch: Option<RequestedCloudWatch>,
    /// `--self-metrics`.
    pub self_metrics: bool,
    /// `--listen`, which wins over `prometheus`.
    pub listen: Option<SocketAddr>,
    /// USE_PROMETHEUS: serve on the upstream port.
    pub prometheus: bool,
    /// `--max-connections`.
    pub max_connections: Option<usize>,
    /// `Some` with `--leader-elect`.
    pub leader: Option<RequestedLeader>,
    pub shutdown_timeout: Duration,
}

/// The CloudWatch side as the command line asks for it; the region is checked only when
/// the command publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedCloudWatch {
    pub region: Option<String>,
    pub namespace: String,
    pub queue_capacity: usize,
    pub batch_datums: usize,
    pub batch_bytes: usize,
    /// Upstream's HTTP_TIMEOUT, when set.
    pub http_timeout: Option<Duration>,
}

/// Leader election as the command line asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedLeader {
    pub lease_name: String,
    pub lease_namespace: Option<String>,
    pub lease_duration: Duration,
    /// The base of this replica's identity (the pod name); the hostname when missing.
    pub identity: Option<String>,
}

impl Purpose {
    /// Whether the command sends datums to CloudWatch (everything but a dry run).
    fn publishes(self) -> bool {
        self != Purpose::DryRun
    }

    /// Whether the command runs long enough to serve an endpoint and to take part in an
    /// election.
    fn is_long_running(self) -> bool {
        self == Purpose::Run
    }
}

impl Settings {
    /// Checks what was asked for against the rules for `purpose`.
    pub fn validate(requested: Requested, purpose: Purpose) -> Result<Settings, ConfigError> {
        let cluster_id = required_cluster_id(requested.cluster_id.as_deref())?;
        if requested.scrape.selector.trim().is_empty() {
            return Err(ConfigError::EmptySelector {
                selector: requested.scrape.selector,
            });
        }
        let scraper = &requested.scrape.scraper;
        if scraper.memory_budget < scraper.body_limit {
            return Err(ConfigError::BudgetBelowBodyLimit {
                budget: scraper.memory_budget,
                limit: scraper.body_limit,
            });
        }
        if scraper.round_timeout > requested.interval {
            return Err(ConfigError::RoundTimeoutOverInterval {
                round_timeout: scraper.round_timeout,
                interval: requested.interval,
            });
        }
        let cloudwatch = match requested.cloudwatch {
            Some(cloudwatch) if purpose.publishes() => Some(CloudWatchSettings {
                region: non_empty(cloudwatch.region.as_deref())
                    .ok_or(ConfigError::MissingRegion)?,
                namespace: cloudwatch.namespace,
                queue_capacity: cloudwatch.queue_capacity,
                batch_datums: cloudwatch.batch_datums,
                batch_bytes: cloudwatch.batch_bytes,
                attempt_timeout: cloudwatch_attempt_timeout(cloudwatch.http_timeout),
            }),
            Some(_) | None => None,
        };
        let listen = match (requested.listen, requested.prometheus) {
            (Some(address), _) => Some(address),
            (None, true) => Some(SocketAddr::from((
                Ipv4Addr::UNSPECIFIED,
                DEFAULT_PROMETHEUS_PORT,
            ))),
            (None, false) => None,
        };
        let listen = if purpose.is_long_running() {
            listen
        } else {
            None
        };
        if purpose.publishes() && cloudwatch.is_none() && listen.is_none() {
            return Err(ConfigError::NoOutput);
        }
        let leader = match requested.leader {
            Some(leader) if purpose.is_long_running() => Some(LeaderSettings::validate(leader)?),
            Some(_) | None => None,
        };
        Ok(Settings {
            cluster_id,
            per_az: requested.per_az,
            interval: requested.interval,
            scrape: requested.scrape,
            cloudwatch,
            self_metrics: requested.self_metrics,
            listen,
            max_connections: requested.max_connections,
            leader,
            shutdown_timeout: requested.shutdown_timeout,
        })
    }
}

impl LeaderSettings {
    /// Checks the lease duration and makes this replica's identity unique.
    fn validate(requested: RequestedLeader) -> Result<LeaderSettings, ConfigError> {
        if requested.lease_duration < Duration::from_secs(1) {
            return Err(ConfigError::LeaseTooShort {
                lease: requested.lease_duration,
            });
        }
        Ok(LeaderSettings {
            lease_name: requested.lease_name,
            lease_namespace: non_empty(requested.lease_namespace.as_deref()),
            lease_duration: requested.lease_duration,
            identity: non_empty(requested.identity.as_deref())
                .map_or_else(default_identity, |name| {
                    format!("{name}_{}", random_suffix())
                }),
        })
    }
}

/// The cluster id, which every command needs: the CLUSTER_ID dimension of every datum.
pub fn required_cluster_id(value: Option<&str>) -> Result<String, ConfigError> {
    non_empty(value).ok_or(ConfigError::MissingClusterId)
}

/// The region to publish to: `--region` (or AWS_REGION, which clap puts in its place),
/// else AWS_DEFAULT_REGION. Both variables are read because EKS's pod identity webhook
/// injects both and some setups set only the older AWS_DEFAULT_REGION; a blank value counts
/// as unset, as upstream's manifests write unset variables as `""`.
pub fn region(
    flag_or_aws_region: Option<&str>,
    aws_default_region: Option<&str>,
) -> Option<String> {
    non_empty(flag_or_aws_region).or_else(|| non_empty(aws_default_region))
}

/// One CloudWatch attempt's timeout from upstream's HTTP_TIMEOUT, which is what it means
/// there (the HTTP client timeout of its AWS SDK session, used for PutMetricData), with
/// upstream's default and floor of 10 s. It does not touch the scrapes: upstream's scrapes
/// have no timeout of their own, ours have `--scrape-timeout`.
pub fn cloudwatch_attempt_timeout(http_timeout: Option<Duration>) -> Duration {
    http_timeout
        .unwrap_or(DEFAULT_CLOUDWATCH_ATTEMPT_TIMEOUT)
        .max(DEFAULT_CLOUDWATCH_ATTEMPT_TIMEOUT)
}

/// The trimmed value, or `None` when it is missing or blank.
fn non_empty(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
}

/// The hostname plus a random suffix, as client-go does, so that two processes on one
/// host (or a restarted pod with the same name) never share an identity.
fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "cni-metrics-publisher".to_owned());
    format!("{host}_{}", random_suffix())
}

/// Eight hex digits from the standard library's randomly keyed hasher, mixed with the time
/// and the process id: unique enough for a lease holder name without a random crate.
fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    hasher.write_u128(nanos);
    format!("{:08x}", hasher.finish() & 0xffff_ffff)
}
