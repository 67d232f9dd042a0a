//! Carries out a [`Plan`]: every step in order, each through the client of its scope,
//! stopping at the first failure. Everything before the failed step stays applied; the
//! next run plans from live state again and continues from there.

use std::time::Duration;

use aws_config::SdkConfig;

use crate::aws::AwsError;
use crate::plan::iam::IamError;
use crate::plan::kubernetes::KubeError;
use crate::plan::{ConflictError, Plan, Step, alarms, dashboard, iam, kubernetes, pod_identity};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Conflicts(#[from] ConflictError),
    #[error(transparent)]
    Iam(#[from] IamError),
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Kubernetes(#[from] KubeError),
    #[error(
        "the plan changes {kind} {name} but no Kubernetes connection was made; this is a bug: the plan was made with the Kubernetes scope"
    )]
    NoKubernetesClient { kind: &'static str, name: String },
}

/// The clients a plan's steps are made with.
pub struct Clients {
    pub iam: aws_sdk_iam::Client,
    pub eks: aws_sdk_eks::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    /// Only when the Kubernetes scope is in use.
    pub kube: Option<kube::Client>,
}

impl Clients {
    pub fn new(sdk: &SdkConfig, kube: Option<kube::Client>) -> Clients {
        Clients {
            iam: aws_sdk_iam::Client::new(sdk),
            eks: aws_sdk_eks::Client::new(sdk),
            cloudwatch: aws_sdk_cloudwatch::Client::new(sdk),
            kube,
        }
    }
}

/// Carries out every step of `plan`, in order. A plan with conflicts is refused before
/// its first step: nothing anywhere changes.
pub async fn execute(
    clients: &Clients,
    plan: &Plan,
    rollout_timeout: Duration,
) -> Result<(), ApplyError> {
    plan.refuse_conflicts()?;
    for change in &plan.changes {
        if !change.steps.is_empty() {
            tracing::info!(kind = change.kind, name = %change.name, "applying");
        }
        for step in &change.steps {
            match step {
                Step::Iam(step) => iam::apply(&clients.iam, step).await?,
                Step::PodIdentity(step) => pod_identity::apply(&clients.eks, step).await?,
                Step::Alarms(step) => alarms::apply(&clients.cloudwatch, step).await?,
                Step::Dashboard(step) => dashboard::apply(&clients.cloudwatch, step).await?,
                Step::Kubernetes(step) => {
                    let client =
                        clients
                            .kube
                            .as_ref()
                            .ok_or_else(|| ApplyError::NoKubernetesClient {
                                kind: change.kind,
                                name: change.name.clone(),
                            })?;
                    kubernetes::apply(client, step, rollout_timeout).await?;
                }
            }
        }
    }
    Ok(())
}
