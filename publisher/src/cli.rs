//! The command line: every flag, the upstream environment variables they fall back to, and
//! the value parsers that turn text into typed values with messages naming the flag and the
//! variable. The flags become a [`Requested`]; the rules that need more than one value
//! (cluster id and region present, leader-election settings coherent) live in
//! [`crate::config`], which this module only feeds.
//!
//! Without a subcommand the binary runs `run` with the top-level flags, so the upstream
//! image's entrypoint (no arguments, configuration from the environment) keeps working.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::aggregate::DEFAULT_STALE_ROUNDS;
use crate::cloudwatch::{MAX_BYTES_PER_CALL, MAX_DATUMS_PER_CALL, MIN_BATCH_BYTES};
use crate::config::{
    CLOUDWATCH_NAMESPACE, DEFAULT_IPAMD_METRICS_PORT, DEFAULT_SCRAPE_TIMEOUT, Requested,
    RequestedCloudWatch, RequestedLeader, ScrapeSettings, ScrapeVia, default_round_timeout, region,
};
use crate::scrape::ScrapeOptions;

/// Scrapes every aws-node (ipamd) pod, aggregates per cluster and publishes to CloudWatch.
#[derive(Debug, Parser)]
#[command(
    name = "cni-metrics-publisher",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The flags of `run`, for the default command.
    #[command(flatten)]
    pub run: PublisherArgs,
}

impl Cli {
    /// The command to execute, `run` with the top-level flags when none was named.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Run(self.run))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scrape, aggregate and publish every interval until SIGTERM (the default).
    Run(PublisherArgs),
    /// Run one cycle and exit.
    Once(OnceArgs),
    /// Offline: aggregate rounds of exposition files and print the datums as JSON.
    Aggregate(AggregateArgs),
}

#[derive(Debug, Args)]
pub struct OnceArgs {
    /// Print the datums as JSON on stdout and publish nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub publisher: PublisherArgs,
}

#[derive(Debug, Args)]
pub struct AggregateArgs {
    /// A directory holding one exposition file per pod (file name = pod name); one per
    /// round, in order.
    #[arg(long = "round", value_name = "DIR", required = true)]
    pub rounds: Vec<PathBuf>,
    /// The value of the CLUSTER_ID dimension.
    #[arg(long, env = "AWS_CLUSTER_ID", value_name = "ID")]
    pub cluster_id: Option<String>,
    /// Also publish the capacity metrics per availability zone.
    #[arg(long)]
    pub per_az: bool,
    /// How many rounds in a row a pod whose file is unreadable or does not parse still adds
    /// the gauge values of its last good round, as in `run`; 0: never.
    #[arg(long, default_value_t = DEFAULT_STALE_ROUNDS, value_name = "ROUNDS")]
    pub stale_rounds: u32,
    #[command(flatten)]
    pub logging: LoggingArgs,
}

#[derive(Debug, Clone, Args)]
pub struct LoggingArgs {
    /// Log level: trace, debug, info, warn, error (upstream's DEBUG/INFO/WARN/ERROR/FATAL
    /// are accepted too). Scrape bodies are logged only at trace.
    #[arg(long, env = "AWS_VPC_K8S_CNI_LOGLEVEL", default_value = "info", value_parser = parse_log_level)]
    pub log_level: tracing::Level,
}

