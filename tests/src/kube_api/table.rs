//! Server-side printing: the `meta.k8s.io` `Table` the real API server answers when a
//! client (kubectl) asks for `application/json;as=Table;v=v1;g=meta.k8s.io`.
//!
//! The columns and cells follow kube-apiserver's printers for the kinds the sandbox
//! serves (pods, nodes, deployments, ...), and its generic `Name` / `Created At`
//! convertor for kinds without printers (roles and cluster roles). Like the real server,
//! every column is computed, wide ones (priority 1) included; kubectl hides those unless
//! `-o wide`. Ages are the server's human durations (`5m`, `2d3h`), which kubectl prints
//! as given.

use serde_json::{Value, json};

use super::clock;
use super::errors::ApiError;
use super::resources::{RESOURCE_TYPES, ResourceType};

/// The `meta.k8s.io` version of the Table a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TableVersion {
    V1,
    V1Beta1,
}

impl TableVersion {
    fn api_version(self) -> &'static str {
        match self {
            TableVersion::V1 => "meta.k8s.io/v1",
            TableVersion::V1Beta1 => "meta.k8s.io/v1beta1",
        }
    }
}

/// What each row carries in `object`: the `includeObject` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IncludeObject {
    None,
    /// A `PartialObjectMetadata` with the object's metadata (the default); kubectl reads
    /// the namespace from it for `-A` and the labels for `--show-labels`.
    Metadata,
    Object,
}

impl IncludeObject {
    /// Parses the query parameter; an unknown value is a 400, as on the real server.
    pub fn parse(value: Option<&str>) -> Result<IncludeObject, ApiError> {
        match value {
            None | Some("" | "Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(ApiError::bad_request(format!(
                "unrecognized includeObject value: {other:?}"
            ))),
        }
    }
}

/// How a request wants objects rendered as a Table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TableOptions {
    pub version: TableVersion,
    pub include: IncludeObject,
}

/// Picks the Table version from an `Accept` header, or `None` for plain JSON. Media
/// ranges are taken in order, as kubectl lists them by preference: the first Table the
/// server can produce wins, and a plain JSON range (or a missing header) before any Table
/// means plain JSON. Ranges the sandbox cannot produce (e.g. `as=PartialObjectMetadata`)
/// are skipped; if nothing is left the answer is plain JSON, where the real server would
/// answer 406.
pub(crate) fn negotiate(accept: Option<&str>) -> Option<TableVersion> {
    for range in accept?.split(',') {
        let mut pieces = range.split(';').map(str::trim);
        let media_type = pieces.next().unwrap_or_default().to_ascii_lowercase();
        if !matches!(
            media_type.as_str(),
            "application/json" | "application/*" | "*/*"
        ) {
            continue;
        }
        let parameters: Vec<(&str, &str)> = pieces
            .filter_map(|parameter| parameter.split_once('='))
            .map(|(name, value)| (name.trim(), value.trim()))
            .collect();
        // Other parameters (q, charset, stream) do not change the form of the answer.
        let parameter = |wanted: &str| {
            parameters
                .iter()
                .find(|(name, _)| *name == wanted)
                .map(|(_, value)| *value)
        };
        let (as_kind, group, version) = (parameter("as"), parameter("g"), parameter("v"));
        match (as_kind, group, version) {
            (None, _, _) => return None,
            (Some("Table"), Some("meta.k8s.io"), Some("v1")) => return Some(TableVersion::V1),
            (Some("Table"), Some("meta.k8s.io"), Some("v1beta1")) => {
                return Some(TableVersion::V1Beta1);
            }
            // A transformation the sandbox does not produce: try the next range.
            (Some(_), _, _) => continue,
        }
    }
    None
}

/// Which of kube-apiserver's printers renders a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Printer {
    Namespace,
    Node,
    Pod,
    ServiceAccount,
    ConfigMap,
    Event,
    Deployment,
    ReplicaSet,
    /// RoleBindings and ClusterRoleBindings share their columns.
    RoleBinding,
    Lease,
    /// Kinds the real server has no printer for (Role, ClusterRole) get its default
    /// convertor: `Name` and `Created At`.
    Generic,
}

/// One column definition, as `metav1.TableColumnDefinition`.
struct Column {
    name: &'static str,
    kind: ColumnType,
    /// `name` for the column holding the object's name, else empty.
    format: &'static str,
    description: &'static str,
    /// 0 for the default columns, 1 for those only `-o wide` shows.
    priority: u8,
}

#[derive(Clone, Copy)]
enum ColumnType {
    String,
    Integer,
    Date,
}

impl ColumnType {
    fn as_str(self) -> &'static str {
        match self {
            ColumnType::String => "string",
            ColumnType::Integer => "integer",
            ColumnType::Date => "date",
        }
    }
}

