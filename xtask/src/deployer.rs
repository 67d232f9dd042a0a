//! The deployer: from settings and live facts to a [`Plan`], and from a plan to calls.
//!
//! `plan`, `deploy` and `destroy` all go through [`prepare`] (read the caller and the
//! cluster, render the artifacts) and then build one typed plan; `deploy` and `destroy`
//! execute that very plan, scope by scope, in the order IAM -> Kubernetes -> dashboard
//! (reversed for destroy). A failure stops at the step that failed; everything before it
//! is done and the next run converges from there, since every step is planned from live
//! state again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use aws_config::SdkConfig;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::catalog::{Catalog, Version, VersionStepError};
use crate::facts::{self, FactsError, LiveFacts};
use crate::plan::dashboard::{self, DesiredDashboard};
use crate::plan::iam::{self, DesiredIam, IamError};
use crate::plan::kubernetes::{self, KubeError};
use crate::plan::ownership::{CLUSTER_TAG, MANAGED_BY_TAG, REGION_TAG, RESERVED_TAGS};
use crate::plan::pod_identity;
use crate::plan::{ConflictError, Plan, Scope};
use crate::preflight::{self, Check};
use crate::render::{MANAGED_BY, ManifestObject, RenderError, Rendered, possible_objects, render};
use crate::settings::{
    DeployInput, IdentityMode, POLICY_NAME_MAX, SettingsError, Target, TargetInput,
    default_dashboard_name, is_iam_name,
};

/// The default name of the permission policy, as in the EKS user guide.
pub const DEFAULT_POLICY_NAME: &str = "AmazonEKSVPCCNIMetricsHelperPolicy";

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("no AWS region: pass --region, or set AWS_REGION or a region in your AWS profile")]
    NoRegion,
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    VersionStep(#[from] VersionStepError),
    #[error(transparent)]
    Facts(#[from] FactsError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Iam(#[from] IamError),
    #[error(transparent)]
    Kubernetes(#[from] KubeError),
    #[error(transparent)]
    Aws(#[from] crate::aws::AwsError),
    #[error(transparent)]
    Conflicts(#[from] ConflictError),
    #[error(transparent)]
    Apply(#[from] crate::apply::ApplyError),
    #[error("preflight failed: {0}")]
    Preflight(String),
    #[error("cannot use the kubeconfig{}: {message}; check --kubeconfig/--context or KUBECONFIG", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Kubeconfig {
        path: Option<PathBuf>,
        message: String,
    },
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
}

/// How the plan is made and carried out.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    pub scopes: Vec<Scope>,
    /// Take over same-named resources that are not ours (`--adopt`).
    pub adopt: bool,
    pub rollout_timeout: Duration,
    /// Allows a version older than the live one.
    pub allow_downgrade: bool,
}

/// Whether the EKS cluster must exist: `destroy` also cleans up after a deleted cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterRequirement {
    MustExist,
    MayBeGone,
}

/// Everything a plan is computed from.
pub struct Prepared {
    /// The preflight checks; [`Prepared::require_preflight`] refuses to go on past a failure.
    pub checks: Vec<Check>,
    pub catalog: &'static Catalog,
    pub target: Target,
    pub rendered: Rendered,
    /// Every Kubernetes object the tool may have made for this target, in any mode.
    pub possible_objects: Vec<ManifestObject>,
    pub iam: DesiredIam,
    pub dashboard_name: String,
    pub facts: LiveFacts,
    pub sdk: SdkConfig,
    pub kube: Option<Client>,
}

fn validate_names(
    input: &DeployInput,
    cluster: &str,
    region: &str,
) -> Result<(String, String, BTreeMap<String, String>), DeployError> {
    let policy_name = input
        .policy_name
        .clone()
        .unwrap_or_else(|| DEFAULT_POLICY_NAME.to_owned());
    if !is_iam_name(&policy_name, POLICY_NAME_MAX) {
        return Err(DeployError::PolicyName(policy_name));
    }
    let dashboard_name = input
        .dashboard_name
        .clone()
        .unwrap_or_else(|| default_dashboard_name(cluster, region));
    let dashboard_ok = (1..=255).contains(&dashboard_name.len())
        && dashboard_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !dashboard_ok {
        return Err(DeployError::DashboardName(dashboard_name));
    }
    for (key, value) in &input.tags {
        let problem = if key.is_empty() || key.chars().count() > 128 {
            Some("a tag key is 1-128 characters")
        } else if value.chars().count() > 256 {
            Some("a tag value is at most 256 characters")
        } else if !key.chars().all(is_tag_character) || !value.chars().all(is_tag_character) {
            // Refused here rather than by IAM, after earlier steps would have run.
            Some("IAM tags allow only letters, digits, spaces and _ . : / = + - @")
        } else if key.to_ascii_lowercase().starts_with("aws:") {
            Some("the aws: prefix is reserved by AWS")
        } else if RESERVED_TAGS
            .iter()
            .any(|reserved| key.eq_ignore_ascii_case(reserved))
        {
            // IAM tag keys are case-insensitive: `Managed-By` would replace our mark.
            Some("this tool sets that tag itself")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(DeployError::Tag {
                key: key.clone(),
                problem,
            });
        }
    }
    Ok((policy_name, dashboard_name, input.tags.clone()))
}

/// IAM's tag alphabet: `[\p{L}\p{Z}\p{N}_.:/=+\-@]`.
fn is_tag_character(c: char) -> bool {
    c.is_alphanumeric() || (c.is_whitespace() && !c.is_control()) || "_.:/=+-@".contains(c)
}

/// The Kubernetes client from the kubeconfig chain, and the API server URL it talks to.
async fn kube_client(input: &DeployInput) -> Result<(Client, String), DeployError> {
    let error = |message: String| DeployError::Kubeconfig {
        path: input.kubeconfig.clone(),
        message,
    };
    let config = if input.kubeconfig.is_none() && input.context.is_none() {
        kube::Config::infer()
            .await
            .map_err(|e| error(e.to_string()))?
    } else {
        let kubeconfig = match &input.kubeconfig {
            Some(path) => Kubeconfig::read_from(path),
            None => Kubeconfig::read(),
        }
        .map_err(|e| error(e.to_string()))?;
        let options = KubeConfigOptions {
            context: input.context.clone(),
            ..KubeConfigOptions::default()
        };
        kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| error(e.to_string()))?
    };
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| error(e.to_string()))?;
    Ok((client, url))
}

