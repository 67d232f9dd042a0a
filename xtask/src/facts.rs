//! Live facts the deployment is built from, read rather than asked for: who the caller is
//! (account and partition, from STS), the cluster's OIDC issuer (from EKS), and whether IAM
//! trusts that issuer with the audience our trust policy uses.

use aws_config::SdkConfig;

use crate::aws::{AwsError, missing_as_none};
use crate::settings::IRSA_AUDIENCE;

#[derive(Debug, Clone)]
pub struct LiveFacts {
    pub account: String,
    pub caller_arn: String,
    pub caller_partition: String,
    pub cluster_arn: String,
    pub cluster_endpoint: Option<String>,
    /// The issuer URL, `https://...`.
    pub oidc_issuer: Option<String>,
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
    #[error(
        "EKS cluster {cluster} has no OIDC issuer, which IRSA needs; use --identity pod-identity, or check the cluster (aws eks describe-cluster --name {cluster} --query cluster.identity)"
    )]
    NoOidcIssuer { cluster: String },
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
}

/// The partition of an ARN: `arn:aws-cn:sts::...` -> `aws-cn`.
pub fn arn_partition(arn: &str) -> Option<&str> {
    let mut parts = arn.split(':');
    (parts.next() == Some("arn"))
        .then(|| parts.next())
        .flatten()
}

/// Reads the caller and the cluster. `region_partition` is the partition the region
/// belongs to according to our tables.
pub async fn gather(
    config: &SdkConfig,
    region: &str,
    region_partition: &str,
    cluster: &str,
    given_account: Option<&str>,
) -> Result<LiveFacts, FactsError> {
    let (account, caller_arn, caller_partition) =
        caller(config, region, region_partition, given_account).await?;
    let result = aws_sdk_eks::Client::new(config)
        .describe_cluster()
        .name(cluster)
        .send()
        .await;
    let found = missing_as_none(result, |error| error.is_resource_not_found_exception())
        .map_err(AwsError::call("eks", "DescribeCluster", cluster))
        .map_err(FactsError::DescribeCluster)?
        .ok_or_else(|| FactsError::ClusterNotFound {
            cluster: cluster.to_owned(),
            region: region.to_owned(),
        })?
        .cluster
        .ok_or_else(|| FactsError::NoClusterInReply {
            cluster: cluster.to_owned(),
        })?;
    let status = found
        .status
        .as_ref()
        .map(|status| status.as_str().to_owned());
    if let Some(status) = status
        && status != "ACTIVE"
    {
        return Err(FactsError::ClusterNotActive {
            cluster: cluster.to_owned(),
            status,
        });
    }
    Ok(LiveFacts {
        account,
        caller_arn,
        caller_partition,
        cluster_arn: found.arn.unwrap_or_default(),
        cluster_endpoint: found.endpoint,
        oidc_issuer: found
            .identity
            .and_then(|identity| identity.oidc)
            .and_then(|oidc| oidc.issuer),
    })
}

/// The caller alone, for a cluster that no longer exists (`destroy` after the cluster).
pub async fn caller_only(
    config: &SdkConfig,
    region: &str,
    region_partition: &str,
    given_account: Option<&str>,
) -> Result<LiveFacts, FactsError> {
    let (account, caller_arn, caller_partition) =
        caller(config, region, region_partition, given_account).await?;
    Ok(LiveFacts {
        account,
        caller_arn,
        caller_partition,
        cluster_arn: String::new(),
        cluster_endpoint: None,
        oidc_issuer: None,
    })
}

async fn caller(
    config: &SdkConfig,
    region: &str,
    region_partition: &str,
    given_account: Option<&str>,
) -> Result<(String, String, String), FactsError> {
    let caller = aws_sdk_sts::Client::new(config)
        .get_caller_identity()
        .send()
        .await
        .map_err(AwsError::call("sts", "GetCallerIdentity", "the caller"))
        .map_err(FactsError::Caller)?;
    let caller_arn = caller.arn.unwrap_or_default();
    let account = caller
        .account
        .ok_or_else(|| FactsError::CallerReply("the reply has no account".to_owned()))?;
    let caller_partition = check_caller(
        &caller_arn,
        &account,
        region,
        region_partition,
        given_account,
    )?;
    Ok((account, caller_arn, caller_partition))
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
    let caller_partition = arn_partition(caller_arn)
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

/// Checks that IAM has an OIDC provider for `issuer` that accepts our audience. The tool
/// never creates or edits a provider: it is shared by everything using IRSA on the cluster.
pub async fn check_oidc_provider(
    config: &SdkConfig,
    partition: &str,
    account: &str,
    region: &str,
    cluster: &str,
    issuer: &str,
) -> Result<(), FactsError> {
    let host_path = issuer.trim_start_matches("https://").trim_end_matches('/');
    let arn = format!("arn:{partition}:iam::{account}:oidc-provider/{host_path}");
    let result = aws_sdk_iam::Client::new(config)
        .get_open_id_connect_provider()
        .open_id_connect_provider_arn(&arn)
        .send()
        .await;
    let provider = missing_as_none(result, |error| error.is_no_such_entity_exception())
        .map_err(AwsError::call("iam", "GetOpenIDConnectProvider", &arn))
        .map_err(FactsError::OidcProvider)?
        .ok_or_else(|| FactsError::OidcProviderMissing {
            cluster: cluster.to_owned(),
            region: region.to_owned(),
            arn: arn.clone(),
            issuer: issuer.to_owned(),
        })?;
    let audiences = provider.client_id_list();
    if audiences.iter().any(|audience| audience == IRSA_AUDIENCE) {
        Ok(())
    } else {
        Err(FactsError::OidcAudienceMissing {
            arn,
            audiences: if audiences.is_empty() {
                "none".to_owned()
            } else {
                audiences.join(", ")
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{FactsError, arn_partition, check_caller};

    #[test]
    fn the_partition_is_the_second_field_of_an_arn() {
        assert_eq!(
            arn_partition("arn:aws:sts::123456789012:user/moto"),
            Some("aws")
        );
        assert_eq!(arn_partition("arn:aws-cn:iam::1:role/x"), Some("aws-cn"));
        assert_eq!(arn_partition("not-an-arn"), None);
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
