//! IAM: the permission policy (shared by every cluster of the account), the role (one per
//! cluster) and the attachment between them.

use std::collections::BTreeMap;

use aws_sdk_iam::Client;
use aws_sdk_iam::types::Tag;
use serde_json::Value;

use super::{Change, ResourceChange, Scope, Step};
use crate::aws::{describe, missing_as_none};
use crate::documents::{diff, normalize_policy, parse_iam_document};
use crate::render::MANAGED_BY;

/// IAM keeps at most five versions of a managed policy.
const MAX_POLICY_VERSIONS: usize = 5;
/// The tag that marks what this tool created, and that `destroy` keys on.
pub const MANAGED_BY_TAG: &str = "managed-by";
/// The tag naming the cluster a role serves.
pub const CLUSTER_TAG: &str = "cni-metrics-xtask/cluster";

#[derive(Debug, thiserror::Error)]
pub enum IamError {
    #[error("iam:{operation} on {resource} failed: {message}")]
    Call {
        operation: &'static str,
        resource: String,
        message: String,
    },
    #[error("the live {resource} is not a readable policy document: {message}")]
    Document { resource: String, message: String },
}

/// What the IAM scope should look like.
#[derive(Debug, Clone)]
pub struct DesiredIam {
    pub policy_name: String,
    pub policy_arn: String,
    pub policy_document: String,
    pub policy_tags: BTreeMap<String, String>,
    pub role_name: String,
    pub trust_document: String,
    pub role_tags: BTreeMap<String, String>,
}

