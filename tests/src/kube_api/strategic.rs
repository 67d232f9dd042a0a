//! Strategic merge patches (`application/strategic-merge-patch+json`), the patch type
//! client-side `kubectl apply`, `kubectl diff` and `kubectl edit` send for built-in kinds.
//!
//! It is a JSON merge patch that knows the schema: a list field whose
//! `x-kubernetes-patch-strategy` includes `merge` is merged item by item (by its
//! `x-kubernetes-patch-merge-key`, or as a set of scalars) instead of replaced, and
//! the patch can carry directives: `$patch: replace|delete|merge` on a map or list item,
//! `$retainKeys` (keys of a map the result keeps), `$setElementOrder/<field>` (the order
//! of a merged list) and `$deleteFromPrimitiveList/<field>` (scalars to drop from a
//! merged list).

use serde_json::{Map, Value};

use super::schema::{Definitions, PatchMeta, Shape, patch_meta};

const PATCH_DIRECTIVE: &str = "$patch";
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
const SET_ELEMENT_ORDER_PREFIX: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST_PREFIX: &str = "$deleteFromPrimitiveList/";

/// A patch that cannot be applied; the message is what the server reports (422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct StrategicPatchError(pub String);

/// Applies `patch` to `target`, whose schema is `schema` (a definition or a property
/// node of one).
pub(crate) fn apply(
    definitions: &Definitions,
    schema: Option<&Value>,
    target: &mut Value,
    patch: &Value,
) -> Result<(), StrategicPatchError> {
    let Value::Object(patch) = patch else {
        return Err(StrategicPatchError(
            "a strategic merge patch must be a JSON object".into(),
        ));
    };
    merge_map(definitions, schema, target, patch)
}

/// The schema of the value under `key` in a map described by `schema`: a declared field,
/// or the value schema of a free-keyed map.
fn child_schema<'a>(
    definitions: &'a Definitions,
    schema: Option<&'a Value>,
    key: &str,
) -> Option<&'a Value> {
    let schema = schema?;
    match definitions.shape(schema) {
        Shape::Struct(properties) => properties.get(key),
        Shape::Map(values) => Some(values),
        Shape::List(_) | Shape::Opaque => None,
    }
}

fn merge_map(
    definitions: &Definitions,
    schema: Option<&Value>,
    target: &mut Value,
    patch: &Map<String, Value>,
) -> Result<(), StrategicPatchError> {
    match patch.get(PATCH_DIRECTIVE).map(Value::as_str) {
        None | Some(Some("merge")) => {}
        Some(Some("replace")) => {
            let mut replacement = patch.clone();
            replacement.remove(PATCH_DIRECTIVE);
            *target = Value::Object(replacement);
            return Ok(());
        }
        Some(Some("delete")) => {
            *target = Value::Object(Map::new());
            return Ok(());
        }
        Some(other) => {
            return Err(StrategicPatchError(format!(
                "Unknown patch type: {}",
                other.map_or_else(|| "(not a string)".to_owned(), str::to_owned)
            )));
        }
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let retain_keys = match patch.get(RETAIN_KEYS_DIRECTIVE) {
        None => None,
        Some(Value::Array(keys)) => Some(
            keys.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        ),
        Some(_) => {
            return Err(StrategicPatchError(
                "$retainKeys must be a list of field names".into(),
            ));
        }
    };
    for (key, value) in patch {
        if key == PATCH_DIRECTIVE || key == RETAIN_KEYS_DIRECTIVE {
            continue;
        }
        if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST_PREFIX) {
            delete_from_primitive_list(target, field, value)?;
            continue;
        }
        if key.starts_with(SET_ELEMENT_ORDER_PREFIX) {
            // Applied after the field itself is merged, below.
            continue;
        }
        let property = child_schema(definitions, schema, key);
        merge_field(definitions, property, target, key, value)?;
    }
    for (key, order) in patch {
        if let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER_PREFIX) {
            let property = child_schema(definitions, schema, field);
            let meta = property.map(patch_meta).unwrap_or_default();
            set_element_order(target, field, order, meta.merge_key.as_deref())?;
        }
    }
    if let (Some(keep), Value::Object(map)) = (retain_keys, &mut *target) {
        map.retain(|key, _| keep.contains(key));
    }
    Ok(())
}

