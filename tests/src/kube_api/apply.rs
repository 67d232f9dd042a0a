//! Server-side apply: merging an apply configuration into the live object and tracking
//! which field manager owns which field.
//!
//! Ownership is tracked per leaf field path. Maps are merged key by key, while lists and
//! scalars are atomic leaves (the real server merges some lists by key; treating them as
//! atomic is a simplification that keeps the semantics the tool relies on: idempotent
//! applies, conflicts between managers and removal of fields a manager stopped sending).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// The keys of a field, from the top of the object down, e.g. `["spec", "replicas"]`.
pub(crate) type FieldPath = Vec<String>;

/// Which part of an object a write may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The main resource: everything except system metadata and, for types with a status
    /// subresource, `.status`.
    Main { has_status: bool },
    /// The `/status` subresource: only `.status`.
    Status,
}

/// Metadata fields the server manages itself; nobody owns them.
const SYSTEM_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// Whether a top-level key (and, under metadata, a second-level key) is writable in a scope.
fn in_scope(path: &[String], scope: Scope) -> bool {
    let Some(top) = path.first() else {
        return true;
    };
    if top == "apiVersion" || top == "kind" {
        return false;
    }
    if top == "metadata"
        && let Some(second) = path.get(1)
        && SYSTEM_METADATA.contains(&second.as_str())
    {
        return false;
    }
    match scope {
        Scope::Main { has_status } => !(has_status && top == "status"),
        Scope::Status => top == "status",
    }
}

/// The leaf paths of a value within a scope. A leaf is anything that is not a non-empty
/// map: scalars, lists and empty maps. Nulls are not fields.
pub(crate) fn leaf_paths(value: &Value, scope: Scope) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    let mut prefix = Vec::new();
    collect_leaves(value, &mut prefix, scope, &mut out);
    out
}

fn collect_leaves(
    value: &Value,
    prefix: &mut FieldPath,
    scope: Scope,
    out: &mut BTreeSet<FieldPath>,
) {
    match value {
        Value::Object(map) if !map.is_empty() || prefix.is_empty() => {
            for (key, child) in map {
                prefix.push(key.clone());
                if in_scope(prefix, scope) {
                    collect_leaves(child, prefix, scope, out);
                }
                prefix.pop();
            }
        }
        Value::Null => {}
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// The value at a path, if present.
pub(crate) fn get_path<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |current, key| current.get(key))
}

/// Sets the value at a path, creating intermediate maps (and replacing non-map
/// intermediates, which is what a merge does when a field changes type).
pub(crate) fn set_path(target: &mut Value, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        *target = value;
        return;
    };
    let mut current = target;
    for key in parents {
        if !current.is_object() {
            *current = Value::Object(Map::new());
        }
        let Value::Object(map) = current else {
            return;
        };
        current = map
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !current.is_object() {
        *current = Value::Object(Map::new());
    }
    if let Value::Object(map) = current {
        map.insert(last.clone(), value);
    }
}

/// Removes the field at a path, then removes parent maps the removal left empty (but
/// never top-level sections such as `metadata` or `spec`).
pub(crate) fn remove_path(target: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let Some(parent) = get_path_mut(target, parents) else {
        return;
    };
    if let Value::Object(map) = parent {
        map.remove(last);
        if map.is_empty() && parents.len() > 1 {
            remove_path(target, parents);
        }
    }
}

fn get_path_mut<'a>(value: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter()
        .try_fold(value, |current, key| current.get_mut(key))
}

/// Whether one path is the other or lies below it; such paths cannot be owned
/// independently.
pub(crate) fn related(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Renders a path the way the real server prints it in conflict messages: `.spec.replicas`.
pub(crate) fn format_path(path: &[String]) -> String {
    path.iter().map(|key| format!(".{key}")).collect()
}

/// Deep-merges an apply configuration into a live object: maps merge key by key, lists
/// and scalars replace, and null values are ignored.
pub(crate) fn merge_apply(target: &mut Value, config: &Value, scope: Scope) {
    for path in leaf_paths(config, scope) {
        let Some(value) = get_path(config, &path) else {
            continue;
        };
        // An empty map only says the map exists; it must not wipe what others put in it.
        let is_empty_map = value.as_object().is_some_and(Map::is_empty);
        if is_empty_map && get_path(target, &path).is_some_and(Value::is_object) {
            continue;
        }
        set_path(target, &path, value.clone());
    }
}

/// Applies an RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target_map) = target {
        for (key, value) in patch_map {
            if value.is_null() {
                target_map.remove(key);
            } else {
                let entry = target_map.entry(key.clone()).or_insert(Value::Null);
                merge_patch(entry, value);
            }
        }
    }
}

