//! Preflight: everything that must hold before a deploy can work, checked up front and all
//! reported at once, each failure with the command that fixes it. `plan`, `deploy`,
//! `upgrade` and `status` refuse to go on when a check fails; `cargo xtask preflight` prints
//! the whole list.

use serde::Serialize;

use crate::decide::{Identity, Target};
use crate::facts::{AGENT_ADDON, ClusterState, Facts, OidcProviderState, Permissions};

/// One check and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    /// What to run or change when the check failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Every check, from what was read live and what was decided; nothing is asked here.
pub fn check(facts: &Facts, target: &Target) -> Vec<Check> {
    let cluster = &target.cluster;
    let region = &target.region;
    let mut checks = vec![
        Check::pass(
            "caller",
            format!(
                "{} (account {}, partition {})",
                facts.caller.arn, facts.caller.account, facts.caller.partition
            ),
        ),
        Check::pass(
            "cluster",
            match &facts.cluster {
                ClusterState::Live { .. } => format!("{cluster} is ACTIVE in {region}"),
                ClusterState::Gone | ClusterState::Offline { .. } => {
                    format!("{cluster} in {region}")
                }
            },
        ),
    ];
    let ClusterState::Live { endpoint, .. } = &facts.cluster else {
        // Nothing more to check of a cluster that is gone.
        return checks;
    };
    match (&target.identity, &facts.oidc_provider) {
        (Identity::Irsa { .. }, Some(OidcProviderState::Trusted { issuer_host_path })) => {
            checks.push(Check::pass(
                "IAM OIDC provider",
                format!(
                    "https://{issuer_host_path} is trusted with audience {}",
                    crate::settings::IRSA_AUDIENCE
                ),
            ));
        }
        (Identity::Irsa { .. }, Some(OidcProviderState::Problem { detail, fix })) => {
            checks.push(Check::fail("IAM OIDC provider", detail, fix));
        }
        (Identity::Irsa { .. }, None) | (Identity::PodIdentity, _) => {}
    }
    if target.identity == Identity::PodIdentity {
        checks.push(if facts.agent_active == Some(true) {
            Check::pass(
                "Pod Identity agent",
                format!("the {AGENT_ADDON} add-on is ACTIVE"),
            )
        } else {
            Check::fail(
                "Pod Identity agent",
                format!(
                    "the {AGENT_ADDON} add-on is not ACTIVE on {cluster}, so pods would get no credentials"
                ),
                format!(
                    "aws eks create-addon --cluster-name {cluster} --addon-name {AGENT_ADDON} (or use --identity irsa)"
                ),
            )
        });
    }
    if let Some(kube) = &facts.kube {
        checks.push(context_check(
            &kube.url,
            endpoint.as_deref(),
            cluster,
            facts.kube_context_explicit,
        ));
        checks.extend(kube.permissions.as_ref().map(permissions_check));
        checks.push(security_group_reminder(&target.namespace));
    }
    checks
}

/// `scheme://host:port` of a URL, for comparing API server endpoints written differently.
pub fn normalize_endpoint(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let authority = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
    let default_port = if scheme.eq_ignore_ascii_case("http") {
        ":80"
    } else {
        ":443"
    };
    let authority = authority
        .strip_suffix(default_port)
        .unwrap_or(&authority)
        .to_owned();
    format!("{}://{authority}", scheme.to_ascii_lowercase())
}

/// The kube context must point at the cluster EKS names, unless the user chose the context
/// explicitly: "right flags, wrong context" would deploy into another cluster.
fn context_check(
    kube_url: &str,
    eks_endpoint: Option<&str>,
    cluster: &str,
    explicit_context: bool,
) -> Check {
    let name = "kube context";
    match eks_endpoint {
        _ if explicit_context => Check::pass(
            name,
            format!("--context given explicitly; using {kube_url}"),
        ),
        None => Check::pass(
            name,
            format!("EKS reports no endpoint for {cluster}; using {kube_url}"),
        ),
        Some(endpoint) if normalize_endpoint(endpoint) == normalize_endpoint(kube_url) => {
            Check::pass(name, format!("{kube_url} is cluster {cluster}'s endpoint"))
        }
        Some(endpoint) => Check::fail(
            name,
            format!(
                "the kubeconfig points at {kube_url}, but cluster {cluster}'s endpoint is {endpoint}"
            ),
            format!(
                "aws eks update-kubeconfig --name {cluster} (or pass --context NAME to use another context on purpose)"
            ),
        ),
    }
}

/// What the permission reviews found, as a check.
fn permissions_check(permissions: &Permissions) -> Check {
    let name = "Kubernetes permissions";
    match permissions {
        Permissions::Unanswered(error) => Check::fail(
            name,
            format!("cannot ask the API server (SelfSubjectAccessReview): {error}"),
            "check the kubeconfig's credentials (kubectl auth can-i --list)",
        ),
        Permissions::Missing(missing) if missing.is_empty() => Check::pass(
            name,
            "the caller may apply the ServiceAccount, RBAC and Deployment and watch the rollout",
        ),
        Permissions::Missing(missing) => Check::fail(
            name,
            format!("the caller may not: {}", missing.join(", ")),
            "use a cluster-admin context, or grant those verbs (kubectl auth can-i patch deployments -n kube-system)",
        ),
    }
}

/// Not something the tool can check from outside: the network path the scrape needs.
fn security_group_reminder(namespace: &str) -> Check {
    Check::pass(
        "scrape network path",
        format!(
            "the helper in {namespace} scrapes ipamd through the API server's pods proxy, so the cluster security group must let \
             the control plane reach the nodes on tcp/61678 (the EKS-managed cluster security group does; custom node security groups may not)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_compare_by_scheme_host_and_port() {
        assert_eq!(
            normalize_endpoint("https://ABC.eks.amazonaws.com/"),
            "https://abc.eks.amazonaws.com"
        );
        assert_eq!(
            normalize_endpoint("https://abc.eks.amazonaws.com:443"),
            "https://abc.eks.amazonaws.com"
        );
        assert_ne!(
            normalize_endpoint("http://127.0.0.1:1"),
            normalize_endpoint("http://127.0.0.1:2")
        );
    }

    #[test]
    fn a_kubeconfig_for_another_cluster_fails_unless_the_context_is_explicit() {
        let other = context_check(
            "https://other.example",
            Some("https://mine.example"),
            "prod",
            false,
        );
        assert!(!other.ok);
        assert!(
            other
                .fix
                .as_deref()
                .is_some_and(|fix| fix.contains("update-kubeconfig --name prod"))
        );
        assert!(
            context_check(
                "https://other.example",
                Some("https://mine.example"),
                "prod",
                true
            )
            .ok
        );
        assert!(
            context_check(
                "https://mine.example/",
                Some("https://mine.example"),
                "prod",
                false
            )
            .ok
        );
    }
}