#[derive(Debug, Clone, Args)]
pub struct PublisherArgs {
    /// The value of the CLUSTER_ID dimension on every datum (required).
    #[arg(long, env = "AWS_CLUSTER_ID", value_name = "ID")]
    pub cluster_id: Option<String>,
    /// The AWS region to publish to (required; AWS_DEFAULT_REGION when neither this nor
    /// AWS_REGION is set; IMDS is never asked).
    #[arg(long, env = "AWS_REGION", value_name = "REGION")]
    pub region: Option<String>,
    /// Only carries AWS_DEFAULT_REGION, which EKS's pod identity webhook injects next to
    /// AWS_REGION and some setups set alone; hidden because --region is the flag to use.
    #[arg(long, env = "AWS_DEFAULT_REGION", value_name = "REGION", hide = true)]
    pub aws_default_region: Option<String>,
    /// Seconds between rounds.
    #[arg(long = "interval", env = "METRIC_UPDATE_INTERVAL", value_name = "SECONDS",
          default_value = "30", value_parser = parse_interval)]
    pub interval: Duration,
    /// Publish to CloudWatch (yes/true or no/false).
    #[arg(long, env = "USE_CLOUDWATCH", value_name = "BOOL", default_value = "true",
          value_parser = parse_upstream_bool,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true")]
    pub cloudwatch: bool,
    /// Serve /metrics, /healthz and /readyz on :61681 unless --listen says otherwise
    /// (yes/true or no/false).
    #[arg(long, env = "USE_PROMETHEUS", value_name = "BOOL", default_value = "false",
          value_parser = parse_upstream_bool,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true")]
    pub prometheus: bool,
    /// Serve /metrics, /healthz and /readyz on this address (implies --prometheus).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The most connections the /metrics endpoint keeps open; a new one over it evicts the
    /// oldest. Default: a quarter of the open-file limit, at most 256.
    #[arg(long, value_name = "N", value_parser = parse_positive_usize)]
    pub max_connections: Option<usize>,
    /// The CloudWatch namespace.
    #[arg(long, default_value = CLOUDWATCH_NAMESPACE, value_name = "NAMESPACE")]
    pub cloudwatch_namespace: String,
    /// Publish podsScraped and scrapeErrors to CloudWatch (yes/true or no/false): two
    /// custom metrics per cluster, billed as such. They stay on /metrics and in the logs
    /// either way.
    #[arg(long, value_name = "BOOL", default_value = "true",
          value_parser = parse_upstream_bool,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true")]
    pub self_metrics: bool,
    /// Also publish maxIPAddresses, totalIPAddresses and assignIPAddresses per availability
    /// zone (needs get/list/watch on nodes).
    #[arg(long)]
    pub per_az: bool,

    /// The namespace of the aws-node pods.
    #[arg(long, default_value = "kube-system", value_name = "NAMESPACE")]
    pub aws_node_namespace: String,
    /// The label selector of the aws-node pods.
    #[arg(long, default_value = "k8s-app=aws-node", value_name = "SELECTOR")]
    pub aws_node_selector: String,
    /// How scrapes reach ipamd.
    #[arg(long, value_enum, default_value_t = ScrapeVia::Proxy)]
    pub scrape_via: ScrapeVia,
    /// The port ipamd serves /metrics on.
    #[arg(long, default_value_t = DEFAULT_IPAMD_METRICS_PORT, value_name = "PORT")]
    pub metrics_port: u16,
    /// How many pods are scraped at the same time.
    #[arg(long, default_value = "64", value_name = "N", value_parser = parse_positive_usize)]
    pub scrape_concurrency: usize,
    /// How long one pod's scrape may take, e.g. 5s or 500ms. Default: 5s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub scrape_timeout: Option<Duration>,
    /// Only carries upstream's HTTP_TIMEOUT (the HTTP client timeout of its AWS SDK, i.e.
    /// of each PutMetricData attempt; default and floor 10s); hidden because it is an
    /// environment variable kept for upstream's manifests.
    #[arg(long, env = "HTTP_TIMEOUT", value_name = "DURATION", hide = true,
          value_parser = parse_http_timeout)]
    pub http_timeout: Option<UpstreamDuration>,
    /// How long all scrapes of a round may take together, counted from the round's start;
    /// pods still unanswered then count as scrape errors. At most the interval. Default: 80%
    /// of the interval.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub round_timeout: Option<Duration>,
    /// How many rounds in a row a pod that was not scraped (timeout, error, bad body) still
    /// adds the gauge values of its last good scrape, so that capacity totals do not dip;
    /// 0: never.
    #[arg(long, default_value_t = DEFAULT_STALE_ROUNDS, value_name = "ROUNDS")]
    pub stale_rounds: u32,
    /// The largest scrape body accepted, e.g. 1MiB; a larger body fails that pod (real
    /// ipamd bodies are tens of KiB).
    #[arg(long, default_value = "1MiB", value_name = "BYTES", value_parser = parse_bytes)]
    pub scrape_body_limit: usize,
    /// The bytes all scrape bodies in memory may take together; a scrape waits for its
    /// share. At least the body limit.
    #[arg(long, default_value = "32MiB", value_name = "BYTES", value_parser = parse_bytes)]
    pub scrape_memory_budget: usize,
    /// The most counter series kept per pod between rounds; a pod exposing more fails that
    /// round (counted in scrapeErrors) and keeps its previous state. ipamd exposes ~1,300
    /// samples.
    #[arg(long, default_value = "20000", value_name = "N", value_parser = parse_positive_usize)]
    pub max_series_per_pod: usize,

    /// The most datums kept for CloudWatch while it cannot be reached; the oldest are
    /// dropped (and counted) beyond it.
    #[arg(long, default_value = "20000", value_name = "DATUMS", value_parser = parse_positive_usize)]
    pub queue_capacity: usize,
    /// The most datums in one PutMetricData call (CloudWatch allows 1000).
    #[arg(long, default_value = "1000", value_name = "DATUMS", value_parser = parse_batch_datums)]
    pub batch_datums: usize,
    /// The most bytes one PutMetricData call may carry, estimated conservatively
    /// (CloudWatch allows 1 MB).
    #[arg(long, default_value = "1000000", value_name = "BYTES", value_parser = parse_batch_bytes)]
    pub batch_bytes: usize,

    /// Run only while holding a coordination.k8s.io Lease, so that 2+ replicas are safe.
    #[arg(long)]
    pub leader_elect: bool,
    /// The Lease's name.
    #[arg(long, default_value = "cni-metrics-publisher", value_name = "NAME")]
    pub lease_name: String,
    /// The Lease's namespace; the pod's own namespace by default.
    #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long a Lease stays valid without renewal, e.g. 15s.
    #[arg(long, default_value = "15s", value_name = "DURATION", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// This replica's identity in the Lease; the pod name (or hostname) plus a random
    /// suffix by default.
    #[arg(long, env = "POD_NAME", value_name = "ID")]
    pub leader_identity: Option<String>,

    /// How long shutdown may take to flush what is queued for CloudWatch.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    #[command(flatten)]
    pub logging: LoggingArgs,
}

