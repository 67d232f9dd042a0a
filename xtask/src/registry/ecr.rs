//! The ECR repository our publisher's image is pushed to, converged idempotently: created
//! with scan on push, immutable tags, encryption at rest, a lifecycle policy that keeps the
//! last N images, and our `managed-by` tag; on later runs every setting that drifted is
//! repaired, and a repository that is already right costs only reads. A repository of that
//! name without our tag is not ours: a conflict unless the user adopts it.

use std::collections::BTreeMap;

use aws_sdk_ecr::Client;
use aws_sdk_ecr::operation::describe_repositories::DescribeRepositoriesError;
use aws_sdk_ecr::operation::get_lifecycle_policy::GetLifecyclePolicyError;
use aws_sdk_ecr::types::{
    EncryptionConfiguration, EncryptionType, ImageIdentifier, ImageScanningConfiguration,
    ImageTagMutability, Repository, Tag,
};

use crate::aws::{AwsError, missing_as_none};
use crate::ownership::{MANAGED_BY, MANAGED_BY_TAG};

/// The default repository name.
pub const DEFAULT_REPOSITORY: &str = "cni-metrics-publisher";
/// How many images the lifecycle policy keeps by default.
pub const DEFAULT_KEEP_IMAGES: u32 = 30;

/// How the repository's images are encrypted at rest. Fixed when the repository is
/// created: ECR cannot change it later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    Aes256,
    /// KMS, with this key (ARN, ID or alias), or the AWS managed key when `None`.
    Kms(Option<String>),
}

/// What the repository should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositorySpec {
    pub name: String,
    pub encryption: Encryption,
    /// Images the lifecycle policy keeps; older ones expire.
    pub keep_images: u32,
    /// Take over a same-named repository that lacks our tag.
    pub adopt: bool,
}

impl RepositorySpec {
    /// The lifecycle policy text: one rule expiring all but the newest images.
    pub fn lifecycle_policy(&self) -> String {
        serde_json::json!({
            "rules": [{
                "rulePriority": 1,
                "description": format!("keep the newest {} images", self.keep_images),
                "selection": {
                    "tagStatus": "any",
                    "countType": "imageCountMoreThan",
                    "countNumber": self.keep_images,
                },
                "action": {"type": "expire"},
            }]
        })
        .to_string()
    }
}

/// What converging changed, in order; empty when the repository was already right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepositoryChange {
    Created,
    Adopted,
    ScanOnPushEnabled,
    TagsMadeImmutable,
    LifecyclePolicySet,
    /// Encryption differs and cannot be changed: reported, not repaired.
    EncryptionDiffers {
        actual: String,
    },
}

impl std::fmt::Display for RepositoryChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RepositoryChange::Created => write!(f, "created"),
            RepositoryChange::Adopted => {
                write!(f, "adopted (tagged {MANAGED_BY_TAG}={MANAGED_BY})")
            }
            RepositoryChange::ScanOnPushEnabled => write!(f, "scan on push turned back on"),
            RepositoryChange::TagsMadeImmutable => write!(f, "tags made immutable again"),
            RepositoryChange::LifecyclePolicySet => write!(f, "lifecycle policy set"),
            RepositoryChange::EncryptionDiffers { actual } => write!(
                f,
                "encryption is {actual}, not what was asked; ECR cannot change it on an existing \
                 repository (recreate it to change it)"
            ),
        }
    }
}

/// The repository after converging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnsuredRepository {
    pub arn: String,
    /// `<registry host>/<name>`, as image references start.
    pub uri: String,
    pub registry_id: String,
    pub changes: Vec<RepositoryChange>,
}

#[derive(Debug, thiserror::Error)]
pub enum EcrError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(
        "ECR repository {name} exists but is not managed by cni-metrics-xtask (no \
         {MANAGED_BY_TAG}={MANAGED_BY} tag); pass --adopt to take it over, or choose another \
         name with --repository"
    )]
    NotOurs { name: String },
    #[error("ECR answered {operation} for repository {name} without {field}")]
    Incomplete {
        operation: &'static str,
        name: String,
        field: &'static str,
    },
    #[error(
        "ECR repository {repository} has no image tagged {tag}; push one with `cargo xtask image \
         push --region <region>`, or choose the tag with --publisher-tag"
    )]
    NoSuchImage { repository: String, tag: String },
}

/// Creates the repository, or repairs its settings; see the module docs.
pub async fn ensure_repository(
    client: &Client,
    spec: &RepositorySpec,
) -> Result<EnsuredRepository, EcrError> {
    let mut changes = Vec::new();
    let repository = match describe(client, &spec.name).await? {
        Some(repository) => {
            converge_settings(client, spec, &repository, &mut changes).await?;
            repository
        }
        None => {
            changes.push(RepositoryChange::Created);
            create(client, spec).await?
        }
    };
    let arn = required(repository.repository_arn(), "repositoryArn", spec)?;
    let policy = lifecycle_policy(client, &spec.name).await?;
    if !same_json(policy.as_deref(), &spec.lifecycle_policy()) {
        client
            .put_lifecycle_policy()
            .repository_name(&spec.name)
            .lifecycle_policy_text(spec.lifecycle_policy())
            .send()
            .await
            .map_err(AwsError::call("ecr", "PutLifecyclePolicy", &spec.name))?;
        changes.push(RepositoryChange::LifecyclePolicySet);
    }
    Ok(EnsuredRepository {
        uri: required(repository.repository_uri(), "repositoryUri", spec)?,
        registry_id: required(repository.registry_id(), "registryId", spec)?,
        arn,
        changes,
    })
}

