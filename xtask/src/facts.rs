//! Live facts the deployment is decided from, read rather than asked for: who the caller
//! is (account and partition, from STS), the cluster (ARN, endpoint, OIDC issuer, from
//! EKS), whether its Pod Identity agent is active, whether IAM trusts its issuer with the
//! audience our trust policy uses, what IAM's policy simulator says the caller may do with
//! the CloudWatch alarms deploy manages, and the Kubernetes connection with what the caller
//! may do there. Everything live is read here, once; what it means is decided by
//! [`crate::decide`], and what must hold by [`crate::preflight::check`].

use aws_config::SdkConfig;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::arn;
use crate::aws::{AwsError, missing_as_none};
use crate::registry::ecr::{self, EcrError};
use crate::settings::{IRSA_AUDIENCE, IdentityMode, ImageChoice, Settings, issuer_host_path};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

/// Who makes the calls.
#[derive(Debug, Clone)]
pub struct Caller {
    pub account: String,
    /// Empty offline, where only `--account` is known.
    pub arn: String,
    pub partition: String,
}

/// The EKS cluster as the deployment sees it.
#[derive(Debug, Clone)]
pub enum ClusterState {
    /// Read from EKS: the cluster exists and is ACTIVE.
    Live {
        arn: String,
        endpoint: Option<String>,
        /// The OIDC issuer, as IAM names providers (`host/path`).
        issuer_host_path: Option<String>,
    },
    /// EKS has no such cluster (only `destroy` goes on: it cleans up after one).
    Gone,
    /// Not read at all (`render`): what the flags say.
    Offline { issuer_host_path: Option<String> },
}

/// The outcome of checking the cluster's IAM OIDC provider; a missing provider or audience
/// is a failed preflight check (with its fix), not an error that stops everything.
#[derive(Debug, Clone)]
pub enum OidcProviderState {
    Trusted { issuer_host_path: String },
    Problem { detail: String, fix: String },
}

/// The Kubernetes connection, when the Kubernetes scope is in use.
#[derive(Clone)]
pub struct KubeConnection {
    pub client: kube::Client,
    /// The API server URL the kubeconfig points at.
    pub url: String,
    /// Whether the caller may apply the objects (only asked of a live cluster).
    pub permissions: Option<Permissions>,
}

/// What the API server said the caller may not do, as `verb resource [in namespace]`.
#[derive(Debug, Clone)]
pub enum Permissions {
    Missing(Vec<String>),
    /// The reviews could not be asked at all.
    Unanswered(String),
}

/// What the caller itself (the identity running `deploy`, not the helper's role) must be
/// allowed to do for the CloudWatch alarms deploy manages.
pub const CALLER_ALARM_ACTIONS: [&str; 5] = [
    "cloudwatch:PutMetricAlarm",
    "cloudwatch:DeleteAlarms",
    "cloudwatch:DescribeAlarms",
    "cloudwatch:TagResource",
    "cloudwatch:ListTagsForResource",
];

/// What IAM's policy simulator says the caller may do with the alarms
/// ([`CALLER_ALARM_ACTIONS`]). Never an error: when the simulation cannot be run, that is
/// reported as [`AlarmPermissions::Unverified`] and nothing is blocked on it.
#[derive(Debug, Clone)]
pub enum AlarmPermissions {
    /// `iam:SimulatePrincipalPolicy` answered for `principal` (the IAM user, or the role
    /// behind an assumed-role session), one decision per needed action, in the order of
    /// [`CALLER_ALARM_ACTIONS`].
    Simulated {
        principal: String,
        decisions: Vec<ActionDecision>,
    },
    /// Not simulated, and why.
    Unverified(Unverified),
}

/// IAM's decision on one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionDecision {
    pub action: String,
    pub decision: Decision,
    /// Condition keys the caller's policies ask about that the simulation had no value
    /// for: a denial with any of them may not be what a real request gets.
    pub missing_context: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// No statement allows it.
    ImplicitDeny,
    /// A statement denies it; no Allow can override that.
    ExplicitDeny,
    /// A decision this SDK does not know, as IAM spelled it.
    Other(String),
}

