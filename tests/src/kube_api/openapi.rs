//! The OpenAPI documents kube-apiserver serves, built from the served kinds and their
//! official schemas ([`super::schema`]): `/openapi/v3` (an index of one document per
//! group-version), `/openapi/v3/api/v1`, `/openapi/v3/apis/{group}/{version}`, and the
//! single `/openapi/v2` document, in JSON or in the protobuf form client-go asks for.
//!
//! kubectl reads them for more than `explain`: before a write it looks for the
//! `fieldValidation` and `dryRun` query parameters on the PATCH operation of the kind's
//! path to decide that the server validates fields itself, and client-side `apply`
//! computes its strategic merge patch from the schemas' `x-kubernetes-patch-*`
//! extensions. So every path a kind is served on is described with its operations,
//! parameters and `x-kubernetes-group-version-kind`, as the real documents do.

mod v2_protobuf;

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::LazyLock;

use serde_json::{Map, Value, json};

use super::access;
use super::resources::{RESOURCE_TYPES, ResourceType};
use super::scale;
use super::schema::{Definitions, Gvk, KUBERNETES_VERSION, REF_PREFIX, definitions};

const V2_REF_PREFIX: &str = "#/definitions/";
const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";

/// One served group-version's v3 document, serialised once.
struct GroupVersionDocument {
    /// `api/v1` or `apis/{group}/{version}`, the key in the index.
    key: String,
    body: String,
    /// A digest of `body` for the index's `serverRelativeURL`; clients cache by it.
    hash: String,
}

struct Documents {
    v3: Vec<GroupVersionDocument>,
    v2: String,
    v2_protobuf: Vec<u8>,
}

static DOCUMENTS: LazyLock<Documents> = LazyLock::new(build);

/// `/openapi/v3`: where each group-version's document is.
pub(crate) fn v3_index() -> Value {
    let paths: Map<String, Value> = DOCUMENTS
        .v3
        .iter()
        .map(|document| {
            (
                document.key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{}?hash={}", document.key, document.hash)}),
            )
        })
        .collect();
    json!({"paths": paths})
}

/// The v3 document of `api/v1` or `apis/{group}/{version}`, with its hash.
pub(crate) fn v3_document(key: &str) -> Option<(&'static str, &'static str)> {
    DOCUMENTS
        .v3
        .iter()
        .find(|document| document.key == key)
        .map(|document| (document.body.as_str(), document.hash.as_str()))
}

/// The `/openapi/v2` document.
pub(crate) fn v2_document() -> &'static str {
    &DOCUMENTS.v2
}

/// The media type client-go asks for the protobuf form of the v2 document with.
pub(crate) const V2_PROTOBUF_MEDIA_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// The content type the server answers it with: the same with a `.` for the `@`, which
/// Go's media type parser (and so client-go's response handling) refuses.
pub(crate) const V2_PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The `/openapi/v2` document as gnostic's `openapi.v2.Document` message.
pub(crate) fn v2_protobuf() -> &'static [u8] {
    &DOCUMENTS.v2_protobuf
}

/// A kind that is only ever created (a review), served at one collection path.
struct CreateOnly {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
}

const CREATE_ONLY: &[CreateOnly] = &[
    CreateOnly {
        group: access::GROUP,
        version: access::VERSION,
        kind: access::KIND,
        plural: access::PLURAL,
    },
    CreateOnly {
        group: access::GROUP,
        version: access::VERSION,
        kind: access::RULES_KIND,
        plural: access::RULES_PLURAL,
    },
    CreateOnly {
        group: access::AUTHENTICATION_GROUP,
        version: access::VERSION,
        kind: access::WHOAMI_KIND,
        plural: access::WHOAMI_PLURAL,
    },
];