impl PublisherArgs {
    /// What these flags ask for, to be checked with [`crate::config::Settings::validate`].
    pub fn requested(&self) -> Requested {
        Requested {
            cluster_id: self.cluster_id.clone(),
            per_az: self.per_az,
            interval: self.interval,
            scrape: ScrapeSettings {
                namespace: self.aws_node_namespace.clone(),
                selector: self.aws_node_selector.clone(),
                via: self.scrape_via,
                scraper: ScrapeOptions {
                    port: self.metrics_port,
                    concurrency: self.scrape_concurrency,
                    timeout: self.scrape_timeout.unwrap_or(DEFAULT_SCRAPE_TIMEOUT),
                    round_timeout: self
                        .round_timeout
                        .unwrap_or_else(|| default_round_timeout(self.interval)),
                    body_limit: self.scrape_body_limit,
                    memory_budget: self.scrape_memory_budget,
                },
                max_series_per_pod: self.max_series_per_pod,
                stale_rounds: self.stale_rounds,
            },
            cloudwatch: self.cloudwatch.then(|| RequestedCloudWatch {
                region: region(self.region.as_deref(), self.aws_default_region.as_deref()),
                namespace: self.cloudwatch_namespace.clone(),
                queue_capacity: self.queue_capacity,
                batch_datums: self.batch_datums,
                batch_bytes: self.batch_bytes,
                http_timeout: self.http_timeout.and_then(|upstream| upstream.0),
            }),
            self_metrics: self.self_metrics,
            listen: self.listen,
            prometheus: self.prometheus,
            max_connections: self.max_connections,
            leader: self.leader_elect.then(|| RequestedLeader {
                lease_name: self.lease_name.clone(),
                lease_namespace: self.lease_namespace.clone(),
                lease_duration: self.lease_duration,
                identity: self.leader_identity.clone(),
            }),
            shutdown_timeout: self.shutdown_timeout,
        }
    }
}

