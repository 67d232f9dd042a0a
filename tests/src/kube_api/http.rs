//! The HTTP side of the fake API server: routing of API paths, request parsing, JSON
//! responses, watch streams and the pods proxy.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};

use super::access;
use super::discovery;
use super::errors::ApiError;
use super::openapi;
use super::protobuf;
use super::rbac::{self, Requester};
use super::request_info::{self, percent_decode};
use super::resources::{self, RESOURCE_TYPES};
use super::scale;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{
    EventType, ListQuery, ObjectKey, PatchBody, State, Target, WatchRecord, WriteContext,
};
use super::table::{self, IncludeObject, TableOptions};
use super::validation::{self, FieldValidation};
use super::{ClientFaultBehaviour, LoggedRequest};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// The largest request body accepted; real objects are far smaller.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How long a watch without `timeoutSeconds` stays open.
const DEFAULT_WATCH_SECONDS: u64 = 1800;

/// How often a watch that allows bookmarks receives one.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);

/// Everything the request handlers share.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub proxy_client: Client<HttpConnector, Full<Bytes>>,
    /// Where the pods proxy connects instead of each pod's IP, with the pod's `IP:port` as
    /// the Host header: a fleet too large for one listener per node serves every node from
    /// one listener ([`crate::fleet::NodeListeners::Shared`]).
    pub proxy_route: std::sync::OnceLock<std::net::SocketAddr>,
    /// `host:port` of this server, for the `/api` document.
    pub server_address: String,
    /// Turns true (or its sender goes away) when the server shuts down; long-running
    /// tasks such as watches end then.
    pub shutdown: watch::Receiver<bool>,
    /// Bumped whenever the client faults change, to wake the requests they hold.
    pub client_fault_changes: watch::Sender<u64>,
}

impl Shared {
    /// Locks the state. A panic while the lock was held cannot leave the state
    /// half-written in a way that matters to a test fake, so poisoning is ignored.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The decoded query string. kube-rs sends `?&a=b`; empty pairs are skipped.
#[derive(Debug, Default)]
struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    fn parse(raw: Option<&str>) -> Query {
        let pairs = raw
            .map(|raw| {
                form_urlencoded::parse(raw.as_bytes())
                    .filter(|(key, _)| !key.is_empty())
                    .map(|(key, value)| (key.into_owned(), value.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Query { pairs }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn is_true(&self, name: &str) -> bool {
        matches!(self.get(name), Some("true" | "1"))
    }
}

/// One request with its body read, plus what the log needs to know about it.
struct ApiRequest {
    method: Method,
    path: String,
    raw_query: Option<String>,
    query: Query,
    content_type: Option<String>,
    /// The `Accept` header: kubectl asks for a Table when it prints for people, and
    /// the OpenAPI v2 document is served in JSON only.
    accept: Option<String>,
    user_agent: Option<String>,
    body: Bytes,
    /// Set by handlers that find out the request is a dry run.
    dry_run: bool,
}

impl ApiRequest {
    /// The media type without parameters, lower-cased.
    fn media_type(&self) -> String {
        self.content_type
            .as_deref()
            .and_then(|ct| ct.split(';').next())
            .map(|ct| ct.trim().to_ascii_lowercase())
            .unwrap_or_default()
    }

    /// The field manager of a non-apply write: the query parameter, else the product
    /// token of the User-Agent (as the real server does), else `unknown`.
    fn update_manager(&self) -> String {
        if let Some(manager) = self.query.get("fieldManager").filter(|m| !m.is_empty()) {
            return manager.to_owned();
        }
        self.user_agent
            .as_deref()
            .and_then(|agent| agent.split('/').next())
            .map(str::trim)
            .filter(|agent| !agent.is_empty())
            .unwrap_or("unknown")
            .to_owned()
    }

    /// Whether the answer is to be a Table (server-side printing), and in what form.
    fn table_options(&self) -> Result<Option<TableOptions>, ApiError> {
        match table::negotiate(self.accept.as_deref()) {
            Some(version) => Ok(Some(TableOptions {
                version,
                include: IncludeObject::parse(self.query.get("includeObject"))?,
            })),
            None => Ok(None),
        }
    }

    /// Parses `dryRun`; only `All` is a valid value.
    fn parse_dry_run(&mut self) -> Result<bool, ApiError> {
        match self.query.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => {
                self.dry_run = true;
                Ok(true)
            }
            Some(other) => Err(ApiError::new(
                422,
                "Invalid",
                format!("dryRun: Unsupported value: {other:?}: supported values: \"All\""),
            )),
        }
    }

    /// The settings of a create, update or patch: dry run, field manager and field
    /// validation, each parsed from the query as the real server does.
    fn write_context(&mut self) -> Result<WriteContext, ApiError> {
        let dry_run = self.parse_dry_run()?;
        let mut context = WriteContext::new(self.update_manager(), dry_run);
        context.field_validation = FieldValidation::parse(self.query.get("fieldValidation"))?;
        Ok(context)
    }

    /// The body as JSON, or as YAML or protobuf when the content type says so.
    fn body_value(&self) -> Result<Value, ApiError> {
        let media_type = self.media_type();
        if media_type == protobuf::MEDIA_TYPE {
            protobuf::decode(&self.body)
        } else if media_type.contains("yaml") {
            parse_yaml(&self.body)
        } else if media_type.is_empty() || media_type.contains("json") {
            serde_json::from_slice(&self.body).map_err(|error| {
                ApiError::bad_request(format!("the request body is not valid JSON: {error}"))
            })
        } else {
            Err(unsupported_media_type(&media_type))
        }
    }
}

fn parse_yaml(body: &[u8]) -> Result<Value, ApiError> {
    let parsed: serde_yaml::Value = serde_yaml::from_slice(body).map_err(|error| {
        ApiError::bad_request(format!(
            "the request body is not valid YAML or JSON: {error}"
        ))
    })?;
    serde_json::to_value(parsed).map_err(|error| {
        ApiError::bad_request(format!(
            "the request body cannot be represented as JSON: {error}"
        ))
    })
}

pub(crate) fn unsupported_media_type(media_type: &str) -> ApiError {
    ApiError::new(
        415,
        "UnsupportedMediaType",
        format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml; got {media_type:?}"
        ),
    )
}

/// Serves one HTTP request: fault injection, routing, and the request log.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let (parts, body) = request.into_parts();
    let header_text = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let message = format!("the request body could not be read: {error}");
            return Ok(error_response(&ApiError::new(
                413,
                "RequestEntityTooLarge",
                message,
            )));
        }
    };
    let mut request = ApiRequest {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        raw_query: parts.uri.query().map(str::to_owned),
        query: Query::parse(parts.uri.query()),
        content_type: header_text(header::CONTENT_TYPE),
        accept: header_text(header::ACCEPT),
        user_agent: header_text(header::USER_AGENT),
        body,
        dry_run: false,
    };
    let token = header_text(header::AUTHORIZATION)
        .and_then(|value| value.strip_prefix("Bearer ").map(str::to_owned));
    let injected = match wait_out_client_fault(&shared, token.as_deref(), &request.path).await {
        Some(status) => Some(status),
        None => take_fault(&shared, &request.method, &request.path),
    };
    let response = match injected {
        Some(status) => error_response(&ApiError::injected(status)),
        None => match authorize(&shared, &parts.headers, &request) {
            Ok(requester) => route(&shared, &mut request, &requester).await,
            Err(error) => error_response(&error),
        },
    };
    let field_manager = request.query_field_manager();
    let entry = LoggedRequest {
        method: request.method,
        path: request.path,
        query: request.query.pairs,
        content_type: request.content_type,
        field_manager,
        dry_run: request.dry_run,
        status: response.status().as_u16(),
        token,
    };
    shared.lock().requests.push(entry);
    Ok(response)
}

