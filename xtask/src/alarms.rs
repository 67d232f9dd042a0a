//! The alarm knobs: which CloudWatch alarms a deploy keeps, their thresholds and windows,
//! and whom they notify. Given in the config file's `alarms:` block and by `--alarm-action`,
//! `--no-alarms`, `--per-az` and `--zone`; validated here, once, into [`AlarmSettings`].
//!
//! The default set is what an SRE who owns EKS clusters sets up by hand: IP utilisation of
//! capacity (a warning and a critical level, per availability zone too with `--per-az`),
//! a warm pool that runs dry, a publisher that fails or goes silent, and ipamd's own
//! errors. What each alarm computes is rendered in [`crate::render::alarms`].

use serde::Deserialize;

/// One alarm of the default set. The order here is the order of `alarms.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlarmKind {
    /// `100 * assignIPAddresses / maxIPAddresses` above the warning level.
    IpUtilisationWarning,
    /// The same, above the critical level.
    IpUtilisationCritical,
    /// `totalIPAddresses - assignIPAddresses` below a floor: pods wait for ENIs.
    WarmPoolLow,
    /// No datapoint of the publisher's heartbeat metric: a dead publisher.
    PublisherSilent,
    /// Our publisher's `scrapeErrors` above 0 period after period.
    PublisherScrapeErrors,
    /// ipamd's own errors (`ipamdErr`) per period.
    IpamdErrors,
    /// ipamd's failed AWS API calls (`awsAPIErr`) per period.
    AwsApiErrors,
}

impl AlarmKind {
    pub const ALL: [AlarmKind; 7] = [
        AlarmKind::IpUtilisationWarning,
        AlarmKind::IpUtilisationCritical,
        AlarmKind::WarmPoolLow,
        AlarmKind::PublisherSilent,
        AlarmKind::PublisherScrapeErrors,
        AlarmKind::IpamdErrors,
        AlarmKind::AwsApiErrors,
    ];

    /// The config file key, and the end of the alarm's name.
    pub fn key(self) -> &'static str {
        match self {
            AlarmKind::IpUtilisationWarning => "ip-utilisation-warning",
            AlarmKind::IpUtilisationCritical => "ip-utilisation-critical",
            AlarmKind::WarmPoolLow => "warm-pool-low",
            AlarmKind::PublisherSilent => "publisher-silent",
            AlarmKind::PublisherScrapeErrors => "publisher-scrape-errors",
            AlarmKind::IpamdErrors => "ipamd-errors",
            AlarmKind::AwsApiErrors => "aws-api-errors",
        }
    }

    /// Threshold, period (s), evaluation periods and datapoints to alarm when not
    /// overridden. Periods are raised to the publishing interval in [`resolve`].
    fn defaults(self) -> (f64, u32, u32, u32) {
        match self {
            // 15 minutes above 80 %: time to plan, not to wake someone.
            AlarmKind::IpUtilisationWarning => (80.0, 300, 3, 3),
            // 5 minutes above 90 %: new pods are about to stay Pending.
            AlarmKind::IpUtilisationCritical => (90.0, 60, 5, 5),
            // Fewer than 10 free IPs on the nodes for 15 minutes.
            AlarmKind::WarmPoolLow => (10.0, 300, 3, 3),
            // No heartbeat in 3 periods of a minute.
            AlarmKind::PublisherSilent => (1.0, 60, 3, 3),
            // Some aws-node pod unreadable for 15 minutes (one failed round is noise).
            AlarmKind::PublisherScrapeErrors => (0.0, 300, 3, 3),
            // More than 10 errors per 5 minutes, for 15 minutes.
            AlarmKind::IpamdErrors | AlarmKind::AwsApiErrors => (10.0, 300, 3, 3),
        }
    }
}

