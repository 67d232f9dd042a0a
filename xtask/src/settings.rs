//! What the user asked for, validated and typed.
//!
//! Every value can come from a flag or from the YAML file given with `--config`; the file's
//! keys are the flag names (`oidc-issuer: https://...`) so that one vocabulary serves both,
//! and a flag always wins over the file. Validation happens here, once, so the renderer and
//! the deployer only ever see values that are known to be well formed.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use std::collections::BTreeMap;

use crate::catalog::{Catalog, DataError, RegionError, ResolvedRegion, Version, VersionError};

/// The service account name the upstream helper and its RBAC are written for.
pub const SERVICE_ACCOUNT: &str = "cni-metrics-helper";
/// The CloudWatch namespace the helper publishes to; dashboards and alarms key on it.
pub const METRICS_NAMESPACE: &str = "Kubernetes";
/// The audience EKS's pod identity webhook puts in projected tokens, in every partition
/// (China included: `sts.amazonaws.com.cn` there breaks AssumeRoleWithWebIdentity).
pub const IRSA_AUDIENCE: &str = "sts.amazonaws.com";
/// The prefix of the default IAM role name, as in the EKS user guide.
pub const DEFAULT_ROLE_PREFIX: &str = "AmazonEKSVPCCNIMetricsHelperRole";
/// IAM's limit on role names.
pub const ROLE_NAME_MAX: usize = 64;
/// The longest IAM managed policy name.
pub const POLICY_NAME_MAX: usize = 128;

/// Which metrics helper runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PublisherChoice {
    /// AWS's cni-metrics-helper image (or `--image`).
    Upstream,
    /// Our cni-metrics-publisher, from the image `cargo xtask image push` put in the
    /// account's ECR registry, run by digest.
    Ours,
}

/// How the helper's pods get AWS credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityMode {
    /// IAM roles for service accounts: a role trusting the cluster's OIDC provider.
    Irsa,
    /// EKS Pod Identity: a role trusting pods.eks.amazonaws.com, bound by an association.
    PodIdentity,
    /// Pod Identity when the cluster's eks-pod-identity-agent add-on is ACTIVE, else IRSA
    /// (decided from the live cluster; not for the offline `render`).
    Auto,
}

impl IdentityMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityMode::Irsa => "irsa",
            IdentityMode::PodIdentity => "pod-identity",
            IdentityMode::Auto => "auto",
        }
    }
}

/// The target cluster and how to render for it, as given: every field optional, because
/// each may come from a flag or from the config file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TargetInput {
    /// AWS region of the cluster, e.g. us-west-2
    #[arg(long)]
    pub region: Option<String>,
    /// EKS cluster name (the CLUSTER_ID dimension of every metric)
    #[arg(long)]
    pub cluster: Option<String>,
    /// 12-digit AWS account id that owns the cluster
    #[arg(long)]
    pub account: Option<String>,
    /// The cluster's OIDC issuer URL (aws eks describe-cluster --query cluster.identity.oidc.issuer); required for irsa
    #[arg(long, value_name = "URL")]
    pub oidc_issuer: Option<String>,
    /// Upstream release to run, vX.Y.Z [default: the newest known release]
    #[arg(long = "version", value_name = "vX.Y.Z")]
    pub version: Option<String>,
    /// How the helper gets AWS credentials [default: irsa]
    #[arg(long, value_enum)]
    pub identity: Option<IdentityMode>,
    /// Namespace of the helper's ServiceAccount and Deployment [default: kube-system]
    #[arg(long)]
    pub namespace: Option<String>,
    /// Image to run instead of the region's ECR image (e.g. a mirror)
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// IAM role name [default: AmazonEKSVPCCNIMetricsHelperRole-<cluster>-<region>, shortened to 64 characters]
    #[arg(long)]
    pub role_name: Option<String>,
    /// Which helper runs: upstream's, or ours from the image `image push` put in the account's ECR registry, by digest [default: upstream]
    #[arg(long, value_enum)]
    pub publisher: Option<PublisherChoice>,
    /// With --publisher ours: the ECR repository [default: cni-metrics-publisher]
    #[arg(long, value_name = "NAME")]
    pub publisher_repository: Option<String>,
    /// With --publisher ours: the tag whose digest runs [default: this tool's publisher version]
    #[arg(long, value_name = "TAG")]
    pub publisher_tag: Option<String>,
    /// Run our cni-metrics-publisher from this image reference instead (e.g. a mirror; best pinned by digest)
    #[arg(long, value_name = "REF")]
    pub publisher_image: Option<String>,
    /// With --publisher-image: run two replicas with Lease-based leader election
    #[arg(long)]
    pub leader_elect: bool,
    /// How the helper's pods run: the knobs a Helm chart would have.
    #[command(flatten)]
    pub pod: PodInput,
    /// Which CloudWatch alarms to keep, and whom they notify.
    #[command(flatten)]
    pub alarms: crate::alarms::AlarmsInput,
}