/// Reads the live facts and renders the artifacts for them.
pub async fn prepare(
    catalog: &'static Catalog,
    mut target_input: TargetInput,
    deploy_input: DeployInput,
    options: &DeployOptions,
    requirement: ClusterRequirement,
) -> Result<Prepared, DeployError> {
    let sdk = crate::aws::load(target_input.region.as_deref()).await;
    let region = sdk
        .region()
        .map(ToString::to_string)
        .ok_or(DeployError::NoRegion)?;
    let resolved = catalog
        .resolve_region(&region)
        .map_err(SettingsError::from)?;
    let partition = resolved.partition.id.clone();
    let cluster = target_input.cluster.clone().ok_or(SettingsError::Missing {
        flag: "--cluster",
        hint: " (the EKS cluster name)",
    })?;
    let (policy_name, dashboard_name, user_tags) =
        validate_names(&deploy_input, &cluster, &region)?;
    let facts = match facts::gather(
        &sdk,
        &region,
        &partition,
        &cluster,
        target_input.account.as_deref(),
    )
    .await
    {
        Ok(facts) => facts,
        Err(FactsError::ClusterNotFound { .. }) if requirement == ClusterRequirement::MayBeGone => {
            facts::caller_only(&sdk, &region, &partition, target_input.account.as_deref()).await?
        }
        Err(error) => return Err(error.into()),
    };
    target_input.region = Some(region.clone());
    target_input.account = Some(facts.account.clone());
    let eks = aws_sdk_eks::Client::new(&sdk);
    let must_exist = requirement == ClusterRequirement::MustExist;
    let mut checks = vec![
        Check::pass(
            "caller",
            format!(
                "{} (account {}, partition {})",
                facts.caller_arn, facts.account, facts.caller_partition
            ),
        ),
        Check::pass(
            "cluster",
            if must_exist {
                format!("{cluster} is ACTIVE in {region}")
            } else {
                format!("{cluster} in {region}")
            },
        ),
    ];
    // The agent's state, once asked: `--identity auto` and the Pod Identity check both
    // need it.
    let mut agent_active = None;
    let identity = match target_input.identity.unwrap_or(IdentityMode::Irsa) {
        IdentityMode::Auto if must_exist => {
            let active = pod_identity::agent_active(&eks, &cluster).await?;
            agent_active = Some(active);
            if active {
                tracing::info!(
                    "identity auto: pod-identity, because the {} add-on is ACTIVE",
                    pod_identity::AGENT_ADDON
                );
                IdentityMode::PodIdentity
            } else {
                tracing::info!(
                    "identity auto: irsa, because the {} add-on is not ACTIVE",
                    pod_identity::AGENT_ADDON
                );
                IdentityMode::Irsa
            }
        }
        // Destroying only needs names, which do not depend on the identity mode.
        IdentityMode::Auto => IdentityMode::PodIdentity,
        mode => mode,
    };
    target_input.identity = Some(identity);
    match (&facts.oidc_issuer, identity, must_exist) {
        (Some(issuer), IdentityMode::Irsa, true) => {
            checks.push(
                match facts::check_oidc_provider(
                    &sdk,
                    &partition,
                    &facts.account,
                    &region,
                    &cluster,
                    issuer,
                )
                .await
                {
                    Ok(()) => Check::pass(
                        "IAM OIDC provider",
                        format!("{issuer} is trusted with audience sts.amazonaws.com"),
                    ),
                    Err(
                        error @ (FactsError::OidcProviderMissing { .. }
                        | FactsError::OidcAudienceMissing { .. }),
                    ) => {
                        let text = error.to_string();
                        let (detail, fix) = text.split_once("; ").unwrap_or((&text, ""));
                        Check::fail("IAM OIDC provider", detail, fix)
                    }
                    Err(error) => return Err(error.into()),
                },
            );
        }
        (None, IdentityMode::Irsa, true) => {
            return Err(FactsError::NoOidcIssuer { cluster }.into());
        }
        // Destroying only needs the names; an unknown issuer does not change them.
        (None, IdentityMode::Irsa, false) => {
            target_input.identity = Some(IdentityMode::PodIdentity);
        }
        (_, IdentityMode::PodIdentity, true) => {
            let active = match agent_active {
                Some(active) => active,
                None => pod_identity::agent_active(&eks, &cluster).await?,
            };
            checks.push(if active {
                Check::pass("Pod Identity agent", format!("the {} add-on is ACTIVE", pod_identity::AGENT_ADDON))
            } else {
                Check::fail(
                    "Pod Identity agent",
                    format!("the {} add-on is not ACTIVE on {cluster}, so pods would get no credentials", pod_identity::AGENT_ADDON),
                    format!(
                        "aws eks create-addon --cluster-name {cluster} --addon-name {} (or use --identity irsa)",
                        pod_identity::AGENT_ADDON
                    ),
                )
            });
        }
        _ => {}
    }
    target_input.oidc_issuer = facts.oidc_issuer.clone();
    let target = target_input.resolve(catalog)?;
    let rendered = render(&target, catalog)?;
    let common_tags = |extra: Option<(&str, &str)>| {
        let mut tags = user_tags.clone();
        tags.insert(MANAGED_BY_TAG.to_owned(), MANAGED_BY.to_owned());
        if let Some((key, value)) = extra {
            tags.insert(key.to_owned(), value.to_owned());
        }
        tags
    };
    let possible_objects = possible_objects(&target, catalog)?;
    let iam = DesiredIam {
        cluster: cluster.clone(),
        region: region.clone(),
        policy_arn: format!(
            "arn:{partition}:iam::{}:policy/{policy_name}",
            facts.account
        ),
        policy_name,
        policy_document: rendered.iam_policy.clone(),
        // The policy is shared by the clusters of the account, so it names none of them.
        policy_tags: common_tags(None),
        role_name: target.role_name.clone(),
        trust_document: rendered.trust_policy.clone(),
        role_tags: {
            let mut tags = common_tags(Some((CLUSTER_TAG, &cluster)));
            tags.insert(REGION_TAG.to_owned(), region.clone());
            tags
        },
    };
    let kube = if options.scopes.contains(&Scope::Kubernetes) {
        let (client, url) = kube_client(&deploy_input).await?;
        if must_exist {
            checks.push(preflight::context_check(
                &url,
                facts.cluster_endpoint.as_deref(),
                &cluster,
                deploy_input.context.is_some(),
            ));
            checks.push(preflight::rbac_check(&client, &target.namespace).await);
            checks.push(preflight::security_group_reminder(&target.namespace));
        }
        Some(client)
    } else {
        None
    };
    Ok(Prepared {
        checks,
        catalog,
        target,
        rendered,
        possible_objects,
        iam,
        dashboard_name,
        facts,
        sdk,
        kube,
    })
}