/// Why the caller's alarm permissions were not simulated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unverified {
    /// The account's root user: IAM policies do not apply to it, and the simulator takes
    /// only IAM users, groups and roles.
    Root,
    /// A federated user (`sts:GetFederationToken`): its permissions are an IAM user's
    /// narrowed by a session policy, neither of which the simulator can be pointed at.
    FederatedUser,
    /// A caller ARN that is neither an IAM user nor an assumed role.
    UnknownPrincipal,
    /// The caller may not ask: the IAM `operation` (`GetRole`, `SimulatePrincipalPolicy`)
    /// was refused with AccessDenied (its error on one line).
    Refused {
        operation: &'static str,
        error: String,
    },
    /// The IAM `operation` failed otherwise (its error on one line).
    Failed {
        operation: &'static str,
        error: String,
    },
}

/// The add-on that serves Pod Identity credentials on the nodes.
pub const AGENT_ADDON: &str = "eks-pod-identity-agent";

#[derive(Clone)]
pub struct Facts {
    pub caller: Caller,
    pub cluster: ClusterState,
    /// Whether the `eks-pod-identity-agent` add-on is ACTIVE: asked only when the identity
    /// is `pod-identity` or `auto`, of a live cluster.
    pub agent_active: Option<bool>,
    /// Asked only when the identity may be IRSA, of a live cluster with an issuer.
    pub oidc_provider: Option<OidcProviderState>,
    pub kube: Option<KubeConnection>,
    /// Whether `--context` chose the kube context on purpose (then it need not be the
    /// cluster's endpoint).
    pub kube_context_explicit: bool,
    /// With `--publisher ours`: the pushed image's reference by digest,
    /// `<repository URI>@sha256:...`, as ECR reports it.
    pub publisher_image: Option<String>,
    /// What the caller may do with the CloudWatch alarms, as IAM simulates it; not asked
    /// offline, nor by [`gather`] without the alarms scope.
    pub alarm_permissions: Option<AlarmPermissions>,
}

impl std::fmt::Debug for Facts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Facts")
            .field("caller", &self.caller)
            .field("cluster", &self.cluster)
            .field("agent_active", &self.agent_active)
            .field("oidc_provider", &self.oidc_provider)
            .field("kube", &self.kube.as_ref().map(|kube| &kube.url))
            .field("publisher_image", &self.publisher_image)
            .field("alarm_permissions", &self.alarm_permissions)
            .finish()
    }
}

/// Whether the EKS cluster must exist: `destroy` also cleans up after a deleted cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterRequirement {
    MustExist,
    MayBeGone,
}

#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error(
        "cannot tell who the AWS caller is; check your AWS credentials (aws sts get-caller-identity)"
    )]
    Caller(#[source] AwsError),
    #[error("sts:GetCallerIdentity answered without a usable caller: {0}")]
    CallerReply(String),
    #[error(
        "the AWS credentials belong to partition {caller_partition} ({caller_arn}) but region {region} is in partition {region_partition}; use credentials of the {region_partition} partition"
    )]
    PartitionMismatch {
        caller_arn: String,
        caller_partition: String,
        region: String,
        region_partition: String,
    },
    #[error(
        "the AWS account given ({given}) is not the caller's account ({actual}); drop --account or use credentials of account {given}"
    )]
    AccountMismatch { given: String, actual: String },
    #[error(
        "EKS cluster {cluster} was not found in {region}; check --cluster and --region (aws eks list-clusters --region {region})"
    )]
    ClusterNotFound { cluster: String, region: String },
    #[error(transparent)]
    DescribeCluster(AwsError),
    #[error("eks:DescribeCluster answered without the cluster {cluster}")]
    NoClusterInReply { cluster: String },
    #[error("EKS cluster {cluster} is {status}, not ACTIVE; wait until it is active and run again")]
    ClusterNotActive { cluster: String, status: String },
    #[error("EKS reports an OIDC issuer for cluster {cluster} that is not an https URL: {issuer}")]
    BadIssuer { cluster: String, issuer: String },
    #[error(transparent)]
    Addon(AwsError),
    #[error("cannot use the kubeconfig{}: {message}; check --kubeconfig/--context or KUBECONFIG", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Kubeconfig {
        path: Option<std::path::PathBuf>,
        message: String,
    },
    #[error(
        "IAM has no OIDC provider for the issuer of cluster {cluster} ({arn}); IRSA needs one. Create it with: \
         eksctl utils associate-iam-oidc-provider --cluster {cluster} --region {region} --approve \
         (or: aws iam create-open-id-connect-provider --url {issuer} --client-id-list {IRSA_AUDIENCE})"
    )]
    OidcProviderMissing {
        cluster: String,
        region: String,
        arn: String,
        issuer: String,
    },
    #[error(
        "the IAM OIDC provider {arn} does not list the audience {IRSA_AUDIENCE} (it lists: {audiences}), so pods could not assume the role; \
         add it with: aws iam add-client-id-to-open-id-connect-provider --open-id-connect-provider-arn {arn} --client-id {IRSA_AUDIENCE}"
    )]
    OidcAudienceMissing { arn: String, audiences: String },
    #[error(transparent)]
    OidcProvider(AwsError),
    #[error("cannot find the publisher image for --publisher ours")]
    PublisherImage(#[source] EcrError),
    #[error(
        "ECR repository {repository} does not exist; push the image first: cargo xtask image push --region {region} --repository {repository}"
    )]
    NoPublisherRepository { repository: String, region: String },
}