/// The pod knobs, as given. The structured ones (resources, tolerations, affinity,
/// extra-env) come from the config file only, as raw YAML values: they are checked
/// against the Kubernetes types in [`resolve`], where the error can name the key.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PodInput {
    /// Replicas of the Deployment: with our publisher's --leader-elect any number [default: 2]; otherwise 1
    #[arg(long, value_name = "N")]
    pub replicas: Option<u8>,
    /// Seconds between two publications (METRIC_UPDATE_INTERVAL) [default: the image's own, 30]
    #[arg(long, value_name = "SECONDS")]
    pub interval: Option<u32>,
    /// AWS_VPC_K8S_CNI_LOGLEVEL: DEBUG, INFO, WARN or ERROR [default: INFO]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Serve Prometheus metrics on port 61681 (USE_PROMETHEUS=true); our publisher always does
    #[arg(long)]
    pub prometheus: bool,
    /// Our publisher only: publish its own podsScraped and scrapeErrors to CloudWatch, two paid custom metrics per cluster (true/false) [default: true]
    #[arg(long, value_name = "BOOL")]
    pub self_metrics: Option<bool>,
    /// The pods' PriorityClass
    #[arg(long, value_name = "NAME")]
    pub priority_class_name: Option<String>,
    /// Node label the pods must run on, KEY=VALUE (repeatable; kubernetes.io/os=linux is always set)
    #[arg(long = "node-selector", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub node_selector_flags: Vec<(String, String)>,
    /// Annotation on the pods, KEY=VALUE (repeatable)
    #[arg(long = "pod-annotation", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub pod_annotation_flags: Vec<(String, String)>,
    /// Label on the pods, KEY=VALUE (repeatable; cannot replace the tool's own labels)
    #[arg(long = "pod-label", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub pod_label_flags: Vec<(String, String)>,
    /// Secret to pull the image with (repeatable)
    #[arg(long = "image-pull-secret", value_name = "NAME")]
    pub image_pull_secret_flags: Vec<String>,
    /// The config file's `node-selector`; the flags add to it.
    #[arg(skip)]
    pub node_selector: BTreeMap<String, String>,
    #[arg(skip)]
    pub pod_annotations: BTreeMap<String, String>,
    #[arg(skip)]
    pub pod_labels: BTreeMap<String, String>,
    #[arg(skip)]
    pub image_pull_secrets: Vec<serde_json::Value>,
    /// Config file only, checked in [`resolve`]: a pod spec's `resources`.
    #[arg(skip)]
    pub resources: Option<serde_json::Value>,
    #[arg(skip)]
    pub tolerations: Option<serde_json::Value>,
    #[arg(skip)]
    pub affinity: Option<serde_json::Value>,
    #[arg(skip)]
    pub extra_env: Option<serde_json::Value>,
}

impl PodInput {
    /// Fills what the flags left empty from `file`; for the maps and lists, the flags add
    /// to the file's entries, a flag's value winning for the same key.
    pub fn or(self, file: PodInput) -> PodInput {
        let merge = |mut from_file: BTreeMap<String, String>,
                     from_flags_map: BTreeMap<String, String>,
                     flags: Vec<(String, String)>| {
            from_file.extend(from_flags_map);
            from_file.extend(flags);
            from_file
        };
        let mut image_pull_secrets = file.image_pull_secrets;
        image_pull_secrets.extend(self.image_pull_secrets);
        image_pull_secrets.extend(
            self.image_pull_secret_flags
                .into_iter()
                .map(serde_json::Value::String),
        );
        PodInput {
            replicas: self.replicas.or(file.replicas),
            interval: self.interval.or(file.interval),
            log_level: self.log_level.or(file.log_level),
            prometheus: self.prometheus || file.prometheus,
            self_metrics: self.self_metrics.or(file.self_metrics),
            priority_class_name: self.priority_class_name.or(file.priority_class_name),
            node_selector_flags: Vec::new(),
            pod_annotation_flags: Vec::new(),
            pod_label_flags: Vec::new(),
            image_pull_secret_flags: Vec::new(),
            node_selector: merge(
                file.node_selector,
                self.node_selector,
                self.node_selector_flags,
            ),
            pod_annotations: merge(
                file.pod_annotations,
                self.pod_annotations,
                self.pod_annotation_flags,
            ),
            pod_labels: merge(file.pod_labels, self.pod_labels, self.pod_label_flags),
            image_pull_secrets,
            resources: self.resources.or(file.resources),
            tolerations: self.tolerations.or(file.tolerations),
            affinity: self.affinity.or(file.affinity),
            extra_env: self.extra_env.or(file.extra_env),
        }
    }
}

