//! `SelfSubjectAccessReview` (`POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`),
//! which `kubectl auth can-i` and the deployer's preflight use to ask "may I do this?".
//!
//! The sandbox has no RBAC: every request is allowed, and so every review says allowed,
//! unless a test denied the permission with [`super::FakeApiServer::deny`]. A denial only
//! changes what reviews answer; the requests themselves still succeed, so a test of a
//! preflight check can make one permission look missing without breaking anything else.

use serde_json::{Value, json};

use super::errors::ApiError;

pub(crate) const GROUP: &str = "authorization.k8s.io";
pub(crate) const VERSION: &str = "v1";
pub(crate) const PLURAL: &str = "selfsubjectaccessreviews";
pub(crate) const KIND: &str = "SelfSubjectAccessReview";

/// The path reviews are posted to.
pub(crate) const PATH: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";

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
    fn matches(&self, attributes: &ResourceAttributes) -> bool {
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
    fn reason(&self, attributes: &ResourceAttributes) -> String {
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

/// The `spec.resourceAttributes` of a review that matter for a decision.
#[derive(Debug, Default)]
struct ResourceAttributes {
    verb: String,
    group: String,
    resource: String,
    namespace: String,
}

fn text(value: &Value, name: &str) -> String {
    value
        .get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Answers a review: the request object with `status` filled in, as the real server
/// returns it (with HTTP 201).
pub(crate) fn review(mut body: Value, denials: &[Denial]) -> Result<Value, ApiError> {
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
    let status = match (resource, non_resource) {
        (Some(resource), None) => {
            let attributes = ResourceAttributes {
                verb: text(resource, "verb"),
                group: text(resource, "group"),
                resource: text(resource, "resource"),
                namespace: text(resource, "namespace"),
            };
            match denials.iter().find(|denial| denial.matches(&attributes)) {
                Some(denial) => json!({"allowed": false, "reason": denial.reason(&attributes)}),
                None => json!({"allowed": true, "reason": "the sandbox allows everything"}),
            }
        }
        // Non-resource URLs (`/healthz`, `/metrics`) are never denied in the sandbox.
        (None, Some(_)) => json!({"allowed": true, "reason": "the sandbox allows everything"}),
        _ => {
            return Err(invalid(
                "spec.resourceAttributes: Invalid value: \"null\": exactly one of \
                 nonResourceAttributes or resourceAttributes must be specified",
            ));
        }
    };
    body["apiVersion"] = json!(format!("{GROUP}/{VERSION}"));
    body["kind"] = json!(KIND);
    if body
        .get("metadata")
        .is_none_or(|metadata| !metadata.is_object())
    {
        body["metadata"] = json!({});
    }
    body["metadata"]["creationTimestamp"] = Value::Null;
    body["status"] = status;
    Ok(body)
}

/// The discovery entry for `/apis/authorization.k8s.io/v1`.
pub(crate) fn discovery_entry() -> Value {
    json!({
        "name": PLURAL,
        "singularName": "selfsubjectaccessreview",
        "namespaced": false,
        "kind": KIND,
        "verbs": ["create"],
    })
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