fn build() -> Documents {
    let definitions = definitions();
    let mut group_versions: BTreeMap<(&str, &str), Vec<Operations>> = BTreeMap::new();
    for rt in RESOURCE_TYPES {
        group_versions
            .entry((rt.group, rt.version))
            .or_default()
            .extend(resource_operations(definitions, rt));
    }
    for review in CREATE_ONLY {
        group_versions
            .entry((review.group, review.version))
            .or_default()
            .push(review_operations(definitions, review));
    }
    let v3 = group_versions
        .iter()
        .map(|((group, version), operations)| {
            let key = if group.is_empty() {
                format!("api/{version}")
            } else {
                format!("apis/{group}/{version}")
            };
            let body = v3_group_version(definitions, operations).to_string();
            let hash = digest(&body);
            GroupVersionDocument { key, body, hash }
        })
        .collect();
    let all: Vec<&Operations> = group_versions.values().flatten().collect();
    let v2_value = v2_whole(definitions, &all);
    let v2_protobuf = v2_protobuf::encode(&v2_value);
    Documents {
        v3,
        v2: v2_value.to_string(),
        v2_protobuf,
    }
}

fn digest(body: &str) -> String {
    // Any stable digest will do: clients only compare it with the one they cached.
    let mut hasher = DefaultHasher::new();
    body.hash(&mut hasher);
    format!("{:016X}", hasher.finish())
}

/// What an operation does, as `x-kubernetes-action` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    List,
    Post,
    DeleteCollection,
    Get,
    Put,
    Patch,
    Delete,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::List => "list",
            Action::Post => "post",
            Action::DeleteCollection => "deletecollection",
            Action::Get => "get",
            Action::Put => "put",
            Action::Patch => "patch",
            Action::Delete => "delete",
        }
    }

    fn method(self) -> &'static str {
        match self {
            Action::List | Action::Get => "get",
            Action::Post => "post",
            Action::DeleteCollection | Action::Delete => "delete",
            Action::Put => "put",
            Action::Patch => "patch",
        }
    }

    /// The verb that starts the operation id, e.g. `patch` in `patchAppsV1NamespacedDeployment`.
    fn id_verb(self) -> &'static str {
        match self {
            Action::List => "list",
            Action::Post => "create",
            Action::DeleteCollection => "deletecollection",
            Action::Get => "read",
            Action::Put => "replace",
            Action::Patch => "patch",
            Action::Delete => "delete",
        }
    }

    /// The query parameters the operation takes besides `pretty`.
    fn query_parameters(self) -> &'static [Parameter] {
        use Parameter as P;
        match self {
            Action::List => &[
                P::AllowWatchBookmarks,
                P::Continue,
                P::FieldSelector,
                P::LabelSelector,
                P::Limit,
                P::ResourceVersion,
                P::ResourceVersionMatch,
                P::SendInitialEvents,
                P::TimeoutSeconds,
                P::Watch,
            ],
            Action::Post | Action::Put => &[P::DryRun, P::FieldManager, P::FieldValidation],
            Action::Patch => &[P::DryRun, P::FieldManager, P::FieldValidation, P::Force],
            Action::Delete => &[
                P::DryRun,
                P::GracePeriodSeconds,
                P::OrphanDependents,
                P::PropagationPolicy,
            ],
            Action::DeleteCollection => &[
                P::Continue,
                P::DryRun,
                P::FieldSelector,
                P::GracePeriodSeconds,
                P::LabelSelector,
                P::Limit,
                P::OrphanDependents,
                P::PropagationPolicy,
                P::ResourceVersion,
                P::ResourceVersionMatch,
                P::SendInitialEvents,
                P::TimeoutSeconds,
            ],
            Action::Get => &[],
        }
    }
}

/// A parameter of a served operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parameter {
    AllowWatchBookmarks,
    Continue,
    FieldSelector,
    LabelSelector,
    Limit,
    ResourceVersion,
    ResourceVersionMatch,
    SendInitialEvents,
    TimeoutSeconds,
    Watch,
    DryRun,
    FieldManager,
    FieldValidation,
    Force,
    GracePeriodSeconds,
    OrphanDependents,
    PropagationPolicy,
    Pretty,
    /// The `{name}` of a path.
    Name,
    /// The `{namespace}` of a path.
    Namespace,
}

