//! `SelfSubjectAccessReview` (`POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`),
//! which `kubectl auth can-i` and the deployer's preflight use to ask "may I do this?",
//! and `SelfSubjectRulesReview`, which `kubectl auth can-i --list` uses to ask "what may I
//! do in this namespace?", and `SelfSubjectReview` (`kubectl auth whoami`).
//!
//! The sandbox's own user may do everything, and so its reviews say allowed, unless a
//! test denied the permission with [`super::FakeApiServer::deny`]. A denial only
//! changes what reviews answer; the requests themselves still succeed, so a test of a
//! preflight check can make one permission look missing without breaking anything else.
//!
//! A client impersonating another user (`kubectl --as`) gets the answers of the RBAC
//! authorizer over the stored roles and bindings ([`super::rbac`]).

use serde_json::{Value, json};

use super::errors::ApiError;
use super::rbac::{self, PolicyRule, UserInfo};
use super::request_info::{RequestInfo, ResourceRequest};
use super::store::State;

pub(crate) const GROUP: &str = "authorization.k8s.io";
pub(crate) const VERSION: &str = "v1";
pub(crate) const PLURAL: &str = "selfsubjectaccessreviews";
pub(crate) const KIND: &str = "SelfSubjectAccessReview";

/// The path reviews are posted to.
pub(crate) const PATH: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";

pub(crate) const RULES_PLURAL: &str = "selfsubjectrulesreviews";
pub(crate) const RULES_KIND: &str = "SelfSubjectRulesReview";

/// `kubectl auth whoami` posts a SelfSubjectReview to this group.
pub(crate) const AUTHENTICATION_GROUP: &str = "authentication.k8s.io";
pub(crate) const WHOAMI_PLURAL: &str = "selfsubjectreviews";
pub(crate) const WHOAMI_KIND: &str = "SelfSubjectReview";

/// Matches every value in a [`Denial`] field.
const WILDCARD: &str = "*";

/// One permission a test took away: reviews of a matching request answer not allowed.
/// `verb`, `group` and `resource` match exactly or are `*`; a `namespace` of `None`
/// matches every namespace and cluster-scoped requests alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denial {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub namespace: Option<String>,
}

impl Denial {
    fn matches(&self, attributes: &ResourceRequest) -> bool {
        let field = |rule: &str, value: &str| rule == WILDCARD || rule == value;
        field(&self.verb, &attributes.verb)
            && field(&self.group, &attributes.group)
            && field(&self.resource, &attributes.resource)
            && self
                .namespace
                .as_deref()
                .is_none_or(|namespace| namespace == attributes.namespace)
    }

    /// The reason reviews give, worded like the RBAC authorizer's "forbidden" message.
    fn reason(&self, attributes: &ResourceRequest) -> String {
        let resource = if attributes.group.is_empty() {
            attributes.resource.clone()
        } else {
            format!("{}.{}", attributes.resource, attributes.group)
        };
        let scope = if attributes.namespace.is_empty() {
            "at the cluster scope".to_owned()
        } else {
            format!("in the namespace \"{}\"", attributes.namespace)
        };
        format!(
            "the sandbox denies this on purpose: cannot {verb} resource \"{resource}\" {scope} \
             (denied by FakeApiServer::deny)",
            verb = attributes.verb
        )
    }
}