impl TargetInput {
    /// Fills every field the flags left empty from `file`.
    pub fn or(self, file: TargetInput) -> TargetInput {
        TargetInput {
            region: self.region.or(file.region),
            cluster: self.cluster.or(file.cluster),
            account: self.account.or(file.account),
            oidc_issuer: self.oidc_issuer.or(file.oidc_issuer),
            version: self.version.or(file.version),
            identity: self.identity.or(file.identity),
            namespace: self.namespace.or(file.namespace),
            image: self.image.or(file.image),
            role_name: self.role_name.or(file.role_name),
            publisher: self.publisher.or(file.publisher),
            publisher_repository: self.publisher_repository.or(file.publisher_repository),
            publisher_tag: self.publisher_tag.or(file.publisher_tag),
            publisher_image: self.publisher_image.or(file.publisher_image),
            leader_elect: self.leader_elect || file.leader_elect,
            pod: self.pod.or(file.pod),
            alarms: self.alarms.or(file.alarms),
        }
    }
}

/// What `plan`, `deploy` and `destroy` need beyond the render inputs: the names of the AWS
/// resources and how to reach the cluster.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DeployInput {
    /// IAM policy name, shared by the clusters of one account [default: AmazonEKSVPCCNIMetricsHelperPolicy]
    #[arg(long)]
    pub policy_name: Option<String>,
    /// CloudWatch dashboard name [default: CNI-Metrics-<cluster>-<region>]
    #[arg(long)]
    pub dashboard_name: Option<String>,
    /// Extra tag for the IAM role and policy and the alarms, KEY=VALUE (repeatable)
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub tag_flags: Vec<(String, String)>,
    /// Extra tags (config file only; `--tag` adds to them)
    #[arg(skip)]
    pub tags: std::collections::BTreeMap<String, String>,
    /// kubeconfig file [default: $KUBECONFIG, then ~/.kube/config]
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context [default: the current context]
    #[arg(long)]
    pub context: Option<String>,
    /// AWS profile whose credentials and settings to use (it wins over AWS_ACCESS_KEY_ID and friends) [default: the AWS CLI's credential chain]
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
}

impl DeployInput {
    /// Fills every field the flags left empty from `file`; tags from both are merged, the
    /// flags' value winning for the same key.
    pub fn or(self, file: DeployInput) -> DeployInput {
        let mut tags = file.tags;
        tags.extend(self.tags);
        tags.extend(self.tag_flags);
        DeployInput {
            policy_name: self.policy_name.or(file.policy_name),
            dashboard_name: self.dashboard_name.or(file.dashboard_name),
            tag_flags: Vec::new(),
            tags,
            kubeconfig: self.kubeconfig.or(file.kubeconfig),
            context: self.context.or(file.context),
            profile: self.profile.or(file.profile),
        }
    }
}

fn parse_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got '{text}'")),
    }
}

/// The YAML file given with `--config`: the flags' names as keys. It is one flat struct
/// (serde cannot refuse unknown keys across flattened structs), split into the same input
/// structs the flags fill.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConfigFile {
    region: Option<String>,
    cluster: Option<String>,
    account: Option<String>,
    oidc_issuer: Option<String>,
    version: Option<String>,
    identity: Option<IdentityMode>,
    namespace: Option<String>,
    image: Option<String>,
    role_name: Option<String>,
    publisher: Option<PublisherChoice>,
    publisher_repository: Option<String>,
    publisher_tag: Option<String>,
    publisher_image: Option<String>,
    #[serde(default)]
    leader_elect: bool,
    replicas: Option<u8>,
    interval: Option<u32>,
    log_level: Option<String>,
    #[serde(default)]
    prometheus: bool,
    self_metrics: Option<bool>,
    priority_class_name: Option<String>,
    #[serde(default)]
    node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pod_annotations: BTreeMap<String, String>,
    #[serde(default)]
    pod_labels: BTreeMap<String, String>,
    #[serde(default)]
    image_pull_secrets: Vec<serde_json::Value>,
    resources: Option<serde_json::Value>,
    tolerations: Option<serde_json::Value>,
    affinity: Option<serde_json::Value>,
    extra_env: Option<serde_json::Value>,
    policy_name: Option<String>,
    dashboard_name: Option<String>,
    #[serde(default)]
    tags: std::collections::BTreeMap<String, String>,
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
    profile: Option<String>,
    #[serde(default)]
    per_az: bool,
    #[serde(default)]
    zones: Vec<String>,
    #[serde(default)]
    alarms: crate::alarms::AlarmsFile,
    /// Where `render` writes its files.
    pub out: Option<PathBuf>,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<ConfigFile, SettingsError> {
        let text = fs::read_to_string(path).map_err(|error| SettingsError::ConfigRead {
            path: path.to_owned(),
            error,
        })?;
        serde_yaml::from_str(&text).map_err(|source| SettingsError::ConfigParse {
            path: path.to_owned(),
            message: source.to_string(),
        })
    }

    /// The render inputs the file holds.
    pub fn target(&self) -> TargetInput {
        TargetInput {
            region: self.region.clone(),
            cluster: self.cluster.clone(),
            account: self.account.clone(),
            oidc_issuer: self.oidc_issuer.clone(),
            version: self.version.clone(),
            identity: self.identity,
            namespace: self.namespace.clone(),
            image: self.image.clone(),
            role_name: self.role_name.clone(),
            publisher: self.publisher,
            publisher_repository: self.publisher_repository.clone(),
            publisher_tag: self.publisher_tag.clone(),
            publisher_image: self.publisher_image.clone(),
            leader_elect: self.leader_elect,
            pod: PodInput {
                replicas: self.replicas,
                interval: self.interval,
                log_level: self.log_level.clone(),
                prometheus: self.prometheus,
                self_metrics: self.self_metrics,
                priority_class_name: self.priority_class_name.clone(),
                node_selector: self.node_selector.clone(),
                pod_annotations: self.pod_annotations.clone(),
                pod_labels: self.pod_labels.clone(),
                image_pull_secrets: self.image_pull_secrets.clone(),
                resources: self.resources.clone(),
                tolerations: self.tolerations.clone(),
                affinity: self.affinity.clone(),
                extra_env: self.extra_env.clone(),
                ..PodInput::default()
            },
            alarms: crate::alarms::AlarmsInput {
                per_az: self.per_az,
                zones: self.zones.clone(),
                file: self.alarms.clone(),
                ..crate::alarms::AlarmsInput::default()
            },
        }
    }

    /// The deploy inputs the file holds.
    pub fn deploy(&self) -> DeployInput {
        DeployInput {
            policy_name: self.policy_name.clone(),
            dashboard_name: self.dashboard_name.clone(),
            tag_flags: Vec::new(),
            tags: self.tags.clone(),
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            profile: self.profile.clone(),
        }
    }

    /// The cluster, region and account the file names, for telling a fleet's configs
    /// apart before anything is resolved.
    pub fn identity(&self) -> (Option<&str>, Option<&str>, Option<&str>) {
        (
            self.cluster.as_deref(),
            self.region.as_deref(),
            self.account.as_deref(),
        )
    }
}