fn merge_field(
    definitions: &Definitions,
    property: Option<&Value>,
    target: &mut Value,
    key: &str,
    value: &Value,
) -> Result<(), StrategicPatchError> {
    let Value::Object(map) = target else {
        return Ok(());
    };
    match value {
        Value::Null => {
            map.remove(key);
        }
        Value::Object(child_patch) => {
            if child_patch.get(PATCH_DIRECTIVE).and_then(Value::as_str) == Some("delete") {
                map.remove(key);
                return Ok(());
            }
            let child = map.entry(key.to_owned()).or_insert(Value::Null);
            merge_map(definitions, property, child, child_patch)?;
        }
        Value::Array(items) => {
            let meta = property.map(patch_meta).unwrap_or_default();
            let item_schema = property.and_then(|p| match definitions.shape(p) {
                Shape::List(items) => Some(items),
                Shape::Struct(_) | Shape::Map(_) | Shape::Opaque => None,
            });
            let live = map.remove(key);
            let merged = merge_list(definitions, item_schema, &meta, live, items)?;
            map.insert(key.to_owned(), merged);
        }
        Value::Bool(_) | Value::Number(_) | Value::String(_) => {
            map.insert(key.to_owned(), value.clone());
        }
    }
    Ok(())
}

/// Whether a list item is a `{"$patch": "replace"}` marker, which makes the patch's list
/// replace the live one.
fn is_replace_marker(item: &Value) -> bool {
    item.get(PATCH_DIRECTIVE).and_then(Value::as_str) == Some("replace")
}

fn merge_list(
    definitions: &Definitions,
    item_schema: Option<&Value>,
    meta: &PatchMeta,
    live: Option<Value>,
    patch_items: &[Value],
) -> Result<Value, StrategicPatchError> {
    let replace = !meta.merge || patch_items.iter().any(is_replace_marker);
    if replace {
        let kept = patch_items
            .iter()
            .filter(|item| !is_replace_marker(item))
            .cloned()
            .collect();
        return Ok(Value::Array(kept));
    }
    let mut result = match live {
        Some(Value::Array(items)) => items,
        Some(_) | None => Vec::new(),
    };
    match &meta.merge_key {
        Some(merge_key) => {
            for patch_item in patch_items {
                let Some(key_value) = patch_item.get(merge_key) else {
                    return Err(StrategicPatchError(format!(
                        "map: {patch_item} does not contain declared merge key: {merge_key}"
                    )));
                };
                let position = result
                    .iter()
                    .position(|item| item.get(merge_key) == Some(key_value));
                let delete =
                    patch_item.get(PATCH_DIRECTIVE).and_then(Value::as_str) == Some("delete");
                match (position, delete) {
                    (Some(index), true) => {
                        result.remove(index);
                    }
                    (None, true) => {}
                    (Some(index), false) => {
                        let Value::Object(item_patch) = patch_item else {
                            continue;
                        };
                        merge_map(definitions, item_schema, &mut result[index], item_patch)?;
                    }
                    (None, false) => {
                        let mut added = Value::Object(Map::new());
                        if let Value::Object(item_patch) = patch_item {
                            merge_map(definitions, item_schema, &mut added, item_patch)?;
                        }
                        result.push(added);
                    }
                }
            }
        }
        None => {
            for item in patch_items {
                if !result.contains(item) {
                    result.push(item.clone());
                }
            }
        }
    }
    Ok(Value::Array(result))
}

fn delete_from_primitive_list(
    target: &mut Value,
    field: &str,
    values: &Value,
) -> Result<(), StrategicPatchError> {
    let Value::Array(doomed) = values else {
        return Err(StrategicPatchError(format!(
            "{DELETE_FROM_PRIMITIVE_LIST_PREFIX}{field} must be a list"
        )));
    };
    if let Some(Value::Array(items)) = target.get_mut(field) {
        items.retain(|item| !doomed.contains(item));
    }
    Ok(())
}