/// Upstream accepts yes/true and no/false in any case for USE_CLOUDWATCH and USE_PROMETHEUS.
/// Anything else is refused here rather than silently ignored as upstream does.
pub fn parse_upstream_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" => Ok(true),
        "no" | "false" | "0" => Ok(false),
        _ => Err("expected yes/true or no/false".to_owned()),
    }
}

/// A duration from one of upstream's environment variables, where an empty value (as
/// upstream's manifests write variables they leave unset) means "not set".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamDuration(pub Option<Duration>);

/// HTTP_TIMEOUT: a duration such as `10s`, or empty for "not set". The message names the
/// variable, because the hidden flag that carries it is not what anyone typed.
pub fn parse_http_timeout(text: &str) -> Result<UpstreamDuration, String> {
    if text.trim().is_empty() {
        return Ok(UpstreamDuration(None));
    }
    parse_duration(text)
        .map(|timeout| UpstreamDuration(Some(timeout)))
        .map_err(|reason| {
            format!(
                "HTTP_TIMEOUT (upstream's AWS SDK HTTP timeout, our CloudWatch attempt \
                 timeout): {reason}; set it to e.g. 10s, or unset it"
            )
        })
}

/// METRIC_UPDATE_INTERVAL is whole seconds, above zero, as upstream reads it.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
        _ => Err(
            "the interval (METRIC_UPDATE_INTERVAL or --interval) must be a whole number of \
             seconds above 0"
                .to_owned(),
        ),
    }
}

/// Maps upstream's log levels (and the usual ones) to a tracing level.
pub fn parse_log_level(text: &str) -> Result<tracing::Level, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "trace" => Ok(tracing::Level::TRACE),
        "debug" => Ok(tracing::Level::DEBUG),
        "info" => Ok(tracing::Level::INFO),
        "warn" | "warning" => Ok(tracing::Level::WARN),
        "error" | "fatal" | "panic" => Ok(tracing::Level::ERROR),
        _ => Err("expected trace, debug, info, warn or error".to_owned()),
    }
}

/// A duration: a number with `ms`, `s` or `m`, or plain seconds (fractions allowed).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(number) = text.strip_suffix("ms") {
        (number, 0.001)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1.0)
    } else if let Some(number) = text.strip_suffix('m') {
        (number, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| "expected a duration such as 5s, 500ms or 1m".to_owned())?;
    let seconds = value * scale;
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 86_400.0 {
        return Err("the duration must be above 0 and at most a day".to_owned());
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A byte count: a number with an optional `KiB`/`MiB` (or `Ki`/`Mi`, `KB`/`MB`) suffix.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let suffixes: [(&str, usize); 6] = [
        ("KiB", 1024),
        ("MiB", 1024 * 1024),
        ("Ki", 1024),
        ("Mi", 1024 * 1024),
        ("KB", 1000),
        ("MB", 1_000_000),
    ];
    let (number, scale) = suffixes
        .iter()
        .find_map(|(suffix, scale)| text.strip_suffix(suffix).map(|number| (number, *scale)))
        .unwrap_or((text, 1));
    let count: usize = number
        .trim()
        .parse()
        .map_err(|_| "expected a byte count such as 4MiB, 512KiB or 1000000".to_owned())?;
    match count.checked_mul(scale) {
        Some(bytes) if bytes > 0 => Ok(bytes),
        _ => Err("the byte count must be above 0".to_owned()),
    }
}

fn parse_positive_usize(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(count) if count > 0 => Ok(count),
        _ => Err("expected a whole number above 0".to_owned()),
    }
}