/// The repository, or `None` when there is none of that name.
pub async fn describe(client: &Client, name: &str) -> Result<Option<Repository>, EcrError> {
    let found = missing_as_none(
        client
            .describe_repositories()
            .repository_names(name)
            .send()
            .await,
        DescribeRepositoriesError::is_repository_not_found_exception,
    )
    .map_err(AwsError::call("ecr", "DescribeRepositories", name))?;
    Ok(found.and_then(|output| output.repositories.and_then(|mut all| all.pop())))
}

/// The digest of the image tagged `tag` in repository `name`, through DescribeImages.
pub async fn image_digest(client: &Client, name: &str, tag: &str) -> Result<String, EcrError> {
    let described = client
        .describe_images()
        .repository_name(name)
        .image_ids(ImageIdentifier::builder().image_tag(tag).build())
        .send()
        .await;
    let missing = |error: &aws_sdk_ecr::operation::describe_images::DescribeImagesError| {
        error.is_image_not_found_exception()
    };
    let found = missing_as_none(described, missing).map_err(AwsError::call(
        "ecr",
        "DescribeImages",
        format!("{name}:{tag}"),
    ))?;
    found
        .and_then(|output| {
            output
                .image_details
                .unwrap_or_default()
                .into_iter()
                .find_map(|detail| detail.image_digest)
        })
        .ok_or_else(|| EcrError::NoSuchImage {
            repository: name.to_owned(),
            tag: tag.to_owned(),
        })
}

fn required(
    value: Option<&str>,
    field: &'static str,
    spec: &RepositorySpec,
) -> Result<String, EcrError> {
    value
        .map(str::to_owned)
        .ok_or_else(|| EcrError::Incomplete {
            operation: "DescribeRepositories",
            name: spec.name.clone(),
            field,
        })
}

async fn create(client: &Client, spec: &RepositorySpec) -> Result<Repository, EcrError> {
    let encryption = match &spec.encryption {
        Encryption::Aes256 => EncryptionConfiguration::builder()
            .encryption_type(EncryptionType::Aes256)
            .build(),
        Encryption::Kms(key) => EncryptionConfiguration::builder()
            .encryption_type(EncryptionType::Kms)
            .set_kms_key(key.clone())
            .build(),
    }
    .map_err(|error| AwsError::call("ecr", "CreateRepository", &spec.name)(error))?;
    let tag = Tag::builder()
        .key(MANAGED_BY_TAG)
        .value(MANAGED_BY)
        .build()
        .map_err(|error| AwsError::call("ecr", "CreateRepository", &spec.name)(error))?;
    let created = client
        .create_repository()
        .repository_name(&spec.name)
        .image_scanning_configuration(
            ImageScanningConfiguration::builder()
                .scan_on_push(true)
                .build(),
        )
        .image_tag_mutability(ImageTagMutability::Immutable)
        .encryption_configuration(encryption)
        .tags(tag)
        .send()
        .await
        .map_err(AwsError::call("ecr", "CreateRepository", &spec.name))?;
    created.repository.ok_or_else(|| EcrError::Incomplete {
        operation: "CreateRepository",
        name: spec.name.clone(),
        field: "repository",
    })
}

/// Checks our tag (adopting when asked) and repairs scan on push and tag immutability.
async fn converge_settings(
    client: &Client,
    spec: &RepositorySpec,
    repository: &Repository,
    changes: &mut Vec<RepositoryChange>,
) -> Result<(), EcrError> {
    let arn = required(repository.repository_arn(), "repositoryArn", spec)?;
    let tags: BTreeMap<String, String> = client
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .map_err(AwsError::call("ecr", "ListTagsForResource", &spec.name))?
        .tags
        .unwrap_or_default()
        .into_iter()
        .map(|tag| (tag.key, tag.value))
        .collect();
    if tags.get(MANAGED_BY_TAG).map(String::as_str) != Some(MANAGED_BY) {
        if !spec.adopt {
            return Err(EcrError::NotOurs {
                name: spec.name.clone(),
            });
        }
        let tag = Tag::builder()
            .key(MANAGED_BY_TAG)
            .value(MANAGED_BY)
            .build()
            .map_err(|error| AwsError::call("ecr", "TagResource", &spec.name)(error))?;
        client
            .tag_resource()
            .resource_arn(&arn)
            .tags(tag)
            .send()
            .await
            .map_err(AwsError::call("ecr", "TagResource", &spec.name))?;
        changes.push(RepositoryChange::Adopted);
    }
    let scans = repository
        .image_scanning_configuration()
        .is_some_and(ImageScanningConfiguration::scan_on_push);
    if !scans {
        client
            .put_image_scanning_configuration()
            .repository_name(&spec.name)
            .image_scanning_configuration(
                ImageScanningConfiguration::builder()
                    .scan_on_push(true)
                    .build(),
            )
            .send()
            .await
            .map_err(AwsError::call(
                "ecr",
                "PutImageScanningConfiguration",
                &spec.name,
            ))?;
        changes.push(RepositoryChange::ScanOnPushEnabled);
    }
    if repository.image_tag_mutability() != Some(&ImageTagMutability::Immutable) {
        client
            .put_image_tag_mutability()
            .repository_name(&spec.name)
            .image_tag_mutability(ImageTagMutability::Immutable)
            .send()
            .await
            .map_err(AwsError::call("ecr", "PutImageTagMutability", &spec.name))?;
        changes.push(RepositoryChange::TagsMadeImmutable);
    }
    if let Some(actual) = encryption_mismatch(spec, repository) {
        changes.push(RepositoryChange::EncryptionDiffers { actual });
    }
    Ok(())
}