/// Applies an RFC 6902 JSON patch; returns a message when an operation fails.
pub(crate) fn json_patch(target: &mut Value, operations: &Value) -> Result<(), String> {
    let operations = operations
        .as_array()
        .ok_or_else(|| "a JSON patch must be a list of operations".to_owned())?;
    for operation in operations {
        let op = operation
            .get("op")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let path = pointer_field(operation, "path")?;
        match op {
            "add" => pointer_add(target, &path, value_field(operation)?)?,
            "remove" => {
                pointer_remove(target, &path)?;
            }
            "replace" => {
                pointer_remove(target, &path)?;
                pointer_add(target, &path, value_field(operation)?)?;
            }
            "test" => {
                if target.pointer(&path) != Some(&value_field(operation)?) {
                    return Err(format!("test operation failed at {path}"));
                }
            }
            "move" => {
                let from = pointer_field(operation, "from")?;
                let value = pointer_remove(target, &from)?;
                pointer_add(target, &path, value)?;
            }
            "copy" => {
                let from = pointer_field(operation, "from")?;
                let value = target
                    .pointer(&from)
                    .cloned()
                    .ok_or_else(|| format!("copy from missing path {from}"))?;
                pointer_add(target, &path, value)?;
            }
            other => return Err(format!("unsupported JSON patch operation {other:?}")),
        }
    }
    Ok(())
}

fn pointer_field(operation: &Value, name: &str) -> Result<String, String> {
    operation
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("JSON patch operation without {name:?}"))
}

fn value_field(operation: &Value) -> Result<Value, String> {
    operation
        .get("value")
        .cloned()
        .ok_or_else(|| "JSON patch operation without \"value\"".to_owned())
}

/// Splits a JSON pointer into its parent pointer and its unescaped last token.
fn split_pointer(pointer: &str) -> Result<(&str, String), String> {
    let index = pointer
        .rfind('/')
        .ok_or_else(|| format!("invalid JSON pointer {pointer:?}"))?;
    let token = pointer[index + 1..].replace("~1", "/").replace("~0", "~");
    Ok((&pointer[..index], token))
}

fn pointer_add(target: &mut Value, pointer: &str, value: Value) -> Result<(), String> {
    if pointer.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, token) = split_pointer(pointer)?;
    match target.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(token, value);
            Ok(())
        }
        Some(Value::Array(list)) => {
            let index = if token == "-" {
                list.len()
            } else {
                token
                    .parse::<usize>()
                    .map_err(|_| format!("invalid list index in {pointer}"))?
            };
            if index > list.len() {
                return Err(format!("list index out of range in {pointer}"));
            }
            list.insert(index, value);
            Ok(())
        }
        _ => Err(format!("missing parent for JSON patch path {pointer}")),
    }
}

fn pointer_remove(target: &mut Value, pointer: &str) -> Result<Value, String> {
    let (parent, token) = split_pointer(pointer)?;
    let missing = || format!("JSON patch path {pointer} does not exist");
    match target.pointer_mut(parent) {
        Some(Value::Object(map)) => map.remove(&token).ok_or_else(missing),
        Some(Value::Array(list)) => {
            let index = token.parse::<usize>().map_err(|_| missing())?;
            if index < list.len() {
                Ok(list.remove(index))
            } else {
                Err(missing())
            }
        }
        _ => Err(missing()),
    }
}

/// How a manager wrote its fields, as in `managedFields[].operation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// The fields one manager owns through one kind of operation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ManagerEntry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub time: String,
    pub fields: BTreeSet<FieldPath>,
}

/// A field another manager owns that an apply wanted to change.
#[derive(Debug, Clone)]
pub(crate) struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub path: FieldPath,
}

/// All field ownership of one object.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Ownership {
    pub entries: Vec<ManagerEntry>,
}

impl Ownership {
    fn entry_mut(
        &mut self,
        manager: &str,
        operation: Operation,
        api_version: &str,
        time: &str,
    ) -> &mut ManagerEntry {
        let position = self
            .entries
            .iter()
            .position(|e| e.manager == manager && e.operation == operation);
        let index = match position {
            Some(index) => index,
            None => {
                self.entries.push(ManagerEntry {
                    manager: manager.to_owned(),
                    operation,
                    api_version: api_version.to_owned(),
                    time: time.to_owned(),
                    fields: BTreeSet::new(),
                });
                self.entries.len() - 1
            }
        };
        &mut self.entries[index]
    }