impl Parameter {
    /// The name, the location, the type and the description (the documents' own words;
    /// the semantics are kube-apiserver's).
    fn describe(self) -> (&'static str, &'static str, &'static str, &'static str) {
        use Parameter as P;
        match self {
            P::AllowWatchBookmarks => (
                "allowWatchBookmarks",
                "query",
                "boolean",
                "Ask for BOOKMARK events in a watch.",
            ),
            P::Continue => (
                "continue",
                "query",
                "string",
                "The continue token of the previous page of a list.",
            ),
            P::FieldSelector => (
                "fieldSelector",
                "query",
                "string",
                "Only objects whose fields match this selector.",
            ),
            P::LabelSelector => (
                "labelSelector",
                "query",
                "string",
                "Only objects whose labels match this selector.",
            ),
            P::Limit => (
                "limit",
                "query",
                "integer",
                "The most items one page of a list holds.",
            ),
            P::ResourceVersion => (
                "resourceVersion",
                "query",
                "string",
                "The resource version a list or watch starts from.",
            ),
            P::ResourceVersionMatch => (
                "resourceVersionMatch",
                "query",
                "string",
                "How resourceVersion is matched: Exact or NotOlderThan.",
            ),
            P::SendInitialEvents => (
                "sendInitialEvents",
                "query",
                "boolean",
                "Start a watch with the current objects as ADDED events.",
            ),
            P::TimeoutSeconds => (
                "timeoutSeconds",
                "query",
                "integer",
                "How long a list or watch may last.",
            ),
            P::Watch => (
                "watch",
                "query",
                "boolean",
                "Stream changes instead of listing.",
            ),
            P::DryRun => (
                "dryRun",
                "query",
                "string",
                "All: process the request fully but store nothing.",
            ),
            P::FieldManager => (
                "fieldManager",
                "query",
                "string",
                "The name of the actor making the change.",
            ),
            P::FieldValidation => (
                "fieldValidation",
                "query",
                "string",
                "What to do with fields the schema does not declare: Ignore, Warn (the default) or Strict.",
            ),
            P::Force => (
                "force",
                "query",
                "boolean",
                "Take over fields other managers own (apply patches only).",
            ),
            P::GracePeriodSeconds => (
                "gracePeriodSeconds",
                "query",
                "integer",
                "Seconds before the object is deleted.",
            ),
            P::OrphanDependents => (
                "orphanDependents",
                "query",
                "boolean",
                "Deprecated: use propagationPolicy.",
            ),
            P::PropagationPolicy => (
                "propagationPolicy",
                "query",
                "string",
                "Orphan, Background or Foreground deletion of dependents.",
            ),
            P::Pretty => ("pretty", "query", "string", "Indent the response."),
            P::Name => ("name", "path", "string", "The name of the object."),
            P::Namespace => (
                "namespace",
                "path",
                "string",
                "The namespace of the object.",
            ),
        }
    }
}

/// The operations of one path.
struct Operations {
    path: String,
    namespaced: bool,
    named: bool,
    tag: String,
    /// Each operation with its id and the definitions of its request and response.
    entries: Vec<Operation>,
}

struct Operation {
    action: Action,
    id: String,
    /// The definition the request body holds, if any.
    request: Option<String>,
    /// The definition the response holds.
    response: String,
    /// The kind the operation is about (a subresource's may differ from the path's).
    gvk: Gvk,
}

fn camel_group(group: &str) -> String {
    if group.is_empty() {
        return "Core".to_owned();
    }
    group
        .trim_end_matches(".k8s.io")
        .split('.')
        .map(capitalised)
        .collect()
}

fn tag(group: &str, version: &str) -> String {
    let camel = camel_group(group);
    let mut chars = camel.chars();
    let lower = chars
        .next()
        .map(|first| first.to_ascii_lowercase().to_string() + chars.as_str())
        .unwrap_or_default();
    format!("{lower}_{version}")
}

fn prefix(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    }
}

fn definition_name(definitions: &Definitions, gvk: &Gvk) -> String {
    definitions.name_for(gvk).unwrap_or_default().to_owned()
}