const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const CREATED_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const CONTAINERS_DOC: &str = "Names of each container in the template.";
const IMAGES_DOC: &str = "Images referenced by each container in the template.";

const fn column(
    name: &'static str,
    kind: ColumnType,
    description: &'static str,
    priority: u8,
) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority,
    }
}

const NAME: Column = Column {
    name: "Name",
    kind: ColumnType::String,
    format: "name",
    description: NAME_DOC,
    priority: 0,
};
const AGE: Column = column("Age", ColumnType::String, CREATED_DOC, 0);

const POD_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Ready",
        ColumnType::String,
        "The aggregate readiness state of this pod for accepting traffic.",
        0,
    ),
    column(
        "Status",
        ColumnType::String,
        "The aggregate status of the containers in this pod.",
        0,
    ),
    column(
        "Restarts",
        ColumnType::String,
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
        0,
    ),
    AGE,
    column(
        "IP",
        ColumnType::String,
        "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
        1,
    ),
    column(
        "Node",
        ColumnType::String,
        "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName.",
        1,
    ),
    column(
        "Nominated Node",
        ColumnType::String,
        "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods.",
        1,
    ),
    column(
        "Readiness Gates",
        ColumnType::String,
        "If specified, all readiness gates will be evaluated for pod readiness.",
        1,
    ),
];

const NODE_COLUMNS: &[Column] = &[
    NAME,
    column("Status", ColumnType::String, "The status of the node", 0),
    column("Roles", ColumnType::String, "The roles of the node", 0),
    AGE,
    column(
        "Version",
        ColumnType::String,
        "Kubelet Version reported by the node.",
        0,
    ),
    column(
        "Internal-IP",
        ColumnType::String,
        "List of addresses reachable to the node.",
        1,
    ),
    column(
        "External-IP",
        ColumnType::String,
        "List of addresses reachable to the node.",
        1,
    ),
    column(
        "OS-Image",
        ColumnType::String,
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
        1,
    ),
    column(
        "Kernel-Version",
        ColumnType::String,
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
        1,
    ),
    column(
        "Container-Runtime",
        ColumnType::String,
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
        1,
    ),
];

const NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Status",
        ColumnType::String,
        "The status of the namespace",
        0,
    ),
    AGE,
];

const SERVICE_ACCOUNT_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Secrets",
        ColumnType::String,
        "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
        0,
    ),
    AGE,
];

const CONFIG_MAP_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Data",
        ColumnType::String,
        "Data contains the configuration data.",
        0,
    ),
    AGE,
];

const EVENT_COLUMNS: &[Column] = &[
    column(
        "Last Seen",
        ColumnType::String,
        "The time at which the most recent occurrence of this event was recorded.",
        0,
    ),
    column(
        "Type",
        ColumnType::String,
        "Type of this event (Normal, Warning), new types could be added in the future",
        0,
    ),
    column(
        "Reason",
        ColumnType::String,
        "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
        0,
    ),
    column(
        "Object",
        ColumnType::String,
        "The object that this event is about.",
        0,
    ),
    column(
        "Subobject",
        ColumnType::String,
        "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement.",
        1,
    ),
    column(
        "Source",
        ColumnType::String,
        "The component reporting this event. Should be a short machine understandable string.",
        1,
    ),
    column(
        "Message",
        ColumnType::String,
        "A human-readable description of the status of this operation.",
        0,
    ),
    column(
        "First Seen",
        ColumnType::String,
        "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
        1,
    ),
    column(
        "Count",
        ColumnType::String,
        "The number of times this event has occurred.",
        1,
    ),
    Column {
        priority: 1,
        ..NAME
    },
];

const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Ready",
        ColumnType::String,
        "Number of the pod with ready state",
        0,
    ),
    column(
        "Up-to-date",
        ColumnType::String,
        "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
        0,
    ),
    column(
        "Available",
        ColumnType::String,
        "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
        0,
    ),
    AGE,
    column("Containers", ColumnType::String, CONTAINERS_DOC, 1),
    column("Images", ColumnType::String, IMAGES_DOC, 1),
    column(
        "Selector",
        ColumnType::String,
        "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
        1,
    ),
];

const REPLICA_SET_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Desired",
        ColumnType::Integer,
        "Replicas is the number of desired replicas.",
        0,
    ),
    column(
        "Current",
        ColumnType::Integer,
        "Replicas is the most recently observed number of replicas.",
        0,
    ),
    column(
        "Ready",
        ColumnType::Integer,
        "The number of ready replicas for this replica set.",
        0,
    ),
    AGE,
    column("Containers", ColumnType::String, CONTAINERS_DOC, 1),
    column("Images", ColumnType::String, IMAGES_DOC, 1),
    column(
        "Selector",
        ColumnType::String,
        "Selector is a label query over pods that should match the replica count.",
        1,
    ),
];