impl ApiRequest {
    fn query_field_manager(&self) -> Option<String> {
        self.query.get("fieldManager").map(str::to_owned)
    }
}

/// Finds out who makes the request (impersonation headers) and, for an impersonated
/// user, whether RBAC allows it; the sandbox's own user may do anything.
fn authorize(
    shared: &Shared,
    headers: &http::HeaderMap,
    request: &ApiRequest,
) -> Result<Requester, ApiError> {
    let requester = rbac::requester(headers)?;
    match &requester {
        Requester::Admin => {}
        Requester::Impersonated(user) => {
            let info = request_info::resolve(&request.method, &request.path, &request.query.pairs);
            let state = shared.lock();
            if !rbac::authorize(&state, user, &info).allowed {
                return Err(rbac::forbidden(user, &info));
            }
            if rbac::writes_rbac(&info) {
                let write = rbac::RbacWrite {
                    method: &request.method,
                    media_type: &request.media_type(),
                    body: request.body_value().ok(),
                    raw: &request.body,
                };
                if let Some(object) = rbac::written_object(&state, &info, write) {
                    rbac::check_escalation(&state, user, &info, &object)?;
                }
            }
        }
    }
    Ok(requester)
}

/// Applies the client fault matching this request, if any: holds a hung request until the
/// faults change (or the server shuts down, answering 503), and returns the status to fail
/// with, or `None` to serve the request.
async fn wait_out_client_fault(shared: &Shared, token: Option<&str>, path: &str) -> Option<u16> {
    let token = token?;
    let mut changes = shared.client_fault_changes.subscribe();
    let mut shutdown = shared.shutdown.clone();
    loop {
        // Marked seen before reading the faults, so a change made after the read wakes us.
        changes.borrow_and_update();
        let behaviour = shared
            .lock()
            .client_faults
            .iter()
            .find(|fault| fault.token == token && path.starts_with(&fault.path_prefix))
            .map(|fault| fault.behaviour);
        match behaviour {
            None => return None,
            Some(ClientFaultBehaviour::Fail(status)) => return Some(status),
            Some(ClientFaultBehaviour::Hang) => {
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = shutdown.wait_for(|stopped| *stopped) => return Some(503),
                }
            }
        }
    }
}

