//! IAM: the permission policy (shared by every cluster of the account), the role (one per
//! cluster) and the attachment between them.

use std::collections::BTreeMap;

use aws_sdk_iam::Client;
use aws_sdk_iam::types::Tag;
use serde_json::Value;

use super::{Change, ResourceChange, Scope};
use super::{Convergence, conflict_unless_adopted, settle};
use crate::aws::{AwsError, missing_as_none};
use crate::decide::Target;
use crate::documents::{diff, normalize_policy, parse_iam_document};
use crate::ownership::{self, Ownership, missing_tags, tag_lines};
use crate::render::Rendered;

/// IAM keeps at most five versions of a managed policy.
const MAX_POLICY_VERSIONS: usize = 5;
pub const POLICY_KIND: &str = "IAM policy";
pub const ROLE_KIND: &str = "IAM role";
pub const ATTACHMENT_KIND: &str = "IAM role policy attachment";

#[derive(Debug, thiserror::Error)]
pub enum IamError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("the live {resource} is not a readable policy document: {message}")]
    Document { resource: String, message: String },
}

/// The IAM calls a plan makes.
#[derive(Debug, Clone)]
pub enum IamStep {
    CreatePolicy {
        name: String,
        /// The ARN it will have: IAM's answer when another run created it meanwhile.
        arn: String,
        document: String,
        tags: Vec<(String, String)>,
    },
    /// A new default version; `delete_version` first when the policy already has five.
    NewPolicyVersion {
        arn: String,
        document: String,
        delete_version: Option<String>,
    },
    TagPolicy {
        arn: String,
        tags: Vec<(String, String)>,
    },
    CreateRole {
        name: String,
        trust: String,
        tags: Vec<(String, String)>,
    },
    UpdateTrust {
        role: String,
        trust: String,
    },
    TagRole {
        role: String,
        tags: Vec<(String, String)>,
    },
    AttachPolicy {
        role: String,
        policy_arn: String,
    },
    DetachPolicy {
        role: String,
        policy_arn: String,
    },
    DeleteRole {
        role: String,
    },
    /// Deletes the non-default versions, then the policy.
    DeletePolicy {
        arn: String,
        versions: Vec<String>,
    },
}

/// What the IAM scope should look like.
#[derive(Debug, Clone)]
pub struct DesiredIam {
    /// The cluster and region the role serves, as its tags must name them.
    pub cluster: String,
    pub region: String,
    pub policy_name: String,
    pub policy_arn: String,
    pub policy_document: String,
    pub policy_tags: BTreeMap<String, String>,
    pub role_name: String,
    pub trust_document: String,
    pub role_tags: BTreeMap<String, String>,
}

impl DesiredIam {
    pub fn of(target: &Target, rendered: &Rendered) -> DesiredIam {
        DesiredIam {
            cluster: target.cluster.clone(),
            region: target.region.clone(),
            policy_name: target.policy_name.clone(),
            policy_arn: target.policy_arn.clone(),
            policy_document: rendered.iam_policy.clone(),
            policy_tags: target.policy_tags.clone(),
            role_name: target.role_name.clone(),
            trust_document: rendered.trust_policy.clone(),
            role_tags: target.role_tags.clone(),
        }
    }
}

fn call_error<E: std::error::Error + Send + Sync + 'static>(
    operation: &'static str,
    resource: &str,
) -> impl FnOnce(E) -> IamError {
    let call = AwsError::call("iam", operation, resource);
    move |error| IamError::Aws(call(error))
}

fn tag_list(tags: &[(String, String)]) -> Vec<Tag> {
    tags.iter()
        .filter_map(|(key, value)| Tag::builder().key(key).value(value).build().ok())
        .collect()
}

fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|tag| (tag.key().to_owned(), tag.value().to_owned()))
        .collect()
}

fn parse_desired(text: &str, resource: &str) -> Result<Value, IamError> {
    serde_json::from_str(text).map_err(|error| IamError::Document {
        resource: resource.to_owned(),
        message: error.to_string(),
    })
}

