//! Preflight: everything that must hold before a deploy can work, checked up front and all
//! reported at once, each failure with the command that fixes it. `plan`, `deploy`,
//! `upgrade` and `status` refuse to go on when a check fails; `cargo xtask preflight` prints
//! the whole list.

use serde::Serialize;

use crate::decide::{Identity, Target};
use crate::facts::{
    AGENT_ADDON, AlarmPermissions, CALLER_ALARM_ACTIONS, ClusterState, Decision, Facts,
    OidcProviderState, Permissions, Unverified,
};

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
    checks.extend(
        facts
            .alarm_permissions
            .as_ref()
            .map(alarm_permissions_check),
    );
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

/// The caller's own CloudWatch alarm permissions, as IAM's policy simulator judged them.
/// Only a simulated denial fails: when the simulation could not run, or cannot tell, the
/// check passes and says that it could not verify, why, and what is needed.
fn alarm_permissions_check(permissions: &AlarmPermissions) -> Check {
    let name = "CloudWatch alarm permissions";
    let needed = CALLER_ALARM_ACTIONS.join(", ");
    let unverified = |why: String| {
        Check::pass(
            name,
            format!("not verified: {why}; deploy needs the caller to be allowed {needed}"),
        )
    };
    let (principal, decisions) = match permissions {
        AlarmPermissions::Simulated {
            principal,
            decisions,
        } => (principal, decisions),
        AlarmPermissions::Unverified(why) => return unverified(unverified_reason(why)),
    };
    let explicit: Vec<&str> = decisions
        .iter()
        .filter(|action| action.decision == Decision::ExplicitDeny)
        .map(|action| action.action.as_str())
        .collect();
    // An implicit denial for want of a condition key's value (one a real request carries)
    // is the simulation not knowing, as is a decision this tool does not know.
    let implicit: Vec<&str> = decisions
        .iter()
        .filter(|action| {
            action.decision == Decision::ImplicitDeny && action.missing_context.is_empty()
        })
        .map(|action| action.action.as_str())
        .collect();
    let undetermined: Vec<String> = decisions
        .iter()
        .filter_map(|action| match &action.decision {
            Decision::ImplicitDeny if !action.missing_context.is_empty() => Some(format!(
                "{} (the policies' conditions ask for {}, which only a real request has)",
                action.action,
                action.missing_context.join(", ")
            )),
            Decision::Other(decision) => {
                Some(format!("{} (IAM decided '{decision}')", action.action))
            }
            Decision::Allowed | Decision::ImplicitDeny | Decision::ExplicitDeny => None,
        })
        .collect();
    if explicit.is_empty() && implicit.is_empty() {
        return if undetermined.is_empty() {
            Check::pass(
                name,
                format!("IAM's policy simulation allows {principal} {needed}"),
            )
        } else {
            unverified(format!(
                "IAM's policy simulation for {principal} could not decide {}",
                undetermined.join("; ")
            ))
        };
    }
    let mut denied = Vec::new();
    let mut fixes = Vec::new();
    if !implicit.is_empty() {
        denied.push(format!(
            "{} (no policy allows {})",
            implicit.join(", "),
            if implicit.len() == 1 { "it" } else { "them" }
        ));
        fixes.push(format!(
            "attach this IAM policy statement to {principal} (for an IAM Identity Center role, to its permission set): {}",
            allow_statement(&implicit)
        ));
    }
    if !explicit.is_empty() {
        denied.push(format!("{} (explicitly denied)", explicit.join(", ")));
        fixes.push(format!(
            "remove the Deny of {} from {principal}'s policies or permissions boundary (an Allow cannot override it)",
            explicit.join(", ")
        ));
    }
    let mut detail = format!(
        "IAM's policy simulation denies {principal} {}, which deploy needs to manage the CloudWatch alarms",
        denied.join("; ")
    );
    if !undetermined.is_empty() {
        detail.push_str(&format!("; could not decide {}", undetermined.join("; ")));
    }
    Check::fail(name, detail, fixes.join("; and "))
}