/// The paths of one stored kind: its collection (and the all-namespaces list), the
/// named object, and its status subresource.
fn resource_operations(definitions: &Definitions, rt: &ResourceType) -> Vec<Operations> {
    let gvk = Gvk::new(rt.group, rt.version, rt.kind);
    let object = definition_name(definitions, &gvk);
    let list = definition_name(
        definitions,
        &Gvk::new(rt.group, rt.version, &format!("{}List", rt.kind)),
    );
    let status = format!("{META}.Status");
    let delete_options = format!("{META}.DeleteOptions");
    let patch = format!("{META}.Patch");
    let gv = format!("{}{}", camel_group(rt.group), capitalised(rt.version));
    let scope = if rt.namespaced { "Namespaced" } else { "" };
    let base = if rt.namespaced {
        format!(
            "{}/namespaces/{{namespace}}/{}",
            prefix(rt.group, rt.version),
            rt.plural
        )
    } else {
        format!("{}/{}", prefix(rt.group, rt.version), rt.plural)
    };
    let op = |action: Action, suffix: &str, request: Option<&str>, response: &str| Operation {
        action,
        id: format!("{}{gv}{scope}{}{suffix}", action.id_verb(), rt.kind),
        request: request.map(str::to_owned),
        response: response.to_owned(),
        gvk: gvk.clone(),
    };
    let mut operations = vec![
        Operations {
            path: base.clone(),
            namespaced: rt.namespaced,
            named: false,
            tag: tag(rt.group, rt.version),
            entries: vec![
                op(Action::List, "", None, &list),
                op(Action::Post, "", Some(&object), &object),
                Operation {
                    id: format!("delete{gv}Collection{scope}{}", rt.kind),
                    ..op(Action::DeleteCollection, "", Some(&delete_options), &status)
                },
            ],
        },
        Operations {
            path: format!("{base}/{{name}}"),
            namespaced: rt.namespaced,
            named: true,
            tag: tag(rt.group, rt.version),
            entries: vec![
                op(Action::Get, "", None, &object),
                op(Action::Put, "", Some(&object), &object),
                op(Action::Patch, "", Some(&patch), &object),
                op(Action::Delete, "", Some(&delete_options), &status),
            ],
        },
    ];
    if rt.has_status {
        operations.push(Operations {
            path: format!("{base}/{{name}}/status"),
            namespaced: rt.namespaced,
            named: true,
            tag: tag(rt.group, rt.version),
            entries: vec![
                op(Action::Get, "Status", None, &object),
                op(Action::Put, "Status", Some(&object), &object),
                op(Action::Patch, "Status", Some(&patch), &object),
            ],
        });
    }
    if scale::served(rt) {
        let scale_gvk = Gvk::new(scale::SCALE_GROUP, scale::SCALE_VERSION, scale::SCALE_KIND);
        let scale_object = definition_name(definitions, &scale_gvk);
        let scale_op = |action: Action, request: Option<&str>| Operation {
            gvk: scale_gvk.clone(),
            ..op(action, "Scale", request, &scale_object)
        };
        operations.push(Operations {
            path: format!("{base}/{{name}}/scale"),
            namespaced: rt.namespaced,
            named: true,
            tag: tag(rt.group, rt.version),
            entries: vec![
                scale_op(Action::Get, None),
                scale_op(Action::Put, Some(&scale_object)),
                scale_op(Action::Patch, Some(&patch)),
            ],
        });
    }
    if rt.namespaced {
        operations.push(Operations {
            path: format!("{}/{}", prefix(rt.group, rt.version), rt.plural),
            namespaced: false,
            named: false,
            tag: tag(rt.group, rt.version),
            entries: vec![Operation {
                id: format!("list{gv}{}ForAllNamespaces", rt.kind),
                ..op(Action::List, "", None, &list)
            }],
        });
    }
    operations
}

fn review_operations(definitions: &Definitions, review: &CreateOnly) -> Operations {
    let gvk = Gvk::new(review.group, review.version, review.kind);
    let object = definition_name(definitions, &gvk);
    Operations {
        path: format!("{}/{}", prefix(review.group, review.version), review.plural),
        namespaced: false,
        named: false,
        tag: tag(review.group, review.version),
        entries: vec![Operation {
            action: Action::Post,
            id: format!(
                "create{}{}{}",
                camel_group(review.group),
                capitalised(review.version),
                review.kind
            ),
            request: Some(object.clone()),
            response: object,
            gvk,
        }],
    }
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// Which OpenAPI version a document is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    V2,
    V3,
}