fn text(value: &Value, name: &str) -> String {
    value
        .get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Answers a review asked by the sandbox's own user: allowed, unless a test denied it.
pub(crate) fn review(body: Value, denials: &[Denial]) -> Result<Value, ApiError> {
    answer(body, |info| match info {
        RequestInfo::Resource(attributes) => {
            match denials.iter().find(|denial| denial.matches(attributes)) {
                Some(denial) => json!({"allowed": false, "reason": denial.reason(attributes)}),
                None => json!({"allowed": true, "reason": "the sandbox allows everything"}),
            }
        }
        // Non-resource URLs (`/healthz`, `/metrics`) are never denied in the sandbox.
        RequestInfo::NonResource { .. } => {
            json!({"allowed": true, "reason": "the sandbox allows everything"})
        }
    })
}

/// Answers a review asked by an impersonated user, as the RBAC authorizer decides it. A
/// refusal carries no reason, as RBAC has no opinion on what it does not grant.
pub(crate) fn review_as(body: Value, state: &State, user: &UserInfo) -> Result<Value, ApiError> {
    answer(body, |info| {
        let decision = rbac::authorize(state, user, info);
        if decision.allowed {
            json!({"allowed": true, "reason": decision.reason})
        } else {
            json!({"allowed": false})
        }
    })
}

/// Reads the review's attributes, lets `decide` write the status, and returns the request
/// object with `status` filled in, as the real server returns it (with HTTP 201).
fn answer(mut body: Value, decide: impl FnOnce(&RequestInfo) -> Value) -> Result<Value, ApiError> {
    let invalid = |message: &str| {
        ApiError::new(
            422,
            "Invalid",
            format!("{KIND}.{GROUP} \"\" is invalid: {message}"),
        )
    };
    if !body.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body of a {KIND} must be a JSON object"
        )));
    }
    let spec = body.get("spec").cloned().unwrap_or(Value::Null);
    let resource = spec
        .get("resourceAttributes")
        .filter(|value| !value.is_null());
    let non_resource = spec
        .get("nonResourceAttributes")
        .filter(|value| !value.is_null());
    let info = match (resource, non_resource) {
        (Some(resource), None) => RequestInfo::Resource(ResourceRequest {
            verb: text(resource, "verb"),
            group: text(resource, "group"),
            resource: text(resource, "resource"),
            subresource: text(resource, "subresource"),
            namespace: text(resource, "namespace"),
            name: text(resource, "name"),
        }),
        (None, Some(non_resource)) => RequestInfo::NonResource {
            verb: text(non_resource, "verb"),
            path: text(non_resource, "path"),
        },
        (Some(_), Some(_)) | (None, None) => {
            return Err(invalid(
                "spec.resourceAttributes: Invalid value: \"null\": exactly one of \
                 nonResourceAttributes or resourceAttributes must be specified",
            ));
        }
    };
    let status = decide(&info);
    fill_metadata(&mut body, KIND);
    body["status"] = status;
    Ok(body)
}

fn fill_metadata(body: &mut Value, kind: &str) {
    body["apiVersion"] = json!(format!("{GROUP}/{VERSION}"));
    body["kind"] = json!(kind);
    if body
        .get("metadata")
        .is_none_or(|metadata| !metadata.is_object())
    {
        body["metadata"] = json!({});
    }
    body["metadata"]["creationTimestamp"] = Value::Null;
}

/// Answers a SelfSubjectRulesReview: the rules that apply to `user` in `spec.namespace`,
/// split into resource and non-resource rules as the real server lists them.
pub(crate) fn rules_review(
    mut body: Value,
    state: &State,
    user: &UserInfo,
) -> Result<Value, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body of a {RULES_KIND} must be a JSON object"
        )));
    }
    let namespace = body
        .pointer("/spec/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let rules = rbac::rules_for(state, user, &namespace);
    let (resource_rules, non_resource_rules): (Vec<&PolicyRule>, Vec<&PolicyRule>) = rules
        .iter()
        .partition(|rule| rule.non_resource_urls.is_empty());
    let resource_rules: Vec<Value> = resource_rules
        .into_iter()
        .map(|rule| {
            let mut entry = json!({"verbs": rule.verbs});
            // The real server leaves empty lists out.
            for (field, values) in [
                ("apiGroups", &rule.api_groups),
                ("resources", &rule.resources),
                ("resourceNames", &rule.resource_names),
            ] {
                if !values.is_empty() {
                    entry[field] = json!(values);
                }
            }
            entry
        })
        .collect();
    let non_resource_rules: Vec<Value> = non_resource_rules
        .into_iter()
        .map(|rule| json!({"verbs": rule.verbs, "nonResourceURLs": rule.non_resource_urls}))
        .collect();
    fill_metadata(&mut body, RULES_KIND);
    body["status"] = json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": false,
    });
    Ok(body)
}

