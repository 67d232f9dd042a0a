//! Live facts the deployment is decided from, read rather than asked for: who the caller
//! is (account and partition, from STS), the cluster (ARN, endpoint, OIDC issuer, from
//! EKS), whether its Pod Identity agent is active, whether IAM trusts its issuer with the
//! audience our trust policy uses, and the Kubernetes connection with what the caller may do
//! there. Everything live is read here, once; what it means is decided by
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

/// Reads everything live the deployment depends on.
pub async fn gather(
    settings: &Settings,
    sdk: &SdkConfig,
    requirement: ClusterRequirement,
    with_kubernetes: bool,
) -> Result<Facts, FactsError> {
    let caller = caller(sdk, settings).await?;
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
        Some(issuer) if may_be_irsa => Some(oidc_provider(sdk, settings, &caller, issuer).await?),
        Some(_) | None => None,
    };
    let publisher_image = publisher_image(settings, sdk).await?;
    let kube = if with_kubernetes {
        let live = matches!(cluster, ClusterState::Live { .. });
        Some(kube_connection(settings, live).await?)
    } else {
        None
    };
    Ok(Facts {
        caller,
        cluster,
        agent_active,
        oidc_provider,
        kube,
        kube_context_explicit: settings.context.is_some(),
        publisher_image,
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
    use super::{FactsError, check_caller};

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