fn parse_batch_datums(text: &str) -> Result<usize, String> {
    let count = parse_positive_usize(text)?;
    if count > MAX_DATUMS_PER_CALL {
        return Err(format!(
            "CloudWatch accepts at most {MAX_DATUMS_PER_CALL} datums per PutMetricData call"
        ));
    }
    Ok(count)
}

fn parse_batch_bytes(text: &str) -> Result<usize, String> {
    let bytes = parse_bytes(text)?;
    if bytes > MAX_BYTES_PER_CALL {
        return Err(format!(
            "CloudWatch accepts at most {MAX_BYTES_PER_CALL} bytes per PutMetricData call"
        ));
    }
    if bytes < MIN_BATCH_BYTES {
        return Err(format!(
            "a batch must allow at least {MIN_BATCH_BYTES} bytes, enough for one datum"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::config::{ConfigError, Purpose, Settings};

    #[test]
    fn durations_take_units_and_plain_seconds() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn byte_counts_take_binary_and_decimal_suffixes() {
        assert_eq!(parse_bytes("4MiB"), Ok(4 * 1024 * 1024));
        assert_eq!(parse_bytes("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_bytes("1MB"), Ok(1_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn upstream_booleans_and_levels() {
        assert_eq!(parse_upstream_bool("YES"), Ok(true));
        assert_eq!(parse_upstream_bool("False"), Ok(false));
        assert!(parse_upstream_bool("maybe").is_err());
        assert_eq!(parse_log_level("DEBUG"), Ok(tracing::Level::DEBUG));
        assert_eq!(parse_log_level("FATAL"), Ok(tracing::Level::ERROR));
        assert!(parse_log_level("loud").is_err());
    }

    #[test]
    fn intervals_are_whole_positive_seconds() {
        assert_eq!(parse_interval("30"), Ok(Duration::from_secs(30)));
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("1.5").is_err());
        assert!(parse_interval("soon").is_err());
    }

    #[test]
    fn no_subcommand_means_run_with_top_level_flags() {
        let cli = Cli::try_parse_from(["cni-metrics-publisher", "--cluster-id", "c"])
            .expect("top-level flags parse");
        match cli.into_command() {
            Command::Run(args) => assert_eq!(args.cluster_id.as_deref(), Some("c")),
            other => panic!("expected run, got {other:?}"),
        }
        let cli = Cli::try_parse_from(["cni-metrics-publisher", "run", "--prometheus"])
            .expect("a bare boolean flag parses");
        assert!(matches!(
            cli.into_command(),
            Command::Run(PublisherArgs {
                prometheus: true,
                ..
            })
        ));
        let cli = Cli::try_parse_from(["cni-metrics-publisher", "once", "--dry-run"])
            .expect("once parses");
        assert!(matches!(
            cli.into_command(),
            Command::Once(OnceArgs { dry_run: true, .. })
        ));
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    fn args(flags: &[&str]) -> PublisherArgs {
        let mut argv = vec!["cni-metrics-publisher", "run"];
        argv.extend_from_slice(flags);
        match Cli::try_parse_from(argv)
            .expect("flags parse")
            .into_command()
        {
            Command::Run(args) => args,
            other => panic!("expected run, got {other:?}"),
        }
    }

    #[test]
    fn the_round_deadline_defaults_to_most_of_the_interval_and_never_exceeds_it() {
        let defaults = args(&["--cluster-id", "c", "--region", "us-west-2"]);
        let settings = Settings::validate(defaults.requested(), Purpose::Run).expect("valid");
        assert_eq!(settings.scrape.scraper.timeout, Duration::from_secs(5));
        assert_eq!(settings.scrape.stale_rounds, 3);
        // 80% of the 30 s interval, not the 5 s scrape timeout.
        assert_eq!(
            settings.scrape.scraper.round_timeout,
            Duration::from_secs(24)
        );
        // The scrape timeout no longer moves it; the interval does.
        let slow = args(&[
            "--cluster-id",
            "c",
            "--region",
            "r",
            "--scrape-timeout",
            "20s",
            "--interval",
            "60",
        ]);
        let settings = Settings::validate(slow.requested(), Purpose::Run).expect("valid");
        assert_eq!(
            settings.scrape.scraper.round_timeout,
            Duration::from_secs(48)
        );
        // The same rule for a dry run (one round, with the configured interval).
        let dry = args(&["--cluster-id", "c", "--interval", "1"]);
        let settings = Settings::validate(dry.requested(), Purpose::DryRun).expect("valid");
        assert_eq!(
            settings.scrape.scraper.round_timeout,
            Duration::from_millis(800)
        );
        let explicit = args(&[
            "--cluster-id",
            "c",
            "--region",
            "r",
            "--round-timeout",
            "1500ms",
        ]);
        let settings = Settings::validate(explicit.requested(), Purpose::Run).expect("valid");
        assert_eq!(settings.scrape.scraper.timeout, Duration::from_secs(5));
        assert_eq!(
            settings.scrape.scraper.round_timeout,
            Duration::from_millis(1500)
        );
        // Up to the whole interval is allowed; beyond it rounds would overlap.
        let whole = args(&[
            "--cluster-id",
            "c",
            "--region",
            "r",
            "--round-timeout",
            "30s",
        ]);
        assert!(Settings::validate(whole.requested(), Purpose::Run).is_ok());
        for purpose in [Purpose::Run, Purpose::Once, Purpose::DryRun] {
            let over = args(&[
                "--cluster-id",
                "c",
                "--region",
                "r",
                "--interval",
                "10",
                "--round-timeout",
                "11s",
            ]);
            let error = Settings::validate(over.requested(), purpose).expect_err("refused");
            assert_eq!(
                error,
                ConfigError::RoundTimeoutOverInterval {
                    round_timeout: Duration::from_secs(11),
                    interval: Duration::from_secs(10),
                }
            );
            let message = error.to_string();
            assert!(!message.contains('\n'), "one line: {message}");
            assert!(message.contains("--round-timeout"), "{message}");
            assert!(message.contains("--interval"), "{message}");
        }
    }

    #[test]
    fn stale_rounds_take_zero_to_turn_them_off() {
        let off = args(&["--cluster-id", "c", "--region", "r", "--stale-rounds", "0"]);
        let settings = Settings::validate(off.requested(), Purpose::Run).expect("valid");
        assert_eq!(settings.scrape.stale_rounds, 0);
        let cli = Cli::try_parse_from(["cni-metrics-publisher", "run", "--stale-rounds", "-1"]);
        assert!(cli.is_err(), "a negative count is refused");
    }

    #[test]
    fn cluster_id_and_region_are_required() {
        // Explicit empty values override whatever the test process's environment holds.
        let missing_cluster = args(&["--cluster-id", "", "--region", "us-west-2"]);
        assert_eq!(
            Settings::validate(missing_cluster.requested(), Purpose::Run),
            Err(ConfigError::MissingClusterId)
        );
        let missing_region = args(&["--cluster-id", "c", "--region", ""]);
        assert_eq!(
            Settings::validate(missing_region.requested(), Purpose::Run),
            Err(ConfigError::MissingRegion)
        );
        // A dry run publishes nothing, so it needs no region.
        let settings =
            Settings::validate(missing_region.requested(), Purpose::DryRun).expect("dry run");
        assert_eq!(settings.cloudwatch, None);
    }

    #[test]
    fn region_and_cloudwatch_timeout_fall_back_to_upstreams_variables_in_order() {
        use crate::config::{cloudwatch_attempt_timeout, region};
        // --region (or AWS_REGION in its place) > AWS_DEFAULT_REGION > none.
        assert_eq!(
            region(Some("us-east-1"), Some("eu-west-1")).as_deref(),
            Some("us-east-1")
        );
        assert_eq!(
            region(None, Some("eu-west-1")).as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            region(Some(" "), Some("eu-west-1")).as_deref(),
            Some("eu-west-1"),
            "a blank AWS_REGION counts as unset"
        );
        assert_eq!(region(None, Some("")), None);
        assert_eq!(region(None, None), None);
        // HTTP_TIMEOUT is the CloudWatch attempt timeout, 10 s by default and at least.
        let (two, twenty) = (Duration::from_secs(2), Duration::from_secs(20));
        assert_eq!(cloudwatch_attempt_timeout(Some(twenty)), twenty);
        assert_eq!(
            cloudwatch_attempt_timeout(Some(two)),
            Duration::from_secs(10)
        );
        assert_eq!(cloudwatch_attempt_timeout(None), Duration::from_secs(10));
    }

    #[test]
    fn upstreams_variables_reach_the_settings_through_their_hidden_flags() {
        use clap::CommandFactory;
        let command = Cli::command();
        let env_of = |id: &str| {
            command
                .get_arguments()
                .find(|arg| arg.get_id() == id)
                .and_then(|arg| arg.get_env())
                .and_then(|name| name.to_str())
                .map(str::to_owned)
        };
        assert_eq!(env_of("region").as_deref(), Some("AWS_REGION"));
        assert_eq!(
            env_of("aws_default_region").as_deref(),
            Some("AWS_DEFAULT_REGION")
        );
        assert_eq!(env_of("http_timeout").as_deref(), Some("HTTP_TIMEOUT"));

        let region_of = |flags: &[&str]| {
            let mut all = vec!["--cluster-id", "c"];
            all.extend_from_slice(flags);
            Settings::validate(args(&all).requested(), Purpose::Run)
                .map(|settings| settings.cloudwatch.map(|cloudwatch| cloudwatch.region))
        };
        assert_eq!(
            region_of(&["--region", "", "--aws-default-region", "eu-west-1"]),
            Ok(Some("eu-west-1".to_owned()))
        );
        assert_eq!(
            region_of(&["--region", "us-east-1", "--aws-default-region", "eu-west-1"]),
            Ok(Some("us-east-1".to_owned()))
        );
        assert_eq!(
            region_of(&["--region", "", "--aws-default-region", ""]),
            Err(ConfigError::MissingRegion)
        );

        let timeouts_of = |flags: &[&str]| {
            let mut all = vec!["--cluster-id", "c", "--region", "r"];
            all.extend_from_slice(flags);
            let settings = Settings::validate(args(&all).requested(), Purpose::Run).expect("valid");
            (
                settings.scrape.scraper.timeout,
                settings.cloudwatch.expect("CloudWatch on").attempt_timeout,
            )
        };
        let seconds = Duration::from_secs;
        assert_eq!(
            timeouts_of(&["--http-timeout", "30s"]),
            (seconds(5), seconds(30))
        );
        assert_eq!(
            timeouts_of(&["--http-timeout", "30s", "--scrape-timeout", "2s"]),
            (seconds(2), seconds(30)),
            "HTTP_TIMEOUT never changes the scrapes"
        );
        assert_eq!(
            timeouts_of(&["--http-timeout", ""]),
            (seconds(5), seconds(10)),
            "an empty HTTP_TIMEOUT counts as unset"
        );
        let error = Cli::try_parse_from(["cni-metrics-publisher", "run", "--http-timeout", "soon"])
            .expect_err("a word is not a duration");
        assert!(error.to_string().contains("HTTP_TIMEOUT"), "{error}");
    }

    #[test]
    fn a_missing_cluster_id_says_which_variable_and_why_it_is_not_guessed() {
        let message = ConfigError::MissingClusterId.to_string();
        assert!(!message.contains('\n'), "one line: {message}");
        for needle in [
            "AWS_CLUSTER_ID",
            "--cluster-id",
            "instance metadata",
            "splitting",
        ] {
            assert!(
                message.contains(needle),
                "{needle:?} missing from: {message}"
            );
        }
    }

    #[test]
    fn self_metrics_default_on_and_take_a_boolean() {
        let settings = |flags: &[&str]| {
            let mut all = vec!["--cluster-id", "c", "--region", "r"];
            all.extend_from_slice(flags);
            Settings::validate(args(&all).requested(), Purpose::Run)
                .expect("valid")
                .self_metrics
        };
        assert!(settings(&[]));
        assert!(!settings(&["--self-metrics", "false"]));
        assert!(!settings(&["--self-metrics=no"]));
        assert!(settings(&["--self-metrics"]));
        let bad = Cli::try_parse_from(["cni-metrics-publisher", "run", "--self-metrics", "off"]);
        assert!(bad.is_err(), "only yes/true/no/false are accepted");
    }

    #[test]
    fn prometheus_flag_serves_on_the_upstream_port() {
        let settings = Settings::validate(
            args(&["--cluster-id", "c", "--region", "r", "--prometheus", "true"]).requested(),
            Purpose::Run,
        )
        .expect("valid");
        assert_eq!(
            settings.listen,
            Some(SocketAddr::from(([0, 0, 0, 0], 61681)))
        );
        let settings = Settings::validate(
            args(&[
                "--cluster-id",
                "c",
                "--region",
                "r",
                "--listen",
                "127.0.0.1:9000",
            ])
            .requested(),
            Purpose::Run,
        )
        .expect("valid");
        assert_eq!(
            settings.listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9000)))
        );
    }

    #[test]
    fn memory_defaults_fit_half_the_rendered_limit_and_the_budget_must_hold_a_body() {
        let settings = Settings::validate(
            args(&["--cluster-id", "c", "--region", "r"]).requested(),
            Purpose::Run,
        )
        .expect("valid");
        let scraper = settings.scrape.scraper;
        assert_eq!(scraper.body_limit, 1024 * 1024);
        assert_eq!(scraper.memory_budget, 32 * 1024 * 1024);
        // Bodies (at most the budget) are a quarter of the 256Mi the manifests render, so
        // with the process itself they stay under half of it (README "Guarantees").
        assert!(scraper.memory_budget <= 256 * 1024 * 1024 / 4);
        assert_eq!(settings.scrape.max_series_per_pod, 20_000);
        let too_small = args(&[
            "--cluster-id",
            "c",
            "--region",
            "r",
            "--scrape-body-limit",
            "4MiB",
            "--scrape-memory-budget",
            "1MiB",
        ]);
        assert_eq!(
            Settings::validate(too_small.requested(), Purpose::Run),
            Err(ConfigError::BudgetBelowBodyLimit {
                budget: 1024 * 1024,
                limit: 4 * 1024 * 1024
            })
        );
    }

    #[test]
    fn no_output_at_all_is_refused() {
        let flags = args(&[
            "--cluster-id",
            "c",
            "--region",
            "r",
            "--cloudwatch",
            "false",
        ]);
        assert_eq!(
            Settings::validate(flags.requested(), Purpose::Run),
            Err(ConfigError::NoOutput)
        );
    }

    #[test]
    fn leader_identities_are_unique_per_process_start() {
        let flags = args(&[
            "--cluster-id",
            "c",
            "--region",
            "r",
            "--leader-elect",
            "--leader-identity",
            "pod-a",
        ]);
        let first = Settings::validate(flags.requested(), Purpose::Run).expect("valid");
        let second = Settings::validate(flags.requested(), Purpose::Run).expect("valid");
        let first = first.leader.expect("leader settings").identity;
        let second = second.leader.expect("leader settings").identity;
        assert!(first.starts_with("pod-a_"), "{first}");
        assert_ne!(first, second);
    }
}