fn call_error<E: std::error::Error>(
    operation: &'static str,
    resource: &str,
) -> impl FnOnce(E) -> IamError {
    let resource = resource.to_owned();
    move |error| IamError::Call {
        operation,
        resource,
        message: describe(&error),
    }
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

/// The desired tags that are missing from `live` or differ there. Tags someone else added
/// are left alone.
fn missing_tags(
    live: &BTreeMap<String, String>,
    desired: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    desired
        .iter()
        .filter(|(key, value)| live.get(*key) != Some(*value))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

fn tag_diff(tags: &[(String, String)]) -> Vec<String> {
    tags.iter()
        .map(|(key, value)| format!("+ tag {key}={value}"))
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

/// Plans the policy, the role and the attachment, in that order.
pub async fn plan(client: &Client, desired: &DesiredIam) -> Result<Vec<ResourceChange>, IamError> {
    let policy = plan_policy(client, desired).await?;
    let (role, role_exists) = plan_role(client, desired).await?;
    let attachment = plan_attachment(client, desired, role_exists).await?;
    Ok(vec![policy, role, attachment])
}

async fn plan_policy(client: &Client, desired: &DesiredIam) -> Result<ResourceChange, IamError> {
    let arn = &desired.policy_arn;
    let kind = "IAM policy";
    let desired_tags: Vec<(String, String)> = desired.policy_tags.clone().into_iter().collect();
    let live = get_policy(client, arn).await?;
    let Some(live) = live else {
        return Ok(
            ResourceChange::new(Scope::Iam, kind, &desired.policy_name, Change::Create).with_steps(
                vec![Step::CreatePolicy {
                    name: desired.policy_name.clone(),
                    document: desired.policy_document.clone(),
                    tags: desired_tags,
                }],
            ),
        );
    };
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
    let mut lines = diff(&live_value, &desired_value);
    let mut steps = Vec::new();
    if !lines.is_empty() {
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
            lines.push(format!(
                "(deletes the oldest version {oldest}: IAM keeps at most {MAX_POLICY_VERSIONS})"
            ));
        }
        steps.push(Step::NewPolicyVersion {
            arn: arn.clone(),
            document: desired.policy_document.clone(),
            delete_version,
        });
    }
    let tags = missing_tags(&tag_map(live.tags()), &desired.policy_tags);
    if !tags.is_empty() {
        lines.extend(tag_diff(&tags));
        steps.push(Step::TagPolicy {
            arn: arn.clone(),
            tags,
        });
    }
    let change = if steps.is_empty() {
        Change::NoOp
    } else {
        Change::Update { diff: lines }
    };
    Ok(ResourceChange::new(Scope::Iam, kind, &desired.policy_name, change).with_steps(steps))
}

async fn plan_role(
    client: &Client,
    desired: &DesiredIam,
) -> Result<(ResourceChange, bool), IamError> {
    let name = &desired.role_name;
    let kind = "IAM role";
    let live = get_role(client, name).await?;
    let Some(live) = live else {
        let change = ResourceChange::new(Scope::Iam, kind, name, Change::Create).with_steps(vec![
            Step::CreateRole {
                name: name.clone(),
                trust: desired.trust_document.clone(),
                tags: desired.role_tags.clone().into_iter().collect(),
            },
        ]);
        return Ok((change, false));
    };
    let live_trust = normalize_policy(&parse_live(
        live.assume_role_policy_document().unwrap_or_default(),
        name,
    )?);
    let desired_trust = normalize_policy(&parse_desired(
        &desired.trust_document,
        "the rendered trust policy",
    )?);
    let mut lines: Vec<String> = diff(&live_trust, &desired_trust)
        .into_iter()
        .map(|line| format!("trust policy {line}"))
        .collect();
    let mut steps = Vec::new();
    if !lines.is_empty() {
        steps.push(Step::UpdateTrust {
            role: name.clone(),
            trust: desired.trust_document.clone(),
        });
    }
    let tags = missing_tags(&tag_map(live.tags()), &desired.role_tags);
    if !tags.is_empty() {
        lines.extend(tag_diff(&tags));
        steps.push(Step::TagRole {
            role: name.clone(),
            tags,
        });
    }
    let change = if steps.is_empty() {
        Change::NoOp
    } else {
        Change::Update { diff: lines }
    };
    Ok((
        ResourceChange::new(Scope::Iam, kind, name, change).with_steps(steps),
        true,
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
    let kind = "IAM role policy attachment";
    let attached = role_exists
        && attached_policies(client, &desired.role_name)
            .await?
            .contains(&desired.policy_arn);
    if attached {
        return Ok(ResourceChange::new(Scope::Iam, kind, name, Change::NoOp));
    }
    Ok(
        ResourceChange::new(Scope::Iam, kind, name, Change::Create).with_steps(vec![
            Step::AttachPolicy {
                role: desired.role_name.clone(),
                policy_arn: desired.policy_arn.clone(),
            },
        ]),
    )
}

fn is_ours(tags: &[Tag]) -> bool {
    tags.iter()
        .any(|tag| tag.key() == MANAGED_BY_TAG && tag.value() == MANAGED_BY)
}

/// Plans the removal of what this tool created: the role (detached first) when it carries
/// our tag, and the policy when it carries our tag and no other role still uses it.
pub async fn plan_destroy(
    client: &Client,
    desired: &DesiredIam,
) -> Result<Vec<ResourceChange>, IamError> {
    let mut changes = Vec::new();
    let role_name = &desired.role_name;
    let role = get_role(client, role_name).await?;
    match role {
        Some(role) if is_ours(role.tags()) => {
            let attached = attached_policies(client, role_name).await?;
            for policy_arn in attached {
                let policy_name = policy_arn
                    .rsplit('/')
                    .next()
                    .unwrap_or(&policy_arn)
                    .to_owned();
                changes.push(
                    ResourceChange::new(
                        Scope::Iam,
                        "IAM role policy attachment",
                        format!("{role_name} -> {policy_name}"),
                        Change::Delete,
                    )
                    .with_steps(vec![Step::DetachPolicy {
                        role: role_name.clone(),
                        policy_arn,
                    }]),
                );
            }
            changes.push(
                ResourceChange::new(Scope::Iam, "IAM role", role_name, Change::Delete).with_steps(
                    vec![Step::DeleteRole {
                        role: role_name.clone(),
                    }],
                ),
            );
        }
        Some(_) => changes.push(
            ResourceChange::new(Scope::Iam, "IAM role", role_name, Change::NoOp)
                .with_note(format!("kept: not tagged {MANAGED_BY_TAG}={MANAGED_BY}")),
        ),
        None => {}
    }

    let arn = &desired.policy_arn;
    let policy = get_policy(client, arn).await?;
    let Some(policy) = policy else {
        return Ok(changes);
    };
    let kind = "IAM policy";
    if !is_ours(policy.tags()) {
        changes.push(
            ResourceChange::new(Scope::Iam, kind, &desired.policy_name, Change::NoOp)
                .with_note(format!("kept: not tagged {MANAGED_BY_TAG}={MANAGED_BY}")),
        );
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
        .filter(|name| name != role_name)
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
            ResourceChange::new(Scope::Iam, kind, &desired.policy_name, Change::NoOp)
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
        ResourceChange::new(Scope::Iam, kind, &desired.policy_name, Change::Delete).with_steps(
            vec![Step::DeletePolicy {
                arn: arn.clone(),
                versions: non_default,
            }],
        ),
    );
    Ok(changes)
}

/// Carries out one IAM step.
pub async fn apply(client: &Client, step: &Step) -> Result<(), IamError> {
    match step {
        Step::CreatePolicy {
            name,
            document,
            tags,
        } => {
            client
                .create_policy()
                .policy_name(name)
                .policy_document(document)
                .description(
                    "Lets the CNI metrics helper publish to the Kubernetes CloudWatch namespace",
                )
                .set_tags(Some(tag_list(tags)))
                .send()
                .await
                .map_err(call_error("CreatePolicy", name))?;
        }
        Step::NewPolicyVersion {
            arn,
            document,
            delete_version,
        } => {
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
        }
        Step::TagPolicy { arn, tags } => {
            client
                .tag_policy()
                .policy_arn(arn)
                .set_tags(Some(tag_list(tags)))
                .send()
                .await
                .map_err(call_error("TagPolicy", arn))?;
        }
        Step::CreateRole { name, trust, tags } => {
            client
                .create_role()
                .role_name(name)
                .assume_role_policy_document(trust)
                .description(
                    "Assumed by the CNI metrics helper pods to publish CNI metrics to CloudWatch",
                )
                .set_tags(Some(tag_list(tags)))
                .send()
                .await
                .map_err(call_error("CreateRole", name))?;
        }
        Step::UpdateTrust { role, trust } => {
            client
                .update_assume_role_policy()
                .role_name(role)
                .policy_document(trust)
                .send()
                .await
                .map_err(call_error("UpdateAssumeRolePolicy", role))?;
        }
        Step::TagRole { role, tags } => {
            client
                .tag_role()
                .role_name(role)
                .set_tags(Some(tag_list(tags)))
                .send()
                .await
                .map_err(call_error("TagRole", role))?;
        }
        Step::AttachPolicy { role, policy_arn } => {
            client
                .attach_role_policy()
                .role_name(role)
                .policy_arn(policy_arn)
                .send()
                .await
                .map_err(call_error("AttachRolePolicy", role))?;
        }
        Step::DetachPolicy { role, policy_arn } => {
            client
                .detach_role_policy()
                .role_name(role)
                .policy_arn(policy_arn)
                .send()
                .await
                .map_err(call_error("DetachRolePolicy", role))?;
        }
        Step::DeleteRole { role } => {
            client
                .delete_role()
                .role_name(role)
                .send()
                .await
                .map_err(call_error("DeleteRole", role))?;
        }
        Step::DeletePolicy { arn, versions } => {
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
        }
        _ => {}
    }
    Ok(())
}