/// Answers a SelfSubjectReview (`kubectl auth whoami`): who the server takes the caller
/// for, with the groups impersonation added. The request carries nothing to read.
pub(crate) fn whoami(user: &UserInfo) -> Value {
    let mut user_info = json!({"username": user.name, "groups": user.groups});
    if let Some(uid) = &user.uid {
        user_info["uid"] = json!(uid);
    }
    if !user.extra.is_empty() {
        user_info["extra"] = json!(user.extra);
    }
    json!({
        "apiVersion": format!("{AUTHENTICATION_GROUP}/{VERSION}"),
        "kind": WHOAMI_KIND,
        "metadata": {"creationTimestamp": null},
        "status": {"userInfo": user_info},
    })
}

/// The discovery entry for `/apis/authentication.k8s.io/v1`.
pub(crate) fn self_subject_review_entry() -> Value {
    json!({
        "name": WHOAMI_PLURAL,
        "singularName": "selfsubjectreview",
        "namespaced": false,
        "kind": WHOAMI_KIND,
        "verbs": ["create"],
    })
}

/// The discovery entries for `/apis/authorization.k8s.io/v1`.
pub(crate) fn discovery_entries() -> Vec<Value> {
    vec![
        json!({
            "name": PLURAL,
            "singularName": "selfsubjectaccessreview",
            "namespaced": false,
            "kind": KIND,
            "verbs": ["create"],
        }),
        json!({
            "name": RULES_PLURAL,
            "singularName": "selfsubjectrulesreview",
            "namespaced": false,
            "kind": RULES_KIND,
            "verbs": ["create"],
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(verb: &str, group: &str, resource: &str, namespace: &str) -> Value {
        json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {
                "verb": verb, "group": group, "resource": resource, "namespace": namespace,
            }},
        })
    }

    fn denial(verb: &str, group: &str, resource: &str, namespace: Option<&str>) -> Denial {
        Denial {
            verb: verb.to_owned(),
            group: group.to_owned(),
            resource: resource.to_owned(),
            namespace: namespace.map(str::to_owned),
        }
    }

    fn allowed(answer: &Value) -> bool {
        answer["status"]["allowed"] == json!(true)
    }

    #[test]
    fn everything_is_allowed_without_denials() {
        let answer = review(request("create", "apps", "deployments", "x"), &[]).expect("valid");
        assert!(allowed(&answer));
        assert_eq!(answer["kind"], "SelfSubjectAccessReview");
    }

    #[test]
    fn a_denial_matches_its_verb_group_resource_and_namespace() {
        let denials = [denial("patch", "apps", "deployments", Some("monitoring"))];
        let denied = review(
            request("patch", "apps", "deployments", "monitoring"),
            &denials,
        )
        .expect("valid");
        assert!(!allowed(&denied));
        let reason = denied["status"]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("deployments.apps"), "{reason}");
        for other in [
            request("get", "apps", "deployments", "monitoring"),
            request("patch", "", "deployments", "monitoring"),
            request("patch", "apps", "daemonsets", "monitoring"),
            request("patch", "apps", "deployments", "default"),
        ] {
            assert!(allowed(&review(other, &denials).expect("valid")));
        }
    }

    #[test]
    fn wildcards_and_no_namespace_match_broadly() {
        let denials = [denial("*", "rbac.authorization.k8s.io", "*", None)];
        assert!(!allowed(
            &review(
                request("create", "rbac.authorization.k8s.io", "clusterroles", ""),
                &denials
            )
            .expect("valid")
        ));
        assert!(!allowed(
            &review(
                request(
                    "delete",
                    "rbac.authorization.k8s.io",
                    "roles",
                    "kube-system"
                ),
                &denials
            )
            .expect("valid")
        ));
    }

    #[test]
    fn a_review_needs_exactly_one_kind_of_attributes() {
        let error = review(json!({"spec": {}}), &[]).expect_err("invalid");
        assert_eq!(error.code, 422);
        let non_resource =
            json!({"spec": {"nonResourceAttributes": {"path": "/healthz", "verb": "get"}}});
        assert!(allowed(&review(non_resource, &[]).expect("valid")));
    }
}
