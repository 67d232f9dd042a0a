//! The `/scale` subresource of Deployments and ReplicaSets, which `kubectl scale` and
//! autoscalers use: an `autoscaling/v1` Scale whose `spec.replicas` is the object's,
//! whose `status.replicas` is the object's status, and whose `status.selector` is the
//! object's label selector written as a string.
//!
//! Writes to a Scale become a change of the object's `spec.replicas`, so they go
//! through the store like any other write (generation, watch event, rollout).

use serde_json::{Value, json};

use super::apply;
use super::errors::ApiError;
use super::http::unsupported_media_type;
use super::resources::ResourceType;
use super::store::{ObjectKey, PatchBody, State, Target, WriteContext};

pub(crate) const SCALE_GROUP: &str = "autoscaling";
pub(crate) const SCALE_VERSION: &str = "v1";
pub(crate) const SCALE_KIND: &str = "Scale";

/// Whether the type has a scale subresource.
pub(crate) fn served(rt: &ResourceType) -> bool {
    rt.group == "apps" && matches!(rt.kind, "Deployment" | "ReplicaSet")
}

/// The discovery entry, e.g. `deployments/scale`, naming the Scale's own group and
/// version as the real server does (kubectl's scale client reads them from here).
pub(crate) fn discovery_entry(rt: &ResourceType) -> Value {
    json!({
        "name": format!("{}/scale", rt.plural),
        "singularName": "",
        "namespaced": rt.namespaced,
        "group": SCALE_GROUP,
        "version": SCALE_VERSION,
        "kind": SCALE_KIND,
        "verbs": ["get", "patch", "update"],
    })
}

/// The Scale of a stored Deployment or ReplicaSet.
pub(crate) fn of(object: &Value) -> Value {
    let mut metadata = json!({});
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(value) = object.pointer(&format!("/metadata/{field}")) {
            metadata[field] = value.clone();
        }
    }
    let replicas = object
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let status_replicas = object
        .pointer("/status/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let selector = object
        .pointer("/spec/selector")
        .map(selector_string)
        .unwrap_or_default();
    let mut status = json!({"replicas": status_replicas});
    if !selector.is_empty() {
        status["selector"] = json!(selector);
    }
    json!({
        "kind": SCALE_KIND,
        "apiVersion": format!("{SCALE_GROUP}/{SCALE_VERSION}"),
        "metadata": metadata,
        "spec": {"replicas": replicas},
        "status": status,
    })
}

/// A label selector in its string form, requirements sorted by key as the real server
/// prints them: `a=b`, `k in (x,y)`, `k notin (x)`, `k`, `!k`.
fn selector_string(selector: &Value) -> String {
    let mut requirements: Vec<(String, String)> = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (key, value) in labels {
            let value = value.as_str().unwrap_or_default();
            requirements.push((key.clone(), format!("{key}={value}")));
        }
    }
    for expression in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = expression
            .get("key")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut values: Vec<&str> = expression
            .get("values")
            .and_then(Value::as_array)
            .map(|values| values.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        values.sort_unstable();
        let text = match expression.get("operator").and_then(Value::as_str) {
            Some("In") => format!("{key} in ({})", values.join(",")),
            Some("NotIn") => format!("{key} notin ({})", values.join(",")),
            Some("Exists") => key.to_owned(),
            Some("DoesNotExist") => format!("!{key}"),
            // The server validated the operator when the object was stored; an unknown
            // one cannot select anything, so it is left out.
            Some(_) | None => continue,
        };
        requirements.push((key.to_owned(), text));
    }
    requirements.sort();
    requirements
        .into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join(",")
}