impl Prepared {
    /// The same deployment at another version of the helper. Only the rendered artifacts
    /// depend on the version (the image, and the documents rendered beside it), so the live
    /// facts, the preflight checks and the clients are kept instead of asked for again:
    /// `upgrade` moves through several versions and `status` compares two.
    pub fn at_version(&self, version: Version) -> Result<Prepared, DeployError> {
        let target = Target {
            version,
            ..self.target.clone()
        };
        let rendered = render(&target, self.catalog)?;
        let iam = DesiredIam {
            policy_document: rendered.iam_policy.clone(),
            trust_document: rendered.trust_policy.clone(),
            ..self.iam.clone()
        };
        Ok(Prepared {
            checks: self.checks.clone(),
            catalog: self.catalog,
            target,
            rendered,
            possible_objects: self.possible_objects.clone(),
            iam,
            dashboard_name: self.dashboard_name.clone(),
            facts: self.facts.clone(),
            sdk: self.sdk.clone(),
            kube: self.kube.clone(),
        })
    }

    /// Fails with every failed preflight check, each with its fix.
    pub fn require_preflight(&self) -> Result<(), DeployError> {
        let failures: Vec<String> = self
            .checks
            .iter()
            .filter(|check| !check.ok)
            .map(|check| {
                format!(
                    "{}: {} (fix: {})",
                    check.name,
                    check.detail,
                    check.fix.as_deref().unwrap_or("-")
                )
            })
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(DeployError::Preflight(failures.join("; ")))
        }
    }

    /// The Pod Identity association: wanted in pod-identity mode unless destroying.
    async fn plan_association(
        &self,
        destroying: bool,
        adopt: bool,
    ) -> Result<Option<crate::plan::ResourceChange>, DeployError> {
        if self.facts.cluster_arn.is_empty() {
            // The cluster is gone, and its associations with it.
            return Ok(None);
        }
        let eks = aws_sdk_eks::Client::new(&self.sdk);
        let wanted = (!destroying && self.target.identity == IdentityMode::PodIdentity)
            .then_some(self.rendered.role_arn.as_str());
        Ok(pod_identity::plan(
            &eks,
            &self.target.cluster,
            &self.target.namespace,
            crate::settings::SERVICE_ACCOUNT,
            wanted,
            &self.iam.role_tags,
            adopt,
        )
        .await?)
    }

    /// Waits for the live Deployment's current rollout, whether or not this run changed it.
    pub async fn wait_for_rollout(&self, timeout: Duration) -> Result<(), DeployError> {
        if let Some(client) = &self.kube {
            kubernetes::wait_for_current_rollout(
                client,
                &self.target.namespace,
                crate::settings::SERVICE_ACCOUNT,
                timeout,
            )
            .await?;
        }
        Ok(())
    }

    /// The helper's live Deployment, when the Kubernetes scope is in use and it exists.
    pub async fn live_deployment(&self) -> Result<Option<kubernetes::LiveDeployment>, DeployError> {
        let Some(client) = &self.kube else {
            return Ok(None);
        };
        Ok(kubernetes::live_deployment(
            client,
            &self.target.namespace,
            crate::settings::SERVICE_ACCOUNT,
        )
        .await?)
    }
}

