//! Discovery documents: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/{group}` and
//! `/apis/{group}/{version}`, in the plain (not aggregated) format. Besides the stored
//! types, `authorization.k8s.io/v1` lists `selfsubjectaccessreviews` and
//! `selfsubjectrulesreviews`, and `authentication.k8s.io/v1` lists `selfsubjectreviews`
//! (create only). kubectl asks for
//! aggregated discovery first and falls back to these when the response is plain JSON.

use serde_json::{Value, json};

use super::access;
use super::resources::{RESOURCE_TYPES, ResourceType, named_groups};
use super::scale;

/// The verbs every served type supports.
const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.0-sandbox",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`: the versions of the core group.
pub(crate) fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_document(group: &str, version: &str) -> Value {
    let group_version = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({
        "name": group,
        "versions": [group_version],
        "preferredVersion": group_version,
    })
}

/// The named groups of stored types, then `authorization.k8s.io`, which serves only
/// SelfSubjectAccessReview and stores nothing.
fn served_groups() -> Vec<(&'static str, &'static str)> {
    let mut groups = named_groups();
    groups.push((access::GROUP, access::VERSION));
    groups.push((access::AUTHENTICATION_GROUP, access::VERSION));
    groups
}

/// `/apis`: every named group.
pub(crate) fn group_list() -> Value {
    let groups: Vec<Value> = served_groups()
        .into_iter()
        .map(|(group, version)| group_document(group, version))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`, or None for an unknown group.
pub(crate) fn group(name: &str) -> Option<Value> {
    let (group, version) = served_groups()
        .into_iter()
        .find(|(group, _)| *group == name)?;
    let mut document = group_document(group, version);
    document["kind"] = json!("APIGroup");
    document["apiVersion"] = json!("v1");
    Some(document)
}

fn resource_entry(rt: &ResourceType) -> Value {
    json!({
        "name": rt.plural,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": VERBS,
        "shortNames": rt.short_names,
    })
}

/// `/api/v1` or `/apis/{group}/{version}`, or None when nothing is served there.
pub(crate) fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    if group == access::GROUP && version == access::VERSION {
        resources.extend(access::discovery_entries());
    }
    if group == access::AUTHENTICATION_GROUP && version == access::VERSION {
        resources.push(access::self_subject_review_entry());
    }
    for rt in RESOURCE_TYPES
        .iter()
        .filter(|rt| rt.group == group && rt.version == version)
    {
        let mut entry = resource_entry(rt);
        if rt.short_names.is_empty()
            && let Some(map) = entry.as_object_mut()
        {
            map.remove("shortNames");
        }
        resources.push(entry);
        if rt.has_status {
            resources.push(json!({
                "name": format!("{}/status", rt.plural),
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if scale::served(rt) {
            resources.push(scale::discovery_entry(rt));
        }
        if rt.kind == "Pod" {
            resources.push(json!({
                "name": "pods/proxy",
                "singularName": "",
                "namespaced": true,
                "kind": "PodProxyOptions",
                "verbs": ["create", "delete", "get", "patch", "update"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}