/// One alarm's overrides, as the config file gives them; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AlarmOverride {
    pub enabled: Option<bool>,
    pub threshold: Option<f64>,
    /// Seconds: 60 or a multiple of 60.
    pub period: Option<u32>,
    pub evaluation_periods: Option<u32>,
    pub datapoints_to_alarm: Option<u32>,
    /// Replaces the block's `actions` for this alarm (e.g. a paging topic for the critical
    /// level only).
    pub actions: Option<Vec<String>>,
}

/// The config file's `alarms:` block.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AlarmsFile {
    /// `false` is `--no-alarms`.
    pub enabled: Option<bool>,
    /// ARNs notified when an alarm fires and when it clears; `--alarm-action` adds to them.
    #[serde(default)]
    pub actions: Vec<String>,
    /// The start of every alarm name [default: CNI-Metrics-<cluster>-<region>].
    pub name_prefix: Option<String>,
    pub ip_utilisation_warning: Option<AlarmOverride>,
    pub ip_utilisation_critical: Option<AlarmOverride>,
    pub warm_pool_low: Option<AlarmOverride>,
    pub publisher_silent: Option<AlarmOverride>,
    pub publisher_scrape_errors: Option<AlarmOverride>,
    pub ipamd_errors: Option<AlarmOverride>,
    pub aws_api_errors: Option<AlarmOverride>,
}

impl AlarmsFile {
    fn override_of(&self, kind: AlarmKind) -> Option<&AlarmOverride> {
        match kind {
            AlarmKind::IpUtilisationWarning => self.ip_utilisation_warning.as_ref(),
            AlarmKind::IpUtilisationCritical => self.ip_utilisation_critical.as_ref(),
            AlarmKind::WarmPoolLow => self.warm_pool_low.as_ref(),
            AlarmKind::PublisherSilent => self.publisher_silent.as_ref(),
            AlarmKind::PublisherScrapeErrors => self.publisher_scrape_errors.as_ref(),
            AlarmKind::IpamdErrors => self.ipamd_errors.as_ref(),
            AlarmKind::AwsApiErrors => self.aws_api_errors.as_ref(),
        }
    }
}

/// The alarm flags, beside the file's block.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AlarmsInput {
    /// ARN notified when an alarm fires and when it clears, e.g. an SNS topic in the cluster's region (repeatable, at most 5)
    #[arg(long = "alarm-action", value_name = "ARN")]
    pub action_flags: Vec<String>,
    /// Make no CloudWatch alarms (deploy deletes the ones it made before)
    #[arg(long)]
    pub no_alarms: bool,
    /// Our publisher only: also publish the IP capacity metrics per availability zone, and alarm on each zone's utilisation (needs --zone)
    #[arg(long)]
    pub per_az: bool,
    /// With --per-az: an availability zone of the cluster's subnets, e.g. us-west-2a (repeatable; kubectl get nodes -L topology.kubernetes.io/zone)
    #[arg(long = "zone", value_name = "AZ")]
    pub zone_flags: Vec<String>,
    /// The config file's `alarms:` block.
    #[arg(skip)]
    pub file: AlarmsFile,
    /// The config file's `zones`; the flags add to them.
    #[arg(skip)]
    pub zones: Vec<String>,
}

impl AlarmsInput {
    /// The flags (`self`) beside the config file's values (`file`): the flags carry no
    /// `alarms:` block and no `zones`, the file no flags; [`resolve`] adds the flags'
    /// actions and zones to the file's.
    pub fn or(self, file: AlarmsInput) -> AlarmsInput {
        AlarmsInput {
            action_flags: self.action_flags,
            no_alarms: self.no_alarms || file.no_alarms,
            per_az: self.per_az || file.per_az,
            zone_flags: self.zone_flags,
            file: file.file,
            zones: file.zones,
        }
    }
}

/// One alarm of the set, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmParams {
    pub kind: AlarmKind,
    pub threshold: f64,
    pub period: u32,
    pub evaluation_periods: u32,
    pub datapoints_to_alarm: u32,
    pub actions: Vec<String>,
}