/// The image the helper's Deployment runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageChoice {
    /// Upstream's cni-metrics-helper from the region's ECR registry, at the pinned version.
    Upstream { registry_host: String },
    /// Upstream's helper from another place (`--image`, e.g. a mirror).
    Mirror(String),
    /// Our publisher (`--publisher-image`, or `--publisher ours` once its digest is known).
    Publisher(String),
    /// Our publisher from the account's ECR repository (`--publisher ours`): the image
    /// tagged `tag` in `repository`, run by its digest. [`crate::decide`] resolves it into
    /// [`ImageChoice::Publisher`] from the digest ECR reports, so a [`crate::decide::Target`]
    /// never holds it.
    Ours { repository: String, tag: String },
}

impl ImageChoice {
    /// The image reference for `version`.
    pub fn reference(&self, version: Version) -> String {
        match self {
            ImageChoice::Upstream { registry_host } => {
                format!("{registry_host}/cni-metrics-helper:{version}")
            }
            ImageChoice::Mirror(image) | ImageChoice::Publisher(image) => image.clone(),
            // Not a pullable reference: only what the digest is looked up by.
            ImageChoice::Ours { repository, tag } => format!("{repository}:{tag}"),
        }
    }

    pub fn is_publisher(&self) -> bool {
        match self {
            ImageChoice::Publisher(_) | ImageChoice::Ours { .. } => true,
            ImageChoice::Upstream { .. } | ImageChoice::Mirror(_) => false,
        }
    }
}

/// What the user asked for, validated once: every string here is known to be well formed,
/// and nothing later validates it again. What is not known until the live account and
/// cluster are read (the account when not given, the issuer, which identity `auto` means)
/// is settled by [`crate::decide`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub region: ResolvedRegion<'static>,
    pub cluster: String,
    /// `--account`: checked against the caller's account, or all there is offline.
    pub account: Option<String>,
    /// `--oidc-issuer`, reduced to what IAM calls the provider (`host/path`).
    pub oidc_issuer_host_path: Option<String>,
    pub version: Version,
    /// The oldest release whose upstream helper can use EKS Pod Identity (from the
    /// versions table); kept beside `version` because `upgrade` moves `version` along.
    pub pod_identity_since: Version,
    pub identity: IdentityMode,
    pub namespace: String,
    pub image: ImageChoice,
    pub leader_elect: bool,
    /// The pod knobs (replicas, resources, tolerations, ...), validated.
    pub pod: crate::pod::PodSettings,
    pub role_name: String,
    pub policy_name: String,
    pub dashboard_name: String,
    /// `--tag`s for the role and the policy, beside our own marks.
    pub tags: BTreeMap<String, String>,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// The AWS profile to take credentials from instead of the default chain.
    pub profile: Option<String>,
    /// `--per-az`: our publisher also publishes the IP capacity metrics per zone.
    pub per_az: bool,
    /// The CloudWatch alarms a deploy keeps.
    pub alarms: crate::alarms::AlarmSettings,
}

