//! Validated, typed settings built from the command line ([`crate::cli`]). Everything a
//! round needs is checked here, before any network traffic, so a misconfigured pod fails
//! at once with one clear line instead of half-working.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::cli::{DEFAULT_PROMETHEUS_PORT, PublisherArgs, ScrapeVia};

/// Why the settings are unusable. Each message names the flag and the variable to set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "no cluster id: set AWS_CLUSTER_ID or pass --cluster-id (it becomes the CLUSTER_ID \
         dimension of every datum; IMDS and EC2 tags are never used to guess it)"
    )]
    MissingClusterId,
    #[error("no AWS region: set AWS_REGION or pass --region (IMDS is never asked for the region)")]
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
}

/// Where the metrics go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudWatchSettings {
    pub region: String,
    pub namespace: String,
    pub queue_capacity: usize,
    pub batch_datums: usize,
    pub batch_bytes: usize,
}

/// How pods are found and scraped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeSettings {
    pub namespace: String,
    pub selector: String,
    pub via: ScrapeVia,
    pub port: u16,
    pub concurrency: usize,
    /// How long one pod's scrape may take.
    pub timeout: Duration,
    /// How long all scrapes of a round may take, counted from the round's start.
    pub round_timeout: Duration,
    pub body_limit: usize,
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
    /// Where to serve /metrics, /healthz and /readyz, if anywhere.
    pub listen: Option<SocketAddr>,
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

impl Settings {
    /// Validates the flags for `purpose`.
    pub fn from_args(args: &PublisherArgs, purpose: Purpose) -> Result<Settings, ConfigError> {
        let cluster_id =
            non_empty(args.cluster_id.as_deref()).ok_or(ConfigError::MissingClusterId)?;
        if args.aws_node_selector.trim().is_empty() {
            return Err(ConfigError::EmptySelector {
                selector: args.aws_node_selector.clone(),
            });
        }
        let listen = match (args.listen, args.prometheus) {
            (Some(address), _) => Some(address),
            (None, true) => Some(SocketAddr::from((
                Ipv4Addr::UNSPECIFIED,
                DEFAULT_PROMETHEUS_PORT,
            ))),
            (None, false) => None,
        };
        let wants_cloudwatch = args.cloudwatch && purpose != Purpose::DryRun;
        let cloudwatch = if wants_cloudwatch {
            let region = non_empty(args.region.as_deref()).ok_or(ConfigError::MissingRegion)?;
            Some(CloudWatchSettings {
                region,
                namespace: args.cloudwatch_namespace.clone(),
                queue_capacity: args.queue_capacity,
                batch_datums: args.batch_datums,
                batch_bytes: args.batch_bytes,
            })
        } else {
            None
        };
        let listen = if purpose == Purpose::Run {
            listen
        } else {
            None
        };
        if purpose != Purpose::DryRun && cloudwatch.is_none() && listen.is_none() {
            return Err(ConfigError::NoOutput);
        }
        let leader = if args.leader_elect && purpose == Purpose::Run {
            if args.lease_duration < Duration::from_secs(1) {
                return Err(ConfigError::LeaseTooShort {
                    lease: args.lease_duration,
                });
            }
            Some(LeaderSettings {
                lease_name: args.lease_name.clone(),
                lease_namespace: non_empty(args.lease_namespace.as_deref()),
                lease_duration: args.lease_duration,
                identity: non_empty(args.leader_identity.as_deref())
                    .map_or_else(default_identity, |name| {
                        format!("{name}_{}", random_suffix())
                    }),
            })
        } else {
            None
        };
        Ok(Settings {
            cluster_id,
            per_az: args.per_az,
            interval: args.interval,
            scrape: ScrapeSettings {
                namespace: args.aws_node_namespace.clone(),
                selector: args.aws_node_selector.clone(),
                via: args.scrape_via,
                port: args.metrics_port,
                concurrency: args.scrape_concurrency,
                timeout: args.scrape_timeout,
                round_timeout: args.round_timeout.unwrap_or(args.scrape_timeout),
                body_limit: args.scrape_body_limit,
            },
            cloudwatch,
            listen,
            leader,
            shutdown_timeout: args.shutdown_timeout,
        })
    }
}

/// The trimmed value, or `None` when it is missing or blank.
pub fn non_empty(value: Option<&str>) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

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
    fn the_round_deadline_defaults_to_the_scrape_timeout() {
        let defaults = args(&["--cluster-id", "c", "--region", "us-west-2"]);
        let settings = Settings::from_args(&defaults, Purpose::Run).expect("valid");
        assert_eq!(settings.scrape.timeout, Duration::from_secs(5));
        assert_eq!(settings.scrape.round_timeout, Duration::from_secs(5));
        let slow = args(&[
            "--cluster-id",
            "c",
            "--region",
            "r",
            "--scrape-timeout",
            "20s",
        ]);
        let settings = Settings::from_args(&slow, Purpose::Run).expect("valid");
        assert_eq!(settings.scrape.round_timeout, Duration::from_secs(20));
        let explicit = args(&[
            "--cluster-id",
            "c",
            "--region",
            "r",
            "--round-timeout",
            "1500ms",
        ]);
        let settings = Settings::from_args(&explicit, Purpose::Run).expect("valid");
        assert_eq!(settings.scrape.timeout, Duration::from_secs(5));
        assert_eq!(settings.scrape.round_timeout, Duration::from_millis(1500));
    }

    #[test]
    fn cluster_id_and_region_are_required() {
        // Explicit empty values override whatever the test process's environment holds.
        let missing_cluster = args(&["--cluster-id", "", "--region", "us-west-2"]);
        assert_eq!(
            Settings::from_args(&missing_cluster, Purpose::Run),
            Err(ConfigError::MissingClusterId)
        );
        let missing_region = args(&["--cluster-id", "c", "--region", ""]);
        assert_eq!(
            Settings::from_args(&missing_region, Purpose::Run),
            Err(ConfigError::MissingRegion)
        );
        // A dry run publishes nothing, so it needs no region.
        let settings = Settings::from_args(&missing_region, Purpose::DryRun).expect("dry run");
        assert_eq!(settings.cloudwatch, None);
    }

    #[test]
    fn prometheus_flag_serves_on_the_upstream_port() {
        let settings = Settings::from_args(
            &args(&["--cluster-id", "c", "--region", "r", "--prometheus", "true"]),
            Purpose::Run,
        )
        .expect("valid");
        assert_eq!(
            settings.listen,
            Some(SocketAddr::from(([0, 0, 0, 0], 61681)))
        );
        let settings = Settings::from_args(
            &args(&[
                "--cluster-id",
                "c",
                "--region",
                "r",
                "--listen",
                "127.0.0.1:9000",
            ]),
            Purpose::Run,
        )
        .expect("valid");
        assert_eq!(
            settings.listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9000)))
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
            Settings::from_args(&flags, Purpose::Run),
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
        let first = Settings::from_args(&flags, Purpose::Run).expect("valid");
        let second = Settings::from_args(&flags, Purpose::Run).expect("valid");
        let first = first.leader.expect("leader settings").identity;
        let second = second.leader.expect("leader settings").identity;
        assert!(first.starts_with("pod-a_"), "{first}");
        assert_ne!(first, second);
    }
}