/// Orders a merged list as `$setElementOrder/<field>` says: the items it names in its
/// order, then the items it does not name (added by someone else) in their live order.
fn set_element_order(
    target: &mut Value,
    field: &str,
    order: &Value,
    merge_key: Option<&str>,
) -> Result<(), StrategicPatchError> {
    let Value::Array(order) = order else {
        return Err(StrategicPatchError(format!(
            "{SET_ELEMENT_ORDER_PREFIX}{field} must be a list"
        )));
    };
    let Some(Value::Array(items)) = target.get_mut(field) else {
        return Ok(());
    };
    let identity = |item: &Value| -> Value {
        match merge_key {
            Some(key) => item.get(key).cloned().unwrap_or(Value::Null),
            None => item.clone(),
        }
    };
    let wanted: Vec<Value> = order.iter().map(&identity).collect();
    let mut remaining = std::mem::take(items);
    let mut ordered = Vec::with_capacity(remaining.len());
    for id in &wanted {
        if let Some(index) = remaining.iter().position(|item| identity(item) == *id) {
            ordered.push(remaining.remove(index));
        }
    }
    ordered.extend(remaining);
    *items = ordered;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::kube_api::schema::definitions;

    fn deployment_schema() -> &'static Value {
        definitions()
            .get("io.k8s.api.apps.v1.Deployment")
            .expect("the test data has it")
    }

    fn patched(live: Value, patch: Value) -> Value {
        let mut target = live;
        apply(
            definitions(),
            Some(deployment_schema()),
            &mut target,
            &patch,
        )
        .expect("the test data has it");
        target
    }

    fn live() -> Value {
        json!({
            "metadata": {"name": "d", "labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
            "spec": {
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
                "template": {"spec": {"containers": [
                    {"name": "one", "image": "one:1", "args": ["--a"]},
                    {"name": "two", "image": "two:1"}
                ]}}
            }
        })
    }

    #[test]
    fn containers_merge_by_name_and_args_are_replaced() {
        let result = patched(
            live(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "two", "image": "two:2"},
                {"name": "three", "image": "three:1"},
                {"name": "one", "args": ["--b"]}
            ]}}}}),
        );
        assert_eq!(
            result["spec"]["template"]["spec"]["containers"],
            json!([
                {"name": "one", "image": "one:1", "args": ["--b"]},
                {"name": "two", "image": "two:2"},
                {"name": "three", "image": "three:1"}
            ])
        );
    }

    #[test]
    fn directives_delete_replace_order_and_retain() {
        let result = patched(
            live(),
            json!({
                "metadata": {"labels": {"a": null}, "$deleteFromPrimitiveList/finalizers": ["x"]},
                "spec": {
                    "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
                    "template": {"spec": {
                        "$setElementOrder/containers": [{"name": "two"}, {"name": "one"}],
                        "containers": [{"name": "one", "$patch": "delete"}, {"name": "two", "image": "two:3"}]
                    }}
                }
            }),
        );
        assert_eq!(result["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(result["metadata"]["finalizers"], json!([]));
        assert_eq!(result["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(
            result["spec"]["template"]["spec"]["containers"],
            json!([{"name": "two", "image": "two:3"}])
        );

        let replaced = patched(
            live(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"$patch": "replace"}, {"name": "only", "image": "only:1"}
            ]}}}}),
        );
        assert_eq!(
            replaced["spec"]["template"]["spec"]["containers"],
            json!([{"name": "only", "image": "only:1"}])
        );
    }

    #[test]
    fn set_element_order_puts_items_it_does_not_name_last() {
        let result = patched(
            live(),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "three"}, {"name": "one"}],
                "containers": [{"name": "three", "image": "three:1"}]
            }}}}),
        );
        let names: Vec<&str> = result["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("the test data has it")
            .iter()
            .map(|c| c["name"].as_str().expect("the test data has it"))
            .collect();
        assert_eq!(names, ["three", "one", "two"]);
    }

    #[test]
    fn a_keyed_item_without_its_key_is_refused() {
        let mut target = live();
        let error = apply(
            definitions(),
            Some(deployment_schema()),
            &mut target,
            &json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
        )
        .expect_err("the input is refused");
        assert!(
            error
                .0
                .contains("does not contain declared merge key: name"),
            "{error}"
        );
    }
}