impl Settings {
    /// Whether the image that runs can use EKS Pod Identity: our publisher always can (the
    /// Rust AWS SDK knows the agent); upstream's helper only from `pod_identity_since` on,
    /// whose images are built with an AWS SDK that knows the agent.
    pub fn image_supports_pod_identity(&self) -> bool {
        match self.image {
            ImageChoice::Publisher(_) | ImageChoice::Ours { .. } => true,
            ImageChoice::Upstream { .. } | ImageChoice::Mirror(_) => {
                self.version >= self.pod_identity_since
            }
        }
    }

    /// The same settings at another version (what `upgrade` steps through).
    pub fn at_version(&self, version: Version) -> Settings {
        Settings {
            version,
            ..self.clone()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "this command works on one cluster at a time: give it one --config file (several, or a directory, make a fleet, which plan, deploy, status and upgrade take)"
    )]
    OneClusterOnly,
    #[error("{flag} is required{hint}")]
    Missing {
        flag: &'static str,
        hint: &'static str,
    },
    #[error("cannot read the config file {}: {error}", path.display())]
    ConfigRead {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the config file {} is not valid: {message}", path.display())]
    ConfigParse { path: PathBuf, message: String },
    #[error(
        "invalid --cluster '{0}': an EKS cluster name is 1-100 characters of letters, digits, '-' and '_', starting with a letter or digit"
    )]
    Cluster(String),
    #[error("invalid --account '{0}': an AWS account id is exactly 12 digits (keep leading zeros)")]
    Account(String),
    #[error(
        "invalid --oidc-issuer '{0}': expected an https URL such as https://oidc.eks.us-west-2.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE (aws eks describe-cluster --name <cluster> --query cluster.identity.oidc.issuer)"
    )]
    OidcIssuer(String),
    #[error(
        "invalid --namespace '{0}': a namespace is 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit"
    )]
    Namespace(String),
    #[error(
        "invalid --role-name '{0}': an IAM role name is 1-64 characters of letters, digits and +=,.@_-"
    )]
    RoleName(String),
    #[error(
        "invalid --image '{0}': expected an image reference such as registry.example.com/cni-metrics-helper:v1.23.0"
    )]
    Image(String),
    #[error("invalid --region")]
    Region(#[from] RegionError),
    #[error("invalid --version")]
    Version(#[from] VersionError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(
        "--image, --publisher-image and --publisher ours each choose the image to run; give one of them"
    )]
    TwoImages,
    #[error(
        "--publisher-repository and --publisher-tag choose the image of --publisher ours; add --publisher ours"
    )]
    OursOptionsWithoutOurs,
    #[error(
        "invalid --publisher-repository '{0}': an ECR repository name is 2-256 lowercase letters, digits and ._-/ , starting with a letter or digit"
    )]
    Repository(String),
    #[error(
        "invalid --publisher-tag '{0}': an image tag is 1-128 letters, digits and ._- , not starting with . or -"
    )]
    ImageTag(String),
    #[error(transparent)]
    NoUpstreamImage(RegionError),
    #[error(
        "invalid --policy-name '{0}': an IAM policy name is 1-128 characters of letters, digits and +=,.@_-"
    )]
    PolicyName(String),
    #[error(
        "invalid --dashboard-name '{0}': a dashboard name is 1-255 characters of letters, digits, '-' and '_'"
    )]
    DashboardName(String),
    #[error("invalid --tag '{key}': {problem}")]
    Tag { key: String, problem: &'static str },
    #[error(
        "--leader-elect needs our publisher (--publisher ours or --publisher-image): the upstream helper has no leader election, so it runs one replica"
    )]
    LeaderElectNeedsPublisher,
    #[error(transparent)]
    Pod(#[from] crate::pod::PodError),
    #[error(transparent)]
    Alarms(#[from] crate::alarms::AlarmError),
}

/// The default name of the permission policy, as in the EKS user guide.
pub const DEFAULT_POLICY_NAME: &str = "AmazonEKSVPCCNIMetricsHelperPolicy";

/// Validates every input and fills in the defaults. `region` is the region when the flags
/// and the file give none (the AWS region chain, for the commands that talk to AWS).
pub fn resolve(
    target: &TargetInput,
    deploy: &DeployInput,
    region_from_chain: Option<String>,
    catalog: &'static Catalog,
) -> Result<Settings, SettingsError> {
    let region_name =
        target
            .region
            .clone()
            .or(region_from_chain)
            .ok_or(SettingsError::Missing {
                flag: "--region",
                hint: " (e.g. --region us-west-2, or AWS_REGION)",
            })?;
    // Resolving first refuses an unknown region before anything else is looked at.
    let region = catalog.resolve_region(&region_name)?;
    let cluster = target.cluster.clone().ok_or(SettingsError::Missing {
        flag: "--cluster",
        hint: " (the EKS cluster name)",
    })?;
    if !is_cluster_name(&cluster) {
        return Err(SettingsError::Cluster(cluster));
    }
    if let Some(account) = &target.account
        && !crate::catalog::is_account_id(account)
    {
        return Err(SettingsError::Account(account.clone()));
    }
    let oidc_issuer_host_path = target
        .oidc_issuer
        .as_deref()
        .map(|issuer| {
            issuer_host_path(issuer).ok_or_else(|| SettingsError::OidcIssuer(issuer.to_owned()))
        })
        .transpose()?;
    let version = match &target.version {
        Some(text) => catalog.known_version(text)?,
        None => catalog.latest_version().ok_or(DataError {
            file: "templates/data/versions.txt",
            line: 0,
            problem: "no versions listed".to_owned(),
        })?,
    };
    let pod_identity_since = catalog.pod_identity_since().ok_or(DataError {
        file: "templates/data/versions.txt",
        line: 0,
        problem: "no release says pod_identity yes".to_owned(),
    })?;
    let namespace = target
        .namespace
        .clone()
        .unwrap_or_else(|| "kube-system".to_owned());
    if !is_dns_label(&namespace) {
        return Err(SettingsError::Namespace(namespace));
    }
    let image = image_choice(target, &region, catalog)?;
    if target.leader_elect && !image.is_publisher() {
        return Err(SettingsError::LeaderElectNeedsPublisher);
    }
    let pod = crate::pod::resolve(crate::pod::PodInputs {
        input: &target.pod,
        publisher: image.is_publisher(),
        leader_elect: target.leader_elect,
    })?;
    let alarms = crate::alarms::resolve(
        &target.alarms,
        &crate::alarms::AlarmContext {
            cluster: &cluster,
            region: &region.name,
            partition: &region.partition.id,
            publisher: image.is_publisher(),
            self_metrics: pod.self_metrics,
            interval: pod.interval,
        },
    )?;
    let role_name = match &target.role_name {
        Some(name) if is_role_name(name) => name.clone(),
        Some(name) => return Err(SettingsError::RoleName(name.clone())),
        None => default_role_name(&cluster, &region.name),
    };
    let policy_name = deploy
        .policy_name
        .clone()
        .unwrap_or_else(|| DEFAULT_POLICY_NAME.to_owned());
    if !is_iam_name(&policy_name, POLICY_NAME_MAX) {
        return Err(SettingsError::PolicyName(policy_name));
    }
    let dashboard_name = deploy
        .dashboard_name
        .clone()
        .unwrap_or_else(|| default_dashboard_name(&cluster, &region.name));
    if !is_dashboard_name(&dashboard_name) {
        return Err(SettingsError::DashboardName(dashboard_name));
    }
    for (key, value) in &deploy.tags {
        check_tag(key, value)?;
    }
    Ok(Settings {
        region,
        cluster,
        account: target.account.clone(),
        oidc_issuer_host_path,
        version,
        pod_identity_since,
        identity: target.identity.unwrap_or(IdentityMode::Irsa),
        namespace,
        image,
        leader_elect: target.leader_elect,
        pod,
        role_name,
        policy_name,
        dashboard_name,
        tags: deploy.tags.clone(),
        kubeconfig: deploy.kubeconfig.clone(),
        context: deploy.context.clone(),
        profile: deploy.profile.clone(),
        per_az: target.alarms.per_az,
        alarms,
    })
}

/// Which image runs: one of `--image` and `--publisher-image`, or upstream's from the
/// region's registry, which must then be known.
fn image_choice(
    target: &TargetInput,
    region: &ResolvedRegion<'static>,
    catalog: &Catalog,
) -> Result<ImageChoice, SettingsError> {
    for image in [&target.image, &target.publisher_image]
        .into_iter()
        .flatten()
    {
        if !is_image_reference(image) {
            return Err(SettingsError::Image(image.clone()));
        }
    }
    let ours = match target.publisher {
        Some(PublisherChoice::Ours) => Some(ours_image(target)?),
        Some(PublisherChoice::Upstream) | None => {
            if target.publisher_repository.is_some() || target.publisher_tag.is_some() {
                return Err(SettingsError::OursOptionsWithoutOurs);
            }
            None
        }
    };
    match (&target.image, &target.publisher_image, ours) {
        (Some(_), Some(_), _) | (Some(_), None, Some(_)) | (None, Some(_), Some(_)) => {
            Err(SettingsError::TwoImages)
        }
        (Some(image), None, None) => Ok(ImageChoice::Mirror(image.clone())),
        (None, Some(image), None) => Ok(ImageChoice::Publisher(image.clone())),
        (None, None, Some(ours)) => Ok(ours),
        (None, None, None) => region
            .upstream_registry_host(catalog)
            .map(|registry_host| ImageChoice::Upstream { registry_host })
            .map_err(SettingsError::NoUpstreamImage),
    }
}

/// The default ECR repository of our publisher's image.
pub const DEFAULT_PUBLISHER_REPOSITORY: &str = "cni-metrics-publisher";

/// `--publisher ours` with its repository and tag, validated.
fn ours_image(target: &TargetInput) -> Result<ImageChoice, SettingsError> {
    let repository = target
        .publisher_repository
        .clone()
        .unwrap_or_else(|| DEFAULT_PUBLISHER_REPOSITORY.to_owned());
    if !is_repository_name(&repository) {
        return Err(SettingsError::Repository(repository));
    }
    let tag = target
        .publisher_tag
        .clone()
        .unwrap_or_else(|| cni_metrics_publisher::VERSION.to_owned());
    if !is_image_tag(&tag) {
        return Err(SettingsError::ImageTag(tag));
    }
    Ok(ImageChoice::Ours { repository, tag })
}

/// ECR's repository name pattern: `(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*`.
pub fn is_repository_name(name: &str) -> bool {
    let component_ok = |component: &str| {
        !component.is_empty()
            && component.split(['.', '_', '-']).all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit())
            })
    };
    (2..=256).contains(&name.len()) && name.split('/').all(component_ok)
}

