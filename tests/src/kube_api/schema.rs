//! The schemas of the kinds the fake API server serves: the official Kubernetes v1.33
//! OpenAPI definitions, embedded, and a typed view of them for field validation, pruning
//! and strategic merge patches.
//!
//! `openapi/definitions-v1.33.json` is not written by hand. It is the subset of the
//! definitions that ship with `kubernetes-validate` (one of the Python test tools, which
//! carries the upstream definitions converted to JSON Schema) that the served kinds
//! reach, kept verbatim; a test (`openapi_definitions_are_the_official_ones` in the
//! end-to-end suite) checks it against the installed package and rewrites it with
//! `UPDATE_OPENAPI=1`. The conversion to JSON Schema made three changes that are undone
//! here, so that documents and validation see the upstream form: every `type` became
//! `[type, "null"]`, references point at `#/$defs/`, and the two union types
//! (IntOrString, Quantity) became `oneOf` lists.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use serde_json::{Map, Value, json};

/// The definitions as embedded, keyed by their upstream names
/// (e.g. `io.k8s.api.apps.v1.Deployment`).
pub(crate) const EMBEDDED_DEFINITIONS: &str = include_str!("openapi/definitions-v1.33.json");

/// The Kubernetes release the definitions come from, as documents report it.
pub(crate) const KUBERNETES_VERSION: &str = "v1.33.0";

/// Where references point in the normalised definitions (the OpenAPI v3 form); the v2
/// document rewrites the prefix.
pub(crate) const REF_PREFIX: &str = "#/components/schemas/";

/// The prefix the JSON Schema conversion gave references.
const CONVERTED_REF_PREFIX: &str = "#/$defs/";

const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

/// The normalised definitions.
pub(crate) struct Definitions {
    by_name: BTreeMap<String, Value>,
    /// The definition of each kind, from its `x-kubernetes-group-version-kind`, indexed
    /// once because every validated write and strategic patch looks its kind up.
    by_kind: BTreeMap<Gvk, String>,
}

static DEFINITIONS: LazyLock<Definitions> = LazyLock::new(|| {
    // The embedded file is checked by tests; a broken one is a build defect, and an empty
    // set of definitions then makes every document and validation fail loudly.
    let raw: Map<String, Value> = serde_json::from_str(EMBEDDED_DEFINITIONS).unwrap_or_default();
    Definitions::from_converted(raw)
});

/// The definitions every served document and every validation uses.
pub(crate) fn definitions() -> &'static Definitions {
    &DEFINITIONS
}

/// A group, version and kind, as `x-kubernetes-group-version-kind` names them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Gvk {
    pub group: String,
    pub version: String,
    pub kind: String,
}

impl Gvk {
    pub fn new(group: &str, version: &str, kind: &str) -> Gvk {
        Gvk {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
        }
    }

    pub fn to_extension(&self) -> Value {
        json!({"group": self.group, "kind": self.kind, "version": self.version})
    }
}

impl Definitions {
    /// Normalises definitions in the converted (JSON Schema) form.
    pub(crate) fn from_converted(raw: Map<String, Value>) -> Definitions {
        let by_name: BTreeMap<String, Value> = raw
            .into_iter()
            .map(|(name, mut schema)| {
                restore_union(&name, &mut schema);
                normalise(&mut schema);
                (name, schema)
            })
            .collect();
        let mut by_kind = BTreeMap::new();
        for (name, schema) in &by_name {
            for gvk in gvks_of(schema) {
                // The first name wins, as a scan in name order would find it.
                by_kind.entry(gvk).or_insert_with(|| name.clone());
            }
        }
        Definitions { by_name, by_kind }
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.by_name.get(name)
    }

    /// The name of the definition whose `x-kubernetes-group-version-kind` names this kind.
    pub fn name_for(&self, gvk: &Gvk) -> Option<&str> {
        self.by_kind.get(gvk).map(String::as_str)
    }

    /// The schema of a kind, e.g. of the served kind of a resource type.
    pub fn schema_for(&self, gvk: &Gvk) -> Option<&Value> {
        self.name_for(gvk).and_then(|name| self.by_name.get(name))
    }

    /// The names of `roots` and of every definition they reach through references.
    pub fn closure<'a>(&self, roots: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut pending: Vec<String> = roots.into_iter().map(str::to_owned).collect();
        while let Some(name) = pending.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            if let Some(schema) = self.by_name.get(&name) {
                collect_refs(schema, &mut pending);
            }
        }
        seen
    }

    /// Follows a reference (plain, or wrapped in a one-element `allOf` as v3 documents
    /// write references with a description) to the definition it names.
    pub fn resolve<'a>(&'a self, node: &'a Value) -> &'a Value {
        let mut current = node;
        // Definitions never reference themselves directly; the bound guards against a
        // broken file.
        for _ in 0..8 {
            match ref_name(current).and_then(|name| self.by_name.get(name)) {
                Some(target) => current = target,
                None => return current,
            }
        }
        current
    }
}

