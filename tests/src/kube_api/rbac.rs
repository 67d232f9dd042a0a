//! Who makes a request, and what RBAC lets them do.
//!
//! The sandbox's own kubeconfig user is an administrator that may do anything (like a
//! member of `system:masters`), so tests and the tool are never refused. A client can
//! act as someone else with the impersonation headers (`kubectl --as`, `--as-group`,
//! `--as-uid`); such requests, and access reviews asked by them, are decided by an RBAC
//! authorizer over the stored ClusterRoles, Roles, ClusterRoleBindings and RoleBindings,
//! and refused with the real server's 403 `metav1.Status`.
//!
//! The authorizer follows the documented behaviour of Kubernetes RBAC: permissions only
//! add up; a ClusterRoleBinding grants its ClusterRole everywhere; a RoleBinding grants
//! its Role or ClusterRole in its own namespace; rules match on verbs, API groups,
//! resources (`resource/subresource`, `*`, `*/subresource`), resource names and
//! non-resource URLs (`*` as a suffix wildcard). The default ClusterRoles every cluster
//! binds to `system:authenticated` (discovery, access reviews, version and health) are
//! built in, unless the store holds a ClusterRoleBinding of the same name. Writes of
//! roles and bindings by an impersonated user also go through RBAC's escalation
//! prevention: a user may only create a role holding rules it holds itself (or with
//! `escalate`), and only bind a role whose rules it holds (or with `bind`).

use std::collections::BTreeMap;

use http::{HeaderMap, Method};
use serde_json::{Value, json};

use super::apply;
use super::errors::ApiError;
use super::request_info::{RequestInfo, ResourceRequest, percent_decode};
use super::resources;
use super::store::{ObjectKey, State};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
const WILDCARD: &str = "*";
const AUTHENTICATED: &str = "system:authenticated";
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";

/// The identity a request is made as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Requester {
    /// The sandbox's own user: allowed everything (only [`super::FakeApiServer::deny`]
    /// changes what its access reviews answer).
    Admin,
    /// A user named by impersonation headers, subject to RBAC.
    Impersonated(UserInfo),
}

impl Requester {
    /// Who the server takes the caller for (whoami, rules reviews).
    pub(crate) fn user(&self) -> UserInfo {
        match self {
            Requester::Admin => admin_user(),
            Requester::Impersonated(user) => user.clone(),
        }
    }
}

/// An authenticated user as the authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct UserInfo {
    pub name: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The header names of impersonation, lower-case as `http` stores them.
const IMPERSONATE_USER: &str = "impersonate-user";
const IMPERSONATE_GROUP: &str = "impersonate-group";
const IMPERSONATE_UID: &str = "impersonate-uid";
const IMPERSONATE_EXTRA_PREFIX: &str = "impersonate-extra-";

/// Reads the impersonation headers. The administrator may impersonate anyone, so the
/// only refusal is a request that impersonates groups, a UID or extras without a user.
pub(crate) fn requester(headers: &HeaderMap) -> Result<Requester, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .map(str::to_owned)
            .collect()
    };
    let user = values(IMPERSONATE_USER).into_iter().next();
    let groups = values(IMPERSONATE_GROUP);
    let uid = values(IMPERSONATE_UID).into_iter().next();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in headers.keys() {
        if let Some(key) = name.as_str().strip_prefix(IMPERSONATE_EXTRA_PREFIX) {
            // Extra keys travel percent-encoded in the header name.
            extra
                .entry(percent_decode(key))
                .or_default()
                .extend(values(name.as_str()));
        }
    }
    let Some(name) = user else {
        if groups.is_empty() && uid.is_none() && extra.is_empty() {
            return Ok(Requester::Admin);
        }
        return Err(ApiError::new(
            500,
            "InternalError",
            "Internal error occurred: requested impersonation of groups, a UID or extra \
             fields without impersonating a user",
        ));
    };
    Ok(Requester::Impersonated(impersonated_user(
        name, groups, uid, extra,
    )))
}