/// How the repository is encrypted, when that is not what `spec` asks for.
fn encryption_mismatch(spec: &RepositorySpec, repository: &Repository) -> Option<String> {
    let configuration = repository.encryption_configuration()?;
    let actual = configuration.encryption_type();
    let matches = match (&spec.encryption, actual) {
        (Encryption::Aes256, EncryptionType::Aes256) => true,
        (Encryption::Kms(None), EncryptionType::Kms) => true,
        (Encryption::Kms(Some(key)), EncryptionType::Kms) => configuration
            .kms_key()
            .is_some_and(|actual_key| actual_key == key || actual_key.ends_with(key.as_str())),
        (Encryption::Aes256 | Encryption::Kms(_), _) => false,
    };
    (!matches).then(|| actual.as_str().to_owned())
}

async fn lifecycle_policy(client: &Client, name: &str) -> Result<Option<String>, EcrError> {
    let found = missing_as_none(
        client
            .get_lifecycle_policy()
            .repository_name(name)
            .send()
            .await,
        GetLifecyclePolicyError::is_lifecycle_policy_not_found_exception,
    )
    .map_err(AwsError::call("ecr", "GetLifecyclePolicy", name))?;
    Ok(found.and_then(|output| output.lifecycle_policy_text))
}

/// Whether two JSON texts are the same document (ECR may reformat what it stores).
fn same_json(actual: Option<&str>, wanted: &str) -> bool {
    let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).ok();
    actual
        .and_then(parse)
        .is_some_and(|actual| Some(actual) == parse(wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(encryption: Encryption) -> RepositorySpec {
        RepositorySpec {
            name: "r".to_owned(),
            encryption,
            keep_images: 5,
            adopt: false,
        }
    }

    #[test]
    fn the_lifecycle_policy_keeps_the_newest_images() {
        let policy: serde_json::Value =
            serde_json::from_str(&spec(Encryption::Aes256).lifecycle_policy()).expect("JSON");
        assert_eq!(policy["rules"][0]["selection"]["countNumber"], 5);
        assert_eq!(
            policy["rules"][0]["selection"]["countType"],
            "imageCountMoreThan"
        );
        assert_eq!(policy["rules"][0]["action"]["type"], "expire");
    }

    #[test]
    fn reformatted_policies_are_the_same_document() {
        let wanted = spec(Encryption::Aes256).lifecycle_policy();
        let pretty = serde_json::to_string_pretty(
            &serde_json::from_str::<serde_json::Value>(&wanted).expect("JSON"),
        )
        .expect("text");
        assert!(same_json(Some(&pretty), &wanted));
        assert!(!same_json(None, &wanted));
        assert!(!same_json(Some("{}"), &wanted));
    }

    #[test]
    fn encryption_mismatches_are_reported_by_type_and_key() {
        let repository = |kind: EncryptionType, key: Option<&str>| {
            Repository::builder()
                .encryption_configuration(
                    EncryptionConfiguration::builder()
                        .encryption_type(kind)
                        .set_kms_key(key.map(str::to_owned))
                        .build()
                        .expect("valid"),
                )
                .build()
        };
        let aes = repository(EncryptionType::Aes256, None);
        let kms = repository(EncryptionType::Kms, Some("arn:aws:kms:us-west-2:1:key/abc"));
        assert_eq!(encryption_mismatch(&spec(Encryption::Aes256), &aes), None);
        assert_eq!(
            encryption_mismatch(&spec(Encryption::Aes256), &kms).as_deref(),
            Some("KMS")
        );
        assert_eq!(
            encryption_mismatch(&spec(Encryption::Kms(None)), &kms),
            None
        );
        assert_eq!(
            encryption_mismatch(&spec(Encryption::Kms(Some("key/abc".to_owned()))), &kms),
            None
        );
        assert!(
            encryption_mismatch(&spec(Encryption::Kms(Some("other".to_owned()))), &kms).is_some()
        );
    }
}
