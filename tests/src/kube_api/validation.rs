//! Field validation against the served kinds' schemas, as kube-apiserver does it: the
//! `fieldValidation` query parameter of writes (`Strict` refuses unknown fields, `Warn`
//! drops them and says so in a `Warning` header, `Ignore` drops them silently; `Warn` is
//! the default), and server-side apply, which refuses unknown fields whatever the
//! parameter says.

use serde_json::Value;

use super::errors::ApiError;
use super::resources::ResourceType;
use super::schema::{Definitions, Gvk, Shape, definitions};

/// The `fieldValidation` directive of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

impl FieldValidation {
    /// Parses the query parameter; absent or empty means the default, `Warn`.
    pub fn parse(value: Option<&str>) -> Result<FieldValidation, ApiError> {
        match value {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

/// Where an unknown field was found, written the two ways the server writes it: the
/// decoder's (`spec.template.spec.containers[0].imagePullPolice`) and server-side apply's
/// (`.spec.template.spec.containers[name="publisher"].imagePullPolice`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownField {
    pub decoder_path: String,
    pub apply_path: String,
}

/// One step from a value to a child, for both path spellings.
#[derive(Debug, Clone)]
enum Step {
    Field(String),
    Item { index: usize, keys: Option<String> },
}

/// Finds the fields of `value` that its kind's schema does not declare and, when
/// `prune` is set, removes them (as the decoder drops them).
pub(crate) fn unknown_fields(
    rt: &ResourceType,
    value: &mut Value,
    prune: bool,
) -> Vec<UnknownField> {
    let definitions = definitions();
    let gvk = Gvk::new(rt.group, rt.version, rt.kind);
    let Some(root) = definitions.schema_for(&gvk) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut path = Vec::new();
    walk(definitions, root, value, prune, &mut path, &mut found);
    found
}

fn walk(
    definitions: &Definitions,
    schema: &Value,
    value: &mut Value,
    prune: bool,
    path: &mut Vec<Step>,
    found: &mut Vec<UnknownField>,
) {
    match (definitions.shape(schema), value) {
        (Shape::Struct(properties), Value::Object(fields)) => {
            let unknown: Vec<String> = fields
                .keys()
                .filter(|key| !properties.contains_key(*key))
                .cloned()
                .collect();
            for key in &unknown {
                path.push(Step::Field(key.clone()));
                found.push(render(path));
                path.pop();
                if prune {
                    fields.remove(key);
                }
            }
            for (key, child) in fields.iter_mut() {
                if let Some(property) = properties.get(key) {
                    path.push(Step::Field(key.clone()));
                    walk(definitions, property, child, prune, path, found);
                    path.pop();
                }
            }
        }
        (Shape::Map(values), Value::Object(entries)) => {
            for (key, child) in entries.iter_mut() {
                path.push(Step::Field(key.clone()));
                walk(definitions, values, child, prune, path, found);
                path.pop();
            }
        }
        (Shape::List(items), Value::Array(elements)) => {
            let list_keys = list_map_keys(schema);
            for (index, element) in elements.iter_mut().enumerate() {
                let keys = list_keys.as_ref().map(|keys| key_selector(keys, element));
                path.push(Step::Item { index, keys });
                walk(definitions, items, element, prune, path, found);
                path.pop();
            }
        }
        // A value of another type than the schema's is a type error, which this server
        // does not report (a known gap); scalars and free-form values have no fields.
        (Shape::Struct(_) | Shape::Map(_) | Shape::List(_) | Shape::Opaque, _) => {}
    }
}

/// The `x-kubernetes-list-map-keys` of a list field, which server-side apply uses to
/// name list items.
fn list_map_keys(property: &Value) -> Option<Vec<String>> {
    let keys: Vec<String> = property
        .get("x-kubernetes-list-map-keys")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    (!keys.is_empty()).then_some(keys)
}

/// `name="publisher"` or `containerPort=61678,protocol="TCP"`: an item's keys the way
/// server-side apply prints them (values as JSON).
fn key_selector(keys: &[String], element: &Value) -> String {
    keys.iter()
        .filter_map(|key| {
            element
                .get(key)
                .map(|value| format!("{key}={}", serde_json::to_string(value).unwrap_or_default()))
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn render(path: &[Step]) -> UnknownField {
    let mut decoder_path = String::new();
    let mut apply_path = String::new();
    for step in path {
        match step {
            Step::Field(name) => {
                if !decoder_path.is_empty() {
                    decoder_path.push('.');
                }
                decoder_path.push_str(name);
                apply_path.push('.');
                apply_path.push_str(name);
            }
            Step::Item { index, keys } => {
                decoder_path.push_str(&format!("[{index}]"));
                match keys {
                    Some(keys) => apply_path.push_str(&format!("[{keys}]")),
                    None => apply_path.push_str(&format!("[{index}]")),
                }
            }
        }
    }
    UnknownField {
        decoder_path,
        apply_path,
    }
}

/// What a write does with the unknown fields of the object it is about to store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoding {
    /// A create or an update: the body is decoded as a whole object.
    Object,
    /// A JSON, merge or strategic merge patch: the patched object is decoded.
    Patch,
}

/// Validates the object a create, update or patch would store under `directive`: with
/// `Strict` an unknown field is a 400 BadRequest worded like the real decoder's error;
/// otherwise unknown fields are dropped and, with `Warn`, returned as warnings.
pub(crate) fn check_object(
    rt: &ResourceType,
    object: &mut Value,
    directive: FieldValidation,
    decoding: Decoding,
) -> Result<Vec<String>, ApiError> {
    let unknown = unknown_fields(rt, object, directive != FieldValidation::Strict);
    let messages: Vec<String> = unknown
        .iter()
        .map(|field| format!("unknown field {:?}", field.decoder_path))
        .collect();
    match directive {
        FieldValidation::Ignore => Ok(Vec::new()),
        FieldValidation::Warn => Ok(messages),
        FieldValidation::Strict if messages.is_empty() => Ok(Vec::new()),
        FieldValidation::Strict => {
            let detail = format!("strict decoding error: {}", messages.join(", "));
            let message = match decoding {
                Decoding::Object => format!(
                    "{kind} in version {version:?} cannot be handled as a {kind}: {detail}",
                    kind = rt.kind,
                    version = rt.version
                ),
                Decoding::Patch => detail,
            };
            Err(ApiError::bad_request(message))
        }
    }
}

/// Server-side apply refuses an apply configuration with fields its schema does not
/// declare, whatever `fieldValidation` says. kube-apiserver answers this with a 500
/// whose Status has no reason (kubernetes/kubernetes#122480); so does the sandbox.
pub(crate) fn check_apply_configuration(
    rt: &ResourceType,
    namespace: &str,
    name: &str,
    config: &Value,
) -> Result<(), ApiError> {
    let mut copy = config.clone();
    let unknown = unknown_fields(rt, &mut copy, false);
    if unknown.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = unknown
        .iter()
        .map(|field| format!("{}: field not declared in schema", field.apply_path))
        .collect();
    let detail = match lines.as_slice() {
        [one] => one.clone(),
        many => format!("errors:\n  {}", many.join("\n  ")),
    };
    let message = format!(
        "failed to create typed patch object ({namespace}/{name}; {group}/{version}, Kind={kind}): {detail}",
        group = rt.group,
        version = rt.version,
        kind = rt.kind
    );
    Err(ApiError::without_reason(500, message))
}

/// The `Warning` header value for one warning: code 299, agent `-`, the text quoted.
pub(crate) fn warning_header(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
    format!("299 - \"{escaped}\"")
}

/// The keys of a map in order, for assertions.
#[cfg(test)]
fn keys(map: &serde_json::Map<String, Value>) -> Vec<&str> {
    map.keys().map(String::as_str).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::kube_api::resources::{DEPLOYMENT, RESOURCE_TYPES};

    fn deployment_with_typos() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "labels": {"any-key": "fine"}, "nmespace": "x"},
            "spec": {
                "replicas": 1,
                "template": {"spec": {"containers": [
                    {"name": "a", "image": "i"},
                    {"name": "publisher", "image": "i", "imagePullPolice": "Always"}
                ]}}
            },
            "extra": true
        })
    }