/// Why the simulation did not run, as a clause.
fn unverified_reason(why: &Unverified) -> String {
    match why {
        Unverified::Root => "the caller is the account's root user, which IAM policies do not restrict and IAM's policy simulator cannot take".to_owned(),
        Unverified::FederatedUser => "the caller is a federated user (sts:GetFederationToken), whose session policy IAM's policy simulator cannot see".to_owned(),
        Unverified::UnknownPrincipal => "the caller is neither an IAM user nor an assumed role, so IAM's policy simulator cannot take it".to_owned(),
        Unverified::Refused { operation, error } => format!(
            "the caller may not run iam:{operation} to simulate its policies ({error}); allow it iam:SimulatePrincipalPolicy (and iam:GetRole for an assumed role) to have this checked"
        ),
        Unverified::Failed { operation, error } => {
            format!("the policy simulation failed at iam:{operation} ({error})")
        }
    }
}

/// The IAM policy statement that allows `actions` on every resource, as one line of JSON.
fn allow_statement(actions: &[&str]) -> String {
    format!(
        r#"{{"Effect":"Allow","Action":{},"Resource":"*"}}"#,
        serde_json::json!(actions)
    )
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

    const ROLE: &str = "arn:aws:iam::111122223333:role/team/deployer";

    fn simulated(decisions: &[(&str, Decision)]) -> AlarmPermissions {
        AlarmPermissions::Simulated {
            principal: ROLE.to_owned(),
            decisions: CALLER_ALARM_ACTIONS
                .iter()
                .map(|&action| crate::facts::ActionDecision {
                    action: action.to_owned(),
                    decision: decisions
                        .iter()
                        .find(|(denied, _)| *denied == action)
                        .map_or(Decision::Allowed, |(_, decision)| decision.clone()),
                    missing_context: Vec::new(),
                })
                .collect(),
        }
    }

    fn fix(check: &Check) -> &str {
        check.fix.as_deref().expect("a failed check has a fix")
    }

    #[test]
    fn alarm_permissions_all_allowed_pass() {
        let check = alarm_permissions_check(&simulated(&[]));
        assert_eq!(check.name, "CloudWatch alarm permissions");
        assert!(check.ok, "{check:?}");
        assert!(check.detail.contains(ROLE), "{}", check.detail);
        assert!(!check.detail.contains("not verified"), "{}", check.detail);
        assert!(check.fix.is_none());
    }

    #[test]
    fn alarm_permissions_some_denied_fail_with_the_statement_to_attach() {
        let check = alarm_permissions_check(&simulated(&[
            ("cloudwatch:PutMetricAlarm", Decision::ImplicitDeny),
            ("cloudwatch:TagResource", Decision::ImplicitDeny),
        ]));
        assert!(!check.ok);
        assert!(
            check.detail.contains(
                "denies arn:aws:iam::111122223333:role/team/deployer cloudwatch:PutMetricAlarm, cloudwatch:TagResource (no policy allows them)"
            ),
            "{}",
            check.detail
        );
        assert!(!check.detail.contains("DeleteAlarms"), "{}", check.detail);
        assert!(
            fix(&check).ends_with(
                r#": {"Effect":"Allow","Action":["cloudwatch:PutMetricAlarm","cloudwatch:TagResource"],"Resource":"*"}"#
            ),
            "{}",
            fix(&check)
        );
        assert!(fix(&check).contains(ROLE), "{}", fix(&check));
        let statement = fix(&check)
            .split_once(": {")
            .map(|(_, json)| format!("{{{json}"))
            .expect("the statement");
        let parsed: serde_json::Value = serde_json::from_str(&statement).expect("JSON");
        assert_eq!(parsed["Effect"], "Allow");
    }

    #[test]
    fn alarm_permissions_explicitly_denied_fail_with_removing_the_deny() {
        let check = alarm_permissions_check(&simulated(&[
            ("cloudwatch:DeleteAlarms", Decision::ExplicitDeny),
            ("cloudwatch:DescribeAlarms", Decision::ImplicitDeny),
        ]));
        assert!(!check.ok);
        assert!(
            check
                .detail
                .contains("cloudwatch:DeleteAlarms (explicitly denied)"),
            "{}",
            check.detail
        );
        assert!(
            fix(&check).contains("remove the Deny of cloudwatch:DeleteAlarms"),
            "{}",
            fix(&check)
        );
        // Only the implicitly denied action is in the statement: an Allow cannot override
        // a Deny.
        assert!(
            fix(&check).contains(r#""Action":["cloudwatch:DescribeAlarms"]"#),
            "{}",
            fix(&check)
        );
    }

    #[test]
    fn alarm_permissions_the_simulation_cannot_decide_pass_unverified() {
        let AlarmPermissions::Simulated {
            principal,
            mut decisions,
        } = simulated(&[("cloudwatch:PutMetricAlarm", Decision::ImplicitDeny)])
        else {
            panic!("simulated");
        };
        for decision in &mut decisions {
            decision.missing_context = vec!["aws:SourceIp".to_owned()];
        }
        let check = alarm_permissions_check(&AlarmPermissions::Simulated {
            principal,
            decisions,
        });
        assert!(check.ok, "{check:?}");
        assert!(
            check.detail.starts_with("not verified: ") && check.detail.contains("aws:SourceIp"),
            "{}",
            check.detail
        );
    }

    #[test]
    fn alarm_permissions_a_refused_simulation_passes_unverified_and_names_the_actions() {
        let check = alarm_permissions_check(&AlarmPermissions::Unverified(Unverified::Refused {
            operation: "SimulatePrincipalPolicy",
            error: "iam:SimulatePrincipalPolicy on arn:aws:iam::1:user/u failed: AccessDenied"
                .to_owned(),
        }));
        assert!(check.ok, "{check:?}");
        assert!(check.fix.is_none());
        for needed in [
            "not verified: ",
            "may not run iam:SimulatePrincipalPolicy",
            "AccessDenied",
            "cloudwatch:PutMetricAlarm, cloudwatch:DeleteAlarms, cloudwatch:DescribeAlarms, cloudwatch:TagResource, cloudwatch:ListTagsForResource",
        ] {
            assert!(check.detail.contains(needed), "{needed}: {}", check.detail);
        }
        let get_role =
            alarm_permissions_check(&AlarmPermissions::Unverified(Unverified::Refused {
                operation: "GetRole",
                error: "AccessDenied".to_owned(),
            }));
        assert!(get_role.ok);
        assert!(
            get_role.detail.contains("may not run iam:GetRole"),
            "{}",
            get_role.detail
        );
        let failed = alarm_permissions_check(&AlarmPermissions::Unverified(Unverified::Failed {
            operation: "SimulatePrincipalPolicy",
            error: "dispatch failure".to_owned(),
        }));
        assert!(failed.ok);
        assert!(
            failed
                .detail
                .contains("failed at iam:SimulatePrincipalPolicy (dispatch failure)"),
            "{}",
            failed.detail
        );
    }

    #[test]
    fn alarm_permissions_of_root_or_a_federated_user_pass_unverified() {
        for (why, says) in [
            (Unverified::Root, "root user"),
            (Unverified::FederatedUser, "federated user"),
            (
                Unverified::UnknownPrincipal,
                "neither an IAM user nor an assumed role",
            ),
        ] {
            let check = alarm_permissions_check(&AlarmPermissions::Unverified(why));
            assert!(check.ok, "{check:?}");
            assert!(
                check.detail.starts_with("not verified: ")
                    && check.detail.contains(says)
                    && check.detail.contains("cloudwatch:ListTagsForResource"),
                "{}",
                check.detail
            );
        }
    }

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