fn parse_live(text: &str, resource: &str) -> Result<Value, IamError> {
    parse_iam_document(text).map_err(|error| IamError::Document {
        resource: resource.to_owned(),
        message: error.to_string(),
    })
}

/// The policy, or `None` when IAM has no such policy.
async fn get_policy(
    client: &Client,
    arn: &str,
) -> Result<Option<aws_sdk_iam::types::Policy>, IamError> {
    let result = client.get_policy().policy_arn(arn).send().await;
    missing_as_none(result, |error| error.is_no_such_entity_exception())
        .map(|output| output.and_then(|output| output.policy))
        .map_err(call_error("GetPolicy", arn))
}

/// The role, or `None` when IAM has no such role.
async fn get_role(
    client: &Client,
    name: &str,
) -> Result<Option<aws_sdk_iam::types::Role>, IamError> {
    let result = client.get_role().role_name(name).send().await;
    missing_as_none(result, |error| error.is_no_such_entity_exception())
        .map(|output| output.and_then(|output| output.role))
        .map_err(call_error("GetRole", name))
}

/// Plans the policy, the role and the attachment, in that order. A policy or role of our
/// name that is not ours is a conflict, or with `adopt` an adoption.
pub async fn plan(
    client: &Client,
    desired: &DesiredIam,
    adopt: bool,
) -> Result<Vec<ResourceChange>, IamError> {
    let policy = plan_policy(client, desired, adopt).await?;
    let (role, role_state) = plan_role(client, desired, adopt).await?;
    let mut changes = vec![policy, role];
    match role_state {
        // Nothing is attached to a role that stays someone else's.
        RoleState::Foreign => {}
        RoleState::Missing => changes.push(plan_attachment(client, desired, false).await?),
        RoleState::Exists => changes.push(plan_attachment(client, desired, true).await?),
    }
    Ok(changes)
}

/// Where the role stands after planning.
enum RoleState {
    Missing,
    /// Ours, or adopted.
    Exists,
    /// Someone else's, and not adopted.
    Foreign,
}

async fn plan_policy(
    client: &Client,
    desired: &DesiredIam,
    adopt: bool,
) -> Result<ResourceChange, IamError> {
    let arn = &desired.policy_arn;
    let desired_tags: Vec<(String, String)> = desired.policy_tags.clone().into_iter().collect();
    let live = get_policy(client, arn).await?;
    let Some(live) = live else {
        return Ok(ResourceChange::new(
            Scope::Iam,
            POLICY_KIND,
            &desired.policy_name,
            Change::Create,
        )
        .with_steps(vec![IamStep::CreatePolicy {
            name: desired.policy_name.clone(),
            arn: arn.clone(),
            document: desired.policy_document.clone(),
            tags: desired_tags,
        }]));
    };
    let live_tags = tag_map(live.tags());
    let ownership = ownership::by_managed_by(&live_tags);
    if let Some(change) = conflict_unless_adopted(&ownership, adopt) {
        // Someone else's: nothing more is read from it than it takes to say so.
        return Ok(ResourceChange::new(
            Scope::Iam,
            POLICY_KIND,
            &desired.policy_name,
            change,
        ));
    }
    let version_id = live.default_version_id().unwrap_or_default().to_owned();
    let version = client
        .get_policy_version()
        .policy_arn(arn)
        .version_id(&version_id)
        .send()
        .await
        .map_err(call_error("GetPolicyVersion", arn))?;
    let live_document = version
        .policy_version
        .and_then(|version| version.document)
        .unwrap_or_default();
    let live_value = normalize_policy(&parse_live(&live_document, arn)?);
    let desired_value = normalize_policy(&parse_desired(
        &desired.policy_document,
        "the rendered IAM policy",
    )?);
    let mut convergence = Convergence {
        diff: diff(&live_value, &desired_value),
        steps: Vec::new(),
    };
    if !convergence.diff.is_empty() {
        let versions = client
            .list_policy_versions()
            .policy_arn(arn)
            .send()
            .await
            .map_err(call_error("ListPolicyVersions", arn))?;
        let mut non_default: Vec<_> = versions
            .versions()
            .iter()
            .filter(|version| !version.is_default_version())
            .collect();
        non_default.sort_by_key(|version| {
            version
                .create_date()
                .map(|date| (date.secs(), date.subsec_nanos()))
        });
        let delete_version = (versions.versions().len() >= MAX_POLICY_VERSIONS)
            .then(|| {
                non_default
                    .first()
                    .and_then(|version| version.version_id().map(str::to_owned))
            })
            .flatten();
        if let Some(oldest) = &delete_version {
            convergence.diff.push(format!(
                "(deletes the oldest version {oldest}: IAM keeps at most {MAX_POLICY_VERSIONS})"
            ));
        }
        convergence.steps.push(IamStep::NewPolicyVersion {
            arn: arn.clone(),
            document: desired.policy_document.clone(),
            delete_version,
        });
    }
    let tags = missing_tags(&live_tags, &desired.policy_tags);
    if !tags.is_empty() {
        convergence.diff.extend(tag_lines(&live_tags, &tags));
        convergence.steps.push(IamStep::TagPolicy {
            arn: arn.clone(),
            tags,
        });
    }
    let (change, steps) = settle(ownership, adopt, convergence);
    Ok(
        ResourceChange::new(Scope::Iam, POLICY_KIND, &desired.policy_name, change)
            .with_steps(steps),
    )
}