/// The kinds a definition is the schema of.
pub(crate) fn gvks_of(schema: &Value) -> Vec<Gvk> {
    schema
        .get("x-kubernetes-group-version-kind")
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .map(|entry| {
                    let text = |key: &str| entry.get(key).and_then(Value::as_str).unwrap_or("");
                    Gvk::new(text("group"), text("version"), text("kind"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The definition name a node references, if it is a reference.
pub(crate) fn ref_name(node: &Value) -> Option<&str> {
    let reference = node.get("$ref").or_else(|| {
        node.get("allOf")
            .and_then(Value::as_array)
            .filter(|all| all.len() == 1)
            .and_then(|all| all[0].get("$ref"))
    })?;
    reference.as_str()?.strip_prefix(REF_PREFIX)
}

fn collect_refs(node: &Value, out: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("$ref", Value::String(reference)) => {
                        if let Some(name) = reference.strip_prefix(REF_PREFIX) {
                            out.push(name.to_owned());
                        }
                    }
                    _ => collect_refs(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, out)),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
}

/// Gives the two union types back their upstream OpenAPI form: IntOrString is a string
/// with format `int-or-string`, Quantity a string or a number.
fn restore_union(name: &str, schema: &mut Value) {
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    if name == INT_OR_STRING {
        map.remove("oneOf");
        map.insert("type".into(), json!("string"));
        map.insert("format".into(), json!("int-or-string"));
    } else if name == QUANTITY {
        map.insert(
            "oneOf".into(),
            json!([{"type": "string"}, {"type": "number"}]),
        );
    }
}

/// Undoes the JSON Schema conversion below one node: nullable types and `$defs`
/// references, and the `enum` the conversion put on `apiVersion` and `kind`.
fn normalise(node: &mut Value) {
    match node {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get("type") {
                let kept: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
                let single = match kept.as_slice() {
                    [one] => one.clone(),
                    _ => Value::Array(kept),
                };
                map.insert("type".into(), single);
            }
            if let Some(Value::String(reference)) = map.get_mut("$ref")
                && let Some(name) = reference.strip_prefix(CONVERTED_REF_PREFIX)
            {
                *reference = format!("{REF_PREFIX}{name}");
            }
            if let Some(Value::Object(properties)) = map.get_mut("properties") {
                for key in ["apiVersion", "kind"] {
                    if let Some(Value::Object(property)) = properties.get_mut(key) {
                        property.remove("enum");
                    }
                }
            }
            for child in map.values_mut() {
                normalise(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
}

/// What a schema node says about the value at its place, as validation and strategic
/// merge need it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape<'a> {
    /// An object with declared fields.
    Struct(&'a Map<String, Value>),
    /// A map from any key to values of one schema.
    Map(&'a Value),
    /// A list of items of one schema.
    List(&'a Value),
    /// Anything: scalars, unions and free-form objects (e.g. `FieldsV1`, `RawExtension`).
    Opaque,
}

impl Definitions {
    /// The shape of the value a node describes, after following references.
    pub fn shape<'a>(&'a self, node: &'a Value) -> Shape<'a> {
        let node = self.resolve(node);
        if let Some(Value::Object(properties)) = node.get("properties") {
            return Shape::Struct(properties);
        }
        if let Some(items) = node.get("items") {
            return Shape::List(items);
        }
        match node.get("additionalProperties") {
            Some(schema @ Value::Object(_)) => Shape::Map(schema),
            Some(_) | None => Shape::Opaque,
        }
    }
}

/// How a strategic merge patch treats a list field, from its `x-kubernetes-patch-*`
/// extensions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct PatchMeta {
    /// `merge` is among the strategies: lists merge (by `merge_key` when there is one).
    pub merge: bool,
    /// `retainKeys` is among the strategies: keys the patch does not list are cleared.
    pub retain_keys: bool,
    pub merge_key: Option<String>,
}

/// The patch metadata of a field as its (unresolved) property node declares it: the
/// extensions sit next to the reference, not on the referenced definition.
pub(crate) fn patch_meta(property: &Value) -> PatchMeta {
    let strategies = property
        .get("x-kubernetes-patch-strategy")
        .and_then(Value::as_str)
        .unwrap_or("");
    let has = |name: &str| strategies.split(',').any(|s| s.trim() == name);
    PatchMeta {
        merge: has("merge"),
        retain_keys: has("retainKeys"),
        merge_key: property
            .get("x-kubernetes-patch-merge-key")
            .and_then(Value::as_str)
            .map(str::to_owned),
    }
}

/// Kinds served besides the stored ones, whose schemas the embedded file must hold: the
/// scale subresource's and the access reviews'.
#[cfg(test)]
const EXTRA_KINDS: &[(&str, &str, &str)] = &[
    ("autoscaling", "v1", "Scale"),
    ("authorization.k8s.io", "v1", "SelfSubjectAccessReview"),
    ("authorization.k8s.io", "v1", "SelfSubjectRulesReview"),
    ("authentication.k8s.io", "v1", "SelfSubjectReview"),
];

/// Definitions every API path may answer with or take, whatever the kind.
#[cfg(test)]
const META_DEFINITIONS: &[&str] = &[
    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
    "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
];

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::python_tools::{PythonTools, workspace_root};

    /// `_definitions.json` of Kubernetes 1.33 in the installed kubernetes-validate.
    fn official_definitions_file(tools: &PythonTools) -> PathBuf {
        let lib = tools.venv().join("lib");
        let site_packages = std::fs::read_dir(&lib)
            .expect("the virtualenv has a lib directory")
            .filter_map(Result::ok)
            .map(|entry| entry.path().join("site-packages"))
            .find(|path| path.is_dir())
            .expect("the virtualenv has site-packages");
        site_packages
            .join("kubernetes_validate/kubernetes-json-schema/v1.33.0-local/_definitions.json")
    }

    /// The embedded file is exactly the official definitions the served kinds reach.
    /// `UPDATE_OPENAPI=1 cargo test -p sandbox --lib openapi_definitions` rewrites it.
    #[test]
    fn openapi_definitions_are_the_official_ones() {
        let tools = PythonTools::find(&workspace_root()).unwrap_or_else(|error| panic!("{error}"));
        let path = official_definitions_file(&tools);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
        let document: Value = serde_json::from_str(&text).expect("the official file is JSON");
        let all = document["$defs"]
            .as_object()
            .expect("the official file has $defs")
            .clone();
        let official = Definitions::from_converted(all.clone());
        let mut roots: Vec<String> = META_DEFINITIONS.iter().map(|n| (*n).to_owned()).collect();
        let kinds = super::super::resources::RESOURCE_TYPES
            .iter()
            .flat_map(|rt| {
                [
                    Gvk::new(rt.group, rt.version, rt.kind),
                    Gvk::new(rt.group, rt.version, &format!("{}List", rt.kind)),
                ]
            })
            .chain(EXTRA_KINDS.iter().map(|(g, v, k)| Gvk::new(g, v, k)));
        for gvk in kinds {
            let name = official
                .name_for(&gvk)
                .unwrap_or_else(|| panic!("Kubernetes 1.33 has no schema for {gvk:?}"));
            roots.push(name.to_owned());
        }
        let wanted: Map<String, Value> = official
            .closure(roots.iter().map(String::as_str))
            .into_iter()
            .map(|name| {
                let raw = all.get(&name).cloned().unwrap_or(Value::Null);
                (name, raw)
            })
            .collect();
        let embedded: Map<String, Value> =
            serde_json::from_str(EMBEDDED_DEFINITIONS).expect("the embedded file is JSON");
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            let target = workspace_root().join("tests/src/kube_api/openapi/definitions-v1.33.json");
            let mut text = serde_json::to_string_pretty(&wanted).expect("serialises");
            text.push('\n');
            std::fs::write(&target, text).expect("the embedded file is rewritten");
            return;
        }
        assert!(
            embedded == wanted,
            "tests/src/kube_api/openapi/definitions-v1.33.json differs from {}; run \
             `UPDATE_OPENAPI=1 cargo test -p sandbox --lib openapi_definitions` and review the diff",
            path.display()
        );
    }

    #[test]
    fn the_embedded_definitions_hold_every_served_kind() {
        let definitions = definitions();
        for rt in super::super::resources::RESOURCE_TYPES {
            let gvk = Gvk::new(rt.group, rt.version, rt.kind);
            assert!(definitions.name_for(&gvk).is_some(), "{gvk:?}");
            let list = Gvk::new(rt.group, rt.version, &format!("{}List", rt.kind));
            assert!(definitions.name_for(&list).is_some(), "{list:?}");
        }
    }

    #[test]
    fn conversion_artefacts_are_undone() {
        let definitions = definitions();
        let deployment = definitions
            .get("io.k8s.api.apps.v1.Deployment")
            .expect("the test data has it");
        assert_eq!(deployment["type"], "object");
        assert_eq!(
            deployment["properties"]["spec"]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
        );
        assert!(deployment["properties"]["kind"].get("enum").is_none());
        assert_eq!(
            definitions
                .get(INT_OR_STRING)
                .expect("the test data has it")["format"],
            "int-or-string"
        );
        let text = serde_json::to_string(&definitions.by_name).expect("the test data has it");
        assert!(!text.contains("#/$defs/"));
        assert!(!text.contains("\"null\""));
    }

    #[test]
    fn shapes_and_patch_metadata_follow_references() {
        let definitions = definitions();
        let pod_spec = definitions
            .get("io.k8s.api.core.v1.PodSpec")
            .expect("the test data has it");
        let containers = &pod_spec["properties"]["containers"];
        assert_eq!(
            patch_meta(containers),
            PatchMeta {
                merge: true,
                retain_keys: false,
                merge_key: Some("name".into())
            }
        );
        assert!(matches!(definitions.shape(containers), Shape::List(_)));
        let Shape::List(item) = definitions.shape(containers) else {
            unreachable!()
        };
        assert!(matches!(definitions.shape(item), Shape::Struct(p) if p.contains_key("image")));
        let labels = &definitions
            .get("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
            .expect("the test data has it")["properties"]["labels"];
        assert!(matches!(definitions.shape(labels), Shape::Map(_)));
        let volumes = &pod_spec["properties"]["volumes"];
        assert!(patch_meta(volumes).retain_keys);
    }
}