/// The user an impersonation names, with the groups the real server adds: a service
/// account's two groups, and `system:authenticated` for everyone but the anonymous user.
fn impersonated_user(
    name: String,
    mut groups: Vec<String>,
    uid: Option<String>,
    extra: BTreeMap<String, Vec<String>>,
) -> UserInfo {
    if let Some(account) = name.strip_prefix(SERVICE_ACCOUNT_PREFIX)
        && let Some((namespace, _)) = account.split_once(':')
    {
        for group in [
            SERVICE_ACCOUNTS_GROUP.to_owned(),
            format!("{SERVICE_ACCOUNTS_GROUP}:{namespace}"),
        ] {
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
    }
    if name != "system:anonymous" && !groups.iter().any(|group| group == AUTHENTICATED) {
        groups.push(AUTHENTICATED.to_owned());
    }
    UserInfo {
        name,
        uid,
        groups,
        extra,
    }
}

/// One rule of a Role or ClusterRole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PolicyRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(value: &Value, field: &str) -> Vec<String> {
    value
        .get(field)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn rules_of(role: &Value) -> Vec<PolicyRule> {
    role.get("rules")
        .and_then(Value::as_array)
        .map(|rules| {
            rules
                .iter()
                .map(|rule| PolicyRule {
                    verbs: strings(rule, "verbs"),
                    api_groups: strings(rule, "apiGroups"),
                    resources: strings(rule, "resources"),
                    resource_names: strings(rule, "resourceNames"),
                    non_resource_urls: strings(rule, "nonResourceURLs"),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn contains_or_wildcard(list: &[String], value: &str) -> bool {
    list.iter().any(|item| item == WILDCARD || item == value)
}

impl PolicyRule {
    fn allows(&self, info: &RequestInfo) -> bool {
        match info {
            RequestInfo::Resource(request) => self.allows_resource(request),
            RequestInfo::NonResource { verb, path } => {
                contains_or_wildcard(&self.verbs, verb)
                    && self.non_resource_urls.iter().any(|url| {
                        url == WILDCARD
                            || url == path
                            || url
                                .strip_suffix('*')
                                .is_some_and(|prefix| path.starts_with(prefix))
                    })
            }
        }
    }

    fn allows_resource(&self, request: &ResourceRequest) -> bool {
        let qualified = request.qualified_resource();
        let any_subresource = format!("*/{}", request.subresource);
        let resource_matches = self.resources.iter().any(|resource| {
            resource == WILDCARD
                || *resource == qualified
                || (!request.subresource.is_empty() && *resource == any_subresource)
        });
        // A rule limited to names never grants a request that names no object (a list,
        // or a create).
        let name_matches = self.resource_names.is_empty()
            || (!request.name.is_empty() && self.resource_names.contains(&request.name));
        contains_or_wildcard(&self.verbs, &request.verb)
            && contains_or_wildcard(&self.api_groups, &request.group)
            && resource_matches
            && name_matches
    }
}

/// One subject of a binding.
#[derive(Debug, Clone)]
struct Subject {
    kind: String,
    name: String,
    namespace: String,
}

impl Subject {
    /// Whether the subject is this user. A ServiceAccount subject without a namespace
    /// means the binding's own namespace.
    fn applies_to(&self, user: &UserInfo, binding_namespace: &str) -> bool {
        match self.kind.as_str() {
            "User" => self.name == user.name,
            "Group" => user.groups.contains(&self.name),
            "ServiceAccount" => {
                let namespace = if self.namespace.is_empty() {
                    binding_namespace
                } else {
                    &self.namespace
                };
                !namespace.is_empty()
                    && user.name == format!("{SERVICE_ACCOUNT_PREFIX}{namespace}:{}", self.name)
            }
            // An unknown kind names nobody.
            _ => false,
        }
    }

    /// The subject as the RBAC authorizer's reasons name it, e.g.
    /// `ServiceAccount "name/namespace"`.
    fn describe(&self, binding_namespace: &str) -> String {
        if self.kind == "ServiceAccount" {
            let namespace = if self.namespace.is_empty() {
                binding_namespace
            } else {
                &self.namespace
            };
            format!("{} \"{}/{}\"", self.kind, self.name, namespace)
        } else {
            format!("{} \"{}\"", self.kind, self.name)
        }
    }
}

/// A ClusterRoleBinding or RoleBinding, read from its stored object.
#[derive(Debug, Clone)]
struct Binding {
    /// `ClusterRoleBinding` or `RoleBinding`.
    kind: &'static str,
    name: String,
    /// Empty for a ClusterRoleBinding.
    namespace: String,
    role_kind: String,
    role_name: String,
    subjects: Vec<Subject>,
}

impl Binding {
    fn from_object(kind: &'static str, object: &Value) -> Binding {
        let text = |pointer: &str| {
            object
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let subjects = object
            .get("subjects")
            .and_then(Value::as_array)
            .map(|subjects| {
                subjects
                    .iter()
                    .map(|subject| Subject {
                        kind: text_of(subject, "kind"),
                        name: text_of(subject, "name"),
                        namespace: text_of(subject, "namespace"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Binding {
            kind,
            name: text("/metadata/name"),
            namespace: text("/metadata/namespace"),
            role_kind: text("/roleRef/kind"),
            role_name: text("/roleRef/name"),
            subjects,
        }
    }

    /// How reasons name the binding: a RoleBinding as `"name/namespace"`.
    fn describe(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} \"{}\"", self.kind, self.name)
        } else {
            format!("{} \"{}/{}\"", self.kind, self.name, self.namespace)
        }
    }
}

fn text_of(value: &Value, field: &str) -> String {
    value
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The stored objects of one RBAC type (by plural), in one namespace or all.
fn stored<'a>(
    state: &'a State,
    plural: &str,
    namespace: Option<&'a str>,
) -> impl Iterator<Item = &'a Value> + 'a {
    let type_index = resources::by_plural(RBAC_GROUP, "v1", plural);
    state
        .objects
        .iter()
        .filter(move |(key, _)| Some(key.type_index) == type_index)
        .filter(move |(key, _)| namespace.is_none_or(|namespace| key.namespace == namespace))
        .map(|(_, stored)| &stored.object)
}

/// The rules of the role a binding refers to; a missing role grants nothing.
fn role_rules(state: &State, binding: &Binding) -> Vec<PolicyRule> {
    let (plural, namespace) = match binding.role_kind.as_str() {
        "ClusterRole" => ("clusterroles", ""),
        // A RoleBinding can only refer to a Role in its own namespace.
        "Role" if !binding.namespace.is_empty() => ("roles", binding.namespace.as_str()),
        // A ClusterRoleBinding cannot refer to a Role, and other kinds do not exist.
        _ => return Vec::new(),
    };
    let Some(type_index) = resources::by_plural(RBAC_GROUP, "v1", plural) else {
        return Vec::new();
    };
    let key = ObjectKey {
        type_index,
        namespace: namespace.to_owned(),
        name: binding.role_name.clone(),
    };
    if let Some(stored) = state.objects.get(&key) {
        return rules_of(&stored.object);
    }
    if binding.role_kind == "ClusterRole" {
        return builtin_role(&binding.role_name).unwrap_or_default();
    }
    Vec::new()
}

/// The default ClusterRoleBindings of every cluster that matter here, each named like
/// its ClusterRole, with the group it binds: `cluster-admin` for `system:masters` (the
/// sandbox's own user) and the roles every authenticated user has.
const BUILTIN_BINDINGS: &[(&str, &str)] = &[
    ("cluster-admin", MASTERS),
    ("system:basic-user", AUTHENTICATED),
    ("system:discovery", AUTHENTICATED),
    ("system:public-info-viewer", AUTHENTICATED),
];

/// The group of all-powerful users, which the sandbox's own user is in.
const MASTERS: &str = "system:masters";

/// The sandbox's own user, as SelfSubjectRulesReviews see it: a member of
/// `system:masters`, like kubeadm's `kubernetes-admin`.
pub(crate) fn admin_user() -> UserInfo {
    UserInfo {
        name: "kubernetes-admin".to_owned(),
        uid: None,
        groups: vec![MASTERS.to_owned(), AUTHENTICATED.to_owned()],
        extra: BTreeMap::new(),
    }
}

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str], urls: &[&str]) -> PolicyRule {
    let owned = |items: &[&str]| items.iter().map(|item| (*item).to_owned()).collect();
    PolicyRule {
        verbs: owned(verbs),
        api_groups: owned(groups),
        resources: owned(resources),
        resource_names: Vec::new(),
        non_resource_urls: owned(urls),
    }
}

fn builtin_role(name: &str) -> Option<Vec<PolicyRule>> {
    let public_info = ["/healthz", "/livez", "/readyz", "/version", "/version/"];
    match name {
        "cluster-admin" => Some(vec![
            rule(&["*"], &["*"], &["*"], &[]),
            rule(&["*"], &[], &[], &["*"]),
        ]),
        "system:basic-user" => Some(vec![
            rule(
                &["create"],
                &["authorization.k8s.io"],
                &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                &[],
            ),
            rule(
                &["create"],
                &["authentication.k8s.io"],
                &["selfsubjectreviews"],
                &[],
            ),
        ]),
        "system:discovery" => Some(vec![rule(
            &["get"],
            &[],
            &[],
            &[
                "/api",
                "/api/*",
                "/apis",
                "/apis/*",
                "/healthz",
                "/livez",
                "/openapi",
                "/openapi/*",
                "/readyz",
                "/version",
                "/version/",
            ],
        )]),
        "system:public-info-viewer" => Some(vec![rule(&["get"], &[], &[], &public_info)]),
        _ => None,
    }
}

/// Every binding that may apply to a request in `namespace` (empty: cluster scope):
/// the stored ClusterRoleBindings, the built-in ones not overridden, then the stored
/// RoleBindings of the namespace.
fn bindings(state: &State, namespace: &str) -> Vec<Binding> {
    let mut found: Vec<Binding> = stored(state, "clusterrolebindings", None)
        .map(|object| Binding::from_object("ClusterRoleBinding", object))
        .collect();
    for (name, group) in BUILTIN_BINDINGS {
        if !found.iter().any(|binding| binding.name == *name) {
            found.push(Binding {
                kind: "ClusterRoleBinding",
                name: (*name).to_owned(),
                namespace: String::new(),
                role_kind: "ClusterRole".to_owned(),
                role_name: (*name).to_owned(),
                subjects: vec![Subject {
                    kind: "Group".to_owned(),
                    name: (*group).to_owned(),
                    namespace: String::new(),
                }],
            });
        }
    }
    if !namespace.is_empty() {
        found.extend(
            stored(state, "rolebindings", Some(namespace))
                .map(|object| Binding::from_object("RoleBinding", object)),
        );
    }
    found
}

/// An authorization decision; `reason` is empty when nothing allowed the request, as
/// the RBAC authorizer has no opinion then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    pub allowed: bool,
    pub reason: String,
}

/// Whether RBAC lets `user` do what `info` describes.
pub(crate) fn authorize(state: &State, user: &UserInfo, info: &RequestInfo) -> Decision {
    let namespace = match info {
        RequestInfo::Resource(request) => request.namespace.as_str(),
        RequestInfo::NonResource { .. } => "",
    };
    for binding in bindings(state, namespace) {
        let Some(subject) = binding
            .subjects
            .iter()
            .find(|subject| subject.applies_to(user, &binding.namespace))
        else {
            continue;
        };
        // Rules granted through a RoleBinding never reach non-resource URLs.
        if !binding.namespace.is_empty() && matches!(info, RequestInfo::NonResource { .. }) {
            continue;
        }
        if role_rules(state, &binding)
            .iter()
            .any(|rule| rule.allows(info))
        {
            return Decision {
                allowed: true,
                reason: format!(
                    "RBAC: allowed by {} of {} \"{}\" to {}",
                    binding.describe(),
                    binding.role_kind,
                    binding.role_name,
                    subject.describe(&binding.namespace)
                ),
            };
        }
    }
    Decision {
        allowed: false,
        reason: String::new(),
    }
}

/// The rules that apply to `user` in `namespace`, for a SelfSubjectRulesReview.
pub(crate) fn rules_for(state: &State, user: &UserInfo, namespace: &str) -> Vec<PolicyRule> {
    let mut rules = Vec::new();
    for binding in bindings(state, namespace) {
        if binding
            .subjects
            .iter()
            .any(|subject| subject.applies_to(user, &binding.namespace))
        {
            for rule in role_rules(state, &binding) {
                if !rules.contains(&rule) {
                    rules.push(rule);
                }
            }
        }
    }
    rules
}

/// The RBAC kinds whose writes can grant permissions, by plural.
const ROLE_PLURALS: &[&str] = &["roles", "clusterroles"];
const BINDING_PLURALS: &[&str] = &["rolebindings", "clusterrolebindings"];

/// Whether a request writes a role or binding, which RBAC's escalation prevention checks
/// beyond the request's own permission.
pub(crate) fn writes_rbac(info: &RequestInfo) -> bool {
    match info {
        RequestInfo::Resource(request) => {
            request.group == RBAC_GROUP
                && request.subresource.is_empty()
                && matches!(request.verb.as_str(), "create" | "update" | "patch")
                && (ROLE_PLURALS.contains(&request.resource.as_str())
                    || BINDING_PLURALS.contains(&request.resource.as_str()))
        }
        RequestInfo::NonResource { .. } => false,
    }
}

/// A write of a role or binding as it arrived: the method, the body's media type, the
/// body parsed (when it is an object in JSON, YAML or protobuf) and as sent.
pub(crate) struct RbacWrite<'a> {
    pub method: &'a Method,
    pub media_type: &'a str,
    pub body: Option<Value>,
    pub raw: &'a [u8],
}

/// The role or binding a write would store, for escalation prevention: the body of a
/// create or replace, the stored object with a merge or JSON patch applied, or an apply
/// configuration. `None` when the body cannot be read or the object does not exist; the
/// write itself then fails with the usual error.
pub(crate) fn written_object(
    state: &State,
    info: &RequestInfo,
    write: RbacWrite<'_>,
) -> Option<Value> {
    match *write.method {
        Method::POST | Method::PUT => write.body,
        Method::PATCH => {
            if write.media_type == "application/apply-patch+yaml" {
                let config: serde_yaml::Value = serde_yaml::from_slice(write.raw).ok()?;
                return serde_json::to_value(config).ok();
            }
            let RequestInfo::Resource(target) = info else {
                return None;
            };
            let key = ObjectKey {
                type_index: resources::by_plural(&target.group, "v1", &target.resource)?,
                namespace: target.namespace.clone(),
                name: target.name.clone(),
            };
            let mut object = state.get(&key).ok()?;
            let patch: Value = serde_json::from_slice(write.raw).ok()?;
            match write.media_type {
                "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                    apply::merge_patch(&mut object, &patch);
                }
                "application/json-patch+json" => apply::json_patch(&mut object, &patch).ok()?,
                // The write fails with 415; nothing to check.
                _ => return None,
            }
            Some(object)
        }
        // Only creates, replaces and patches store a role or binding.
        _ => None,
    }
}

/// RBAC's escalation prevention for a role or binding `object` an impersonated user is
/// about to store: a role may only hold rules the user holds itself (unless the user may
/// `escalate` it), and a binding may only grant a role whose rules the user holds
/// (unless the user may `bind` it). Other requests pass.
pub(crate) fn check_escalation(
    state: &State,
    user: &UserInfo,
    info: &RequestInfo,
    object: &Value,
) -> Result<(), ApiError> {
    let RequestInfo::Resource(request) = info else {
        return Ok(());
    };
    let allowed_to = |verb: &str, resource: &str, namespace: &str, name: &str| {
        let probe = RequestInfo::Resource(ResourceRequest {
            verb: verb.to_owned(),
            group: RBAC_GROUP.to_owned(),
            resource: resource.to_owned(),
            subresource: String::new(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
        authorize(state, user, &probe).allowed
    };
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or(&request.name)
        .to_owned();
    let granted = if ROLE_PLURALS.contains(&request.resource.as_str()) {
        if allowed_to("escalate", &request.resource, &request.namespace, &name) {
            return Ok(());
        }
        rules_of(object)
    } else if BINDING_PLURALS.contains(&request.resource.as_str()) {
        let kind = if request.resource == "rolebindings" {
            "RoleBinding"
        } else {
            "ClusterRoleBinding"
        };
        let mut binding = Binding::from_object(kind, object);
        binding.namespace = request.namespace.clone();
        let role_resource = if binding.role_kind == "Role" {
            "roles"
        } else {
            "clusterroles"
        };
        // `bind` on a ClusterRole may be granted in the binding's namespace or
        // cluster-wide; on a Role only in its namespace.
        if allowed_to(
            "bind",
            role_resource,
            &binding.namespace,
            &binding.role_name,
        ) {
            return Ok(());
        }
        role_rules(state, &binding)
    } else {
        return Ok(());
    };
    let held = rules_for(state, user, &request.namespace);
    let missing: Vec<String> = granted
        .iter()
        .flat_map(atoms)
        .filter(|atom| !held.iter().any(|owner| covers(owner, atom)))
        .map(|atom| describe_rule(&atom))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let groups: Vec<String> = user.groups.iter().map(|g| format!("\"{g}\"")).collect();
    let mut error = ApiError::new(
        403,
        "Forbidden",
        format!(
            "{}.{RBAC_GROUP} \"{name}\" is forbidden: user \"{}\" (groups=[{}]) is attempting \
             to grant RBAC permissions not currently held:\n{}",
            request.resource,
            user.name,
            groups.join(" "),
            missing.join("\n")
        ),
    );
    error.details = Some(json!({"name": name, "group": RBAC_GROUP, "kind": request.resource}));
    Err(error)
}

/// A rule broken into rules of one verb, group, resource and name (or one verb and URL),
/// so that coverage is checked piece by piece.
fn atoms(rule: &PolicyRule) -> Vec<PolicyRule> {
    let mut found = Vec::new();
    let one = |value: &String| vec![value.clone()];
    for verb in &rule.verbs {
        for url in &rule.non_resource_urls {
            found.push(PolicyRule {
                verbs: one(verb),
                non_resource_urls: one(url),
                ..PolicyRule::default()
            });
        }
        for group in &rule.api_groups {
            for resource in &rule.resources {
                let names: Vec<Vec<String>> = if rule.resource_names.is_empty() {
                    vec![Vec::new()]
                } else {
                    rule.resource_names.iter().map(one).collect()
                };
                for resource_names in names {
                    found.push(PolicyRule {
                        verbs: one(verb),
                        api_groups: one(group),
                        resources: one(resource),
                        resource_names,
                        non_resource_urls: Vec::new(),
                    });
                }
            }
        }
    }
    found
}

/// Whether `owner` grants everything the single-valued rule `atom` grants. A wildcard
/// in `atom` is only covered by a wildcard.
fn covers(owner: &PolicyRule, atom: &PolicyRule) -> bool {
    let first = |values: &[String]| values.first().cloned().unwrap_or_default();
    let verb = first(&atom.verbs);
    if !contains_or_wildcard(&owner.verbs, &verb) {
        return false;
    }
    if let Some(url) = atom.non_resource_urls.first() {
        return owner.non_resource_urls.iter().any(|held| {
            held == WILDCARD
                || held == url
                || held
                    .strip_suffix('*')
                    .is_some_and(|prefix| url.starts_with(prefix))
        });
    }
    let group = first(&atom.api_groups);
    let resource = first(&atom.resources);
    let resource_covered = owner.resources.iter().any(|held| {
        held == WILDCARD
            || *held == resource
            || resource
                .split_once('/')
                .is_some_and(|(_, sub)| *held == format!("*/{sub}"))
    });
    let names_covered = owner.resource_names.is_empty()
        || atom
            .resource_names
            .first()
            .is_some_and(|name| owner.resource_names.contains(name));
    contains_or_wildcard(&owner.api_groups, &group) && resource_covered && names_covered
}

/// A rule as the escalation message lists it, e.g.
/// `{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}`.
fn describe_rule(rule: &PolicyRule) -> String {
    let quoted = |values: &[String]| {
        values
            .iter()
            .map(|value| format!("\"{value}\""))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut parts = Vec::new();
    if !rule.api_groups.is_empty() {
        parts.push(format!("APIGroups:[{}]", quoted(&rule.api_groups)));
    }
    if !rule.resources.is_empty() {
        parts.push(format!("Resources:[{}]", quoted(&rule.resources)));
    }
    if !rule.resource_names.is_empty() {
        parts.push(format!("ResourceNames:[{}]", quoted(&rule.resource_names)));
    }
    if !rule.non_resource_urls.is_empty() {
        parts.push(format!(
            "NonResourceURLs:[{}]",
            quoted(&rule.non_resource_urls)
        ));
    }
    parts.push(format!("Verbs:[{}]", quoted(&rule.verbs)));
    format!("{{{}}}", parts.join(", "))
}

/// The 403 the real server answers when authorization refuses a request, e.g.
/// `pods is forbidden: User "x" cannot list resource "pods" in API group "" in the
/// namespace "default"`.
pub(crate) fn forbidden(user: &UserInfo, info: &RequestInfo) -> ApiError {
    match info {
        RequestInfo::Resource(request) => {
            let scope = if request.namespace.is_empty() {
                "at the cluster scope".to_owned()
            } else {
                format!("in the namespace \"{}\"", request.namespace)
            };
            let cause = format!(
                "User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
                user.name,
                request.verb,
                request.qualified_resource(),
                request.group
            );
            let group_resource = if request.group.is_empty() {
                request.resource.clone()
            } else {
                format!("{}.{}", request.resource, request.group)
            };
            let message = if request.name.is_empty() {
                format!("{group_resource} is forbidden: {cause}")
            } else {
                format!(
                    "{group_resource} \"{}\" is forbidden: {cause}",
                    request.name
                )
            };
            let mut error = ApiError::new(403, "Forbidden", message);
            let mut details = json!({"group": request.group, "kind": request.resource});
            if !request.name.is_empty() {
                details["name"] = json!(request.name);
            }
            error.details = Some(details);
            error
        }
        RequestInfo::NonResource { verb, path } => ApiError::new(
            403,
            "Forbidden",
            format!(
                "forbidden: User \"{}\" cannot {verb} path \"{path}\"",
                user.name
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    fn user(name: &str) -> UserInfo {
        impersonated_user(name.to_owned(), Vec::new(), None, BTreeMap::new())
    }

    #[test]
    fn a_service_account_is_in_its_groups() {
        let account = user("system:serviceaccount:kube-system:helper");
        assert_eq!(
            account.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
                "system:authenticated"
            ]
        );
        assert_eq!(user("alice").groups, ["system:authenticated"]);
    }

    #[test]
    fn headers_name_the_impersonated_user() {
        let mut headers = HeaderMap::new();
        assert_eq!(requester(&headers).expect("no headers"), Requester::Admin);
        headers.insert(
            HeaderName::from_static("impersonate-group"),
            HeaderValue::from_static("ops"),
        );
        assert_eq!(requester(&headers).expect_err("a group alone").code, 500);
        headers.insert(
            HeaderName::from_static("impersonate-user"),
            HeaderValue::from_static("alice"),
        );
        headers.insert(
            HeaderName::from_static("impersonate-extra-scopes%2fone"),
            HeaderValue::from_static("view"),
        );
        let Requester::Impersonated(alice) = requester(&headers).expect("a user") else {
            panic!("impersonates");
        };
        assert_eq!(alice.groups, ["ops", "system:authenticated"]);
        assert_eq!(
            alice.extra.get("scopes/one"),
            Some(&vec!["view".to_owned()])
        );
    }

    fn resource(verb: &str, resource: &str, subresource: &str, name: &str) -> RequestInfo {
        RequestInfo::Resource(ResourceRequest {
            verb: verb.to_owned(),
            group: String::new(),
            resource: resource.to_owned(),
            subresource: subresource.to_owned(),
            namespace: "kube-system".to_owned(),
            name: name.to_owned(),
        })
    }

    #[test]
    fn rules_match_subresources_wildcards_and_names() {
        let proxy = rule(&["get"], &[""], &["pods/proxy"], &[]);
        assert!(proxy.allows(&resource("get", "pods", "proxy", "a")));
        assert!(!proxy.allows(&resource("get", "pods", "", "a")));
        assert!(!proxy.allows(&resource("create", "pods", "proxy", "a")));
        let any_status = rule(&["*"], &["*"], &["*/status"], &[]);
        assert!(any_status.allows(&resource("update", "pods", "status", "a")));
        assert!(!any_status.allows(&resource("update", "pods", "", "a")));
        let mut named = rule(&["get", "list"], &[""], &["pods"], &[]);
        named.resource_names = vec!["a".to_owned()];
        assert!(named.allows(&resource("get", "pods", "", "a")));
        assert!(!named.allows(&resource("get", "pods", "", "b")));
        assert!(!named.allows(&resource("list", "pods", "", "")));
        let urls = rule(&["get"], &[], &[], &["/metrics", "/apis/*"]);
        let path = |path: &str| RequestInfo::NonResource {
            verb: "get".to_owned(),
            path: path.to_owned(),
        };
        assert!(urls.allows(&path("/metrics")));
        assert!(urls.allows(&path("/apis/apps/v1")));
        assert!(!urls.allows(&path("/api")));
    }

    #[test]
    fn service_account_subjects_default_to_the_binding_namespace() {
        let subject = Subject {
            kind: "ServiceAccount".to_owned(),
            name: "helper".to_owned(),
            namespace: String::new(),
        };
        let account = user("system:serviceaccount:kube-system:helper");
        assert!(subject.applies_to(&account, "kube-system"));
        assert!(!subject.applies_to(&account, "default"));
        assert!(!subject.applies_to(&account, ""));
        assert_eq!(
            subject.describe("kube-system"),
            "ServiceAccount \"helper/kube-system\""
        );
    }

    #[test]
    fn coverage_is_checked_piece_by_piece() {
        let held = rule(&["get", "list"], &[""], &["pods", "*/status"], &[]);
        let asked = rule(&["get"], &[""], &["pods", "deployments/status"], &[]);
        assert!(atoms(&asked).iter().all(|atom| covers(&held, atom)));
        let more = rule(&["delete"], &[""], &["pods"], &[]);
        assert!(!atoms(&more).iter().all(|atom| covers(&held, atom)));
        let wildcard = rule(&["get"], &[""], &["*"], &[]);
        assert!(!atoms(&wildcard).iter().all(|atom| covers(&held, atom)));
        assert_eq!(
            describe_rule(&more),
            "{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}"
        );
    }

    #[test]
    fn forbidden_messages_read_like_the_real_server() {
        let error = forbidden(
            &user("system:serviceaccount:kube-system:helper"),
            &resource("delete", "pods", "", "x"),
        );
        assert_eq!(error.code, 403);
        assert_eq!(
            error.message,
            "pods \"x\" is forbidden: User \"system:serviceaccount:kube-system:helper\" \
             cannot delete resource \"pods\" in API group \"\" in the namespace \"kube-system\""
        );
    }
}