async fn plan_role(
    client: &Client,
    desired: &DesiredIam,
    adopt: bool,
) -> Result<(ResourceChange, RoleState), IamError> {
    let name = &desired.role_name;
    let live = get_role(client, name).await?;
    let Some(live) = live else {
        let change =
            ResourceChange::new(Scope::Iam, ROLE_KIND, name, Change::Create).with_steps(vec![
                IamStep::CreateRole {
                    name: name.clone(),
                    trust: desired.trust_document.clone(),
                    tags: desired.role_tags.clone().into_iter().collect(),
                },
            ]);
        return Ok((change, RoleState::Missing));
    };
    let live_tags = tag_map(live.tags());
    let ownership = ownership::of_cluster_resource(&live_tags, &desired.cluster, &desired.region);
    let state = match (&ownership, adopt) {
        (Ownership::NotOurs(_), false) => RoleState::Foreign,
        (Ownership::NotOurs(_), true) | (Ownership::Ours, _) => RoleState::Exists,
    };
    let live_trust = normalize_policy(&parse_live(
        live.assume_role_policy_document().unwrap_or_default(),
        name,
    )?);
    let desired_trust = normalize_policy(&parse_desired(
        &desired.trust_document,
        "the rendered trust policy",
    )?);
    let mut convergence = Convergence {
        diff: diff(&live_trust, &desired_trust)
            .into_iter()
            .map(|line| format!("trust policy {line}"))
            .collect(),
        steps: Vec::new(),
    };
    if !convergence.diff.is_empty() {
        convergence.steps.push(IamStep::UpdateTrust {
            role: name.clone(),
            trust: desired.trust_document.clone(),
        });
    }
    let tags = missing_tags(&live_tags, &desired.role_tags);
    if !tags.is_empty() {
        convergence.diff.extend(tag_lines(&live_tags, &tags));
        convergence.steps.push(IamStep::TagRole {
            role: name.clone(),
            tags,
        });
    }
    let (change, steps) = settle(ownership, adopt, convergence);
    Ok((
        ResourceChange::new(Scope::Iam, ROLE_KIND, name, change).with_steps(steps),
        state,
    ))
}

async fn attached_policies(client: &Client, role: &str) -> Result<Vec<String>, IamError> {
    let attached = client
        .list_attached_role_policies()
        .role_name(role)
        .send()
        .await
        .map_err(call_error("ListAttachedRolePolicies", role))?;
    Ok(attached
        .attached_policies()
        .iter()
        .filter_map(|policy| policy.policy_arn().map(str::to_owned))
        .collect())
}