/// Which alarms a deploy keeps, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmSettings {
    /// Every alarm name starts with this and a `-`.
    pub name_prefix: String,
    /// The enabled alarms, in [`AlarmKind::ALL`] order; empty with `--no-alarms`.
    pub alarms: Vec<AlarmParams>,
    /// The zones of `--per-az`: the utilisation alarms are repeated for each.
    pub zones: Vec<String>,
    /// The publisher's heartbeat: `podsScraped` (ours, with self metrics) or
    /// `maxIPAddresses` (published every interval by either helper).
    pub heartbeat_metric: &'static str,
}

impl AlarmSettings {
    pub fn enabled(&self) -> bool {
        !self.alarms.is_empty()
    }
}

/// CloudWatch's limit on each of an alarm's action lists.
pub const MAX_ACTIONS: usize = 5;
/// CloudWatch's limit on an alarm name.
pub const NAME_MAX: usize = 255;
/// The longest kind key plus a zone name, kept free after the prefix.
const NAME_SUFFIX_ROOM: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AlarmError {
    #[error(
        "invalid alarm action '{arn}': {problem}; an alarm action is the ARN of an SNS topic (arn:{partition}:sns:{region}:<account>:<topic>), a Lambda function, a Systems Manager OpsItem or incident response plan, or an EC2 action, in the cluster's region"
    )]
    Action {
        arn: String,
        problem: &'static str,
        partition: String,
        region: String,
    },
    #[error(
        "alarm {alarm}: {count} actions, but CloudWatch takes at most {MAX_ACTIONS} per alarm; use one SNS topic and subscribe the rest to it"
    )]
    TooManyActions { alarm: &'static str, count: usize },
    #[error("alarm {alarm}: {problem}")]
    Window {
        alarm: &'static str,
        problem: String,
    },
    #[error(
        "alarm {alarm}: threshold {threshold} is not a finite number; give the level as a plain number (e.g. 85)"
    )]
    Threshold { alarm: &'static str, threshold: f64 },
    #[error(
        "alarm {alarm} is for our publisher's own metrics (podsScraped, scrapeErrors), which {reason}; leave it disabled"
    )]
    NeedsSelfMetrics {
        alarm: &'static str,
        reason: &'static str,
    },
    #[error(
        "--per-az: the per-zone metrics are published by our publisher only (--publisher ours or --publisher-image); upstream's helper publishes per cluster"
    )]
    PerAzNeedsPublisher,
    #[error(
        "--per-az alarms need the cluster's availability zones: add --zone for each (kubectl get nodes -L topology.kubernetes.io/zone), or `zones:` in the config file; or --no-alarms"
    )]
    PerAzWithoutZones,
    #[error(
        "--zone given without --per-az: the zones only serve the per-zone alarms; add --per-az"
    )]
    ZonesWithoutPerAz,
    #[error(
        "invalid --zone '{zone}': an availability zone of {region} is named {region} followed by a letter (e.g. {region}a), or a local zone {region}-<name>"
    )]
    Zone { zone: String, region: String },
    #[error(
        "invalid alarms name-prefix '{0}': 1-{limit} printable ASCII characters without control characters",
        limit = NAME_MAX - NAME_SUFFIX_ROOM
    )]
    NamePrefix(String),
}

/// What the alarms are resolved against.
pub struct AlarmContext<'a> {
    pub cluster: &'a str,
    pub region: &'a str,
    pub partition: &'a str,
    /// Our publisher runs (it publishes the counters correctly, and per zone).
    pub publisher: bool,
    /// It publishes its own podsScraped and scrapeErrors.
    pub self_metrics: bool,
    /// The publishing interval in seconds, when not the image's default (30).
    pub interval: Option<u32>,
}

/// The publishing interval of both helpers when none is set.
const DEFAULT_INTERVAL: u32 = 30;

/// The default start of every alarm name; the region is in it because two clusters of one
/// name in two regions of an account must not share alarms (and the dashboard's default
/// name is the same, so an alarm and its dashboard sort together).
pub fn default_name_prefix(cluster: &str, region: &str) -> String {
    crate::settings::default_dashboard_name(cluster, region)
}