/// With `--publisher ours`, the image to run: the digest ECR reports for the tag, in the
/// repository's own registry (`DescribeRepositories`, `DescribeImages`); `None` otherwise.
pub async fn publisher_image(
    settings: &Settings,
    sdk: &SdkConfig,
) -> Result<Option<String>, FactsError> {
    let ImageChoice::Ours { repository, tag } = &settings.image else {
        return Ok(None);
    };
    let client = aws_sdk_ecr::Client::new(sdk);
    let found = ecr::describe(&client, repository)
        .await
        .map_err(FactsError::PublisherImage)?;
    let uri = found
        .and_then(|found| found.repository_uri)
        .ok_or_else(|| FactsError::NoPublisherRepository {
            repository: repository.clone(),
            region: settings.region.name.clone(),
        })?;
    let digest = ecr::image_digest(&client, repository, tag)
        .await
        .map_err(FactsError::PublisherImage)?;
    Ok(Some(format!("{uri}@{digest}")))
}

/// Reads everything live the deployment depends on; the caller's alarm permissions only
/// `with_alarms` (when the run reads or writes alarms): without, [`Facts::alarm_permissions`]
/// is `None` and preflight has no such check.
pub async fn gather(
    settings: &Settings,
    sdk: &SdkConfig,
    requirement: ClusterRequirement,
    with_kubernetes: bool,
    with_alarms: bool,
) -> Result<Facts, FactsError> {
    let caller = caller(sdk, settings).await?;
    // The simulation needs only the caller, so it runs while the cluster is read.
    let iam = aws_sdk_iam::Client::new(sdk);
    let simulation = async {
        if with_alarms {
            Some(alarm_permissions(&iam, &caller.arn, &settings.region.name).await)
        } else {
            None
        }
    };
    let (cluster_facts, alarm_permissions) = tokio::join!(
        cluster_facts(settings, sdk, requirement, with_kubernetes, &caller),
        simulation,
    );
    let ClusterFacts {
        cluster,
        agent_active,
        oidc_provider,
        publisher_image,
        kube,
    } = cluster_facts?;
    Ok(Facts {
        caller,
        cluster,
        agent_active,
        oidc_provider,
        kube,
        kube_context_explicit: settings.context.is_some(),
        publisher_image,
        alarm_permissions,
    })
}

/// What [`gather`] reads after the caller, but for the alarm permissions (the fields are
/// [`Facts`]'s).
struct ClusterFacts {
    cluster: ClusterState,
    agent_active: Option<bool>,
    oidc_provider: Option<OidcProviderState>,
    publisher_image: Option<String>,
    kube: Option<KubeConnection>,
}

async fn cluster_facts(
    settings: &Settings,
    sdk: &SdkConfig,
    requirement: ClusterRequirement,
    with_kubernetes: bool,
    caller: &Caller,
) -> Result<ClusterFacts, FactsError> {
    let cluster = match describe_cluster(sdk, settings).await {
        Ok(cluster) => cluster,
        Err(FactsError::ClusterNotFound { .. }) if requirement == ClusterRequirement::MayBeGone => {
            ClusterState::Gone
        }
        Err(error) => return Err(error),
    };
    let live_issuer = match &cluster {
        ClusterState::Live {
            issuer_host_path, ..
        } => Some(issuer_host_path.clone()),
        ClusterState::Gone | ClusterState::Offline { .. } => None,
    };
    let agent_active = match (&live_issuer, settings.identity) {
        (Some(_), IdentityMode::PodIdentity | IdentityMode::Auto) => {
            Some(agent_active(&aws_sdk_eks::Client::new(sdk), &settings.cluster).await?)
        }
        (Some(_) | None, IdentityMode::PodIdentity | IdentityMode::Auto | IdentityMode::Irsa) => {
            None
        }
    };
    let may_be_irsa = match settings.identity {
        IdentityMode::Irsa => true,
        // Auto is IRSA also with the agent ACTIVE for an upstream version that cannot use
        // Pod Identity, and `upgrade` steps through such versions with these same facts.
        IdentityMode::Auto => true,
        IdentityMode::PodIdentity => false,
    };
    let oidc_provider = match live_issuer.flatten() {
        Some(issuer) if may_be_irsa => Some(oidc_provider(sdk, settings, caller, issuer).await?),
        Some(_) | None => None,
    };
    let publisher_image = publisher_image(settings, sdk).await?;
    let kube = if with_kubernetes {
        let live = matches!(cluster, ClusterState::Live { .. });
        Some(kube_connection(settings, live).await?)
    } else {
        None
    };
    Ok(ClusterFacts {
        cluster,
        agent_active,
        oidc_provider,
        publisher_image,
        kube,
    })
}