async fn plan_attachment(
    client: &Client,
    desired: &DesiredIam,
    role_exists: bool,
) -> Result<ResourceChange, IamError> {
    let name = format!("{} -> {}", desired.role_name, desired.policy_name);
    let attached = role_exists
        && attached_policies(client, &desired.role_name)
            .await?
            .contains(&desired.policy_arn);
    if attached {
        return Ok(ResourceChange::new(
            Scope::Iam,
            ATTACHMENT_KIND,
            name,
            Change::NoOp,
        ));
    }
    Ok(
        ResourceChange::new(Scope::Iam, ATTACHMENT_KIND, name, Change::Create).with_steps(vec![
            IamStep::AttachPolicy {
                role: desired.role_name.clone(),
                policy_arn: desired.policy_arn.clone(),
            },
        ]),
    )
}

async fn inline_policies(client: &Client, role: &str) -> Result<Vec<String>, IamError> {
    let listed = client
        .list_role_policies()
        .role_name(role)
        .send()
        .await
        .map_err(call_error("ListRolePolicies", role))?;
    Ok(listed.policy_names().to_vec())
}

fn policy_name_of(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// Plans the removal of what this tool created, and only of our parts of it: our policy is
/// detached from our role; the role is deleted only when nothing else is attached to it or
/// written into it; the policy only when it carries our tag and no role, user or group at
/// all still uses it afterwards.
pub async fn plan_destroy(
    client: &Client,
    desired: &DesiredIam,
) -> Result<Vec<ResourceChange>, IamError> {
    let mut changes = plan_destroy_role(client, desired).await?;
    // Whether this run detaches our policy from our role, so that the role no longer
    // counts as a user of the policy.
    let detaching_from_our_role = changes
        .iter()
        .any(|change| change.kind == ATTACHMENT_KIND && change.change == Change::Delete);
    changes.extend(plan_destroy_policy(client, desired, detaching_from_our_role).await?);
    Ok(changes)
}

/// Our role: our policy detached from it, then the role deleted unless someone else
/// attached or wrote policies into it.
async fn plan_destroy_role(
    client: &Client,
    desired: &DesiredIam,
) -> Result<Vec<ResourceChange>, IamError> {
    let mut changes = Vec::new();
    let role_name = &desired.role_name;
    if let Some(role) = get_role(client, role_name).await? {
        match ownership::of_cluster_resource(
            &tag_map(role.tags()),
            &desired.cluster,
            &desired.region,
        ) {
            Ownership::Ours => {
                let attached = attached_policies(client, role_name).await?;
                if attached.contains(&desired.policy_arn) {
                    changes.push(
                        ResourceChange::new(
                            Scope::Iam,
                            ATTACHMENT_KIND,
                            format!("{role_name} -> {}", desired.policy_name),
                            Change::Delete,
                        )
                        .with_steps(vec![IamStep::DetachPolicy {
                            role: role_name.clone(),
                            policy_arn: desired.policy_arn.clone(),
                        }]),
                    );
                }
                let mut others: Vec<String> = attached
                    .iter()
                    .filter(|arn| **arn != desired.policy_arn)
                    .map(|arn| format!("attached policy {}", policy_name_of(arn)))
                    .collect();
                others.extend(
                    inline_policies(client, role_name)
                        .await?
                        .into_iter()
                        .map(|name| format!("inline policy {name}")),
                );
                if others.is_empty() {
                    changes.push(
                        ResourceChange::new(Scope::Iam, ROLE_KIND, role_name, Change::Delete)
                            .with_steps(vec![IamStep::DeleteRole {
                                role: role_name.clone(),
                            }]),
                    );
                } else {
                    let others = others.join(", ");
                    tracing::warn!(
                        "keeping the IAM role {role_name}: someone else added {others} to it; delete the role yourself once they are no longer needed"
                    );
                    changes.push(
                        ResourceChange::new(Scope::Iam, ROLE_KIND, role_name, Change::NoOp)
                            .with_note(format!("kept: it also has {others}, which are not ours")),
                    );
                }
            }
            Ownership::NotOurs(reason) => changes.push(ResourceChange::kept_as_not_ours(
                Scope::Iam,
                ROLE_KIND,
                role_name,
                &reason,
            )),
        }
    }

    Ok(changes)
}

/// Our policy: deleted only when no role, user or group uses it once this run is done.
async fn plan_destroy_policy(
    client: &Client,
    desired: &DesiredIam,
    detaching_from_our_role: bool,
) -> Result<Vec<ResourceChange>, IamError> {
    let mut changes = Vec::new();
    let role_name = &desired.role_name;
    let arn = &desired.policy_arn;
    let Some(policy) = get_policy(client, arn).await? else {
        return Ok(changes);
    };
    if let Ownership::NotOurs(reason) = ownership::by_managed_by(&tag_map(policy.tags())) {
        changes.push(ResourceChange::kept_as_not_ours(
            Scope::Iam,
            POLICY_KIND,
            &desired.policy_name,
            &reason,
        ));
        return Ok(changes);
    }
    let entities = client
        .list_entities_for_policy()
        .policy_arn(arn)
        .send()
        .await
        .map_err(call_error("ListEntitiesForPolicy", arn))?;
    let mut others: Vec<String> = entities
        .policy_roles()
        .iter()
        .filter_map(|role| role.role_name().map(str::to_owned))
        .filter(|name| !(detaching_from_our_role && name == role_name))
        .collect();
    others.extend(
        entities
            .policy_users()
            .iter()
            .filter_map(|user| user.user_name().map(|n| format!("user {n}"))),
    );
    others.extend(
        entities
            .policy_groups()
            .iter()
            .filter_map(|group| group.group_name().map(|n| format!("group {n}"))),
    );
    if !others.is_empty() {
        changes.push(
            ResourceChange::new(Scope::Iam, POLICY_KIND, &desired.policy_name, Change::NoOp)
                .with_note(format!("kept: still attached to {}", others.join(", "))),
        );
        return Ok(changes);
    }
    let versions = client
        .list_policy_versions()
        .policy_arn(arn)
        .send()
        .await
        .map_err(call_error("ListPolicyVersions", arn))?;
    let non_default: Vec<String> = versions
        .versions()
        .iter()
        .filter(|version| !version.is_default_version())
        .filter_map(|version| version.version_id().map(str::to_owned))
        .collect();
    changes.push(
        ResourceChange::new(
            Scope::Iam,
            POLICY_KIND,
            &desired.policy_name,
            Change::Delete,
        )
        .with_steps(vec![IamStep::DeletePolicy {
            arn: arn.clone(),
            versions: non_default,
        }]),
    );
    Ok(changes)
}

/// Carries out one IAM step.
pub async fn apply(client: &Client, step: &IamStep) -> Result<(), IamError> {
    match step {
        IamStep::CreatePolicy {
            name,
            arn,
            document,
            tags,
        } => create_policy(client, name, arn, document, tags).await,
        IamStep::NewPolicyVersion {
            arn,
            document,
            delete_version,
        } => new_policy_version(client, arn, document, delete_version.as_deref()).await,
        IamStep::TagPolicy { arn, tags } => tag_policy(client, arn, tags).await,
        IamStep::CreateRole { name, trust, tags } => create_role(client, name, trust, tags).await,
        IamStep::UpdateTrust { role, trust } => update_trust(client, role, trust).await,
        IamStep::TagRole { role, tags } => tag_role(client, role, tags).await,
        IamStep::AttachPolicy { role, policy_arn } => attach_policy(client, role, policy_arn).await,
        IamStep::DetachPolicy { role, policy_arn } => detach_policy(client, role, policy_arn).await,
        IamStep::DeleteRole { role } => delete_role(client, role).await,
        IamStep::DeletePolicy { arn, versions } => delete_policy(client, arn, versions).await,
    }
}

/// Creates the policy. The policy is shared by every cluster of the account, so the
/// clusters of a fleet deployed at once may all plan to create it: when IAM says it exists
/// and it carries our managed-by tag, another run of this tool created it meanwhile, with
/// the same document, and that is success (the next plan converges any difference).
async fn create_policy(
    client: &Client,
    name: &str,
    arn: &str,
    document: &str,
    tags: &[(String, String)],
) -> Result<(), IamError> {
    let created = client
        .create_policy()
        .policy_name(name)
        .policy_document(document)
        .description("Lets the CNI metrics helper publish to the Kubernetes CloudWatch namespace")
        .set_tags(Some(tag_list(tags)))
        .send()
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|service| service.is_entity_already_exists_exception()) =>
        {
            let ours = get_policy(client, arn)
                .await?
                .is_some_and(|live| ownership::has_managed_by(&tag_map(live.tags())));
            if ours {
                tracing::info!("policy {name} was created meanwhile by another run of this tool");
                Ok(())
            } else {
                Err(call_error("CreatePolicy", name)(error))
            }
        }
        Err(error) => Err(call_error("CreatePolicy", name)(error)),
    }
}

