//! The table of resource types the fake API server knows, with the names discovery
//! documents and URL paths use for each of them.

/// One served resource type, described the way the real API server's discovery does.
#[derive(Debug)]
pub(crate) struct ResourceType {
    /// The API group; empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The lower-case plural used in URL paths, e.g. `serviceaccounts`.
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Whether the type has a `/status` subresource, in which case writes to the main
    /// resource leave `.status` alone, as the real server does.
    pub has_status: bool,
    /// How `kubectl get` renders objects of this type (server-side printing).
    pub printer: Printer,
}

impl ResourceType {
    /// The `apiVersion` field of objects of this type, e.g. `apps/v1` or `v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The name used in error messages, e.g. `deployments.apps` or `pods`.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

use super::table::Printer;

const CORE: &str = "";
const APPS: &str = "apps";
const RBAC: &str = "rbac.authorization.k8s.io";
const COORDINATION: &str = "coordination.k8s.io";

/// Every resource type the server serves. The index into this table identifies a type
/// inside the store.
pub(crate) const RESOURCE_TYPES: &[ResourceType] = &[
    ResourceType {
        group: CORE,
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        namespaced: false,
        short_names: &["ns"],
        printer: Printer::Namespace,
        has_status: true,
    },
    ResourceType {
        group: CORE,
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        namespaced: false,
        short_names: &["no"],
        printer: Printer::Node,
        has_status: true,
    },
    ResourceType {
        group: CORE,
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        namespaced: true,
        short_names: &["po"],
        printer: Printer::Pod,
        has_status: true,
    },
    ResourceType {
        group: CORE,
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        namespaced: true,
        short_names: &["sa"],
        printer: Printer::ServiceAccount,
        has_status: false,
    },
    ResourceType {
        group: CORE,
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        namespaced: true,
        short_names: &["cm"],
        printer: Printer::ConfigMap,
        has_status: false,
    },
    // Events are served (and normally empty) because `kubectl describe` lists them for
    // every object it describes.
    ResourceType {
        group: CORE,
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        namespaced: true,
        short_names: &["ev"],
        printer: Printer::Event,
        has_status: false,
    },
    ResourceType {
        group: APPS,
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        namespaced: true,
        short_names: &["deploy"],
        printer: Printer::Deployment,
        has_status: true,
    },
    // ReplicaSets are served (and normally empty) because `kubectl describe deployment`
    // lists them.
    ResourceType {
        group: APPS,
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        singular: "replicaset",
        namespaced: true,
        short_names: &["rs"],
        printer: Printer::ReplicaSet,
        has_status: true,
    },
    ResourceType {
        group: RBAC,
        version: "v1",
        kind: "Role",
        plural: "roles",
        singular: "role",
        namespaced: true,
        short_names: &[],
        printer: Printer::Generic,
        has_status: false,
    },
    ResourceType {
        group: RBAC,
        version: "v1",
        kind: "ClusterRole",
        plural: "clusterroles",
        singular: "clusterrole",
        namespaced: false,
        short_names: &[],
        printer: Printer::Generic,
        has_status: false,
    },
    ResourceType {
        group: RBAC,
        version: "v1",
        kind: "RoleBinding",
        plural: "rolebindings",
        singular: "rolebinding",
        namespaced: true,
        short_names: &[],
        printer: Printer::RoleBinding,
        has_status: false,
    },
    ResourceType {
        group: RBAC,
        version: "v1",
        kind: "ClusterRoleBinding",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        namespaced: false,
        short_names: &[],
        printer: Printer::RoleBinding,
        has_status: false,
    },
    ResourceType {
        group: COORDINATION,
        version: "v1",
        kind: "Lease",
        plural: "leases",
        singular: "lease",
        namespaced: true,
        short_names: &[],
        printer: Printer::Lease,
        has_status: false,
    },
];

/// Finds a type by the group and version of a URL path and its plural name.
pub(crate) fn by_plural(group: &str, version: &str, plural: &str) -> Option<usize> {
    RESOURCE_TYPES
        .iter()
        .position(|rt| rt.group == group && rt.version == version && rt.plural == plural)
}

/// Finds a type by the `apiVersion` and `kind` of an object.
pub(crate) fn by_api_version_kind(api_version: &str, kind: &str) -> Option<usize> {
    RESOURCE_TYPES
        .iter()
        .position(|rt| rt.api_version() == api_version && rt.kind == kind)
}

/// The groups served under `/apis`, in a stable order, each with its single version.
pub(crate) fn named_groups() -> Vec<(&'static str, &'static str)> {
    let mut groups: Vec<(&'static str, &'static str)> = Vec::new();
    for rt in RESOURCE_TYPES {
        if !rt.group.is_empty() && !groups.iter().any(|(g, _)| *g == rt.group) {
            groups.push((rt.group, rt.version));
        }
    }
    groups
}

/// Indexes of the types the server treats specially, checked by a unit test below.
pub(crate) const NAMESPACE: usize = 0;
pub(crate) const POD: usize = 2;
pub(crate) const DEPLOYMENT: usize = 6;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_indexes_point_at_their_kinds() {
        assert_eq!(RESOURCE_TYPES[NAMESPACE].kind, "Namespace");
        assert_eq!(RESOURCE_TYPES[POD].kind, "Pod");
        assert_eq!(RESOURCE_TYPES[DEPLOYMENT].kind, "Deployment");
    }
}