impl Facts {
    /// What `render` knows without asking anyone: the flags.
    pub fn offline(settings: &Settings) -> Result<Facts, crate::settings::SettingsError> {
        let account = settings
            .account
            .clone()
            .ok_or(crate::settings::SettingsError::Missing {
                flag: "--account",
                hint: " (aws sts get-caller-identity --query Account)",
            })?;
        Ok(Facts {
            caller: Caller {
                account,
                arn: String::new(),
                partition: settings.region.partition.id.clone(),
            },
            cluster: ClusterState::Offline {
                issuer_host_path: settings.oidc_issuer_host_path.clone(),
            },
            agent_active: None,
            oidc_provider: None,
            kube: None,
            kube_context_explicit: settings.context.is_some(),
            publisher_image: None,
            alarm_permissions: None,
        })
    }
}

async fn describe_cluster(
    sdk: &SdkConfig,
    settings: &Settings,
) -> Result<ClusterState, FactsError> {
    let cluster = &settings.cluster;
    let region = &settings.region.name;
    let result = aws_sdk_eks::Client::new(sdk)
        .describe_cluster()
        .name(cluster)
        .send()
        .await;
    let found = missing_as_none(result, |error| error.is_resource_not_found_exception())
        .map_err(AwsError::call("eks", "DescribeCluster", cluster))
        .map_err(FactsError::DescribeCluster)?
        .ok_or_else(|| FactsError::ClusterNotFound {
            cluster: cluster.clone(),
            region: region.clone(),
        })?
        .cluster
        .ok_or_else(|| FactsError::NoClusterInReply {
            cluster: cluster.clone(),
        })?;
    if let Some(status) = found.status.as_ref().map(|status| status.as_str())
        && status != "ACTIVE"
    {
        return Err(FactsError::ClusterNotActive {
            cluster: cluster.clone(),
            status: status.to_owned(),
        });
    }
    let issuer_host_path = found
        .identity
        .and_then(|identity| identity.oidc)
        .and_then(|oidc| oidc.issuer)
        .map(|issuer| {
            issuer_host_path(&issuer).ok_or_else(|| FactsError::BadIssuer {
                cluster: cluster.clone(),
                issuer,
            })
        })
        .transpose()?;
    Ok(ClusterState::Live {
        arn: found.arn.unwrap_or_default(),
        endpoint: found.endpoint,
        issuer_host_path,
    })
}

/// Whether the Pod Identity agent add-on is ACTIVE on the cluster.
async fn agent_active(client: &aws_sdk_eks::Client, cluster: &str) -> Result<bool, FactsError> {
    let result = client
        .describe_addon()
        .cluster_name(cluster)
        .addon_name(AGENT_ADDON)
        .send()
        .await;
    let addon = missing_as_none(result, |error| error.is_resource_not_found_exception())
        .map_err(AwsError::call("eks", "DescribeAddon", cluster))
        .map_err(FactsError::Addon)?
        .and_then(|output| output.addon);
    Ok(addon
        .and_then(|addon| addon.status)
        .is_some_and(|status| status == aws_sdk_eks::types::AddonStatus::Active))
}

/// What applying the manifests needs, as (verb, API group, resource, namespace).
fn needed_permissions(
    namespace: &str,
) -> Vec<(&'static str, &'static str, &'static str, Option<String>)> {
    let ns = || Some(namespace.to_owned());
    vec![
        ("patch", "", "serviceaccounts", ns()),
        ("patch", "rbac.authorization.k8s.io", "clusterroles", None),
        (
            "patch",
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            None,
        ),
        ("patch", "apps", "deployments", ns()),
        ("watch", "apps", "deployments", ns()),
    ]
}