async fn new_policy_version(
    client: &Client,
    arn: &str,
    document: &str,
    delete_version: Option<&str>,
) -> Result<(), IamError> {
    if let Some(version) = delete_version {
        client
            .delete_policy_version()
            .policy_arn(arn)
            .version_id(version)
            .send()
            .await
            .map_err(call_error("DeletePolicyVersion", arn))?;
    }
    client
        .create_policy_version()
        .policy_arn(arn)
        .policy_document(document)
        .set_as_default(true)
        .send()
        .await
        .map_err(call_error("CreatePolicyVersion", arn))?;
    Ok(())
}

async fn tag_policy(client: &Client, arn: &str, tags: &[(String, String)]) -> Result<(), IamError> {
    client
        .tag_policy()
        .policy_arn(arn)
        .set_tags(Some(tag_list(tags)))
        .send()
        .await
        .map_err(call_error("TagPolicy", arn))?;
    Ok(())
}

async fn create_role(
    client: &Client,
    name: &str,
    trust: &str,
    tags: &[(String, String)],
) -> Result<(), IamError> {
    client
        .create_role()
        .role_name(name)
        .assume_role_policy_document(trust)
        .description("Assumed by the CNI metrics helper pods to publish CNI metrics to CloudWatch")
        .set_tags(Some(tag_list(tags)))
        .send()
        .await
        .map_err(call_error("CreateRole", name))?;
    Ok(())
}

