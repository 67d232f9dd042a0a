//! One pass from the user's inputs to everything a cluster command works with:
//! settings -> facts -> decide -> render -> preflight, each step its own call with its own
//! typed output. The inputs are only read; every value is resolved once and passed on.

use std::time::Duration;

use aws_config::SdkConfig;

use crate::apply::{self, ApplyError, Clients};
use crate::catalog::{Catalog, Version};
use crate::decide::{DecideError, Target, decide};
use crate::facts::{self, ClusterRequirement, ClusterState, Facts, FactsError};
use crate::flags::ClusterInputs;
use crate::plan::kubernetes::{self, KubeError, LiveDeployment};
use crate::plan::{DeployOptions, Plan, PlanError, PlanInputs, Scope};
use crate::preflight::{self, Check};
use crate::render::{ManifestObject, RenderError, Rendered, possible_objects, render};
use crate::settings::{self, DeployInput, SERVICE_ACCOUNT, Settings, SettingsError, TargetInput};

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("no AWS region: pass --region, or set AWS_REGION or a region in your AWS profile")]
    NoRegion,
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Facts(#[from] FactsError),
    #[error(transparent)]
    Decide(#[from] DecideError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("preflight failed: {0}")]
    Preflight(String),
    #[error(transparent)]
    Profile(#[from] crate::aws::ProfileError),
}

/// Everything a plan is made from, and the clients to carry it out with.
pub struct Prepared {
    pub catalog: &'static Catalog,
    pub settings: Settings,
    pub facts: Facts,
    pub target: Target,
    pub rendered: Rendered,
    /// Every Kubernetes object the tool may have made for this target, in any mode.
    pub possible_objects: Vec<ManifestObject>,
    /// The preflight checks; [`Prepared::require_preflight`] refuses to go on past a failure.
    pub checks: Vec<Check>,
    pub sdk: SdkConfig,
}

/// Resolves the inputs, reads the live facts, decides, renders and checks.
pub async fn prepare(
    catalog: &'static Catalog,
    target: &TargetInput,
    deploy: &DeployInput,
    options: &DeployOptions,
    requirement: ClusterRequirement,
) -> Result<Prepared, PrepareError> {
    let region = match &target.region {
        Some(region) => region.clone(),
        None => crate::aws::region_from_chain()
            .await
            .ok_or(PrepareError::NoRegion)?,
    };
    let settings = settings::resolve(target, deploy, Some(region), catalog)?;
    let sdk =
        crate::aws::load_with_profile(&settings.region.name, settings.profile.as_deref()).await?;
    let with_kubernetes = options.scopes.contains(&Scope::Kubernetes);
    let with_alarms = options.scopes.contains(&Scope::Alarms);
    let facts = facts::gather(&settings, &sdk, requirement, with_kubernetes, with_alarms).await?;
    let prepared = Prepared::new(catalog, settings, facts, sdk)?;
    if let Some(reason) = &prepared.target.identity_reason {
        tracing::info!(
            "identity auto: {}, because {reason}",
            prepared.target.identity.as_str()
        );
    }
    Ok(prepared)
}

/// What every cluster command starts with: [`prepare`] from the command's inputs, the
/// checks logged, and (unless the cluster may be gone) a failed check refused.
pub async fn prepare_checked(
    inputs: &ClusterInputs,
    requirement: ClusterRequirement,
) -> anyhow::Result<Prepared> {
    let prepared = prepare(
        crate::catalog::catalog()?,
        &inputs.target,
        &inputs.deploy,
        &inputs.options,
        requirement,
    )
    .await?;
    for check in &prepared.checks {
        tracing::debug!(ok = check.ok, "preflight {}: {}", check.name, check.detail);
    }
    // Destroy also cleans up after a broken or deleted cluster, so only the others insist.
    if requirement == ClusterRequirement::MustExist {
        prepared.require_preflight()?;
    }
    Ok(prepared)
}

impl Prepared {
    fn new(
        catalog: &'static Catalog,
        settings: Settings,
        facts: Facts,
        sdk: SdkConfig,
    ) -> Result<Prepared, PrepareError> {
        let target = decide(&settings, &facts)?;
        let rendered = render(&target)?;
        let possible_objects = possible_objects(&target)?;
        let checks = preflight::check(&facts, &target);
        Ok(Prepared {
            catalog,
            settings,
            facts,
            target,
            rendered,
            possible_objects,
            checks,
            sdk,
        })
    }

    /// The same deployment at another version of the helper. Only the rendered artifacts
    /// depend on the version, so the live facts and the clients are kept instead of asked
    /// for again: `upgrade` moves through several versions and `status` compares two.
    pub fn at_version(&self, version: Version) -> Result<Prepared, PrepareError> {
        Prepared::new(
            self.catalog,
            self.settings.at_version(version),
            self.facts.clone(),
            self.sdk.clone(),
        )
    }

    /// Fails with every failed preflight check, each with its fix.
    pub fn require_preflight(&self) -> Result<(), PrepareError> {
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
            Err(PrepareError::Preflight(failures.join("; ")))
        }
    }

    /// The Kubernetes client, when the Kubernetes scope is in use.
    pub fn kube(&self) -> Option<&kube::Client> {
        self.facts.kube.as_ref().map(|kube| &kube.client)
    }

    fn plan_inputs(&self) -> PlanInputs<'_> {
        PlanInputs {
            sdk: &self.sdk,
            kube: self.kube(),
            catalog: self.catalog,
            target: &self.target,
            rendered: &self.rendered,
            possible_objects: &self.possible_objects,
            cluster_exists: matches!(self.facts.cluster, ClusterState::Live { .. }),
        }
    }

    /// The plan that brings every selected scope to the rendered state.
    pub async fn plan(&self, options: &DeployOptions) -> Result<Plan, PlanError> {
        self.plan_inputs().plan(options).await
    }

    /// The plan that removes what this tool created.
    pub async fn plan_destroy(&self, options: &DeployOptions) -> Result<Plan, PlanError> {
        self.plan_inputs().plan_destroy(options).await
    }

    /// Carries out `plan` (see [`crate::apply`]).
    pub async fn execute(&self, plan: &Plan, options: &DeployOptions) -> Result<(), ApplyError> {
        let clients = Clients::new(&self.sdk, self.kube().cloned());
        apply::execute(&clients, plan, options.rollout_timeout).await
    }

    /// Waits for the live Deployment's current rollout, whether or not this run changed it.
    pub async fn wait_for_rollout(&self, timeout: Duration) -> Result<(), KubeError> {
        match self.kube() {
            Some(client) => {
                kubernetes::wait_for_current_rollout(
                    client,
                    &self.target.namespace,
                    SERVICE_ACCOUNT,
                    timeout,
                )
                .await
            }
            None => Ok(()),
        }
    }

    /// The helper's live Deployment, when the Kubernetes scope is in use and it exists.
    pub async fn live_deployment(&self) -> Result<Option<LiveDeployment>, KubeError> {
        match self.kube() {
            Some(client) => {
                kubernetes::live_deployment(client, &self.target.namespace, SERVICE_ACCOUNT).await
            }
            None => Ok(None),
        }
    }
}