/// Consumes one injected failure matching this request, if any.
fn take_fault(shared: &Shared, method: &Method, path: &str) -> Option<u16> {
    let mut state = shared.lock();
    let fault = state.faults.iter_mut().find(|fault| {
        fault.remaining > 0 && fault.method == method && path.starts_with(&fault.path_prefix)
    })?;
    fault.remaining -= 1;
    let status = fault.status;
    state.faults.retain(|fault| fault.remaining > 0);
    Some(status)
}

async fn route(
    shared: &Arc<Shared>,
    request: &mut ApiRequest,
    requester: &Requester,
) -> Response<ResponseBody> {
    let path = request.path.clone();
    let mut segments: Vec<&str> = path.split('/').skip(1).collect();
    let is_proxy =
        segments.len() > 6 && segments.get(5) == Some(&"pods") && segments.get(7) == Some(&"proxy");
    if !is_proxy && segments.last() == Some(&"") {
        segments.pop();
    }
    let result = match segments.as_slice() {
        ["version"] => get_only(request, || Ok(discovery::version())),
        ["healthz" | "livez" | "readyz", ..] => return text_response(StatusCode::OK, "ok"),
        ["api"] => get_only(request, || {
            Ok(discovery::core_versions(&shared.server_address))
        }),
        ["apis"] => get_only(request, || Ok(discovery::group_list())),
        ["openapi", "v2"] => return openapi_v2(request),
        ["openapi", "v3"] => get_only(request, || Ok(openapi::v3_index())),
        ["openapi", "v3", rest @ ..] => return openapi_v3(request, &rest.join("/")),
        ["apis", group] => get_only(request, || {
            discovery::group(group).ok_or_else(|| ApiError::path_not_found(&path))
        }),
        ["api", "v1"] => get_only(request, || {
            discovery::resource_list("", "v1").ok_or_else(|| ApiError::path_not_found(&path))
        }),
        ["apis", group, version] => get_only(request, || {
            discovery::resource_list(group, version).ok_or_else(|| ApiError::path_not_found(&path))
        }),
        [
            "api",
            "v1",
            "namespaces",
            namespace,
            "pods",
            pod,
            "proxy",
            rest @ ..,
        ] => {
            let namespace = percent_decode(namespace);
            let pod = percent_decode(pod);
            let rest = rest.join("/");
            return proxy(shared, request, &namespace, &pod, &rest).await;
        }
        ["apis", access::GROUP, access::VERSION, access::PLURAL] => {
            access_review(shared, request, requester)
        }
        ["apis", access::GROUP, access::VERSION, access::RULES_PLURAL] => {
            rules_review(shared, request, requester)
        }
        [
            "apis",
            access::AUTHENTICATION_GROUP,
            access::VERSION,
            access::WHOAMI_PLURAL,
        ] => whoami(request, requester),
        ["api", "v1", rest @ ..] => resource(shared, request, "", "v1", rest),
        ["apis", group, version, rest @ ..] => resource(shared, request, group, version, rest),
        _ => Err(ApiError::path_not_found(&path)),
    };
    match result {
        Ok(response) => response,
        Err(error) => error_response(&error),
    }
}

/// `POST .../selfsubjectaccessreviews`: answers whether the caller may do something.
/// Nothing is stored, so a dry run answers the same.
fn access_review(
    shared: &Arc<Shared>,
    request: &mut ApiRequest,
    requester: &Requester,
) -> Result<Response<ResponseBody>, ApiError> {
    if request.method != Method::POST {
        return Err(ApiError::method_not_allowed(&request.method));
    }
    request.parse_dry_run()?;
    let body = request.body_value()?;
    let answer = match requester {
        Requester::Admin => {
            let denials = shared.lock().denials.clone();
            access::review(body, &denials)?
        }
        Requester::Impersonated(user) => access::review_as(body, &shared.lock(), user)?,
    };
    Ok(json_response(StatusCode::CREATED, &answer))
}

/// `POST .../selfsubjectreviews`: tells the caller who it is.
fn whoami(request: &ApiRequest, requester: &Requester) -> Result<Response<ResponseBody>, ApiError> {
    if request.method != Method::POST {
        return Err(ApiError::method_not_allowed(&request.method));
    }
    let user = requester.user();
    Ok(json_response(StatusCode::CREATED, &access::whoami(&user)))
}

/// `POST .../selfsubjectrulesreviews`: lists what the caller may do in a namespace.
fn rules_review(
    shared: &Arc<Shared>,
    request: &mut ApiRequest,
    requester: &Requester,
) -> Result<Response<ResponseBody>, ApiError> {
    if request.method != Method::POST {
        return Err(ApiError::method_not_allowed(&request.method));
    }
    request.parse_dry_run()?;
    let body = request.body_value()?;
    let user = requester.user();
    let answer = access::rules_review(body, &shared.lock(), &user)?;
    Ok(json_response(StatusCode::CREATED, &answer))
}