async fn update_trust(client: &Client, role: &str, trust: &str) -> Result<(), IamError> {
    client
        .update_assume_role_policy()
        .role_name(role)
        .policy_document(trust)
        .send()
        .await
        .map_err(call_error("UpdateAssumeRolePolicy", role))?;
    Ok(())
}

async fn tag_role(client: &Client, role: &str, tags: &[(String, String)]) -> Result<(), IamError> {
    client
        .tag_role()
        .role_name(role)
        .set_tags(Some(tag_list(tags)))
        .send()
        .await
        .map_err(call_error("TagRole", role))?;
    Ok(())
}

async fn attach_policy(client: &Client, role: &str, policy_arn: &str) -> Result<(), IamError> {
    client
        .attach_role_policy()
        .role_name(role)
        .policy_arn(policy_arn)
        .send()
        .await
        .map_err(call_error("AttachRolePolicy", role))?;
    Ok(())
}

async fn detach_policy(client: &Client, role: &str, policy_arn: &str) -> Result<(), IamError> {
    client
        .detach_role_policy()
        .role_name(role)
        .policy_arn(policy_arn)
        .send()
        .await
        .map_err(call_error("DetachRolePolicy", role))?;
    Ok(())
}

async fn delete_role(client: &Client, role: &str) -> Result<(), IamError> {
    client
        .delete_role()
        .role_name(role)
        .send()
        .await
        .map_err(call_error("DeleteRole", role))?;
    Ok(())
}

async fn delete_policy(client: &Client, arn: &str, versions: &[String]) -> Result<(), IamError> {
    for version in versions {
        client
            .delete_policy_version()
            .policy_arn(arn)
            .version_id(version)
            .send()
            .await
            .map_err(call_error("DeletePolicyVersion", arn))?;
    }
    client
        .delete_policy()
        .policy_arn(arn)
        .send()
        .await
        .map_err(call_error("DeletePolicy", arn))?;
    Ok(())
}