impl Dialect {
    fn reference(self, name: &str) -> Value {
        match self {
            Dialect::V2 => json!({"$ref": format!("{V2_REF_PREFIX}{name}")}),
            Dialect::V3 => json!({"$ref": format!("{REF_PREFIX}{name}")}),
        }
    }

    fn parameter(self, parameter: Parameter) -> Value {
        let (name, location, kind, description) = parameter.describe();
        let mut value = json!({"name": name, "in": location, "description": description});
        // Path parameters are always required; query parameters never are.
        if location == "path" {
            value["required"] = json!(true);
        }
        match self {
            Dialect::V2 => {
                value["type"] = json!(kind);
                value["uniqueItems"] = json!(true);
            }
            Dialect::V3 => {
                value["schema"] = json!({"type": kind, "uniqueItems": true});
            }
        }
        value
    }
}

fn media_types(action: Action) -> &'static [&'static str] {
    match action {
        Action::List => &[
            "application/json",
            "application/yaml",
            "application/json;stream=watch",
        ],
        Action::Post
        | Action::DeleteCollection
        | Action::Get
        | Action::Put
        | Action::Patch
        | Action::Delete => &["application/json", "application/yaml"],
    }
}

fn request_media_types(action: Action) -> &'static [&'static str] {
    match action {
        Action::Patch => &[
            "application/apply-patch+yaml",
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        ],
        Action::List
        | Action::Post
        | Action::DeleteCollection
        | Action::Get
        | Action::Put
        | Action::Delete => &["*/*"],
    }
}

fn response_codes(action: Action) -> &'static [(&'static str, &'static str)] {
    match action {
        Action::Post => &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
        Action::Put | Action::Patch => &[("200", "OK"), ("201", "Created")],
        Action::Delete => &[("200", "OK"), ("202", "Accepted")],
        Action::List | Action::DeleteCollection | Action::Get => &[("200", "OK")],
    }
}

fn operation(dialect: Dialect, operations: &Operations, entry: &Operation) -> Value {
    let mut parameters: Vec<Value> = entry
        .action
        .query_parameters()
        .iter()
        .map(|parameter| dialect.parameter(*parameter))
        .collect();
    let mut value = json!({
        "tags": [operations.tag],
        "description": format!("{} {}", entry.action.name(), entry.gvk.kind),
        "operationId": entry.id,
        "x-kubernetes-action": entry.action.name(),
        "x-kubernetes-group-version-kind": entry.gvk.to_extension(),
    });
    let mut responses = Map::new();
    for (code, text) in response_codes(entry.action) {
        let response = match dialect {
            Dialect::V2 => {
                json!({"description": text, "schema": dialect.reference(&entry.response)})
            }
            Dialect::V3 => {
                let content: Map<String, Value> = media_types(entry.action)
                    .iter()
                    .map(|media| {
                        (
                            (*media).to_owned(),
                            json!({"schema": dialect.reference(&entry.response)}),
                        )
                    })
                    .collect();
                json!({"description": text, "content": content})
            }
        };
        responses.insert((*code).to_owned(), response);
    }
    responses.insert("401".into(), json!({"description": "Unauthorized"}));
    value["responses"] = Value::Object(responses);
    match dialect {
        Dialect::V2 => {
            value["consumes"] = json!(request_media_types(entry.action));
            value["produces"] = json!(media_types(entry.action));
            value["schemes"] = json!(["https"]);
            if let Some(request) = &entry.request {
                parameters.insert(
                    0,
                    json!({"name": "body", "in": "body", "required": entry.action != Action::Delete && entry.action != Action::DeleteCollection, "schema": dialect.reference(request)}),
                );
            }
        }
        Dialect::V3 => {
            if let Some(request) = &entry.request {
                let content: Map<String, Value> = request_media_types(entry.action)
                    .iter()
                    .map(|media| {
                        (
                            (*media).to_owned(),
                            json!({"schema": dialect.reference(request)}),
                        )
                    })
                    .collect();
                value["requestBody"] = json!({
                    "content": content,
                    "required": entry.action != Action::Delete && entry.action != Action::DeleteCollection,
                });
            }
        }
    }
    value["parameters"] = Value::Array(parameters);
    value
}