fn empty_plan(prepared: &Prepared) -> Plan {
    Plan {
        schema_version: 1,
        cluster: prepared.target.cluster.clone(),
        region: prepared.target.region.clone(),
        account: prepared.facts.account.clone(),
        identity: prepared.target.identity.as_str(),
        version: prepared.target.version.to_string(),
        changes: Vec::new(),
    }
}

/// The plan that brings every selected scope to the rendered state.
pub async fn plan(prepared: &Prepared, options: &DeployOptions) -> Result<Plan, DeployError> {
    let mut plan = empty_plan(prepared);
    for scope in Scope::ALL
        .into_iter()
        .filter(|scope| options.scopes.contains(scope))
    {
        match scope {
            Scope::Iam => {
                let client = aws_sdk_iam::Client::new(&prepared.sdk);
                plan.changes
                    .extend(iam::plan(&client, &prepared.iam, options.adopt).await?);
                plan.changes
                    .extend(prepared.plan_association(false, options.adopt).await?);
            }
            Scope::Kubernetes => {
                if let Some(client) = &prepared.kube {
                    if let Some(live) = prepared.live_deployment().await?
                        && let Some(live_version) = live.version
                    {
                        prepared.catalog.check_step(
                            live_version,
                            prepared.target.version,
                            options.allow_downgrade,
                        )?;
                    }
                    plan.changes.extend(
                        kubernetes::plan(
                            client,
                            &prepared.rendered.objects,
                            &prepared.possible_objects,
                            options.adopt,
                        )
                        .await?,
                    );
                }
            }
            Scope::Dashboard => {
                let client = aws_sdk_cloudwatch::Client::new(&prepared.sdk);
                plan.changes.push(
                    dashboard::plan(
                        &client,
                        DesiredDashboard {
                            name: &prepared.dashboard_name,
                            body: &prepared.rendered.dashboard,
                            cluster: &prepared.target.cluster,
                            region: &prepared.target.region,
                        },
                        options.adopt,
                    )
                    .await?,
                );
            }
        }
    }
    Ok(plan)
}