fn get_only(
    request: &ApiRequest,
    document: impl FnOnce() -> Result<Value, ApiError>,
) -> Result<Response<ResponseBody>, ApiError> {
    if request.method != Method::GET {
        return Err(ApiError::method_not_allowed(&request.method));
    }
    Ok(json_response(StatusCode::OK, &document()?))
}

/// `/openapi/v3/api/v1` or `/openapi/v3/apis/{group}/{version}`. A request that names
/// the document's current hash may be cached for good, as the real server allows.
fn openapi_v3(request: &ApiRequest, key: &str) -> Response<ResponseBody> {
    if request.method != Method::GET {
        return error_response(&ApiError::method_not_allowed(&request.method));
    }
    let Some((body, hash)) = openapi::v3_document(key) else {
        return error_response(&ApiError::path_not_found(&request.path));
    };
    let cache = if request.query.get("hash") == Some(hash) {
        "public, immutable"
    } else {
        "no-cache, private"
    };
    let mut response = bytes_response(StatusCode::OK, "application/json", body.as_bytes());
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

/// `/openapi/v2`, in JSON or protobuf: the first of the client's `Accept` media types the
/// server has (client-go asks for protobuf only), else 406 as the real server answers.
fn openapi_v2(request: &ApiRequest) -> Response<ResponseBody> {
    if request.method != Method::GET {
        return error_response(&ApiError::method_not_allowed(&request.method));
    }
    let accept = request.accept.as_deref().unwrap_or("*/*");
    for media in accept.split(',') {
        let media = media.split(';').next().unwrap_or_default().trim();
        if matches!(media, "application/json" | "application/*" | "*/*" | "") {
            return bytes_response(
                StatusCode::OK,
                "application/json",
                openapi::v2_document().as_bytes(),
            );
        }
        if media == openapi::V2_PROTOBUF_MEDIA_TYPE || media == openapi::V2_PROTOBUF_CONTENT_TYPE {
            return bytes_response(
                StatusCode::OK,
                openapi::V2_PROTOBUF_CONTENT_TYPE,
                openapi::v2_protobuf(),
            );
        }
    }
    error_response(&ApiError::new(
        406,
        "NotAcceptable",
        format!(
            "only the following media types are accepted: application/json, {}",
            openapi::V2_PROTOBUF_MEDIA_TYPE
        ),
    ))
}

/// What a resource path names.
enum PathTarget {
    Collection,
    Object(String),
    /// The `/status` subresource of the named object.
    Status(String),
    /// The `/scale` subresource of the named Deployment or ReplicaSet.
    Scale(String),
}

/// Routes `/api/v1/...` and `/apis/{group}/{version}/...` below the version.
fn resource(
    shared: &Arc<Shared>,
    request: &mut ApiRequest,
    group: &str,
    version: &str,
    segments: &[&str],
) -> Result<Response<ResponseBody>, ApiError> {
    let not_found = || ApiError::path_not_found(&request.path);
    let namespaced_plural = |plural: &str| {
        resources::by_plural(group, version, plural)
            .filter(|index| RESOURCE_TYPES[*index].namespaced)
    };
    let (namespace, rest) = match segments {
        ["namespaces", namespace, plural, rest @ ..] if namespaced_plural(plural).is_some() => (
            Some(percent_decode(namespace)),
            std::iter::once(*plural)
                .chain(rest.iter().copied())
                .collect::<Vec<_>>(),
        ),
        _ => (None, segments.to_vec()),
    };
    let Some((plural, rest)) = rest.split_first() else {
        return Err(not_found());
    };
    let type_index = resources::by_plural(group, version, plural).ok_or_else(not_found)?;
    let rt = &RESOURCE_TYPES[type_index];
    let target = match rest {
        [] => PathTarget::Collection,
        [name] => PathTarget::Object(percent_decode(name)),
        [name, "status"] if rt.has_status => PathTarget::Status(percent_decode(name)),
        [name, "scale"] if scale::served(rt) => PathTarget::Scale(percent_decode(name)),
        _ => return Err(not_found()),
    };
    // A namespaced type is reachable without a namespace only to list or watch across
    // all namespaces.
    if rt.namespaced
        && namespace.is_none()
        && !(matches!(target, PathTarget::Collection) && request.method == Method::GET)
    {
        return Err(not_found());
    }
    let namespace_text = namespace.clone().unwrap_or_default();
    match target {
        PathTarget::Collection => match request.method {
            Method::GET if request.query.is_true("watch") => start_watch(
                shared,
                type_index,
                list_query(request, namespace)?,
                &request.query,
                request.table_options()?,
            ),
            Method::GET => {
                let query = list_query(request, namespace)?;
                let table_options = request.table_options()?;
                match table_options {
                    Some(options) => {
                        let list = shared.lock().list(type_index, &query)?;
                        let table = table::list_table(type_index, &list, options);
                        Ok(json_response(StatusCode::OK, &table))
                    }
                    None => {
                        let bytes = shared.lock().list_bytes(type_index, &query)?;
                        Ok(json_bytes_response(StatusCode::OK, bytes))
                    }
                }
            }
            Method::POST => {
                let mut context = request.write_context()?;
                let body = request.body_value()?;
                let created =
                    shared
                        .lock()
                        .create(type_index, &namespace_text, body, &mut context)?;
                Ok(with_warnings(
                    json_response(StatusCode::CREATED, &created),
                    &context.warnings,
                ))
            }
            Method::DELETE => {
                let options = delete_options(request);
                let dry_run = delete_dry_run(request, options.as_ref())?;
                let query = list_query(request, namespace)?;
                let mut state = shared.lock();
                let keys: Vec<ObjectKey> = state
                    .matching(type_index, &query)
                    .into_iter()
                    .filter_map(|object| object_key(type_index, object))
                    .collect();
                let mut items = Vec::new();
                for key in keys {
                    items.push(state.delete(&key, dry_run, None)?);
                }
                let list = json!({
                    "kind": format!("{}List", rt.kind),
                    "apiVersion": rt.api_version(),
                    "metadata": {"resourceVersion": state.resource_version.to_string()},
                    "items": items,
                });
                Ok(json_response(StatusCode::OK, &list))
            }
            _ => Err(ApiError::method_not_allowed(&request.method)),
        },
        PathTarget::Object(name) => object(
            shared,
            request,
            type_index,
            &namespace_text,
            &name,
            Target::Main,
        ),
        PathTarget::Status(name) => object(
            shared,
            request,
            type_index,
            &namespace_text,
            &name,
            Target::Status,
        ),
        PathTarget::Scale(name) => scale_subresource(
            shared,
            request,
            ObjectKey {
                type_index,
                namespace: namespace_text,
                name,
            },
        ),
    }
}

/// GET, PUT or PATCH of a Deployment's or ReplicaSet's Scale ([`scale`]).
fn scale_subresource(
    shared: &Arc<Shared>,
    request: &mut ApiRequest,
    key: ObjectKey,
) -> Result<Response<ResponseBody>, ApiError> {
    if request.method == Method::GET {
        let object = shared.lock().get(&key)?;
        return Ok(json_response(StatusCode::OK, &scale::of(&object)));
    }
    let mut context = request.write_context()?;
    let write = match request.method {
        Method::PUT => scale::Write::Replace(request.body_value()?),
        Method::PATCH => scale::Write::Patch {
            media_type: request.media_type(),
            body: &request.body,
        },
        _ => return Err(ApiError::method_not_allowed(&request.method)),
    };
    let scale = scale::write(&mut shared.lock(), key, write, &mut context)?;
    Ok(with_warnings(
        json_response(StatusCode::OK, &scale),
        &context.warnings,
    ))
}

fn object_key(type_index: usize, object: &Value) -> Option<ObjectKey> {
    Some(ObjectKey {
        type_index,
        namespace: object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        name: object
            .pointer("/metadata/name")
            .and_then(Value::as_str)?
            .to_owned(),
    })
}

/// Handles a request on one object or its status subresource.
fn object(
    shared: &Arc<Shared>,
    request: &mut ApiRequest,
    type_index: usize,
    namespace: &str,
    name: &str,
    target: Target,
) -> Result<Response<ResponseBody>, ApiError> {
    let key = ObjectKey {
        type_index,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    match request.method {
        Method::GET => {
            let table_options = request.table_options()?;
            let found = shared.lock().get(&key)?;
            let answer = match table_options {
                Some(options) => table::object_table(type_index, &found, options, true),
                None => found,
            };
            Ok(json_response(StatusCode::OK, &answer))
        }
        Method::PUT => {
            let mut context = request.write_context()?;
            let body = request.body_value()?;
            let replaced = shared.lock().replace(key, body, &mut context, target)?;
            Ok(with_warnings(
                json_response(StatusCode::OK, &replaced),
                &context.warnings,
            ))
        }
        Method::PATCH => {
            let dry_run = request.parse_dry_run()?;
            let media_type = request.media_type();
            if media_type == "application/apply-patch+yaml" {
                let manager = request
                    .query
                    .get("fieldManager")
                    .unwrap_or_default()
                    .to_owned();
                if manager.is_empty() {
                    return Err(ApiError::new(
                        422,
                        "Invalid",
                        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                    ));
                }
                let force = request.query.is_true("force");
                let config = parse_yaml(&request.body)?;
                let context = WriteContext::new(manager, dry_run);
                let mut state = shared.lock();
                let existed = state.objects.contains_key(&key);
                let applied = state.apply(key, config, &context, force, target)?;
                let status = if existed || dry_run {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                };
                return Ok(json_response(status, &applied));
            }
            let make_patch: fn(Value) -> PatchBody = match media_type.as_str() {
                "application/merge-patch+json" => PatchBody::Merge,
                "application/strategic-merge-patch+json" => PatchBody::Strategic,
                "application/json-patch+json" => PatchBody::Json,
                other => return Err(unsupported_media_type(other)),
            };
            let patch_value: Value = serde_json::from_slice(&request.body).map_err(|error| {
                ApiError::bad_request(format!("the patch is not valid JSON: {error}"))
            })?;
            let mut context = request.write_context()?;
            let patched =
                shared
                    .lock()
                    .patch(key, &make_patch(patch_value), &mut context, target)?;
            Ok(with_warnings(
                json_response(StatusCode::OK, &patched),
                &context.warnings,
            ))
        }
        Method::DELETE if target == Target::Main => {
            let options = delete_options(request);
            let dry_run = delete_dry_run(request, options.as_ref())?;
            let preconditions = options.as_ref().and_then(|o| o.get("preconditions"));
            let deleted = shared.lock().delete(&key, dry_run, preconditions)?;
            Ok(json_response(StatusCode::OK, &deleted))
        }
        _ => Err(ApiError::method_not_allowed(&request.method)),
    }
}

/// A DELETE's DeleteOptions body, when it has one that is JSON.
fn delete_options(request: &ApiRequest) -> Option<Value> {
    serde_json::from_slice(&request.body).ok()
}

/// A DELETE is a dry run through the query or through `dryRun: ["All"]` in the
/// DeleteOptions body, which is where kube-rs puts it.
fn delete_dry_run(request: &mut ApiRequest, options: Option<&Value>) -> Result<bool, ApiError> {
    if request.parse_dry_run()? {
        return Ok(true);
    }
    let in_body = options
        .and_then(|o| o.get("dryRun"))
        .and_then(Value::as_array)
        .is_some_and(|values| values.iter().any(|v| v == "All"));
    request.dry_run |= in_body;
    Ok(in_body)
}

fn list_query(request: &ApiRequest, namespace: Option<String>) -> Result<ListQuery, ApiError> {
    let limit = match request.query.get("limit") {
        Some(text) if !text.is_empty() => Some(
            text.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {text:?}")))?,
        ),
        _ => None,
    };
    Ok(ListQuery {
        namespace,
        labels: LabelSelector::parse(request.query.get("labelSelector").unwrap_or_default())?,
        fields: FieldSelector::parse(request.query.get("fieldSelector").unwrap_or_default())?,
        limit,
        continue_token: request.query.get("continue").map(str::to_owned),
    })
}

/// The watch event a record means for a watch of one type with a namespace and selectors:
/// a modification turns into ADDED or DELETED when the object starts or stops matching.
fn translate(record: &WatchRecord, type_index: usize, query: &ListQuery) -> Option<&'static str> {
    if record.type_index != type_index {
        return None;
    }
    if let Some(namespace) = &query.namespace
        && record.namespace != *namespace
    {
        return None;
    }
    let matches = |object: &Value| query.labels.matches(object) && query.fields.matches(object);
    let now = matches(&record.object);
    match record.event_type {
        EventType::Added | EventType::Deleted => now.then(|| record.event_type.as_str()),
        EventType::Modified => {
            let before = record.previous.as_deref().is_some_and(matches);
            match (before, now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            }
        }
    }
}

/// Encodes the events of one watch, as Tables when the client asked for them. Like the
/// real server, only the first Table carries column definitions: kubectl prints the
/// header once and one line per later event.
struct WatchEncoder {
    type_index: usize,
    table: Option<TableOptions>,
    headers_sent: bool,
}

impl WatchEncoder {
    fn event(&mut self, event_type: &str, object: &Value) -> Bytes {
        match self.table {
            Some(options) => {
                let table =
                    table::object_table(self.type_index, object, options, !self.headers_sent);
                self.headers_sent = true;
                event_line(event_type, &table)
            }
            None => event_line(event_type, object),
        }
    }
}

fn event_line(event_type: &str, object: &Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": event_type, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark_line(type_index: usize, resource_version: u64, initial_events_end: bool) -> Bytes {
    let rt = &RESOURCE_TYPES[type_index];
    let mut metadata = json!({"resourceVersion": resource_version.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": metadata}),
    )
}

fn expired_line(message: String) -> Bytes {
    event_line("ERROR", &ApiError::new(410, "Expired", message).to_status())
}

/// Starts a watch: replays what the requested resourceVersion has not seen, then streams
/// new events as newline-delimited JSON until the timeout, the client leaves, or the
/// server shuts down.
fn start_watch(
    shared: &Arc<Shared>,
    type_index: usize,
    query: ListQuery,
    params: &Query,
    table: Option<TableOptions>,
) -> Result<Response<ResponseBody>, ApiError> {
    let mut encoder = WatchEncoder {
        type_index,
        table,
        headers_sent: false,
    };
    let requested = params.get("resourceVersion").unwrap_or_default();
    let send_initial = params.is_true("sendInitialEvents");
    let bookmarks = params.is_true("allowWatchBookmarks");
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .unwrap_or(DEFAULT_WATCH_SECONDS);
    let mut initial = Vec::new();
    let mut expired = false;
    let (mut events, mut last_seen) = {
        let state = shared.lock();
        let events = state.events.subscribe();
        if send_initial || requested.is_empty() || requested == "0" {
            for object in state.matching(type_index, &query) {
                initial.push(encoder.event("ADDED", object));
            }
            if send_initial {
                initial.push(bookmark_line(type_index, state.resource_version, true));
            }
        } else {
            let since = requested.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("invalid resource version {requested:?}"))
            })?;
            if since < state.history_floor {
                initial.push(expired_line(format!(
                    "too old resource version: {since} ({})",
                    state.history_floor + 1
                )));
                expired = true;
            } else {
                for record in state.history.iter().filter(|r| r.resource_version > since) {
                    if let Some(event_type) = translate(record, type_index, &query) {
                        initial.push(encoder.event(event_type, &record.object));
                    }
                }
            }
        }
        (events, state.resource_version)
    };
    let (sender, receiver) = mpsc::channel::<Bytes>(256);
    let mut shutdown = shared.shutdown.clone();
    tokio::spawn(async move {
        for line in initial {
            if sender.send(line).await.is_err() {
                return;
            }
        }
        if expired {
            return;
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        let mut bookmark_timer = tokio::time::interval_at(
            tokio::time::Instant::now() + BOOKMARK_INTERVAL,
            BOOKMARK_INTERVAL,
        );
        loop {
            let line = tokio::select! {
                () = &mut deadline => break,
                () = stopped(&mut shutdown) => break,
                () = sender.closed() => break,
                _ = bookmark_timer.tick(), if bookmarks => bookmark_line(type_index, last_seen, false),
                received = events.recv() => match received {
                    Ok(record) => {
                        last_seen = last_seen.max(record.resource_version);
                        match translate(&record, type_index, &query) {
                            Some(event_type) => encoder.event(event_type, &record.object),
                            None => continue,
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = sender.send(expired_line(format!("too old resource version: {last_seen}"))).await;
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            };
            if sender.send(line).await.is_err() {
                break;
            }
        }
    });
    let mut response = Response::new(ChannelBody { receiver }.boxed_unsync());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Resolves once the server shuts down (or its shutdown sender is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // Either outcome means the server is stopping; the guard is dropped at once.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// A response body fed line by line from a channel; hyper sends it chunked.
struct ChannelBody {
    receiver: mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.receiver
            .poll_recv(context)
            .map(|line| line.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// `GET /api/v1/namespaces/{ns}/pods/{[scheme:]name[:port]}/proxy/{path}`: forwards to
/// the pod's IP as plain HTTP and passes the answer back unchanged.
async fn proxy(
    shared: &Arc<Shared>,
    request: &ApiRequest,
    namespace: &str,
    pod: &str,
    rest: &str,
) -> Response<ResponseBody> {
    let parts: Vec<&str> = pod.split(':').collect();
    let (name, port) = match parts.as_slice() {
        [name] => (*name, "80"),
        [name, port] => (*name, *port),
        [_scheme, name, port] => (*name, *port),
        _ => {
            return error_response(&ApiError::bad_request(format!(
                "invalid pod proxy target {pod:?}"
            )));
        }
    };
    let key = ObjectKey {
        type_index: resources::POD,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    // Only the pod's IP is needed: read it in place rather than copy the whole pod, which
    // every scrape of a large fleet would otherwise do.
    let pod_ip = {
        let state = shared.lock();
        match state.objects.get(&key) {
            Some(stored) => stored
                .object
                .pointer("/status/podIP")
                .and_then(Value::as_str)
                .map(str::to_owned),
            None => {
                return error_response(&ApiError::not_found(
                    &resources::RESOURCE_TYPES[key.type_index],
                    &key.name,
                ));
            }
        }
    };
    let Some(ip) = pod_ip.as_deref().filter(|ip| !ip.is_empty()) else {
        // The real server refuses to proxy to an address it cannot parse, and an empty
        // pod IP is one: 400 with this message.
        return error_response(&ApiError::bad_request("address not allowed"));
    };
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_owned()
    };
    let query = request
        .raw_query
        .as_deref()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let uri = format!("http://{host}:{port}/{rest}{query}");
    let mut forward = match shared.proxy_route.get() {
        Some(route) => Request::builder()
            .method(request.method.clone())
            .uri(format!("http://{route}/{rest}{query}"))
            // The shared listener tells the nodes apart by the address asked for, as a
            // virtual host; the client keeps a Host header it was given.
            .header(header::HOST, format!("{host}:{port}")),
        None => Request::builder().method(request.method.clone()).uri(&uri),
    };
    if let Some(content_type) = &request.content_type {
        forward = forward.header(header::CONTENT_TYPE, content_type);
    }
    let forward = match forward.body(Full::new(request.body.clone())) {
        Ok(forward) => forward,
        Err(error) => {
            return error_response(&ApiError::bad_request(format!(
                "invalid proxy target {uri}: {error}"
            )));
        }
    };
    match shared.proxy_client.request(forward).await {
        Ok(answer) => {
            let (parts, body) = answer.into_parts();
            // The whole answer is read before the response starts, so that headers and body
            // leave in one write: a metrics page is small, and a response written in pieces
            // is what makes a sequential client wait on delayed ACKs.
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) => {
                    return error_response(&ApiError::service_unavailable(format!(
                        "error trying to reach service: reading the answer of {host}:{port}: {}",
                        describe_error(&error)
                    )));
                }
            };
            let mut response = Response::new(
                Full::new(body)
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            );
            *response.status_mut() = parts.status;
            for (name, value) in &parts.headers {
                let hop_by_hop = [
                    header::CONNECTION,
                    header::TRANSFER_ENCODING,
                    header::CONTENT_LENGTH,
                ];
                if !hop_by_hop.contains(name) {
                    response.headers_mut().append(name.clone(), value.clone());
                }
            }
            response
        }
        Err(error) => error_response(&ApiError::service_unavailable(format!(
            "error trying to reach service: dial tcp {host}:{port}: {}",
            describe_error(&error)
        ))),
    }
}

/// The innermost cause of an error, which is the informative part, worded like Go's
/// dialer for a refused connection (`connect: connection refused`), as the real
/// server's message has it.
fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    match current
        .downcast_ref::<std::io::Error>()
        .map(std::io::Error::kind)
    {
        Some(std::io::ErrorKind::ConnectionRefused) => "connect: connection refused".to_owned(),
        Some(_) | None => current.to_string(),
    }
}

fn full_body(bytes: Vec<u8>) -> ResponseBody {
    Full::new(Bytes::from(bytes))
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response<ResponseBody> {
    json_bytes_response(status, serde_json::to_vec(value).unwrap_or_default())
}

/// A response whose body is JSON already encoded.
fn json_bytes_response(status: StatusCode, bytes: Vec<u8>) -> Response<ResponseBody> {
    let mut response = Response::new(full_body(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Adds one `Warning: 299 - "..."` header per warning, which kubectl prints as
/// `Warning: ...`.
fn with_warnings(
    mut response: Response<ResponseBody>,
    warnings: &[String],
) -> Response<ResponseBody> {
    for warning in warnings {
        if let Ok(value) = HeaderValue::from_str(&validation::warning_header(warning)) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

fn bytes_response(
    status: StatusCode,
    content_type: &'static str,
    body: &'static [u8],
) -> Response<ResponseBody> {
    let mut response = Response::new(
        Full::new(Bytes::from_static(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text_response(status: StatusCode, text: &str) -> Response<ResponseBody> {
    let mut response = Response::new(full_body(text.as_bytes().to_vec()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

pub(crate) fn error_response(error: &ApiError) -> Response<ResponseBody> {
    let status = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &error.to_status())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_tolerates_the_kube_rs_prefix_and_decodes_values() {
        let query = Query::parse(Some(
            "&labelSelector=app%3Dpublisher&watch=1&fieldManager=a+b",
        ));
        assert_eq!(query.get("labelSelector"), Some("app=publisher"));
        assert!(query.is_true("watch"));
        assert_eq!(query.get("fieldManager"), Some("a b"));
    }

    #[test]
    fn watch_tables_carry_column_definitions_only_in_the_first_event() {
        let mut encoder = WatchEncoder {
            type_index: resources::POD,
            table: Some(TableOptions {
                version: table::TableVersion::V1,
                include: IncludeObject::Metadata,
            }),
            headers_sent: false,
        };
        let pod =
            json!({"metadata": {"name": "p", "namespace": "default", "resourceVersion": "7"}});
        let parse = |line: Bytes| -> Value {
            serde_json::from_slice(&line).expect("each event line is JSON")
        };
        let first = parse(encoder.event("ADDED", &pod));
        let second = parse(encoder.event("MODIFIED", &pod));
        assert_eq!(first["type"], "ADDED");
        assert_eq!(first["object"]["kind"], "Table");
        assert_eq!(first["object"]["columnDefinitions"][0]["name"], "Name");
        assert_eq!(first["object"]["metadata"]["resourceVersion"], "7");
        assert_eq!(second["object"]["columnDefinitions"], Value::Null);
        assert_eq!(second["object"]["rows"][0]["cells"][0], "p");

        let mut plain = WatchEncoder {
            type_index: resources::POD,
            table: None,
            headers_sent: false,
        };
        assert_eq!(parse(plain.event("ADDED", &pod))["object"], pod);
    }

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(percent_decode("aws-node-1%3A61678"), "aws-node-1:61678");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