fn path_item(dialect: Dialect, operations: &Operations) -> Value {
    let mut item = Map::new();
    for entry in &operations.entries {
        item.insert(
            entry.action.method().to_owned(),
            operation(dialect, operations, entry),
        );
    }
    let mut parameters = Vec::new();
    if operations.named {
        parameters.push(dialect.parameter(Parameter::Name));
    }
    if operations.namespaced {
        parameters.push(dialect.parameter(Parameter::Namespace));
    }
    parameters.push(dialect.parameter(Parameter::Pretty));
    item.insert("parameters".into(), Value::Array(parameters));
    Value::Object(item)
}

/// The definitions the operations reach, written for the dialect.
fn schemas(
    dialect: Dialect,
    definitions: &Definitions,
    operations: &[&Operations],
) -> Map<String, Value> {
    let roots: Vec<&str> = operations
        .iter()
        .flat_map(|ops| ops.entries.iter())
        .flat_map(|entry| entry.request.iter().chain(std::iter::once(&entry.response)))
        .map(String::as_str)
        .collect();
    definitions
        .closure(roots)
        .into_iter()
        .filter_map(|name| {
            let mut schema = definitions.get(&name)?.clone();
            rewrite(dialect, &mut schema);
            Some((name, schema))
        })
        .collect()
}