/// The replica count a written Scale asks for, validated as the real server does.
fn requested_replicas(scale: &Value, name: &str) -> Result<i64, ApiError> {
    let invalid = |message: String| {
        ApiError::new(
            422,
            "Invalid",
            format!("{SCALE_KIND}.{SCALE_GROUP} \"{name}\" is invalid: {message}"),
        )
    };
    match scale.pointer("/spec/replicas") {
        // An omitted count is zero, as Go's zero value.
        None | Some(Value::Null) => Ok(0),
        Some(value) => match value.as_i64() {
            Some(replicas) if replicas >= 0 => Ok(replicas),
            Some(replicas) => Err(invalid(format!(
                "spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
            ))),
            None => Err(ApiError::bad_request(format!(
                "Scale in version \"v1\" cannot be handled as a Scale: spec.replicas: \
                 expected an integer, got {value}"
            ))),
        },
    }
}

/// A write to a Scale, by HTTP method.
pub(crate) enum Write<'a> {
    /// PUT: the whole new Scale.
    Replace(Value),
    /// PATCH: a merge, strategic merge or JSON patch of the current Scale.
    Patch { media_type: String, body: &'a [u8] },
}

/// Applies a write to the Scale of the object `key` names and returns the new Scale. The
/// write becomes a merge patch of the object's `spec.replicas`, so it bumps the
/// generation, reaches watches and runs the rollout like any other spec change.
pub(crate) fn write(
    state: &mut State,
    key: ObjectKey,
    write: Write<'_>,
    context: &mut WriteContext,
) -> Result<Value, ApiError> {
    let name = key.name.clone();
    let (replicas, precondition) = match write {
        Write::Replace(body) => {
            let precondition = body
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_owned);
            (requested_replicas(&body, &name)?, precondition)
        }
        Write::Patch { media_type, body } => {
            let patch: Value = serde_json::from_slice(body).map_err(|error| {
                ApiError::bad_request(format!("the patch is not valid JSON: {error}"))
            })?;
            let mut current = of(&state.get(&key)?);
            let precondition = match media_type.as_str() {
                "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                    apply::merge_patch(&mut current, &patch);
                    patch
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                }
                // A JSON patch names no precondition of its own (a `test` operation on
                // the resourceVersion fails inside the patch instead).
                "application/json-patch+json" => {
                    apply::json_patch(&mut current, &patch)
                        .map_err(|message| ApiError::new(422, "Invalid", message))?;
                    None
                }
                other => return Err(unsupported_media_type(other)),
            };
            (requested_replicas(&current, &name)?, precondition)
        }
    };
    let patch = PatchBody::Merge(object_patch(replicas, precondition.as_deref()));
    let updated = state.patch(key, &patch, context, Target::Main)?;
    Ok(of(&updated))
}

/// The merge patch that applies a Scale to its object: the new `spec.replicas`, with the
/// Scale's resourceVersion as a precondition when the client sent one.
fn object_patch(replicas: i64, resource_version: Option<&str>) -> Value {
    let mut patch = json!({"spec": {"replicas": replicas}});
    if let Some(resource_version) = resource_version.filter(|rv| !rv.is_empty()) {
        patch["metadata"] = json!({"resourceVersion": resource_version});
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_scale_carries_its_replicas_and_selector() {
        let deployment = json!({
            "metadata": {"name": "d", "namespace": "n", "resourceVersion": "7", "uid": "u"},
            "spec": {"replicas": 2, "selector": {
                "matchLabels": {"b": "2", "a": "1"},
                "matchExpressions": [{"key": "c", "operator": "In", "values": ["y", "x"]}],
            }},
            "status": {"replicas": 2},
        });
        let scale = of(&deployment);
        assert_eq!(scale["apiVersion"], "autoscaling/v1");
        assert_eq!(scale["spec"]["replicas"], 2);
        assert_eq!(scale["status"]["selector"], "a=1,b=2,c in (x,y)");
        assert_eq!(scale["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn negative_replicas_are_invalid() {
        let error = requested_replicas(&json!({"spec": {"replicas": -1}}), "d").expect_err("< 0");
        assert_eq!(error.code, 422);
        assert_eq!(
            requested_replicas(&json!({"spec": {"replicas": 3}}), "d").expect("valid"),
            3
        );
    }
}
