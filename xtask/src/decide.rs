//! Decide: from what the user asked for ([`Settings`]) and what is live ([`Facts`]) to the
//! one [`Target`] everything is rendered, planned and checked for. Pure: no call, no I/O,
//! so every decision (which identity `auto` means, which issuer is trusted, which names
//! and ARNs and tags the resources get) is made here, once, and can be tested alone.

use std::collections::BTreeMap;

use crate::arn;
use crate::catalog::Version;
use crate::facts::{ClusterState, Facts};
use crate::ownership::{CLUSTER_TAG, MANAGED_BY, MANAGED_BY_TAG, REGION_TAG};
use crate::settings::{IdentityMode, ImageChoice, Settings};

/// How the helper's pods get AWS credentials, decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// IAM roles for service accounts: the role trusts this OIDC provider (`host/path`).
    Irsa { issuer_host_path: String },
    /// EKS Pod Identity: the role trusts `pods.eks.amazonaws.com`; an association binds it.
    PodIdentity,
}

impl Identity {
    pub fn as_str(&self) -> &'static str {
        match self {
            Identity::Irsa { .. } => IdentityMode::Irsa.as_str(),
            Identity::PodIdentity => IdentityMode::PodIdentity.as_str(),
        }
    }
}

/// Everything one deployment is rendered, planned and checked for. (Not `Eq`: the pod
/// knobs hold k8s-openapi types, which are only `PartialEq`.)
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub region: String,
    pub partition: String,
    pub cluster: String,
    pub account: String,
    pub identity: Identity,
    /// Why `--identity auto` chose `identity`, for the log; `None` when it was not auto.
    pub identity_reason: Option<String>,
    pub version: Version,
    pub namespace: String,
    pub image: ImageChoice,
    pub leader_elect: bool,
    pub pod: crate::pod::PodSettings,
    pub role_name: String,
    pub role_arn: String,
    pub policy_name: String,
    pub policy_arn: String,
    pub cluster_arn: String,
    pub dashboard_name: String,
    /// Our marks (managed-by, cluster, region) and the user's tags.
    pub role_tags: BTreeMap<String, String>,
    /// The policy is shared by the clusters of the account, so it names none of them.
    pub policy_tags: BTreeMap<String, String>,
    /// `--per-az`: our publisher publishes the IP capacity metrics per zone too.
    pub per_az: bool,
    /// The alarms a deploy keeps; they carry `role_tags`, as they serve one cluster.
    pub alarms: crate::alarms::AlarmSettings,
}

impl Target {
    /// The image reference the Deployment runs.
    pub fn image(&self) -> String {
        self.image.reference(self.version)
    }

    /// Whether our publisher runs instead of upstream's helper.
    pub fn publisher(&self) -> bool {
        self.image.is_publisher()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecideError {
    #[error(
        "--oidc-issuer is required with --identity irsa (aws eks describe-cluster --name <cluster> --query cluster.identity.oidc.issuer)"
    )]
    MissingIssuer,
    #[error(
        "EKS cluster {cluster} has no OIDC issuer, which IRSA needs; use --identity pod-identity, or check the cluster (aws eks describe-cluster --name {cluster} --query cluster.identity)"
    )]
    NoOidcIssuer { cluster: String },
    #[error(
        "--identity auto is decided from the live cluster (its eks-pod-identity-agent add-on); for render choose irsa or pod-identity"
    )]
    AutoIdentityOffline,
    #[error(
        "upstream's cni-metrics-helper {version} cannot use EKS Pod Identity (its AWS SDK predates the Pod Identity agent; {since} is the first release that can): \
         pass --version {since} or later, or --identity irsa, or run our publisher (--publisher ours)"
    )]
    PodIdentityUnsupported { version: Version, since: Version },
    #[error(
        "--publisher ours runs the image by its digest in your ECR registry, which was not read; \
         run with AWS credentials, or pass --publisher-image <repository URI>@sha256:..."
    )]
    PublisherDigestUnknown,
}

/// The image the Deployment runs: `--publisher ours` becomes the digest ECR reported.
fn image(settings: &Settings, facts: &Facts) -> Result<ImageChoice, DecideError> {
    match &settings.image {
        ImageChoice::Ours { .. } => facts
            .publisher_image
            .clone()
            .map(ImageChoice::Publisher)
            .ok_or(DecideError::PublisherDigestUnknown),
        ImageChoice::Upstream { .. } | ImageChoice::Mirror(_) | ImageChoice::Publisher(_) => {
            Ok(settings.image.clone())
        }
    }
}