/// Writes references the way each dialect's real documents do: v2 keeps a reference
/// beside its description, v3 wraps a reference that has siblings in a one-element
/// `allOf` (a bare `$ref` in OpenAPI 3.0 may not have siblings).
fn rewrite(dialect: Dialect, node: &mut Value) {
    match node {
        Value::Object(map) => {
            for child in map.values_mut() {
                rewrite(dialect, child);
            }
            // Swagger 2.0 has no `oneOf`: upstream's v2 document writes the one union it
            // has there (Quantity, a string or a number) as a string.
            if dialect == Dialect::V2 && map.remove("oneOf").is_some() {
                map.insert("type".into(), json!("string"));
            }
            let Some(Value::String(reference)) = map.get("$ref").cloned() else {
                return;
            };
            match dialect {
                Dialect::V2 => {
                    let name = reference.trim_start_matches(REF_PREFIX);
                    map.insert("$ref".into(), json!(format!("{V2_REF_PREFIX}{name}")));
                }
                Dialect::V3 if map.len() > 1 => {
                    map.remove("$ref");
                    map.insert("allOf".into(), json!([{"$ref": reference}]));
                }
                Dialect::V3 => {}
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| rewrite(dialect, item)),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
}

fn info() -> Value {
    json!({"title": "Kubernetes", "version": KUBERNETES_VERSION})
}

fn v3_group_version(definitions: &Definitions, operations: &[Operations]) -> Value {
    let paths: Map<String, Value> = operations
        .iter()
        .map(|ops| (ops.path.clone(), path_item(Dialect::V3, ops)))
        .collect();
    let all: Vec<&Operations> = operations.iter().collect();
    json!({
        "openapi": "3.0.0",
        "info": info(),
        "paths": paths,
        "components": {
            "schemas": schemas(Dialect::V3, definitions, &all),
            "securitySchemes": {
                "BearerToken": {"type": "apiKey", "description": "Bearer Token authentication", "name": "authorization", "in": "header"}
            }
        },
        "security": [{"BearerToken": []}],
    })
}

fn v2_whole(definitions: &Definitions, operations: &[&Operations]) -> Value {
    let paths: Map<String, Value> = operations
        .iter()
        .map(|ops| (ops.path.clone(), path_item(Dialect::V2, ops)))
        .collect();
    json!({
        "swagger": "2.0",
        "info": info(),
        "paths": paths,
        "definitions": schemas(Dialect::V2, definitions, operations),
        "securityDefinitions": {
            "BearerToken": {"type": "apiKey", "description": "Bearer Token authentication", "name": "authorization", "in": "header"}
        },
        "security": [{"BearerToken": []}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v3(key: &str) -> Value {
        serde_json::from_str(v3_document(key).expect("the test data has it").0)
            .expect("the test data has it")
    }

    #[test]
    fn the_index_lists_one_document_per_served_group_version() {
        let index = v3_index();
        let keys: Vec<&String> = index["paths"]
            .as_object()
            .expect("the test data has it")
            .keys()
            .collect();
        assert_eq!(
            keys,
            [
                "api/v1",
                "apis/apps/v1",
                "apis/authentication.k8s.io/v1",
                "apis/authorization.k8s.io/v1",
                "apis/coordination.k8s.io/v1",
                "apis/rbac.authorization.k8s.io/v1"
            ]
        );
        let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .expect("the test data has it");
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="), "{url}");
    }

    #[test]
    fn every_patch_operation_declares_field_validation_and_dry_run_with_its_kind() {
        for (key, _) in [
            ("api/v1", ()),
            ("apis/apps/v1", ()),
            ("apis/rbac.authorization.k8s.io/v1", ()),
        ] {
            let document = v3(key);
            let mut patches = 0;
            for (path, item) in document["paths"].as_object().expect("the test data has it") {
                let Some(patch) = item.get("patch") else {
                    continue;
                };
                patches += 1;
                assert!(
                    patch["x-kubernetes-group-version-kind"]["kind"].is_string(),
                    "{path}"
                );
                let names: Vec<&str> = patch["parameters"]
                    .as_array()
                    .expect("the test data has it")
                    .iter()
                    .map(|p| p["name"].as_str().expect("the test data has it"))
                    .collect();
                assert!(
                    names.contains(&"fieldValidation") && names.contains(&"dryRun"),
                    "{path}: {names:?}"
                );
            }
            assert!(patches > 0, "{key}");
        }
    }

    #[test]
    fn documents_hold_the_schemas_their_operations_reach_and_nothing_dangles() {
        let document = v3("apis/apps/v1");
        let schemas = document["components"]["schemas"]
            .as_object()
            .expect("the test data has it");
        assert!(schemas.contains_key("io.k8s.api.apps.v1.Deployment"));
        assert!(schemas.contains_key("io.k8s.api.core.v1.Container"));
        assert!(!schemas.contains_key("io.k8s.api.rbac.v1.ClusterRole"));
        let text = document.to_string();
        for reference in text.split("\"$ref\":\"").skip(1) {
            let name = reference
                .split('"')
                .next()
                .expect("the test data has it")
                .trim_start_matches(REF_PREFIX);
            assert!(schemas.contains_key(name), "dangling reference to {name}");
        }
        let metadata = &schemas["io.k8s.api.apps.v1.Deployment"]["properties"]["metadata"];
        assert_eq!(
            metadata["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );

        let v2: Value = serde_json::from_str(v2_document()).expect("the test data has it");
        assert_eq!(v2["swagger"], "2.0");
        assert_eq!(
            v2["definitions"]["io.k8s.api.apps.v1.Deployment"]["properties"]["metadata"]["$ref"],
            "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        assert!(
            v2["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
                .is_object()
        );
    }

    #[test]
    fn operation_ids_follow_the_real_naming() {
        let document = v3("apis/rbac.authorization.k8s.io/v1");
        assert_eq!(
            document["paths"]["/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}"]["patch"]["operationId"],
            "patchRbacAuthorizationV1ClusterRole"
        );
        let core = v3("api/v1");
        assert_eq!(
            core["paths"]["/api/v1/pods"]["get"]["operationId"],
            "listCoreV1PodForAllNamespaces"
        );
        assert_eq!(
            core["paths"]["/api/v1/namespaces/{namespace}/pods"]["delete"]["operationId"],
            "deleteCoreV1CollectionNamespacedPod"
        );
    }
}