/// The OCI tag grammar: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn is_image_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphanumeric() || first == b'_')
        && tag.len() <= 128
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

fn is_dashboard_name(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A `--tag` IAM would accept and that does not touch our own marks.
fn check_tag(key: &str, value: &str) -> Result<(), SettingsError> {
    let problem = if key.is_empty() || key.chars().count() > 128 {
        Some("a tag key is 1-128 characters")
    } else if value.chars().count() > 256 {
        Some("a tag value is at most 256 characters")
    } else if !key.chars().all(is_tag_character) || !value.chars().all(is_tag_character) {
        // Refused here rather than by IAM, after earlier steps would have run.
        Some("IAM tags allow only letters, digits, spaces and _ . : / = + - @")
    } else if key.to_ascii_lowercase().starts_with("aws:") {
        Some("the aws: prefix is reserved by AWS")
    } else if crate::ownership::RESERVED_TAGS
        .iter()
        .any(|reserved| key.eq_ignore_ascii_case(reserved))
    {
        // IAM tag keys are case-insensitive: `Managed-By` would replace our mark.
        Some("this tool sets that tag itself")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(SettingsError::Tag {
            key: key.to_owned(),
            problem,
        }),
        None => Ok(()),
    }
}

/// IAM's tag alphabet: `[\p{L}\p{Z}\p{N}_.:/=+\-@]`.
fn is_tag_character(c: char) -> bool {
    c.is_alphanumeric() || (c.is_whitespace() && !c.is_control()) || "_.:/=+-@".contains(c)
}

/// `AmazonEKSVPCCNIMetricsHelperRole-<cluster>-<region>`, kept within IAM's 64 characters.
///
/// The region is part of the name because IAM roles are per account, not per region: two
/// clusters called `prod` in two regions must not share (and rewrite) one role. When the
/// whole name does not fit, the cluster name is cut and a hash of the cluster and region is
/// put after it, so two long names that share a prefix still get different roles; the
/// region stays readable at the end.
pub fn default_role_name(cluster: &str, region: &str) -> String {
    let full = format!("{DEFAULT_ROLE_PREFIX}-{cluster}-{region}");
    if full.len() <= ROLE_NAME_MAX {
        return full;
    }
    let hash = format!("{:08x}", fnv1a_32(format!("{cluster}/{region}").as_bytes()));
    // PREFIX-<cluster cut>-<hash>-<region>
    let fixed = DEFAULT_ROLE_PREFIX.len() + 1 + 1 + hash.len() + 1 + region.len();
    match ROLE_NAME_MAX.checked_sub(fixed).filter(|room| *room > 0) {
        // Cluster names are ASCII, so cutting at a byte index is cutting at a character.
        Some(room) => format!(
            "{DEFAULT_ROLE_PREFIX}-{}-{hash}-{region}",
            &cluster[..room.min(cluster.len())]
        ),
        // A region name too long to show (none is today): the hash alone keeps it apart.
        None => format!("{DEFAULT_ROLE_PREFIX}-{hash}"),
    }
}

/// `CNI-Metrics-<cluster>-<region>`: dashboards are global per account, so the region is
/// part of the name for the same reason as in [`default_role_name`].
pub fn default_dashboard_name(cluster: &str, region: &str) -> String {
    format!("CNI-Metrics-{cluster}-{region}")
}

/// FNV-1a: tiny, stable across releases and platforms, which is all a name suffix needs.
fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, &byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

fn is_cluster_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=100).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    (1..=63).contains(&bytes.len())
        && bytes.iter().all(allowed)
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn is_role_name(name: &str) -> bool {
    is_iam_name(name, ROLE_NAME_MAX)
}