const ROLE_BINDING_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Role",
        ColumnType::String,
        "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace.",
        0,
    ),
    AGE,
    column("Users", ColumnType::String, "Users in the roleBinding", 1),
    column("Groups", ColumnType::String, "Groups in the roleBinding", 1),
    column(
        "ServiceAccounts",
        ColumnType::String,
        "ServiceAccounts in the roleBinding",
        1,
    ),
];

const LEASE_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Holder",
        ColumnType::String,
        "holderIdentity contains the identity of the holder of a current lease.",
        0,
    ),
    AGE,
];

const GENERIC_COLUMNS: &[Column] = &[NAME, column("Created At", ColumnType::Date, CREATED_DOC, 0)];

impl Printer {
    fn columns(self) -> &'static [Column] {
        match self {
            Printer::Namespace => NAMESPACE_COLUMNS,
            Printer::Node => NODE_COLUMNS,
            Printer::Pod => POD_COLUMNS,
            Printer::ServiceAccount => SERVICE_ACCOUNT_COLUMNS,
            Printer::ConfigMap => CONFIG_MAP_COLUMNS,
            Printer::Event => EVENT_COLUMNS,
            Printer::Deployment => DEPLOYMENT_COLUMNS,
            Printer::ReplicaSet => REPLICA_SET_COLUMNS,
            Printer::RoleBinding => ROLE_BINDING_COLUMNS,
            Printer::Lease => LEASE_COLUMNS,
            Printer::Generic => GENERIC_COLUMNS,
        }
    }

    /// The cells of one object's row, one per column, at `now` (ms since the epoch).
    fn cells(self, object: &Value, now: i64) -> Vec<Value> {
        match self {
            Printer::Namespace => vec![
                json!(name(object)),
                json!(text(object, "/status/phase")),
                json!(age(object, now)),
            ],
            Printer::Node => node_cells(object, now),
            Printer::Pod => pod_cells(object, now),
            Printer::ServiceAccount => vec![
                json!(name(object)),
                json!(len_at(object, "/secrets")),
                json!(age(object, now)),
            ],
            Printer::ConfigMap => vec![
                json!(name(object)),
                json!(len_at(object, "/data") + len_at(object, "/binaryData")),
                json!(age(object, now)),
            ],
            Printer::Event => event_cells(object, now),
            Printer::Deployment => deployment_cells(object, now),
            Printer::ReplicaSet => replica_set_cells(object, now),
            Printer::RoleBinding => role_binding_cells(object, now),
            Printer::Lease => vec![
                json!(name(object)),
                json!(text(object, "/spec/holderIdentity")),
                json!(age(object, now)),
            ],
            Printer::Generic => vec![json!(name(object)), json!(created_at(object))],
        }
    }
}

/// Renders a stored list (as [`super::store::State::list`] returns it, items without
/// apiVersion and kind) of the type `type_index` as a Table.
pub(crate) fn list_table(type_index: usize, list: &Value, options: TableOptions) -> Value {
    let rt = &RESOURCE_TYPES[type_index];
    let empty = Vec::new();
    let items = list
        .get("items")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let now = clock::now_millis();
    let rows: Vec<Value> = items
        .iter()
        .map(|item| row(rt, item, options, now))
        .collect();
    // The list's resourceVersion, continue token and remaining count carry over, so that
    // kubectl can page through a chunked list and watch from where it ended.
    let mut metadata = json!({});
    for field in ["resourceVersion", "continue", "remainingItemCount"] {
        if let Some(value) = list.pointer(&format!("/metadata/{field}")) {
            metadata[field] = value.clone();
        }
    }
    table(rt, metadata, rows, options, true)
}

/// Renders one object as a Table of one row. `headers` is false for the watch events
/// after the first, which the real server sends without column definitions.
pub(crate) fn object_table(
    type_index: usize,
    object: &Value,
    options: TableOptions,
    headers: bool,
) -> Value {
    let rt = &RESOURCE_TYPES[type_index];
    let mut metadata = json!({});
    if let Some(version) = object.pointer("/metadata/resourceVersion") {
        metadata["resourceVersion"] = version.clone();
    }
    let rows = vec![row(rt, object, options, clock::now_millis())];
    table(rt, metadata, rows, options, headers)
}