/// Asks the API server, with SelfSubjectAccessReviews, whether the caller may apply.
async fn permissions(client: &kube::Client, namespace: &str) -> Permissions {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut missing = Vec::new();
    for (verb, group, resource, namespace) in needed_permissions(namespace) {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.to_owned()),
                    group: Some(group.to_owned()),
                    resource: Some(resource.to_owned()),
                    namespace: namespace.clone(),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let what = match &namespace {
            Some(namespace) => format!("{verb} {resource} in {namespace}"),
            None => format!("{verb} {resource}"),
        };
        match reviews.create(&PostParams::default(), &review).await {
            Ok(answer) if answer.status.as_ref().is_some_and(|status| status.allowed) => {}
            Ok(_) => missing.push(what),
            Err(error) => return Permissions::Unanswered(error.to_string()),
        }
    }
    Permissions::Missing(missing)
}

/// The Kubernetes client from the kubeconfig chain, the API server URL it talks to, and
/// (for a live cluster) whether the caller may apply our objects.
async fn kube_connection(settings: &Settings, live: bool) -> Result<KubeConnection, FactsError> {
    let error = |message: String| FactsError::Kubeconfig {
        path: settings.kubeconfig.clone(),
        message,
    };
    let config = if settings.kubeconfig.is_none() && settings.context.is_none() {
        kube::Config::infer()
            .await
            .map_err(|e| error(e.to_string()))?
    } else {
        let kubeconfig = match &settings.kubeconfig {
            Some(path) => Kubeconfig::read_from(path),
            None => Kubeconfig::read(),
        }
        .map_err(|e| error(e.to_string()))?;
        let options = KubeConfigOptions {
            context: settings.context.clone(),
            ..KubeConfigOptions::default()
        };
        kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| error(e.to_string()))?
    };
    let mut config = config;
    // A plain-HTTP API server (the sandbox's) is never spoken TLS to, yet without a CA in
    // the kubeconfig kube would load and parse every root certificate of the platform for
    // its client, the largest cost of a plan's setup, once per cluster of a fleet. (EKS
    // kubeconfigs always carry their CA, so this changes nothing for a real cluster.)
    if config.cluster_url.scheme_str() == Some("http") && config.root_cert.is_none() {
        config.root_cert = Some(Vec::new());
    }
    let url = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).map_err(|e| error(e.to_string()))?;
    let permissions = if live {
        Some(permissions(&client, &settings.namespace).await)
    } else {
        None
    };
    Ok(KubeConnection {
        client,
        url,
        permissions,
    })
}

async fn caller(sdk: &SdkConfig, settings: &Settings) -> Result<Caller, FactsError> {
    let caller = aws_sdk_sts::Client::new(sdk)
        .get_caller_identity()
        .send()
        .await
        .map_err(AwsError::call("sts", "GetCallerIdentity", "the caller"))
        .map_err(FactsError::Caller)?;
    let caller_arn = caller.arn.unwrap_or_default();
    let account = caller
        .account
        .ok_or_else(|| FactsError::CallerReply("the reply has no account".to_owned()))?;
    let partition = check_caller(
        &caller_arn,
        &account,
        &settings.region.name,
        &settings.region.partition.id,
        settings.account.as_deref(),
    )?;
    Ok(Caller {
        account,
        arn: caller_arn,
        partition,
    })
}

/// The caller's partition, refused when it is not the region's (a role of one partition
/// cannot be trusted or assumed in another) or when the account is not the one given.
fn check_caller(
    caller_arn: &str,
    account: &str,
    region: &str,
    region_partition: &str,
    given_account: Option<&str>,
) -> Result<String, FactsError> {
    let caller_partition = arn::partition_of(caller_arn)
        .ok_or_else(|| {
            FactsError::CallerReply(format!("the caller ARN '{caller_arn}' is not an ARN"))
        })?
        .to_owned();
    if caller_partition != region_partition {
        return Err(FactsError::PartitionMismatch {
            caller_arn: caller_arn.to_owned(),
            caller_partition,
            region: region.to_owned(),
            region_partition: region_partition.to_owned(),
        });
    }
    if let Some(given) = given_account
        && given != account
    {
        return Err(FactsError::AccountMismatch {
            given: given.to_owned(),
            actual: account.to_owned(),
        });
    }
    Ok(caller_partition)
}