/// Validates the alarm knobs into the set a deploy keeps.
pub fn resolve(input: &AlarmsInput, context: &AlarmContext) -> Result<AlarmSettings, AlarmError> {
    let file = &input.file;
    let enabled = !input.no_alarms && file.enabled != Some(false);
    let name_prefix = match &file.name_prefix {
        Some(prefix) if is_name_prefix(prefix) => prefix.clone(),
        Some(prefix) => return Err(AlarmError::NamePrefix(prefix.clone())),
        None => default_name_prefix(context.cluster, context.region),
    };
    let mut zones: Vec<String> = Vec::new();
    for zone in input.zones.iter().chain(&input.zone_flags) {
        if !is_zone_of(zone, context.region) {
            return Err(AlarmError::Zone {
                zone: zone.clone(),
                region: context.region.to_owned(),
            });
        }
        if !zones.contains(zone) {
            zones.push(zone.clone());
        }
    }
    match (input.per_az, zones.is_empty()) {
        (true, _) if !context.publisher => return Err(AlarmError::PerAzNeedsPublisher),
        (true, true) if enabled => return Err(AlarmError::PerAzWithoutZones),
        (false, false) => return Err(AlarmError::ZonesWithoutPerAz),
        (true, _) | (false, true) => {}
    }
    // The file's actions, then the flags', each once, in the order given.
    let mut actions: Vec<String> = Vec::new();
    for arn in file.actions.iter().chain(&input.action_flags) {
        if !actions.contains(arn) {
            actions.push(arn.clone());
        }
    }
    let heartbeat_metric = if context.publisher && context.self_metrics {
        "podsScraped"
    } else {
        "maxIPAddresses"
    };
    let interval = context.interval.unwrap_or(DEFAULT_INTERVAL);
    let mut alarms = Vec::new();
    for kind in AlarmKind::ALL {
        let overrides = file.override_of(kind).cloned().unwrap_or_default();
        let by_default = match kind {
            AlarmKind::PublisherScrapeErrors => context.publisher && context.self_metrics,
            // Upstream's counters are differences between arbitrary pods' totals (see
            // docs/metrics.md): an alarm on them would fire on a healthy cluster.
            AlarmKind::IpamdErrors | AlarmKind::AwsApiErrors => context.publisher,
            AlarmKind::IpUtilisationWarning
            | AlarmKind::IpUtilisationCritical
            | AlarmKind::WarmPoolLow
            | AlarmKind::PublisherSilent => true,
        };
        if !enabled || !overrides.enabled.unwrap_or(by_default) {
            continue;
        }
        if kind == AlarmKind::PublisherScrapeErrors && !(context.publisher && context.self_metrics)
        {
            return Err(AlarmError::NeedsSelfMetrics {
                alarm: kind.key(),
                reason: if context.publisher {
                    "self-metrics: false keeps off CloudWatch"
                } else {
                    "only our publisher publishes"
                },
            });
        }
        alarms.push(params(kind, &overrides, &actions, interval, context)?);
    }
    Ok(AlarmSettings {
        name_prefix,
        alarms,
        zones,
        heartbeat_metric,
    })
}