/// The plan that removes what this tool created, in the reverse order of deploy.
pub async fn plan_destroy(
    prepared: &Prepared,
    options: &DeployOptions,
) -> Result<Plan, DeployError> {
    let mut plan = empty_plan(prepared);
    for scope in Scope::ALL
        .into_iter()
        .rev()
        .filter(|scope| options.scopes.contains(scope))
    {
        match scope {
            Scope::Dashboard => {
                let client = aws_sdk_cloudwatch::Client::new(&prepared.sdk);
                plan.changes.extend(
                    dashboard::plan_destroy(
                        &client,
                        &prepared.dashboard_name,
                        &prepared.target.cluster,
                        &prepared.target.region,
                    )
                    .await?,
                );
            }
            Scope::Kubernetes => {
                if let Some(client) = &prepared.kube {
                    plan.changes.extend(
                        kubernetes::plan_destroy(client, &prepared.possible_objects).await?,
                    );
                }
            }
            Scope::Iam => {
                plan.changes
                    .extend(prepared.plan_association(true, false).await?);
                let client = aws_sdk_iam::Client::new(&prepared.sdk);
                plan.changes
                    .extend(iam::plan_destroy(&client, &prepared.iam).await?);
            }
        }
    }
    Ok(plan)
}

/// Carries out every step of `plan` (see [`crate::apply`]).
pub async fn execute(
    prepared: &Prepared,
    plan: &Plan,
    options: &DeployOptions,
) -> Result<(), DeployError> {
    let clients = crate::apply::Clients::new(&prepared.sdk, prepared.kube.clone());
    Ok(crate::apply::execute(&clients, plan, options.rollout_timeout).await?)
}