    /// The fields a manager owned through apply before this request.
    pub fn applied_by(&self, manager: &str) -> BTreeSet<FieldPath> {
        self.entries
            .iter()
            .find(|e| e.manager == manager && e.operation == Operation::Apply)
            .map(|e| e.fields.clone())
            .unwrap_or_default()
    }

    /// Whether a manager other than `manager` owns a path related to `path`.
    pub fn owned_by_other(&self, manager: &str, path: &[String]) -> bool {
        self.entries
            .iter()
            .filter(|e| e.manager != manager)
            .any(|e| e.fields.iter().any(|owned| related(owned, path)))
    }

    /// The conflicts an apply by `manager` setting `paths` (whose new values are in
    /// `config`) would cause against the live object `live`.
    pub fn apply_conflicts(
        &self,
        manager: &str,
        paths: &BTreeSet<FieldPath>,
        config: &Value,
        live: &Value,
    ) -> Vec<Conflict> {
        let mut conflicts = Vec::new();
        for path in paths {
            if get_path(config, path) == get_path(live, path) {
                continue;
            }
            for entry in self.entries.iter().filter(|e| e.manager != manager) {
                for owned in entry.fields.iter().filter(|owned| related(owned, path)) {
                    let seen = conflicts
                        .iter()
                        .any(|c: &Conflict| c.manager == entry.manager && c.path == *owned);
                    if seen {
                        continue;
                    }
                    conflicts.push(Conflict {
                        manager: entry.manager.clone(),
                        api_version: entry.api_version.clone(),
                        path: owned.clone(),
                    });
                }
            }
        }
        conflicts
    }

    /// Takes the given paths away from every other manager (a forced apply, or an update).
    pub fn take_from_others(
        &mut self,
        manager: &str,
        operation: Operation,
        paths: &BTreeSet<FieldPath>,
    ) {
        for entry in &mut self.entries {
            if entry.manager == manager && entry.operation == operation {
                continue;
            }
            entry
                .fields
                .retain(|owned| !paths.iter().any(|path| related(owned, path)));
        }
    }

    /// Records the complete set of fields a manager now owns through apply.
    pub fn set_applied(
        &mut self,
        manager: &str,
        api_version: &str,
        time: &str,
        fields: BTreeSet<FieldPath>,
    ) {
        let entry = self.entry_mut(manager, Operation::Apply, api_version, time);
        if entry.fields != fields {
            entry.fields = fields;
            entry.time = time.to_owned();
            entry.api_version = api_version.to_owned();
        }
    }

    /// Records that a manager changed these fields through a non-apply write.
    pub fn record_update(
        &mut self,
        manager: &str,
        api_version: &str,
        time: &str,
        changed: &BTreeSet<FieldPath>,
    ) {
        if changed.is_empty() {
            return;
        }
        self.take_from_others(manager, Operation::Update, changed);
        let entry = self.entry_mut(manager, Operation::Update, api_version, time);
        entry
            .fields
            .retain(|owned| !changed.iter().any(|path| related(owned, path)));
        entry.fields.extend(changed.iter().cloned());
        entry.time = time.to_owned();
        entry.api_version = api_version.to_owned();
    }

    /// Drops ownership of fields that no longer exist and managers left with nothing.
    pub fn prune(&mut self, object: &Value) {
        for entry in &mut self.entries {
            entry.fields.retain(|path| get_path(object, path).is_some());
        }
        self.entries.retain(|e| !e.fields.is_empty());
    }

    /// Whether two ownership records assign the same fields to the same managers
    /// (timestamps aside).
    pub fn same_fields(&self, other: &Ownership) -> bool {
        self.entries.len() == other.entries.len()
            && self.entries.iter().all(|mine| {
                other.entries.iter().any(|theirs| {
                    theirs.manager == mine.manager
                        && theirs.operation == mine.operation
                        && theirs.fields == mine.fields
                })
            })
    }

    /// `metadata.managedFields` in the real server's `FieldsV1` format.
    pub fn to_managed_fields(&self) -> Value {
        let entries: Vec<Value> = self
            .entries
            .iter()
            .map(|entry| {
                json!({
                    "manager": entry.manager,
                    "operation": entry.operation.as_str(),
                    "apiVersion": entry.api_version,
                    "time": entry.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": fields_v1(&entry.fields),
                })
            })
            .collect();
        Value::Array(entries)
    }
}