/// The IAM principal behind a caller ARN, as `iam:SimulatePrincipalPolicy` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Principal {
    /// An IAM user: the caller ARN is the user's own (path included).
    User(String),
    /// A role's session, `arn:PARTITION:sts::ACCOUNT:assumed-role/ROLE/SESSION`: it names
    /// the role but not its path, so the role's ARN is asked of IAM. The role's policies
    /// are simulated, not the session's (a session policy can only narrow them).
    AssumedRole { role_name: String },
    /// No principal the simulator takes.
    NotSimulated(Unverified),
}

fn principal_of(caller_arn: &str) -> Principal {
    let mut parts = caller_arn.splitn(6, ':');
    let (
        Some("arn"),
        Some(_partition),
        Some(service),
        Some(_region),
        Some(_account),
        Some(resource),
    ) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    )
    else {
        return Principal::NotSimulated(Unverified::UnknownPrincipal);
    };
    match (service, resource.split_once('/')) {
        ("iam", None) if resource == "root" => Principal::NotSimulated(Unverified::Root),
        ("iam", Some(("user", name))) if !name.is_empty() => Principal::User(caller_arn.to_owned()),
        ("sts", Some(("assumed-role", role_and_session))) => {
            match role_and_session.split_once('/') {
                Some((role, session)) if !role.is_empty() && !session.is_empty() => {
                    Principal::AssumedRole {
                        role_name: role.to_owned(),
                    }
                }
                Some(_) | None => Principal::NotSimulated(Unverified::UnknownPrincipal),
            }
        }
        ("sts", Some(("federated-user", _))) => Principal::NotSimulated(Unverified::FederatedUser),
        _ => Principal::NotSimulated(Unverified::UnknownPrincipal),
    }
}

/// What IAM's policy simulator says the caller may do with the alarms. Nothing here fails
/// the gathering: whatever keeps the simulation from running is the answer.
async fn alarm_permissions(
    client: &aws_sdk_iam::Client,
    caller_arn: &str,
    region: &str,
) -> AlarmPermissions {
    let principal = match principal_of(caller_arn) {
        Principal::User(arn) => arn,
        Principal::AssumedRole { role_name } => match role_arn(client, &role_name).await {
            Ok(arn) => arn,
            Err(why) => return AlarmPermissions::Unverified(why),
        },
        Principal::NotSimulated(why) => return AlarmPermissions::Unverified(why),
    };
    match simulate(client, &principal, region).await {
        Ok(decisions) => AlarmPermissions::Simulated {
            principal,
            decisions,
        },
        Err(why) => AlarmPermissions::Unverified(why),
    }
}

/// The ARN of a role, path included, as IAM reports it.
async fn role_arn(client: &aws_sdk_iam::Client, role_name: &str) -> Result<String, Unverified> {
    const OPERATION: &str = "GetRole";
    let output = client
        .get_role()
        .role_name(role_name)
        .send()
        .await
        .map_err(not_answered(OPERATION, role_name))?;
    output
        .role
        .map(|role| role.arn)
        .ok_or_else(|| Unverified::Failed {
            operation: OPERATION,
            error: format!("iam:{OPERATION} answered without the role {role_name}"),
        })
}

/// `iam:SimulatePrincipalPolicy` of [`CALLER_ALARM_ACTIONS`] on any resource (the alarms'
/// ARNs need not exist yet) in the region the alarms are written to.
async fn simulate(
    client: &aws_sdk_iam::Client,
    principal: &str,
    region: &str,
) -> Result<Vec<ActionDecision>, Unverified> {
    const OPERATION: &str = "SimulatePrincipalPolicy";
    let results: Vec<aws_sdk_iam::types::EvaluationResult> = client
        .simulate_principal_policy()
        .policy_source_arn(principal)
        .set_action_names(Some(
            CALLER_ALARM_ACTIONS
                .iter()
                .map(|&action| action.to_owned())
                .collect(),
        ))
        .resource_arns("*")
        // Policies that limit the caller to some regions then judge this one.
        .context_entries(
            aws_sdk_iam::types::ContextEntry::builder()
                .context_key_name("aws:RequestedRegion")
                .context_key_values(region)
                .context_key_type(aws_sdk_iam::types::ContextKeyTypeEnum::String)
                .build(),
        )
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(not_answered(OPERATION, principal))?;
    decisions(&results).map_err(|error| Unverified::Failed {
        operation: OPERATION,
        error,
    })
}