fn params(
    kind: AlarmKind,
    overrides: &AlarmOverride,
    actions: &[String],
    interval: u32,
    context: &AlarmContext,
) -> Result<AlarmParams, AlarmError> {
    let alarm = kind.key();
    let window = |problem: String| AlarmError::Window { alarm, problem };
    let (threshold, period, evaluation_periods, datapoints_to_alarm) = kind.defaults();
    let threshold = overrides.threshold.unwrap_or(threshold);
    if !threshold.is_finite() {
        return Err(AlarmError::Threshold { alarm, threshold });
    }
    // A period shorter than the publishing interval has no datapoint in most periods.
    let floor = interval.div_ceil(60) * 60;
    let period = match overrides.period {
        Some(period) if period == 0 || period % 60 != 0 => {
            return Err(window(format!(
                "period {period} s: CloudWatch takes 60 s or a multiple of 60 s for these metrics (they are published at standard resolution)"
            )));
        }
        Some(period) if period < interval => {
            return Err(window(format!(
                "period {period} s is shorter than the publishing interval ({interval} s): most periods would have no datapoint; use {floor} s or more"
            )));
        }
        Some(period) => period,
        None => period.max(floor),
    };
    let evaluation_periods = overrides.evaluation_periods.unwrap_or(evaluation_periods);
    let datapoints_to_alarm = overrides
        .datapoints_to_alarm
        .unwrap_or(datapoints_to_alarm.min(evaluation_periods));
    if evaluation_periods == 0 || datapoints_to_alarm == 0 {
        return Err(window(
            "evaluation-periods and datapoints-to-alarm are 1 or more".to_owned(),
        ));
    }
    if datapoints_to_alarm > evaluation_periods {
        return Err(window(format!(
            "datapoints-to-alarm {datapoints_to_alarm} is more than evaluation-periods {evaluation_periods}"
        )));
    }
    // CloudWatch: "the number of periods times the period length must be at most one day".
    if u64::from(evaluation_periods) * u64::from(period) > 86_400 {
        return Err(window(format!(
            "{evaluation_periods} periods of {period} s is more than the one day CloudWatch evaluates"
        )));
    }
    let actions = overrides
        .actions
        .clone()
        .unwrap_or_else(|| actions.to_vec());
    if actions.len() > MAX_ACTIONS {
        return Err(AlarmError::TooManyActions {
            alarm,
            count: actions.len(),
        });
    }
    for arn in &actions {
        check_action(arn, context)?;
    }
    Ok(AlarmParams {
        kind,
        threshold,
        period,
        evaluation_periods,
        datapoints_to_alarm,
        actions,
    })
}

/// An alarm action CloudWatch accepts for an alarm in `context.region`: the ARN's partition
/// and, for the regional services, its region must be the alarm's.
fn check_action(arn: &str, context: &AlarmContext) -> Result<(), AlarmError> {
    let refuse = |problem: &'static str| AlarmError::Action {
        arn: arn.to_owned(),
        problem,
        partition: context.partition.to_owned(),
        region: context.region.to_owned(),
    };
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts.as_slice() else {
        return Err(refuse(
            "not an ARN (arn:partition:service:region:account:resource)",
        ));
    };
    if *prefix != "arn" || resource.is_empty() {
        return Err(refuse(
            "not an ARN (arn:partition:service:region:account:resource)",
        ));
    }
    if *partition != context.partition {
        return Err(refuse("its partition is not the cluster's"));
    }
    match *service {
        "sns" | "lambda" | "ssm" => {
            if *region != context.region {
                return Err(refuse(
                    "it is in another region, and CloudWatch only notifies targets in the alarm's region",
                ));
            }
            if account.len() != 12 || !account.bytes().all(|byte| byte.is_ascii_digit()) {
                return Err(refuse("its account is not 12 digits"));
            }
            Ok(())
        }
        // arn:aws:automate:REGION:ec2:stop, arn:aws:ssm-incidents::ACCOUNT:response-plan/NAME
        "automate" if *region == context.region => Ok(()),
        "ssm-incidents" => Ok(()),
        "automate" => Err(refuse(
            "it is in another region, and CloudWatch only runs actions in the alarm's region",
        )),
        _ => Err(refuse("CloudWatch alarms cannot notify that service")),
    }
}

/// `us-west-2a`, or a local or wavelength zone `us-west-2-lax-1a`.
fn is_zone_of(zone: &str, region: &str) -> bool {
    zone.strip_prefix(region).is_some_and(|rest| {
        let letter =
            |text: &str| text.len() == 1 && text.bytes().all(|byte| byte.is_ascii_lowercase());
        letter(rest)
            || rest.strip_prefix('-').is_some_and(|local| {
                !local.is_empty()
                    && local.bytes().all(|byte| {
                        byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-'
                    })
            })
    })
}