    #[test]
    fn unknown_fields_are_found_at_every_depth_with_both_path_spellings() {
        let mut object = deployment_with_typos();
        let found = unknown_fields(&RESOURCE_TYPES[DEPLOYMENT], &mut object, false);
        let decoder: Vec<&str> = found.iter().map(|f| f.decoder_path.as_str()).collect();
        assert_eq!(
            decoder,
            [
                "extra",
                "metadata.nmespace",
                "spec.template.spec.containers[1].imagePullPolice"
            ]
        );
        assert_eq!(
            found[2].apply_path,
            ".spec.template.spec.containers[name=\"publisher\"].imagePullPolice"
        );
    }

    #[test]
    fn strict_refuses_warn_prunes_and_warns_ignore_prunes_silently() {
        let rt = &RESOURCE_TYPES[DEPLOYMENT];
        let mut strict = deployment_with_typos();
        let error = check_object(rt, &mut strict, FieldValidation::Strict, Decoding::Object)
            .expect_err("the input is refused");
        assert_eq!(error.code, 400);
        assert!(error.message.starts_with(
            "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"extra\", "
        ), "{}", error.message);
        assert_eq!(strict, deployment_with_typos(), "Strict changes nothing");

        let mut warn = deployment_with_typos();
        let warnings = check_object(rt, &mut warn, FieldValidation::Warn, Decoding::Object)
            .expect("the test data has it");
        assert_eq!(warnings.len(), 3);
        assert_eq!(
            keys(warn.as_object().expect("the test data has it")),
            ["apiVersion", "kind", "metadata", "spec"]
        );
        assert!(
            warn.pointer("/spec/template/spec/containers/1/imagePullPolice")
                .is_none()
        );
        assert_eq!(warn["metadata"]["labels"]["any-key"], "fine");

        let mut ignore = deployment_with_typos();
        assert!(
            check_object(rt, &mut ignore, FieldValidation::Ignore, Decoding::Patch)
                .expect("the test data has it")
                .is_empty()
        );
        assert_eq!(ignore, warn);
    }

    #[test]
    fn apply_configurations_with_unknown_fields_fail_like_server_side_apply() {
        let rt = &RESOURCE_TYPES[DEPLOYMENT];
        let error = check_apply_configuration(rt, "kube-system", "d", &deployment_with_typos())
            .expect_err("the input is refused");
        assert_eq!(error.code, 500);
        assert!(error.message.starts_with(
            "failed to create typed patch object (kube-system/d; apps/v1, Kind=Deployment): errors:\n  .extra: field not declared in schema"
        ), "{}", error.message);
    }

    #[test]
    fn directives_parse_like_the_server() {
        assert_eq!(
            FieldValidation::parse(None).expect("the test data has it"),
            FieldValidation::Warn
        );
        assert_eq!(
            FieldValidation::parse(Some("Strict")).expect("the test data has it"),
            FieldValidation::Strict
        );
        assert_eq!(
            FieldValidation::parse(Some("strict"))
                .expect_err("the input is refused")
                .code,
            400
        );
        assert_eq!(
            warning_header("unknown field \"a\""),
            "299 - \"unknown field \\\"a\\\"\""
        );
    }
}