/// Renders a set of leaf paths as the nested `{"f:spec":{"f:replicas":{}}}` structure.
fn fields_v1(paths: &BTreeSet<FieldPath>) -> Value {
    let mut root = Value::Object(Map::new());
    for path in paths {
        let prefixed: FieldPath = path.iter().map(|key| format!("f:{key}")).collect();
        if get_path(&root, &prefixed).is_none() {
            set_path(&mut root, &prefixed, Value::Object(Map::new()));
        }
    }
    root
}

/// The real server's message for apply conflicts, e.g.
/// `Apply failed with 1 conflict: conflict with "helm" using apps/v1: .spec.replicas`.
pub(crate) fn conflict_message(conflicts: &[Conflict]) -> String {
    let count = conflicts.len();
    let plural = if count == 1 { "" } else { "s" };
    let mut managers: Vec<(&str, &str)> = Vec::new();
    for conflict in conflicts {
        let key = (conflict.manager.as_str(), conflict.api_version.as_str());
        if !managers.contains(&key) {
            managers.push(key);
        }
    }
    if let ([only], [(manager, api_version)]) = (conflicts, managers.as_slice()) {
        return format!(
            "Apply failed with 1 conflict: conflict with \"{manager}\" using {api_version}: {}",
            format_path(&only.path)
        );
    }
    let mut message = format!("Apply failed with {count} conflict{plural}:");
    for (manager, api_version) in managers {
        message.push_str(&format!(
            " conflicts with \"{manager}\" using {api_version}:"
        ));
        for conflict in conflicts.iter().filter(|c| c.manager == manager) {
            message.push_str(&format!("\n- {}", format_path(&conflict.path)));
        }
        message.push('\n');
    }
    message.trim_end().to_owned()
}

/// The `details.causes` of a conflict Status, one per conflicting field.
pub(crate) fn conflict_causes(conflicts: &[Conflict]) -> Value {
    Value::Array(
        conflicts
            .iter()
            .map(|c| {
                json!({
                    "type": "FieldManagerConflict",
                    "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version),
                    "field": format_path(&c.path),
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> FieldPath {
        text.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn leaves_skip_system_metadata_and_status() {
        let object = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "labels": {"a": "b"}, "resourceVersion": "3"},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c"}]}}},
            "status": {"replicas": 2}
        });
        let leaves = leaf_paths(&object, Scope::Main { has_status: true });
        let expected: BTreeSet<FieldPath> = [
            path("metadata.labels.a"),
            path("spec.replicas"),
            path("spec.template.spec.containers"),
        ]
        .into_iter()
        .collect();
        assert_eq!(leaves, expected);
    }

    #[test]
    fn merge_keeps_unmentioned_keys_and_replaces_lists() {
        let mut live = json!({"spec": {"a": 1, "list": [1, 2], "keep": true}});
        merge_apply(
            &mut live,
            &json!({"spec": {"a": 2, "list": [3]}}),
            Scope::Main { has_status: true },
        );
        assert_eq!(live, json!({"spec": {"a": 2, "list": [3], "keep": true}}));
    }

    #[test]
    fn json_patch_operations() {
        let mut target = json!({"a": {"b": [1]}});
        let ops = json!([
            {"op": "add", "path": "/a/b/-", "value": 2},
            {"op": "replace", "path": "/a/c", "value": "x"},
            {"op": "test", "path": "/a/b/1", "value": 2},
            {"op": "remove", "path": "/a/b/0"}
        ]);
        assert!(
            json_patch(&mut target, &ops).is_err(),
            "replace of a missing path fails"
        );
        let mut target = json!({"a": {"b": [1], "c": "y"}});
        json_patch(&mut target, &ops).expect("patch applies");
        assert_eq!(target, json!({"a": {"b": [2], "c": "x"}}));
    }

    #[test]
    fn conflict_message_matches_the_real_format() {
        let conflicts = vec![Conflict {
            manager: "helm".into(),
            api_version: "apps/v1".into(),
            path: path("spec.replicas"),
        }];
        assert_eq!(
            conflict_message(&conflicts),
            "Apply failed with 1 conflict: conflict with \"helm\" using apps/v1: .spec.replicas"
        );
    }

    #[test]
    fn removal_prunes_empty_parents_below_the_top() {
        let mut object = json!({"metadata": {"labels": {"a": "b"}}, "spec": {"x": {"y": 1}}});
        remove_path(&mut object, &path("metadata.labels.a"));
        remove_path(&mut object, &path("spec.x.y"));
        assert_eq!(object, json!({"metadata": {}, "spec": {}}));
    }
}