/// Decides the target of `settings` given `facts`.
pub fn decide(settings: &Settings, facts: &Facts) -> Result<Target, DecideError> {
    let (identity, identity_reason) = identity(settings, facts)?;
    let partition = facts.caller.partition.clone();
    let account = facts.caller.account.clone();
    let region = settings.region.name.clone();
    let cluster = settings.cluster.clone();
    let mut policy_tags = settings.tags.clone();
    policy_tags.insert(MANAGED_BY_TAG.to_owned(), MANAGED_BY.to_owned());
    let mut role_tags = policy_tags.clone();
    role_tags.insert(CLUSTER_TAG.to_owned(), cluster.clone());
    role_tags.insert(REGION_TAG.to_owned(), region.clone());
    let cluster_arn = match &facts.cluster {
        ClusterState::Live { arn, .. } if !arn.is_empty() => arn.clone(),
        ClusterState::Live { .. } | ClusterState::Gone | ClusterState::Offline { .. } => {
            arn::cluster(&partition, &region, &account, &cluster)
        }
    };
    Ok(Target {
        role_arn: arn::role(&partition, &account, &settings.role_name),
        policy_arn: arn::policy(&partition, &account, &settings.policy_name),
        cluster_arn,
        region,
        partition,
        cluster,
        account,
        identity,
        identity_reason,
        version: settings.version,
        namespace: settings.namespace.clone(),
        image: image(settings, facts)?,
        leader_elect: settings.leader_elect,
        pod: settings.pod.clone(),
        role_name: settings.role_name.clone(),
        policy_name: settings.policy_name.clone(),
        dashboard_name: settings.dashboard_name.clone(),
        role_tags,
        policy_tags,
        per_az: settings.per_az,
        alarms: settings.alarms.clone(),
    })
}

/// `irsa` needs an issuer; `auto` is Pod Identity when the agent add-on is ACTIVE and the
/// image can use it, IRSA otherwise, with the reason. `pod-identity` is refused for an
/// upstream version that cannot use it, as its pods would get no credentials. For a
/// cluster that is gone (`destroy`), only the names matter, and they do not depend on the
/// identity, so what cannot be decided any more is taken as Pod Identity.
fn identity(settings: &Settings, facts: &Facts) -> Result<(Identity, Option<String>), DecideError> {
    const AGENT: &str = "the eks-pod-identity-agent add-on";
    let supported = settings.image_supports_pod_identity();
    let (mode, reason) = match (settings.identity, facts.agent_active, &facts.cluster) {
        (IdentityMode::Auto, Some(true), _) if !supported => (
            IdentityMode::Irsa,
            Some(format!(
                "upstream's helper {} cannot use Pod Identity ({} is the first release that can), although {AGENT} is ACTIVE",
                settings.version, settings.pod_identity_since
            )),
        ),
        (IdentityMode::Auto, Some(true), _) => (
            IdentityMode::PodIdentity,
            Some(format!("{AGENT} is ACTIVE")),
        ),
        (IdentityMode::Auto, Some(false), _) => {
            (IdentityMode::Irsa, Some(format!("{AGENT} is not ACTIVE")))
        }
        (IdentityMode::Auto, None, ClusterState::Offline { .. }) => {
            return Err(DecideError::AutoIdentityOffline);
        }
        (IdentityMode::Auto, None, ClusterState::Live { .. } | ClusterState::Gone) => {
            (IdentityMode::PodIdentity, None)
        }
        (
            IdentityMode::PodIdentity,
            _,
            ClusterState::Live { .. } | ClusterState::Offline { .. },
        ) if !supported => {
            return Err(DecideError::PodIdentityUnsupported {
                version: settings.version,
                since: settings.pod_identity_since,
            });
        }
        (mode @ (IdentityMode::Irsa | IdentityMode::PodIdentity), _, _) => (mode, None),
    };
    let identity = match (mode, &facts.cluster) {
        (IdentityMode::PodIdentity | IdentityMode::Auto, _)
        | (IdentityMode::Irsa, ClusterState::Gone) => Identity::PodIdentity,
        (
            IdentityMode::Irsa,
            ClusterState::Live {
                issuer_host_path: Some(issuer),
                ..
            }
            | ClusterState::Offline {
                issuer_host_path: Some(issuer),
            },
        ) => Identity::Irsa {
            issuer_host_path: issuer.clone(),
        },
        (
            IdentityMode::Irsa,
            ClusterState::Offline {
                issuer_host_path: None,
            },
        ) => return Err(DecideError::MissingIssuer),
        (
            IdentityMode::Irsa,
            ClusterState::Live {
                issuer_host_path: None,
                ..
            },
        ) => {
            return Err(DecideError::NoOidcIssuer {
                cluster: settings.cluster.clone(),
            });
        }
    };
    Ok((identity, reason))
}