/// CloudWatch alarm names are up to 255 printable ASCII characters; room is kept for the
/// alarm's own suffix.
fn is_name_prefix(prefix: &str) -> bool {
    (1..=NAME_MAX - NAME_SUFFIX_ROOM).contains(&prefix.len())
        && prefix.bytes().all(|byte| (0x20..0x7f).contains(&byte))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(publisher: bool) -> AlarmContext<'static> {
        AlarmContext {
            cluster: "prod",
            region: "eu-west-1",
            partition: "aws",
            publisher,
            self_metrics: true,
            interval: None,
        }
    }

    fn keys(settings: &AlarmSettings) -> Vec<&'static str> {
        settings
            .alarms
            .iter()
            .map(|alarm| alarm.kind.key())
            .collect()
    }

    #[test]
    fn the_default_set_depends_on_which_helper_publishes() {
        let ours = resolve(&AlarmsInput::default(), &context(true)).expect("resolves");
        assert_eq!(
            keys(&ours),
            [
                "ip-utilisation-warning",
                "ip-utilisation-critical",
                "warm-pool-low",
                "publisher-silent",
                "publisher-scrape-errors",
                "ipamd-errors",
                "aws-api-errors"
            ]
        );
        assert_eq!(ours.heartbeat_metric, "podsScraped");
        assert_eq!(ours.name_prefix, "CNI-Metrics-prod-eu-west-1");
        let upstream = resolve(&AlarmsInput::default(), &context(false)).expect("resolves");
        assert_eq!(
            keys(&upstream),
            [
                "ip-utilisation-warning",
                "ip-utilisation-critical",
                "warm-pool-low",
                "publisher-silent"
            ]
        );
        assert_eq!(upstream.heartbeat_metric, "maxIPAddresses");
        let off = AlarmsInput {
            no_alarms: true,
            ..AlarmsInput::default()
        };
        assert!(!resolve(&off, &context(true)).expect("resolves").enabled());
    }

    #[test]
    fn overrides_replace_defaults_and_periods_follow_the_interval() {
        let input = AlarmsInput {
            file: AlarmsFile {
                ip_utilisation_critical: Some(AlarmOverride {
                    threshold: Some(95.0),
                    evaluation_periods: Some(2),
                    ..AlarmOverride::default()
                }),
                warm_pool_low: Some(AlarmOverride {
                    enabled: Some(false),
                    ..AlarmOverride::default()
                }),
                ..AlarmsFile::default()
            },
            ..AlarmsInput::default()
        };
        let slow = AlarmContext {
            interval: Some(90),
            ..context(true)
        };
        let settings = resolve(&input, &slow).expect("resolves");
        let critical = &settings.alarms[1];
        assert_eq!(critical.kind, AlarmKind::IpUtilisationCritical);
        assert_eq!(
            (
                critical.threshold,
                critical.period,
                critical.evaluation_periods
            ),
            (95.0, 120, 2)
        );
        assert_eq!(critical.datapoints_to_alarm, 2, "capped at the window");
        assert!(!keys(&settings).contains(&"warm-pool-low"));
    }

    #[test]
    fn refusals_name_the_alarm_and_the_way_out() {
        let with = |override_: AlarmOverride| AlarmsInput {
            file: AlarmsFile {
                ip_utilisation_warning: Some(override_),
                ..AlarmsFile::default()
            },
            ..AlarmsInput::default()
        };
        for (override_, expected) in [
            (
                AlarmOverride {
                    period: Some(45),
                    ..AlarmOverride::default()
                },
                "multiple of 60",
            ),
            (
                AlarmOverride {
                    evaluation_periods: Some(2),
                    datapoints_to_alarm: Some(3),
                    ..AlarmOverride::default()
                },
                "more than evaluation-periods",
            ),
            (
                AlarmOverride {
                    period: Some(3600),
                    evaluation_periods: Some(25),
                    ..AlarmOverride::default()
                },
                "one day",
            ),
            (
                AlarmOverride {
                    threshold: Some(f64::NAN),
                    ..AlarmOverride::default()
                },
                "not a finite number",
            ),
        ] {
            let message = resolve(&with(override_), &context(true))
                .expect_err("refused")
                .to_string();
            assert!(message.contains("ip-utilisation-warning"), "{message}");
            assert!(message.contains(expected), "{expected} in {message}");
        }
        let interval = AlarmContext {
            interval: Some(120),
            ..context(true)
        };
        let message = resolve(
            &with(AlarmOverride {
                period: Some(60),
                ..AlarmOverride::default()
            }),
            &interval,
        )
        .expect_err("refused")
        .to_string();
        assert!(
            message.contains("shorter than the publishing interval"),
            "{message}"
        );
    }

    #[test]
    fn actions_must_be_in_the_alarms_partition_and_region() {
        let action = |arn: &str| AlarmsInput {
            action_flags: vec![arn.to_owned()],
            ..AlarmsInput::default()
        };
        let ok = resolve(
            &action("arn:aws:sns:eu-west-1:111122223333:oncall"),
            &context(true),
        )
        .expect("resolves");
        assert!(
            ok.alarms
                .iter()
                .all(|alarm| alarm.actions == ["arn:aws:sns:eu-west-1:111122223333:oncall"])
        );
        for (arn, expected) in [
            (
                "arn:aws:sns:us-east-1:111122223333:oncall",
                "another region",
            ),
            ("arn:aws-cn:sns:eu-west-1:111122223333:oncall", "partition"),
            ("sns:oncall", "not an ARN"),
            ("arn:aws:s3:::bucket", "cannot notify"),
            ("arn:aws:sns:eu-west-1:1111:oncall", "12 digits"),
        ] {
            let message = resolve(&action(arn), &context(true))
                .expect_err(arn)
                .to_string();
            assert!(message.contains(expected), "{expected} in {message}");
        }
        let many = AlarmsInput {
            action_flags: (0..6)
                .map(|index| format!("arn:aws:sns:eu-west-1:111122223333:t{index}"))
                .collect(),
            ..AlarmsInput::default()
        };
        assert!(matches!(
            resolve(&many, &context(true)),
            Err(AlarmError::TooManyActions { count: 6, .. })
        ));
        assert!(
            resolve(
                &action("arn:aws:automate:eu-west-1:ec2:reboot"),
                &context(true)
            )
            .is_ok()
        );
    }

    #[test]
    fn per_az_needs_our_publisher_and_the_zones() {
        let per_az = |zones: &[&str]| AlarmsInput {
            per_az: true,
            zones: zones.iter().map(|zone| (*zone).to_owned()).collect(),
            ..AlarmsInput::default()
        };
        let settings = resolve(
            &per_az(&["eu-west-1a", "eu-west-1b", "eu-west-1a"]),
            &context(true),
        )
        .expect("resolves");
        assert_eq!(settings.zones, ["eu-west-1a", "eu-west-1b"]);
        assert_eq!(
            resolve(&per_az(&["eu-west-1a"]), &context(false)),
            Err(AlarmError::PerAzNeedsPublisher)
        );
        assert_eq!(
            resolve(&per_az(&[]), &context(true)),
            Err(AlarmError::PerAzWithoutZones)
        );
        assert!(matches!(
            resolve(&per_az(&["us-east-1a"]), &context(true)),
            Err(AlarmError::Zone { .. })
        ));
        assert!(resolve(&per_az(&["eu-west-1-lax-1a"]), &context(true)).is_ok());
        let zones_alone = AlarmsInput {
            zones: vec!["eu-west-1a".to_owned()],
            ..AlarmsInput::default()
        };
        assert_eq!(
            resolve(&zones_alone, &context(true)),
            Err(AlarmError::ZonesWithoutPerAz)
        );
    }
}