/// Whether `name` is a valid IAM role or policy name of at most `max` characters: letters,
/// digits and `+=,.@_-`.
pub fn is_iam_name(name: &str, max: usize) -> bool {
    (1..=max).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

fn is_image_reference(image: &str) -> bool {
    (1..=512).contains(&image.len())
        && !image.starts_with(['-', '/', ':', '@'])
        && image.bytes().all(|b| b.is_ascii_graphic())
}

/// `https://oidc.eks.us-west-2.amazonaws.com/id/ABC/` -> `oidc.eks.us-west-2.amazonaws.com/id/ABC`.
pub fn issuer_host_path(issuer: &str) -> Option<String> {
    let rest = issuer.strip_prefix("https://")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host_ok = !host.is_empty()
        && !host.starts_with(['.', '-'])
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    let path_ok = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._~-/".contains(&b))
        && !rest.contains("//");
    (host_ok && path_ok).then(|| rest.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_role_name_fits_iam_for_every_valid_cluster_name_and_region() {
        assert_eq!(
            default_role_name("prod", "eu-west-1"),
            "AmazonEKSVPCCNIMetricsHelperRole-prod-eu-west-1"
        );
        assert_ne!(
            default_role_name("prod", "us-east-1"),
            default_role_name("prod", "eu-west-1"),
            "the same cluster name in two regions gets two roles"
        );
        let region = "us-west-2";
        let exactly_fits = "c".repeat(ROLE_NAME_MAX - DEFAULT_ROLE_PREFIX.len() - 2 - region.len());
        let name = default_role_name(&exactly_fits, region);
        assert_eq!(name.len(), ROLE_NAME_MAX, "a name that fits is kept whole");
        assert!(name.ends_with(&format!("{exactly_fits}-{region}")));
        // The longest region names of every partition, and every cluster name length.
        for region in [
            "us-west-2",
            "us-isof-south-1",
            "eusc-de-east-1",
            "cn-northwest-1",
        ] {
            for length in [1, 20, 22, 23, 32, 33, 64, 99, 100] {
                let name = default_role_name(&"x".repeat(length), region);
                assert!(name.len() <= ROLE_NAME_MAX, "{name} is too long");
                assert!(is_role_name(&name), "{name}");
                assert!(name.ends_with(region), "{name} shows its region");
            }
        }
        let a = "a-very-long-cluster-name-for-the-payments-team-1";
        let b = "a-very-long-cluster-name-for-the-payments-team-2";
        assert_ne!(default_role_name(a, region), default_role_name(b, region));
        assert_ne!(
            default_role_name(a, "us-east-1"),
            default_role_name(a, "us-east-2")
        );
        assert_eq!(
            default_role_name(&"x".repeat(10), &"r".repeat(40)).len(),
            DEFAULT_ROLE_PREFIX.len() + 9,
            "a region too long to show leaves the hash alone"
        );
    }

    #[test]
    fn default_dashboard_name_names_cluster_and_region() {
        assert_eq!(
            default_dashboard_name("prod", "eu-west-1"),
            "CNI-Metrics-prod-eu-west-1"
        );
    }

    #[test]
    fn issuer_is_reduced_to_what_iam_calls_the_provider() {
        assert_eq!(
            issuer_host_path("https://oidc.eks.us-west-2.amazonaws.com/id/ABC").as_deref(),
            Some("oidc.eks.us-west-2.amazonaws.com/id/ABC")
        );
        assert_eq!(
            issuer_host_path("https://oidc.eks.cn-north-1.amazonaws.com.cn/id/ABC/").as_deref(),
            Some("oidc.eks.cn-north-1.amazonaws.com.cn/id/ABC")
        );
        for bad in [
            "http://oidc.eks.us-west-2.amazonaws.com/id/ABC",
            "oidc.eks.us-west-2.amazonaws.com/id/ABC",
            "https://",
            "https:///id/ABC",
            "https://host/id/ABC?x=1",
            "https://host/id/ABC#frag",
            "https://user@host/id",
            "https://host//id",
            "https://ho st/id",
        ] {
            assert_eq!(issuer_host_path(bad), None, "{bad} must be refused");
        }
    }

    #[test]
    fn names_are_validated_like_the_services_do() {
        assert!(is_cluster_name("prod_eu-1"));
        assert!(!is_cluster_name("-prod"));
        assert!(!is_cluster_name(""));
        assert!(!is_cluster_name(&"x".repeat(101)));
        assert!(!is_cluster_name("prod.eu"));
        assert!(is_dns_label("kube-system"));
        assert!(!is_dns_label("Kube-system"));
        assert!(!is_dns_label("kube-"));
        assert!(is_role_name("My+Role=1,2.@_-"));
        assert!(!is_role_name("role/with/slash"));
        assert!(is_image_reference(
            "registry.example.com:5000/cni-metrics-helper:v1.23.0"
        ));
        assert!(!is_image_reference("has space:v1"));
    }
}