fn table(
    rt: &ResourceType,
    metadata: Value,
    rows: Vec<Value>,
    options: TableOptions,
    headers: bool,
) -> Value {
    let columns: Value = if headers {
        rt.printer
            .columns()
            .iter()
            .map(|column| {
                json!({
                    "name": column.name,
                    "type": column.kind.as_str(),
                    "format": column.format,
                    "description": column.description,
                    "priority": column.priority,
                })
            })
            .collect()
    } else {
        // The real server's Table has no omitempty on columnDefinitions: without
        // headers it is null.
        Value::Null
    };
    json!({
        "kind": "Table",
        "apiVersion": options.version.api_version(),
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

fn row(rt: &ResourceType, object: &Value, options: TableOptions, now: i64) -> Value {
    let embedded = match options.include {
        IncludeObject::None => Value::Null,
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": options.version.api_version(),
            "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
        IncludeObject::Object => {
            // List items are stored without apiVersion and kind; the embedded object is
            // a complete one, as the real server encodes it.
            let mut full = object.clone();
            if let Some(map) = full.as_object_mut() {
                map.insert("apiVersion".to_owned(), json!(rt.api_version()));
                map.insert("kind".to_owned(), json!(rt.kind));
            }
            full
        }
    };
    let mut row = json!({"cells": rt.printer.cells(object, now), "object": embedded});
    if rt.printer == Printer::Pod
        && let Some(condition) = pod_row_condition(object)
    {
        row["conditions"] = json!([condition]);
    }
    row
}

/// The `Completed` row condition the real server marks finished pods with.
fn pod_row_condition(pod: &Value) -> Option<Value> {
    let (reason, message) = match text(pod, "/status/phase") {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return None,
    };
    Some(json!({"type": "Completed", "status": "True", "reason": reason, "message": message}))
}

// --- Reading fields ---------------------------------------------------------------

fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn int(object: &Value, pointer: &str) -> i64 {
    object
        .pointer(pointer)
        .and_then(Value::as_i64)
        .unwrap_or_default()
}

fn array<'a>(object: &'a Value, pointer: &str) -> &'a [Value] {
    object
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The number of entries of an array or map field (0 when absent).
fn len_at(object: &Value, pointer: &str) -> i64 {
    let len = match object.pointer(pointer) {
        Some(Value::Array(items)) => items.len(),
        Some(Value::Object(map)) => map.len(),
        Some(Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_)) | None => 0,
    };
    i64::try_from(len).unwrap_or(i64::MAX)
}

fn name(object: &Value) -> &str {
    text(object, "/metadata/name")
}

/// A timestamp field in milliseconds since the epoch, `None` when unset (Go's zero time).
fn timestamp(object: &Value, pointer: &str) -> Option<i64> {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .and_then(clock::parse_rfc3339_millis)
}

/// The time elapsed since a timestamp as the server prints it, `<unknown>` when unset.
fn since(timestamp: Option<i64>, now: i64) -> String {
    match timestamp {
        Some(at) => human_duration_millis(now - at),
        None => "<unknown>".to_owned(),
    }
}

fn age(object: &Value, now: i64) -> String {
    since(timestamp(object, "/metadata/creationTimestamp"), now)
}

/// The generic convertor's `Created At`: the creation time in UTC RFC 3339, Go's zero
/// time when unset.
fn created_at(object: &Value) -> String {
    match timestamp(object, "/metadata/creationTimestamp") {
        Some(millis) => clock::format_rfc3339(u64::try_from(millis / 1000).unwrap_or_default()),
        None => "0001-01-01T00:00:00Z".to_owned(),
    }
}

/// A duration as apimachinery's `duration.HumanDuration` writes it: exact seconds under
/// two minutes, then minutes (with seconds under ten minutes), hours (with minutes under
/// eight hours), days (with hours under eight days), years (with days under eight years).
/// Slightly negative durations (clock skew of up to a second) read `0s`.
pub(crate) fn human_duration_millis(millis: i64) -> String {
    // Division truncates toward zero, like Go's conversions of durations to integers.
    let seconds = millis / 1000;
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return with_remainder(minutes, "m", seconds % 60, "s");
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return with_remainder(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return with_remainder(days, "d", hours % 24, "h");
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return with_remainder(years, "y", days % 365, "d");
    }
    format!("{years}y")
}

/// `5m` when the remainder is zero, else `5m30s`.
fn with_remainder(major: i64, major_unit: &str, minor: i64, minor_unit: &str) -> String {
    if minor == 0 {
        format!("{major}{major_unit}")
    } else {
        format!("{major}{major_unit}{minor}{minor_unit}")
    }
}

/// Container names and images of a pod template (or pod spec), comma-separated.
fn containers_and_images(spec: &Value) -> (String, String) {
    let containers = array(spec, "/containers");
    let names: Vec<&str> = containers.iter().map(|c| text(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| text(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// A `metav1.LabelSelector` as a label selector string (`a=b,c in (d,e)`): requirements
/// sorted by key, set values sorted. `None` when an operator is invalid.
fn selector_string(selector: Option<&Value>) -> Option<String> {
    let Some(selector) = selector.filter(|s| !s.is_null()) else {
        return Some(String::new());
    };
    let mut requirements: Vec<(String, String)> = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (key, value) in labels {
            let value = value.as_str().unwrap_or_default();
            requirements.push((key.clone(), format!("{key}={value}")));
        }
    }
    for expression in array(selector, "/matchExpressions") {
        let key = text(expression, "/key");
        let mut values: Vec<&str> = array(expression, "/values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        let rendered = match text(expression, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            _ => return None,
        };
        requirements.push((key.to_owned(), rendered));
    }
    // The sort is stable, so a key in both matchLabels and matchExpressions keeps that
    // order, as the Go selector does.
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    let rendered: Vec<String> = requirements.into_iter().map(|(_, r)| r).collect();
    Some(rendered.join(","))
}

// --- Per-kind cells ---------------------------------------------------------------

/// READY, STATUS and RESTARTS the way the real pod printer aggregates container states:
/// init containers first (a failing or running one names the status `Init:...`), then
/// the app containers from the last to the first, so the first container's state wins.
fn pod_cells(pod: &Value, now: i64) -> Vec<Value> {
    let init_specs = array(pod, "/spec/initContainers");
    // Sidecars (init containers with restartPolicy Always) count as containers.
    let is_sidecar = |container_name: &str| {
        init_specs.iter().any(|spec| {
            text(spec, "/name") == container_name && text(spec, "/restartPolicy") == "Always"
        })
    };
    let sidecars = init_specs
        .iter()
        .filter(|spec| text(spec, "/restartPolicy") == "Always")
        .count();
    let total = array(pod, "/spec/containers").len() + sidecars;
    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut last_restart: Option<i64> = None;
    let mut last_sidecar_restart: Option<i64> = None;
    let later = |current: Option<i64>, candidate: Option<i64>| match (current, candidate) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };

    let phase = text(pod, "/status/phase");
    let mut reason = match text(pod, "/status/reason") {
        "" => phase.to_owned(),
        given => given.to_owned(),
    };
    let conditions = array(pod, "/status/conditions");
    if conditions
        .iter()
        .any(|c| text(c, "/type") == "PodScheduled" && text(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".to_owned();
    }

    let mut initializing = false;
    let init_statuses = array(pod, "/status/initContainerStatuses");
    for (index, status) in init_statuses.iter().enumerate() {
        let count = int(status, "/restartCount");
        let finished = timestamp(status, "/lastState/terminated/finishedAt");
        restarts += count;
        last_restart = later(last_restart, finished);
        let sidecar = is_sidecar(text(status, "/name"));
        if sidecar {
            sidecar_restarts += count;
            last_sidecar_restart = later(last_sidecar_restart, finished);
        }
        let terminated = status.pointer("/state/terminated").filter(|t| !t.is_null());
        let waiting_reason = text(status, "/state/waiting/reason");
        if terminated.is_some_and(|t| int(t, "/exitCode") == 0) {
            continue;
        }
        if sidecar && status.get("started").and_then(Value::as_bool) == Some(true) {
            if status.get("ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        reason = if let Some(terminated) = terminated {
            match (text(terminated, "/reason"), int(terminated, "/signal")) {
                ("", 0) => format!("Init:ExitCode:{}", int(terminated, "/exitCode")),
                ("", signal) => format!("Init:Signal:{signal}"),
                (given, _) => format!("Init:{given}"),
            }
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{index}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    let initialized = conditions
        .iter()
        .any(|c| text(c, "/type") == "Initialized" && text(c, "/status") == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for status in array(pod, "/status/containerStatuses").iter().rev() {
            restarts += int(status, "/restartCount");
            last_restart = later(
                last_restart,
                timestamp(status, "/lastState/terminated/finishedAt"),
            );
            let terminated = status.pointer("/state/terminated").filter(|t| !t.is_null());
            let waiting_reason = text(status, "/state/waiting/reason");
            let running = status
                .pointer("/state/running")
                .is_some_and(|r| !r.is_null());
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_owned();
            } else if let Some(terminated) = terminated {
                reason = match (text(terminated, "/reason"), int(terminated, "/signal")) {
                    ("", 0) => format!("ExitCode:{}", int(terminated, "/exitCode")),
                    ("", signal) => format!("Signal:{signal}"),
                    (given, _) => given.to_owned(),
                };
            } else if status.get("ready").and_then(Value::as_bool) == Some(true) && running {
                has_running = true;
                ready += 1;
            }
        }
        // A pod whose containers partly completed but one still runs is not Completed.
        if reason == "Completed" && has_running {
            let pod_ready = conditions
                .iter()
                .any(|c| text(c, "/type") == "Ready" && text(c, "/status") == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.to_owned();
        }
    }

    let deleting = pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null());
    if deleting && text(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".to_owned();
    } else if deleting && !matches!(phase, "Succeeded" | "Failed") {
        reason = "Terminating".to_owned();
    }

    let restarts_cell = match last_restart {
        Some(at) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(at), now)),
        Some(_) | None => restarts.to_string(),
    };

    // The real server fills status.podIPs from status.podIP; objects seeded here may
    // carry only the latter.
    let pod_ip = array(pod, "/status/podIPs")
        .first()
        .map(|ip| text(ip, "/ip"))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| text(pod, "/status/podIP"));
    let gates = array(pod, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_owned()
    } else {
        let true_gates = gates
            .iter()
            .filter(|gate| {
                let wanted = text(gate, "/conditionType");
                conditions
                    .iter()
                    .find(|c| text(c, "/type") == wanted)
                    .is_some_and(|c| text(c, "/status") == "True")
            })
            .count();
        format!("{true_gates}/{}", gates.len())
    };
    vec![
        json!(name(pod)),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        json!(age(pod, now)),
        json!(or_none(pod_ip)),
        json!(or_none(text(pod, "/spec/nodeName"))),
        json!(or_none(text(pod, "/status/nominatedNodeName"))),
        json!(readiness_gates),
    ]
}

fn or_none(value: &str) -> &str {
    if value.is_empty() { "<none>" } else { value }
}

fn or_unknown(value: &str) -> &str {
    if value.is_empty() { "<unknown>" } else { value }
}

fn node_cells(node: &Value, now: i64) -> Vec<Value> {
    let ready = array(node, "/status/conditions")
        .iter()
        .find(|c| text(c, "/type") == "Ready");
    let mut status = vec![match ready {
        Some(condition) if text(condition, "/status") == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled");
    }
    // Roles come from node-role.kubernetes.io/<role> label keys and the value of the
    // kubernetes.io/role label, sorted and without duplicates.
    let mut roles: Vec<&str> = Vec::new();
    if let Some(labels) = node.pointer("/metadata/labels").and_then(Value::as_object) {
        for (key, value) in labels {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role);
                }
            } else if key == "kubernetes.io/role"
                && let Some(role) = value.as_str().filter(|r| !r.is_empty())
            {
                roles.push(role);
            }
        }
    }
    roles.sort_unstable();
    roles.dedup();
    let address = |kind: &str| {
        array(node, "/status/addresses")
            .iter()
            .find(|a| text(a, "/type") == kind)
            .map(|a| text(a, "/address"))
            .unwrap_or("<none>")
    };
    vec![
        json!(name(node)),
        json!(status.join(",")),
        json!(if roles.is_empty() {
            "<none>".to_owned()
        } else {
            roles.join(",")
        }),
        json!(age(node, now)),
        json!(text(node, "/status/nodeInfo/kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(or_unknown(text(node, "/status/nodeInfo/osImage"))),
        json!(or_unknown(text(node, "/status/nodeInfo/kernelVersion"))),
        json!(or_unknown(text(
            node,
            "/status/nodeInfo/containerRuntimeVersion"
        ))),
    ]
}

fn event_cells(event: &Value, now: i64) -> Vec<Value> {
    let first_seen = match timestamp(event, "/firstTimestamp") {
        Some(at) => since(Some(at), now),
        None => since(timestamp(event, "/eventTime"), now),
    };
    let mut last_seen = match timestamp(event, "/lastTimestamp") {
        Some(at) => since(Some(at), now),
        None => first_seen.clone(),
    };
    let mut count = int(event, "/count");
    if event.get("series").is_some_and(|s| !s.is_null()) {
        last_seen = since(timestamp(event, "/series/lastObservedTime"), now);
        count = int(event, "/series/count");
    } else if count == 0 {
        // Events of the new API that happened once carry no count.
        count = 1;
    }
    let kind = text(event, "/involvedObject/kind").to_lowercase();
    let target = match text(event, "/involvedObject/name") {
        "" => kind,
        involved => format!("{kind}/{involved}"),
    };
    let component = match text(event, "/source/component") {
        "" => text(event, "/reportingComponent"),
        given => given,
    };
    let instance = match text(event, "/source/host") {
        "" => text(event, "/reportingInstance"),
        given => given,
    };
    let source = if instance.is_empty() {
        component.to_owned()
    } else {
        format!("{component}, {instance}")
    };
    vec![
        json!(last_seen),
        json!(text(event, "/type")),
        json!(text(event, "/reason")),
        json!(target),
        json!(text(event, "/involvedObject/fieldPath")),
        json!(source),
        json!(text(event, "/message").trim()),
        json!(first_seen),
        json!(count),
        json!(name(event)),
    ]
}

/// `spec.replicas`, which the real server defaults to 1.
fn desired_replicas(object: &Value) -> i64 {
    object
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn deployment_cells(deployment: &Value, now: i64) -> Vec<Value> {
    let (containers, images) = containers_and_images(
        deployment
            .pointer("/spec/template/spec")
            .unwrap_or(&Value::Null),
    );
    let selector = selector_string(deployment.pointer("/spec/selector"))
        .unwrap_or_else(|| "<invalid>".to_owned());
    vec![
        json!(name(deployment)),
        json!(format!(
            "{}/{}",
            int(deployment, "/status/readyReplicas"),
            desired_replicas(deployment)
        )),
        json!(int(deployment, "/status/updatedReplicas")),
        json!(int(deployment, "/status/availableReplicas")),
        json!(age(deployment, now)),
        json!(containers),
        json!(images),
        json!(selector),
    ]
}

fn replica_set_cells(replica_set: &Value, now: i64) -> Vec<Value> {
    let (containers, images) = containers_and_images(
        replica_set
            .pointer("/spec/template/spec")
            .unwrap_or(&Value::Null),
    );
    let selector = match selector_string(replica_set.pointer("/spec/selector")) {
        Some(rendered) if rendered.is_empty() => "<none>".to_owned(),
        Some(rendered) => rendered,
        None => "<error>".to_owned(),
    };
    vec![
        json!(name(replica_set)),
        json!(desired_replicas(replica_set)),
        json!(int(replica_set, "/status/replicas")),
        json!(int(replica_set, "/status/readyReplicas")),
        json!(age(replica_set, now)),
        json!(containers),
        json!(images),
        json!(selector),
    ]
}

fn role_binding_cells(binding: &Value, now: i64) -> Vec<Value> {
    let (mut users, mut groups, mut service_accounts) = (Vec::new(), Vec::new(), Vec::new());
    // Subjects of other kinds are collected apart and, as by the real printer, not shown.
    let mut others = Vec::new();
    for subject in array(binding, "/subjects") {
        let subject_name = text(subject, "/name");
        let (list, entry) = match text(subject, "/kind") {
            "User" => (&mut users, subject_name.to_owned()),
            "Group" => (&mut groups, subject_name.to_owned()),
            "ServiceAccount" => (
                &mut service_accounts,
                format!("{}/{subject_name}", text(subject, "/namespace")),
            ),
            other => (&mut others, format!("{other}/{subject_name}")),
        };
        list.push(entry);
    }
    vec![
        json!(name(binding)),
        json!(format!(
            "{}/{}",
            text(binding, "/roleRef/kind"),
            text(binding, "/roleRef/name")
        )),
        json!(age(binding, now)),
        json!(users.join(", ")),
        json!(groups.join(", ")),
        json!(service_accounts.join(", ")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_apimachinery() {
        let cases = [
            (-5_000, "<invalid>"),
            (-1_500, "0s"),
            (0, "0s"),
            (59_999, "59s"),
            (119_000, "119s"),
            (120_000, "2m"),
            (150_000, "2m30s"),
            (600_000, "10m"),
            (3 * 3_600_000 - 1, "179m"),
            (3 * 3_600_000, "3h"),
            (3 * 3_600_000 + 5 * 60_000, "3h5m"),
            (8 * 3_600_000, "8h"),
            (47 * 3_600_000, "47h"),
            (51 * 3_600_000, "2d3h"),
            (72 * 3_600_000, "3d"),
            (10 * 86_400_000, "10d"),
            (800 * 86_400_000, "2y70d"),
            (730 * 86_400_000, "2y"),
            (3_000 * 86_400_000, "8y"),
        ];
        for (millis, expected) in cases {
            assert_eq!(human_duration_millis(millis), expected, "{millis} ms");
        }
    }

    #[test]
    fn accept_headers_pick_the_first_producible_form() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(negotiate(Some(kubectl)), Some(TableVersion::V1));
        assert_eq!(
            negotiate(Some(
                "application/json;as=Table;v=v1beta1;g=meta.k8s.io, application/json"
            )),
            Some(TableVersion::V1Beta1)
        );
        assert_eq!(negotiate(Some("application/json")), None);
        assert_eq!(negotiate(None), None);
        assert_eq!(
            negotiate(Some(
                "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io,application/json"
            )),
            None
        );
    }

    fn pod(status: Value) -> Value {
        json!({
            "metadata": {"name": "aws-node-1", "creationTimestamp": clock::format_rfc3339(1_000)},
            "spec": {"nodeName": "node-a", "containers": [{"name": "aws-node"}, {"name": "aws-eks-nodeagent"}]},
            "status": status,
        })
    }

    #[test]
    fn pod_cells_aggregate_container_states() {
        let now = 1_000_000 + 330_000;
        let running = pod(json!({
            "phase": "Running",
            "podIP": "10.0.0.7",
            "containerStatuses": [
                {"name": "aws-node", "ready": true, "restartCount": 2, "state": {"running": {}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": clock::format_rfc3339(1_270)}}},
                {"name": "aws-eks-nodeagent", "ready": true, "restartCount": 0, "state": {"running": {}}},
            ],
        }));
        assert_eq!(
            pod_cells(&running, now),
            vec![
                json!("aws-node-1"),
                json!("2/2"),
                json!("Running"),
                json!("2 (60s ago)"),
                json!("5m30s"),
                json!("10.0.0.7"),
                json!("node-a"),
                json!("<none>"),
                json!("<none>"),
            ]
        );
        let crashing = pod(json!({
            "phase": "Running",
            "containerStatuses": [
                {"name": "aws-node", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
                {"name": "aws-eks-nodeagent", "ready": true, "restartCount": 0, "state": {"running": {}}},
            ],
        }));
        let cells = pod_cells(&crashing, now);
        assert_eq!(cells[1], json!("1/2"));
        assert_eq!(cells[2], json!("CrashLoopBackOff"));
        assert_eq!(cells[3], json!("0"));
        assert_eq!(cells[5], json!("<none>"));
        let initializing = json!({
            "metadata": {"name": "p"},
            "spec": {"initContainers": [{"name": "init"}], "containers": [{"name": "c"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "init", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}
            ]},
        });
        assert_eq!(pod_cells(&initializing, now)[2], json!("Init:0/1"));
    }

    #[test]
    fn deployment_and_binding_cells() {
        let deployment = json!({
            "metadata": {"name": "cni-metrics-helper"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"k8s-app": "cni-metrics-helper"},
                             "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]},
                "template": {"spec": {"containers": [
                    {"name": "helper", "image": "example/helper:1"},
                    {"name": "sidecar", "image": "example/sidecar:2"},
                ]}},
            },
            "status": {"readyReplicas": 1, "updatedReplicas": 2, "availableReplicas": 1},
        });
        let cells = deployment_cells(&deployment, 0);
        assert_eq!(cells[1], json!("1/2"));
        assert_eq!(cells[2], json!(2));
        assert_eq!(cells[4], json!("<unknown>"));
        assert_eq!(cells[5], json!("helper,sidecar"));
        assert_eq!(cells[6], json!("example/helper:1,example/sidecar:2"));
        assert_eq!(cells[7], json!("k8s-app=cni-metrics-helper,tier in (a,b)"));

        let binding = json!({
            "metadata": {"name": "b"},
            "roleRef": {"kind": "ClusterRole", "name": "reader"},
            "subjects": [
                {"kind": "ServiceAccount", "name": "sa", "namespace": "kube-system"},
                {"kind": "User", "name": "alice"},
                {"kind": "Group", "name": "devs"},
            ],
        });
        let cells = role_binding_cells(&binding, 0);
        assert_eq!(cells[1], json!("ClusterRole/reader"));
        assert_eq!(
            cells[3..],
            [json!("alice"), json!("devs"), json!("kube-system/sa")]
        );
    }

    #[test]
    fn every_printer_fills_every_column() {
        for rt in RESOURCE_TYPES {
            let object = json!({"metadata": {"name": "x"}});
            assert_eq!(
                rt.printer.cells(&object, 0).len(),
                rt.printer.columns().len(),
                "{}",
                rt.kind
            );
        }
    }

    #[test]
    fn tables_embed_partial_metadata_by_default() {
        let list = json!({
            "metadata": {"resourceVersion": "42", "continue": "1"},
            "items": [{"metadata": {"name": "cfg", "namespace": "kube-system"}, "data": {"a": "b"}}],
        });
        let config_map = RESOURCE_TYPES
            .iter()
            .position(|rt| rt.kind == "ConfigMap")
            .expect("config maps are served");
        let options = TableOptions {
            version: TableVersion::V1,
            include: IncludeObject::Metadata,
        };
        let table = list_table(config_map, &list, options);
        assert_eq!(table["kind"], "Table");
        assert_eq!(
            table["metadata"],
            json!({"resourceVersion": "42", "continue": "1"})
        );
        assert_eq!(table["columnDefinitions"][1]["name"], "Data");
        assert_eq!(table["rows"][0]["cells"][1], 1);
        assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(
            table["rows"][0]["object"]["metadata"]["namespace"],
            "kube-system"
        );
        let object = object_table(
            config_map,
            &list["items"][0],
            TableOptions {
                include: IncludeObject::Object,
                ..options
            },
            false,
        );
        assert_eq!(object["columnDefinitions"], Value::Null);
        assert_eq!(object["rows"][0]["object"]["kind"], "ConfigMap");
    }
}
