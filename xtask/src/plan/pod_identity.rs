//! The EKS Pod Identity association that binds the helper's service account to its role.
//! It exists only in pod-identity mode; switching to IRSA removes the one this tool made.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_eks::Client;

use super::{Change, ResourceChange, Scope};
use super::{Convergence, settle};
use crate::aws::AwsError;
use crate::ownership::{self, Ownership};

/// Every failure here is a failed EKS call.
pub type PodIdentityError = AwsError;

fn call_error<E: std::error::Error + Send + Sync + 'static>(
    operation: &'static str,
    resource: &str,
) -> impl FnOnce(E) -> AwsError {
    AwsError::call("eks", operation, resource)
}

/// The EKS Pod Identity calls a plan makes.
#[derive(Debug, Clone)]
pub enum AssociationStep {
    CreateAssociation {
        cluster: String,
        namespace: String,
        service_account: String,
        role_arn: String,
        tags: std::collections::BTreeMap<String, String>,
    },
    UpdateAssociation {
        cluster: String,
        id: String,
        role_arn: String,
    },
    DeleteAssociation {
        cluster: String,
        id: String,
    },
    TagAssociation {
        arn: String,
        tags: std::collections::BTreeMap<String, String>,
    },
}

/// The live association for the service account.
struct LiveAssociation {
    id: String,
    arn: String,
    role_arn: String,
    tags: BTreeMap<String, String>,
}

async fn live(
    client: &Client,
    cluster: &str,
    namespace: &str,
    service_account: &str,
) -> Result<Option<LiveAssociation>, PodIdentityError> {
    let resource = format!("{cluster} {namespace}/{service_account}");
    let listed = client
        .list_pod_identity_associations()
        .cluster_name(cluster)
        .namespace(namespace)
        .service_account(service_account)
        .send()
        .await
        .map_err(call_error("ListPodIdentityAssociations", &resource))?;
    let Some(id) = listed
        .associations()
        .first()
        .and_then(|summary| summary.association_id())
    else {
        return Ok(None);
    };
    let described = client
        .describe_pod_identity_association()
        .cluster_name(cluster)
        .association_id(id)
        .send()
        .await
        .map_err(call_error("DescribePodIdentityAssociation", &resource))?;
    let association = described
        .association
        .unwrap_or_else(|| aws_sdk_eks::types::PodIdentityAssociation::builder().build());
    let tags: HashMap<String, String> = association.tags.unwrap_or_default();
    Ok(Some(LiveAssociation {
        id: id.to_owned(),
        arn: association.association_arn.unwrap_or_default(),
        role_arn: association.role_arn.unwrap_or_default(),
        tags: tags.into_iter().collect(),
    }))
}

pub const KIND: &str = "EKS Pod Identity association";

/// Plans the association: present with `role_arn` in pod-identity mode (`Some`), absent in
/// IRSA mode (`None`), where only an association this tool made is removed. One that
/// exists without our tag is a conflict, or with `adopt` an adoption (tagged, repointed).
pub async fn plan(
    client: &Client,
    cluster: &str,
    namespace: &str,
    service_account: &str,
    role_arn: Option<&str>,
    tags: &BTreeMap<String, String>,
    adopt: bool,
) -> Result<Option<ResourceChange>, PodIdentityError> {
    let name = format!("{namespace}/{service_account}");
    let live = live(client, cluster, namespace, service_account).await?;
    let change = match (role_arn, live) {
        (Some(role_arn), None) => ResourceChange::new(Scope::Iam, KIND, name, Change::Create)
            .with_steps(vec![AssociationStep::CreateAssociation {
                cluster: cluster.to_owned(),
                namespace: namespace.to_owned(),
                service_account: service_account.to_owned(),
                role_arn: role_arn.to_owned(),
                tags: tags.clone(),
            }]),
        (Some(role_arn), Some(live)) => {
            let mut convergence = Convergence::default();
            if live.role_arn != role_arn {
                convergence.diff.push(format!(
                    "~ .roleArn: \"{}\" -> \"{role_arn}\"",
                    live.role_arn
                ));
                convergence.steps.push(AssociationStep::UpdateAssociation {
                    cluster: cluster.to_owned(),
                    id: live.id.clone(),
                    role_arn: role_arn.to_owned(),
                });
            }
            let missing = ownership::missing_tags(&live.tags, tags);
            if !missing.is_empty() {
                convergence
                    .diff
                    .extend(ownership::tag_lines(&live.tags, &missing));
                convergence.steps.push(AssociationStep::TagAssociation {
                    arn: live.arn.clone(),
                    tags: missing.into_iter().collect(),
                });
            }
            let (change, steps) = settle(ownership::by_managed_by(&live.tags), adopt, convergence);
            ResourceChange::new(Scope::Iam, KIND, name, change).with_steps(steps)
        }
        (None, Some(live)) => match ownership::by_managed_by(&live.tags) {
            Ownership::Ours => ResourceChange::new(Scope::Iam, KIND, name, Change::Delete)
                .with_steps(vec![AssociationStep::DeleteAssociation {
                    cluster: cluster.to_owned(),
                    id: live.id,
                }]),
            Ownership::NotOurs(_) => ResourceChange::new(Scope::Iam, KIND, name, Change::NoOp)
                .with_note(
                    "kept: not made by this tool, but it gives the pods an identity next to IRSA's",
                ),
        },
        (None, None) => return Ok(None),
    };
    Ok(Some(change))
}

pub async fn apply(client: &Client, step: &AssociationStep) -> Result<(), PodIdentityError> {
    match step {
        AssociationStep::CreateAssociation {
            cluster,
            namespace,
            service_account,
            role_arn,
            tags,
        } => {
            client
                .create_pod_identity_association()
                .cluster_name(cluster)
                .namespace(namespace)
                .service_account(service_account)
                .role_arn(role_arn)
                .set_tags(Some(tags.clone().into_iter().collect()))
                .send()
                .await
                .map_err(call_error(
                    "CreatePodIdentityAssociation",
                    &format!("{namespace}/{service_account}"),
                ))?;
        }
        AssociationStep::UpdateAssociation {
            cluster,
            id,
            role_arn,
        } => {
            client
                .update_pod_identity_association()
                .cluster_name(cluster)
                .association_id(id)
                .role_arn(role_arn)
                .send()
                .await
                .map_err(call_error("UpdatePodIdentityAssociation", id))?;
        }
        AssociationStep::TagAssociation { arn, tags } => {
            client
                .tag_resource()
                .resource_arn(arn)
                .set_tags(Some(tags.clone().into_iter().collect()))
                .send()
                .await
                .map_err(call_error("TagResource", arn))?;
        }
        AssociationStep::DeleteAssociation { cluster, id } => {
            client
                .delete_pod_identity_association()
                .cluster_name(cluster)
                .association_id(id)
                .send()
                .await
                .map_err(call_error("DeletePodIdentityAssociation", id))?;
        }
    }
    Ok(())
}
