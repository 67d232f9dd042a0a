//! The ARNs this tool writes, compares or names in messages, each format in one place.

/// `arn:{partition}:iam::{account}:role/{name}`
pub fn role(partition: &str, account: &str, name: &str) -> String {
    format!("arn:{partition}:iam::{account}:role/{name}")
}

/// `arn:{partition}:iam::{account}:policy/{name}`
pub fn policy(partition: &str, account: &str, name: &str) -> String {
    format!("arn:{partition}:iam::{account}:policy/{name}")
}

/// `arn:{partition}:eks:{region}:{account}:cluster/{name}`
pub fn cluster(partition: &str, region: &str, account: &str, name: &str) -> String {
    format!("arn:{partition}:eks:{region}:{account}:cluster/{name}")
}

/// `arn:{partition}:iam::{account}:oidc-provider/{issuer host/path}`
pub fn oidc_provider(partition: &str, account: &str, issuer_host_path: &str) -> String {
    format!("arn:{partition}:iam::{account}:oidc-provider/{issuer_host_path}")
}

/// The partition of an ARN: `arn:aws-cn:sts::...` -> `aws-cn`.
pub fn partition_of(arn: &str) -> Option<&str> {
    let mut parts = arn.split(':');
    (parts.next() == Some("arn"))
        .then(|| parts.next())
        .flatten()
}

/// `arn:{partition}:cloudwatch:{region}:{account}:alarm:{name}`
pub fn alarm(partition: &str, region: &str, account: &str, name: &str) -> String {
    format!("arn:{partition}:cloudwatch:{region}:{account}:alarm:{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_are_built_and_read_back() {
        assert_eq!(
            role("aws-cn", "111122223333", "r"),
            "arn:aws-cn:iam::111122223333:role/r"
        );
        assert_eq!(
            cluster("aws", "eu-west-1", "111122223333", "prod"),
            "arn:aws:eks:eu-west-1:111122223333:cluster/prod"
        );
        assert_eq!(
            oidc_provider("aws", "1", "oidc.eks.eu-west-1.amazonaws.com/id/A"),
            "arn:aws:iam::1:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/A"
        );
        assert_eq!(
            partition_of(&policy("aws-us-gov", "1", "p")),
            Some("aws-us-gov")
        );
        assert_eq!(
            partition_of("arn:aws:sts::123456789012:user/moto"),
            Some("aws")
        );
        assert_eq!(partition_of("not-an-arn"), None);
    }
}