/// One decision per needed action, from the simulator's results; the strictest when an
/// action has several. An error names the action the answer lacks.
fn decisions(
    results: &[aws_sdk_iam::types::EvaluationResult],
) -> Result<Vec<ActionDecision>, String> {
    use aws_sdk_iam::types::PolicyEvaluationDecisionType as Type;
    let strictness = |decision: &Decision| match decision {
        Decision::Allowed => 0,
        Decision::Other(_) => 1,
        Decision::ImplicitDeny => 2,
        Decision::ExplicitDeny => 3,
    };
    CALLER_ALARM_ACTIONS
        .iter()
        .map(|&action| {
            results
                .iter()
                .filter(|result| result.eval_action_name().eq_ignore_ascii_case(action))
                .map(|result| ActionDecision {
                    action: action.to_owned(),
                    decision: match result.eval_decision() {
                        Type::Allowed => Decision::Allowed,
                        Type::ImplicitDeny => Decision::ImplicitDeny,
                        Type::ExplicitDeny => Decision::ExplicitDeny,
                        other => Decision::Other(other.as_str().to_owned()),
                    },
                    missing_context: result.missing_context_values().to_vec(),
                })
                .max_by_key(|decision| strictness(&decision.decision))
                .ok_or_else(|| format!("the simulation's answer has no decision for {action}"))
        })
        .collect()
}

/// How a refused or failed IAM call keeps the simulation from running: AccessDenied is
/// the caller not being allowed to ask; anything else is the call's failure.
fn not_answered<E, R>(
    operation: &'static str,
    resource: &str,
) -> impl FnOnce(aws_sdk_iam::error::SdkError<E, R>) -> Unverified
where
    E: aws_sdk_iam::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let call = AwsError::call("iam", operation, resource);
    move |error| {
        let refused = error
            .as_service_error()
            .and_then(|service_error| service_error.code())
            .is_some_and(|code| matches!(code, "AccessDenied" | "AccessDeniedException"));
        let error = crate::aws::one_line(&call(error));
        if refused {
            Unverified::Refused { operation, error }
        } else {
            Unverified::Failed { operation, error }
        }
    }
}

