//! The rendered Kubernetes manifests, parsed back into k8s-openapi types.
//!
//! Parsing into the typed structs alone would let a misspelt field through: the generated
//! deserialisers skip keys they do not know. So each document is also serialised back and
//! compared with what was written; any key that did not survive the round trip is a field
//! Kubernetes does not know, and rendering fails on it.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// One object of `manifests.yaml`, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum ManifestObject {
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    Role(Role),
    RoleBinding(RoleBinding),
    // Boxed: a Deployment is several times larger than the other objects.
    Deployment(Box<Deployment>),
}

impl ManifestObject {
    pub fn kind(&self) -> &'static str {
        match self {
            ManifestObject::ServiceAccount(_) => "ServiceAccount",
            ManifestObject::ClusterRole(_) => "ClusterRole",
            ManifestObject::ClusterRoleBinding(_) => "ClusterRoleBinding",
            ManifestObject::Role(_) => "Role",
            ManifestObject::RoleBinding(_) => "RoleBinding",
            ManifestObject::Deployment(_) => "Deployment",
        }
    }

    /// The object's metadata, whatever its kind.
    pub fn metadata(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            ManifestObject::ServiceAccount(object) => &object.metadata,
            ManifestObject::ClusterRole(object) => &object.metadata,
            ManifestObject::ClusterRoleBinding(object) => &object.metadata,
            ManifestObject::Role(object) => &object.metadata,
            ManifestObject::RoleBinding(object) => &object.metadata,
            ManifestObject::Deployment(object) => &object.metadata,
        }
    }

    /// What tells two objects apart in a cluster: kind, namespace and name.
    pub fn identity(&self) -> (&'static str, Option<&str>, &str) {
        let metadata = self.metadata();
        (
            self.kind(),
            metadata.namespace.as_deref(),
            metadata.name.as_deref().unwrap_or_default(),
        )
    }

    pub fn to_json(&self) -> serde_json::Value {
        let serialized = match self {
            ManifestObject::ServiceAccount(object) => serde_json::to_value(object),
            ManifestObject::ClusterRole(object) => serde_json::to_value(object),
            ManifestObject::ClusterRoleBinding(object) => serde_json::to_value(object),
            ManifestObject::Role(object) => serde_json::to_value(object),
            ManifestObject::RoleBinding(object) => serde_json::to_value(object),
            ManifestObject::Deployment(object) => serde_json::to_value(object),
        };
        // Serialising these types into a Value cannot fail: they hold only strings,
        // numbers, maps and lists.
        serialized.unwrap_or(serde_json::Value::Null)
    }
}

/// Why a rendered manifest was refused; `document` counts from 1.
#[derive(Debug, thiserror::Error)]
#[error("document {document} of manifests.yaml: {problem}")]
pub struct ManifestError {
    pub document: usize,
    pub problem: String,
}

/// Parses every document of a multi-document YAML text into typed objects.
pub fn parse(text: &str) -> Result<Vec<ManifestObject>, ManifestError> {
    let mut objects = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let error = |problem: String| ManifestError {
            document: index + 1,
            problem,
        };
        let value = serde_json::Value::deserialize(document)
            .map_err(|source| error(format!("not valid YAML: {source}")))?;
        let kind = value
            .get("kind")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| error("has no kind".to_owned()))?;
        let object = match kind {
            "ServiceAccount" => ManifestObject::ServiceAccount(typed(&value).map_err(error)?),
            "ClusterRole" => ManifestObject::ClusterRole(typed(&value).map_err(error)?),
            "ClusterRoleBinding" => {
                ManifestObject::ClusterRoleBinding(typed(&value).map_err(error)?)
            }
            "Role" => ManifestObject::Role(typed(&value).map_err(error)?),
            "RoleBinding" => ManifestObject::RoleBinding(typed(&value).map_err(error)?),
            "Deployment" => ManifestObject::Deployment(Box::new(typed(&value).map_err(error)?)),
            other => return Err(error(format!("unexpected kind {other}"))),
        };
        let round_trip = object.to_json();
        if round_trip != value {
            return Err(error(format!(
                "fields that {} does not have: {}",
                object.kind(),
                unknown_paths(&value, &round_trip, "").join(", ")
            )));
        }
        objects.push(object);
    }
    Ok(objects)
}

fn typed<K: DeserializeOwned + k8s_openapi::Resource>(
    value: &serde_json::Value,
) -> Result<K, String> {
    let api_version = value.get("apiVersion").and_then(serde_json::Value::as_str);
    if api_version != Some(K::API_VERSION) {
        return Err(format!(
            "{} must have apiVersion {}, found {:?}",
            K::KIND,
            K::API_VERSION,
            api_version
        ));
    }
    K::deserialize(value).map_err(|source| format!("not a valid {}: {source}", K::KIND))
}

/// The paths present in `written` that are missing or different in `kept`.
pub(crate) fn unknown_paths(
    written: &serde_json::Value,
    kept: &serde_json::Value,
    at: &str,
) -> Vec<String> {
    match (written, kept) {
        (serde_json::Value::Object(written), serde_json::Value::Object(kept)) => written
            .iter()
            .flat_map(|(key, value)| match kept.get(key) {
                Some(kept_value) => unknown_paths(value, kept_value, &format!("{at}.{key}")),
                None => vec![format!("{at}.{key}")],
            })
            .collect(),
        (serde_json::Value::Array(written), serde_json::Value::Array(kept)) => written
            .iter()
            .zip(kept)
            .enumerate()
            .flat_map(|(index, (value, kept_value))| {
                unknown_paths(value, kept_value, &format!("{at}[{index}]"))
            })
            .collect(),
        _ if written == kept => Vec::new(),
        _ => vec![at.to_owned()],
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn a_misspelt_field_is_refused_with_its_path() {
        let text =
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: x\n  lables:\n    a: b\n";
        let error = parse(text).expect_err("a typo must not pass");
        assert_eq!(error.document, 1);
        assert!(error.problem.contains(".metadata.lables"), "{error}");
    }

    #[test]
    fn wrong_api_version_and_unknown_kind_are_refused() {
        let deployment = "apiVersion: apps/v1beta1\nkind: Deployment\nmetadata:\n  name: x\n";
        assert!(parse(deployment).is_err());
        let crd = "apiVersion: v1\nkind: Widget\nmetadata:\n  name: x\n";
        assert!(
            parse(crd)
                .expect_err("unknown kind")
                .problem
                .contains("Widget")
        );
    }
}