/// Whether IAM has an OIDC provider for the cluster's issuer that accepts our audience.
/// The tool never creates or edits a provider: it is shared by everything using IRSA on
/// the cluster.
async fn oidc_provider(
    sdk: &SdkConfig,
    settings: &Settings,
    caller: &Caller,
    issuer_host_path: String,
) -> Result<OidcProviderState, FactsError> {
    let arn = arn::oidc_provider(&caller.partition, &caller.account, &issuer_host_path);
    let result = aws_sdk_iam::Client::new(sdk)
        .get_open_id_connect_provider()
        .open_id_connect_provider_arn(&arn)
        .send()
        .await;
    let problem = |error: FactsError| {
        let text = error.to_string();
        let (detail, fix) = text.split_once("; ").unwrap_or((&text, ""));
        OidcProviderState::Problem {
            detail: detail.to_owned(),
            fix: fix.to_owned(),
        }
    };
    let Some(provider) = missing_as_none(result, |error| error.is_no_such_entity_exception())
        .map_err(AwsError::call("iam", "GetOpenIDConnectProvider", &arn))
        .map_err(FactsError::OidcProvider)?
    else {
        return Ok(problem(FactsError::OidcProviderMissing {
            cluster: settings.cluster.clone(),
            region: settings.region.name.clone(),
            arn,
            issuer: format!("https://{issuer_host_path}"),
        }));
    };
    let audiences = provider.client_id_list();
    if audiences.iter().any(|audience| audience == IRSA_AUDIENCE) {
        Ok(OidcProviderState::Trusted { issuer_host_path })
    } else {
        Ok(problem(FactsError::OidcAudienceMissing {
            arn,
            audiences: if audiences.is_empty() {
                "none".to_owned()
            } else {
                audiences.join(", ")
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::{
        CALLER_ALARM_ACTIONS, Decision, FactsError, Principal, Unverified, check_caller, decisions,
        not_answered, principal_of,
    };
    use aws_sdk_iam::types::{EvaluationResult, PolicyEvaluationDecisionType};

    #[test]
    fn the_principal_to_simulate_is_the_user_or_the_assumed_role() {
        let user = "arn:aws:iam::111122223333:user/ops/alice";
        assert_eq!(principal_of(user), Principal::User(user.to_owned()));
        assert_eq!(
            principal_of(
                "arn:aws-cn:sts::111122223333:assumed-role/AWSReservedSSO_Admin_0123/alice@example.com"
            ),
            Principal::AssumedRole {
                role_name: "AWSReservedSSO_Admin_0123".to_owned()
            }
        );
        for (arn, why) in [
            ("arn:aws:iam::111122223333:root", Unverified::Root),
            (
                "arn:aws:sts::111122223333:federated-user/bob",
                Unverified::FederatedUser,
            ),
            // moto's caller when the keys are no IAM user's: no principal IAM knows.
            (
                "arn:aws:sts::123456789012:user/moto",
                Unverified::UnknownPrincipal,
            ),
            (
                "arn:aws:sts::111122223333:assumed-role/no-session",
                Unverified::UnknownPrincipal,
            ),
            ("not-an-arn", Unverified::UnknownPrincipal),
        ] {
            assert_eq!(principal_of(arn), Principal::NotSimulated(why), "{arn}");
        }
    }

    #[test]
    fn access_denied_is_the_caller_not_allowed_to_ask() {
        use aws_sdk_iam::error::{ErrorMetadata, SdkError};
        use aws_sdk_iam::operation::get_role::GetRoleError;
        let error = |code: &str| {
            SdkError::service_error(
                GetRoleError::generic(
                    ErrorMetadata::builder()
                        .code(code)
                        .message("not authorized to perform: iam:GetRole")
                        .build(),
                ),
                (),
            )
        };
        let refused = not_answered("GetRole", "deployer")(error("AccessDenied"));
        let Unverified::Refused {
            operation,
            error: text,
        } = refused
        else {
            panic!("refused: {refused:?}");
        };
        assert_eq!(operation, "GetRole");
        assert!(
            text.starts_with("iam:GetRole on deployer failed")
                && text.contains("not authorized to perform: iam:GetRole"),
            "{text}"
        );
        assert!(matches!(
            not_answered("GetRole", "deployer")(error("ServiceFailure")),
            Unverified::Failed {
                operation: "GetRole",
                ..
            }
        ));
    }

    fn result(action: &str, decision: PolicyEvaluationDecisionType) -> EvaluationResult {
        EvaluationResult::builder()
            .eval_action_name(action)
            .eval_decision(decision)
            .build()
            .expect("a result")
    }

    #[test]
    fn the_simulation_gives_one_decision_per_needed_action() {
        let mut results: Vec<EvaluationResult> = CALLER_ALARM_ACTIONS
            .iter()
            .map(|action| result(action, PolicyEvaluationDecisionType::Allowed))
            .collect();
        results.push(result(
            "CloudWatch:DeleteAlarms",
            PolicyEvaluationDecisionType::ExplicitDeny,
        ));
        results.push(
            EvaluationResult::builder()
                .eval_action_name("cloudwatch:TagResource")
                .eval_decision(PolicyEvaluationDecisionType::ImplicitDeny)
                .missing_context_values("aws:SourceIp")
                .build()
                .expect("a result"),
        );
        let decided = decisions(&results).expect("every action decided");
        let by_action: Vec<(&str, &Decision)> = decided
            .iter()
            .map(|decision| (decision.action.as_str(), &decision.decision))
            .collect();
        assert_eq!(
            by_action,
            [
                ("cloudwatch:PutMetricAlarm", &Decision::Allowed),
                ("cloudwatch:DeleteAlarms", &Decision::ExplicitDeny),
                ("cloudwatch:DescribeAlarms", &Decision::Allowed),
                ("cloudwatch:TagResource", &Decision::ImplicitDeny),
                ("cloudwatch:ListTagsForResource", &Decision::Allowed),
            ]
        );
        assert_eq!(decided[3].missing_context, ["aws:SourceIp"]);
        let error = decisions(&results[..2]).expect_err("actions missing");
        assert!(error.contains("cloudwatch:DescribeAlarms"), "{error}");
    }

    #[test]
    fn a_caller_of_another_partition_or_account_is_refused() {
        let arn = "arn:aws:sts::111122223333:assumed-role/admin/me";
        assert_eq!(
            check_caller(
                arn,
                "111122223333",
                "us-west-2",
                "aws",
                Some("111122223333")
            )
            .ok()
            .as_deref(),
            Some("aws")
        );
        let error =
            check_caller(arn, "111122223333", "cn-north-1", "aws-cn", None).expect_err("mismatch");
        assert!(matches!(error, FactsError::PartitionMismatch { .. }));
        assert!(
            error
                .to_string()
                .contains("use credentials of the aws-cn partition"),
            "{error}"
        );
        let error = check_caller(
            arn,
            "111122223333",
            "us-west-2",
            "aws",
            Some("999999999999"),
        )
        .expect_err("account");
        assert!(matches!(error, FactsError::AccountMismatch { .. }));
    }
}
