//! The object store: every object the fake API server holds, the global resourceVersion
//! counter, the watch event history, field ownership, and the test knobs (stuck
//! rollouts, injected faults, denied permissions, the request log).
//!
//! All writes go through [`State::commit`], which fills server-managed metadata, bumps
//! `resourceVersion` and `metadata.generation` only when the object really changed,
//! keeps Deployment status in line with the spec, and records a watch event.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::LoggedRequest;
use super::access::Denial;
use super::apply::{self, Ownership, Scope};
use super::clock::{new_uid, now_rfc3339};
use super::errors::ApiError;
use super::resources::{self, RESOURCE_TYPES, ResourceType};
use super::schema::{self, Gvk};
use super::selector::{FieldSelector, LabelSelector};
use super::strategic;
use super::validation::{self, Decoding, FieldValidation};

/// How many watch events are kept for watches that resume from an older resourceVersion.
const HISTORY_LIMIT: usize = 10_000;

/// Namespaces that exist from the start and cannot be deleted, as in a real cluster.
const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Identifies one stored object: its type (index into `RESOURCE_TYPES`), namespace (empty
/// for cluster-scoped types) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ObjectKey {
    pub type_index: usize,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub(crate) struct StoredObject {
    pub object: Value,
    pub ownership: Ownership,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to one object, as watches see it. `previous` lets a watch with a selector
/// turn a modification into ADDED or DELETED when the object starts or stops matching.
#[derive(Debug)]
pub(crate) struct WatchRecord {
    pub resource_version: u64,
    pub event_type: EventType,
    pub type_index: usize,
    pub namespace: String,
    pub object: Arc<Value>,
    pub previous: Option<Arc<Value>>,
}

/// An injected failure: the next `remaining` requests with this method and path prefix
/// fail with `status`.
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    pub method: http::Method,
    pub path_prefix: String,
    pub status: u16,
    pub remaining: usize,
}

/// Who writes and whether the write is only a dry run.
#[derive(Debug, Clone)]
pub(crate) struct WriteContext {
    pub manager: String,
    pub dry_run: bool,
    /// What to do with fields the kind's schema does not declare.
    pub field_validation: FieldValidation,
    /// What the response's `Warning` headers say, filled in by the write.
    pub warnings: Vec<String>,
}

impl WriteContext {
    /// A write by `manager` with the server's default field validation.
    pub fn new(manager: String, dry_run: bool) -> WriteContext {
        WriteContext {
            manager,
            dry_run,
            field_validation: FieldValidation::default(),
            warnings: Vec::new(),
        }
    }
}

/// Which part of the object a write replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The main resource; `.status` of types with a status subresource is left alone.
    Main,
    /// The `/status` subresource: only `.status` changes.
    Status,
}

/// The body of a PATCH request, by content type.
#[derive(Debug)]
pub(crate) enum PatchBody {
    /// JSON merge patch.
    Merge(Value),
    /// Strategic merge patch: lists merge as the schema's patch strategy says.
    Strategic(Value),
    Json(Value),
}

/// What a list request asks for.
#[derive(Debug, Default)]
pub(crate) struct ListQuery {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

/// The whole mutable state of one fake API server.
pub(crate) struct State {
    pub objects: BTreeMap<ObjectKey, StoredObject>,
    pub resource_version: u64,
    pub history: VecDeque<Arc<WatchRecord>>,
    /// Every event with a resourceVersion above this one is still in `history`.
    pub history_floor: u64,
    pub events: broadcast::Sender<Arc<WatchRecord>>,
    pub stuck_rollouts: BTreeSet<(String, String)>,
    pub faults: Vec<Fault>,
    /// Faults that last until changed, for the requests of one client.
    pub client_faults: Vec<crate::kube_api::ClientFault>,
    /// Permissions that SelfSubjectAccessReviews report as missing.
    pub denials: Vec<Denial>,
    pub requests: Vec<LoggedRequest>,
}

impl State {
    pub fn new(events: broadcast::Sender<Arc<WatchRecord>>) -> State {
        let mut state = State {
            objects: BTreeMap::new(),
            resource_version: 0,
            history: VecDeque::new(),
            history_floor: 0,
            events,
            stuck_rollouts: BTreeSet::new(),
            faults: Vec::new(),
            client_faults: Vec::new(),
            denials: Vec::new(),
            requests: Vec::new(),
        };
        for namespace in SYSTEM_NAMESPACES {
            state.ensure_namespace(namespace);
        }
        state
    }

    fn ensure_namespace(&mut self, namespace: &str) {
        let key = ObjectKey {
            type_index: resources::NAMESPACE,
            namespace: String::new(),
            name: namespace.to_owned(),
        };
        if !self.objects.contains_key(&key) {
            let candidate = json!({"metadata": {"name": namespace}});
            let context = WriteContext::new("kube-apiserver".to_owned(), false);
            let ownership = Ownership::default();
            self.commit(key, candidate, ownership, &context, Mode::Api(Target::Main));
        }
    }

    fn namespace_exists(&self, namespace: &str) -> bool {
        self.objects.contains_key(&ObjectKey {
            type_index: resources::NAMESPACE,
            namespace: String::new(),
            name: namespace.to_owned(),
        })
    }

    pub fn get(&self, key: &ObjectKey) -> Result<Value, ApiError> {
        self.objects
            .get(key)
            .map(|stored| stored.object.clone())
            .ok_or_else(|| ApiError::not_found(&RESOURCE_TYPES[key.type_index], &key.name))
    }

    /// The objects of a type matching a list query, in (namespace, name) order.
    pub fn matching(&self, type_index: usize, query: &ListQuery) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|(key, _)| key.type_index == type_index)
            .filter(|(key, _)| {
                query
                    .namespace
                    .as_deref()
                    .is_none_or(|ns| key.namespace == ns)
            })
            .map(|(_, stored)| &stored.object)
            .filter(|object| query.labels.matches(object) && query.fields.matches(object))
            .collect()
    }

    /// A page of a list. The objects are walked in key order from where the previous page
    /// ended (the continue token names its last object), so that listing a large type page
    /// by page costs each object once, not once per page.
    fn page(&self, type_index: usize, query: &ListQuery) -> Result<Page<'_>, ApiError> {
        use std::ops::Bound;
        let namespace = query.namespace.as_deref();
        let lower = match query.continue_token.as_deref() {
            Some(token) if !token.is_empty() => {
                let (token_namespace, name) = parse_continue_token(token)?;
                if namespace.is_some_and(|namespace| namespace != token_namespace) {
                    return Err(ApiError::bad_request(format!(
                        "invalid continue token {token:?}: it continues a list of another namespace"
                    )));
                }
                Bound::Excluded(ObjectKey {
                    type_index,
                    namespace: token_namespace.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Bound::Included(ObjectKey {
                type_index,
                namespace: namespace.unwrap_or_default().to_owned(),
                name: String::new(),
            }),
        };
        let in_scope = |key: &ObjectKey| {
            key.type_index == type_index
                && namespace.is_none_or(|namespace| key.namespace == namespace)
        };
        let limit = query.limit.filter(|limit| *limit > 0);
        let mut objects = self
            .objects
            .range((lower, Bound::Unbounded))
            .take_while(|(key, _)| in_scope(key))
            .filter(|(_, stored)| {
                query.labels.matches(&stored.object) && query.fields.matches(&stored.object)
            });
        let mut items = Vec::new();
        let mut last_key = None;
        for (key, stored) in objects.by_ref() {
            items.push(&stored.object);
            last_key = Some(key);
            if limit.is_some_and(|limit| items.len() >= limit) {
                break;
            }
        }
        let mut metadata = json!({"resourceVersion": self.resource_version.to_string()});
        let more = objects.next().is_some();
        if let (true, Some(last)) = (more, last_key) {
            metadata["continue"] = json!(continue_token(last));
            // As the real server: the count is known only without selectors.
            if query.labels.is_empty() && query.fields.is_empty() {
                let after = (Bound::Excluded(last.clone()), Bound::Unbounded);
                let remaining = self
                    .objects
                    .range(after)
                    .take_while(|(key, _)| in_scope(key))
                    .count();
                metadata["remainingItemCount"] = json!(remaining);
            }
        }
        let rt = &RESOURCE_TYPES[type_index];
        Ok(Page {
            kind: format!("{}List", rt.kind),
            api_version: rt.api_version(),
            metadata,
            items,
        })
    }

    /// A page of a list as JSON.
    pub fn list(&self, type_index: usize, query: &ListQuery) -> Result<Value, ApiError> {
        let page = self.page(type_index, query)?;
        let items: Vec<Value> = page
            .items
            .iter()
            .map(|object| {
                let mut item = (*object).clone();
                // Items of a list carry no apiVersion or kind, exactly like the real server's.
                if let Some(map) = item.as_object_mut() {
                    map.remove("apiVersion");
                    map.remove("kind");
                }
                item
            })
            .collect();
        Ok(json!({
            "kind": page.kind,
            "apiVersion": page.api_version,
            "metadata": page.metadata,
            "items": items,
        }))
    }

    /// [`State::list`], serialized straight from the stored objects, without copying every
    /// object of the page first, which is most of the cost of listing 100,000 pods.
    pub fn list_bytes(&self, type_index: usize, query: &ListQuery) -> Result<Vec<u8>, ApiError> {
        /// The list in the real server's field order.
        #[derive(serde::Serialize)]
        struct Listed<'a> {
            kind: &'a str,
            #[serde(rename = "apiVersion")]
            api_version: &'a str,
            metadata: &'a Value,
            items: Vec<ListItem<'a>>,
        }
        let page = self.page(type_index, query)?;
        serde_json::to_vec(&Listed {
            kind: &page.kind,
            api_version: &page.api_version,
            metadata: &page.metadata,
            items: page.items.iter().map(|object| ListItem(object)).collect(),
        })
        .map_err(|error| ApiError::new(500, "InternalError", format!("encoding the list: {error}")))
    }

    /// POST: creates an object; 409 AlreadyExists when the name is taken.
    pub fn create(
        &mut self,
        type_index: usize,
        namespace: &str,
        mut body: Value,
        context: &mut WriteContext,
    ) -> Result<Value, ApiError> {
        let rt = &RESOURCE_TYPES[type_index];
        check_identity(rt, namespace, None, &body)?;
        let warnings =
            validation::check_object(rt, &mut body, context.field_validation, Decoding::Object)?;
        context.warnings.extend(warnings);
        let name = match body.pointer("/metadata/name").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => match body
                .pointer("/metadata/generateName")
                .and_then(Value::as_str)
            {
                Some(prefix) if !prefix.is_empty() => format!("{prefix}{}", &new_uid()[..5]),
                _ => {
                    return Err(ApiError::invalid(
                        rt,
                        "",
                        "metadata.name: Required value: name or generateName is required",
                    ));
                }
            },
        };
        validate_name(rt, &name)?;
        let key = self.key_for(type_index, namespace, &name)?;
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(rt, &name));
        }
        set_name(&mut body, &name);
        let mut ownership = Ownership::default();
        let changed = apply::leaf_paths(
            &body,
            Scope::Main {
                has_status: rt.has_status,
            },
        );
        ownership.record_update(
            &context.manager,
            &rt.api_version(),
            &now_rfc3339(),
            &changed,
        );
        Ok(self.commit(key, body, ownership, context, Mode::Api(Target::Main)))
    }

    /// PUT: replaces an existing object, refusing a stale `metadata.resourceVersion`.
    pub fn replace(
        &mut self,
        key: ObjectKey,
        mut body: Value,
        context: &mut WriteContext,
        target: Target,
    ) -> Result<Value, ApiError> {
        let rt = &RESOURCE_TYPES[key.type_index];
        check_identity(rt, &key.namespace, Some(&key.name), &body)?;
        let warnings =
            validation::check_object(rt, &mut body, context.field_validation, Decoding::Object)?;
        context.warnings.extend(warnings);
        let stored = self
            .objects
            .get(&key)
            .ok_or_else(|| ApiError::not_found(rt, &key.name))?;
        check_resource_version(rt, &key.name, sent_resource_version(&body), &stored.object)?;
        let candidate = match target {
            Target::Main => body,
            Target::Status => with_status_of(&stored.object, &body),
        };
        self.update_existing(key, candidate, context, target)
    }

    /// PATCH with a JSON merge patch or a JSON patch.
    pub fn patch(
        &mut self,
        key: ObjectKey,
        patch: &PatchBody,
        context: &mut WriteContext,
        target: Target,
    ) -> Result<Value, ApiError> {
        let rt = &RESOURCE_TYPES[key.type_index];
        let stored = self
            .objects
            .get(&key)
            .ok_or_else(|| ApiError::not_found(rt, &key.name))?;
        let mut candidate = stored.object.clone();
        match patch {
            PatchBody::Merge(patch) => {
                if !patch.is_object() {
                    return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                }
                apply::merge_patch(&mut candidate, patch);
            }
            PatchBody::Strategic(patch) => {
                let definitions = schema::definitions();
                let root = definitions.schema_for(&Gvk::new(rt.group, rt.version, rt.kind));
                strategic::apply(definitions, root, &mut candidate, patch)
                    .map_err(|error| ApiError::new(422, "Invalid", error.0))?;
            }
            PatchBody::Json(operations) => {
                apply::json_patch(&mut candidate, operations)
                    .map_err(|message| ApiError::new(422, "Invalid", message))?;
            }
        }
        // The precondition as the patch names it; unlike a full object's, an empty one
        // counts too.
        check_resource_version(
            rt,
            &key.name,
            patch_resource_version(patch).as_deref(),
            &stored.object,
        )?;
        check_identity(rt, &key.namespace, Some(&key.name), &candidate)?;
        let warnings = validation::check_object(
            rt,
            &mut candidate,
            context.field_validation,
            Decoding::Patch,
        )?;
        context.warnings.extend(warnings);
        let candidate = match target {
            Target::Main => candidate,
            Target::Status => with_status_of(&stored.object, &candidate),
        };
        self.update_existing(key, candidate, context, target)
    }

    /// A non-apply write to an existing object: the writer becomes the owner of the
    /// fields it changed.
    fn update_existing(
        &mut self,
        key: ObjectKey,
        candidate: Value,
        context: &WriteContext,
        target: Target,
    ) -> Result<Value, ApiError> {
        let rt = &RESOURCE_TYPES[key.type_index];
        let stored = self
            .objects
            .get(&key)
            .ok_or_else(|| ApiError::not_found(rt, &key.name))?;
        let scope = scope_for(rt, target);
        let changed: BTreeSet<apply::FieldPath> = apply::leaf_paths(&candidate, scope)
            .into_iter()
            .filter(|path| {
                apply::get_path(&candidate, path) != apply::get_path(&stored.object, path)
            })
            .collect();
        let mut ownership = stored.ownership.clone();
        ownership.record_update(
            &context.manager,
            &rt.api_version(),
            &now_rfc3339(),
            &changed,
        );
        Ok(self.commit(key, candidate, ownership, context, Mode::Api(target)))
    }

    /// PATCH with `application/apply-patch+yaml`: server-side apply.
    pub fn apply(
        &mut self,
        key: ObjectKey,
        config: Value,
        context: &WriteContext,
        force: bool,
        target: Target,
    ) -> Result<Value, ApiError> {
        let rt = &RESOURCE_TYPES[key.type_index];
        if !config.is_object() {
            return Err(ApiError::bad_request(
                "an apply configuration must be an object",
            ));
        }
        if config
            .get("kind")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(ApiError::bad_request(
                "Object 'Kind' is missing in the apply configuration",
            ));
        }
        if config
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(ApiError::bad_request(
                "Object 'apiVersion' is missing in the apply configuration",
            ));
        }
        check_identity(rt, &key.namespace, Some(&key.name), &config)?;
        validation::check_apply_configuration(rt, &key.namespace, &key.name, &config)?;
        validate_name(rt, &key.name)?;
        if rt.namespaced && !self.namespace_exists(&key.namespace) {
            return Err(ApiError::not_found(
                &RESOURCE_TYPES[resources::NAMESPACE],
                &key.namespace,
            ));
        }
        let stored = self.objects.get(&key);
        if let Some(stored) = stored {
            check_resource_version(
                rt,
                &key.name,
                sent_resource_version(&config),
                &stored.object,
            )?;
        }
        let live = stored
            .map(|s| s.object.clone())
            .unwrap_or_else(|| json!({"metadata": {"name": key.name}}));
        let mut ownership = stored.map(|s| s.ownership.clone()).unwrap_or_default();
        let scope = scope_for(rt, target);
        let applied = apply::leaf_paths(&config, scope);
        let conflicts = ownership.apply_conflicts(&context.manager, &applied, &config, &live);
        if !conflicts.is_empty() {
            if !force {
                let mut error = ApiError::new(409, "Conflict", apply::conflict_message(&conflicts));
                error.details = Some(json!({
                    "name": key.name, "group": rt.group, "kind": rt.plural,
                    "causes": apply::conflict_causes(&conflicts),
                }));
                return Err(error);
            }
            let taken: BTreeSet<apply::FieldPath> = conflicts.into_iter().map(|c| c.path).collect();
            ownership.take_from_others(&context.manager, apply::Operation::Apply, &taken);
        }
        let mut candidate = live;
        // Fields this manager applied before and no longer sends are removed, unless
        // another manager still owns them.
        for dropped in ownership.applied_by(&context.manager).difference(&applied) {
            let still_sent = applied.iter().any(|path| path.starts_with(dropped));
            if !still_sent && !ownership.owned_by_other(&context.manager, dropped) {
                apply::remove_path(&mut candidate, dropped);
            }
        }
        apply::merge_apply(&mut candidate, &config, scope);
        ownership.set_applied(&context.manager, &rt.api_version(), &now_rfc3339(), applied);
        Ok(self.commit(key, candidate, ownership, context, Mode::Api(target)))
    }

    /// DELETE: removes an object and returns it, as the real server does for types
    /// without finalizers. Deleting a namespace deletes everything in it.
    pub fn delete(
        &mut self,
        key: &ObjectKey,
        dry_run: bool,
        preconditions: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let rt = &RESOURCE_TYPES[key.type_index];
        let stored = self
            .objects
            .get(key)
            .ok_or_else(|| ApiError::not_found(rt, &key.name))?;
        if let Some(preconditions) = preconditions {
            for (field, pointer) in [
                ("resourceVersion", "/metadata/resourceVersion"),
                ("uid", "/metadata/uid"),
            ] {
                if let Some(expected) = preconditions.get(field).and_then(Value::as_str)
                    && Some(expected) != stored.object.pointer(pointer).and_then(Value::as_str)
                {
                    return Err(ApiError::stale_resource_version(rt, &key.name));
                }
            }
        }
        if key.type_index == resources::NAMESPACE && SYSTEM_NAMESPACES.contains(&key.name.as_str())
        {
            let mut error = ApiError::new(
                403,
                "Forbidden",
                format!(
                    "namespaces \"{}\" is forbidden: this namespace may not be deleted",
                    key.name
                ),
            );
            error.details = Some(json!({"name": key.name, "kind": "namespaces"}));
            return Err(error);
        }
        if dry_run {
            return Ok(stored.object.clone());
        }
        if key.type_index == resources::NAMESPACE {
            let contents: Vec<ObjectKey> = self
                .objects
                .keys()
                .filter(|k| RESOURCE_TYPES[k.type_index].namespaced && k.namespace == key.name)
                .cloned()
                .collect();
            for content in contents {
                self.remove_and_emit(&content);
            }
        }
        self.remove_and_emit(key)
            .ok_or_else(|| ApiError::not_found(rt, &key.name))
    }

    /// Removes an object, records a DELETED event at a new resourceVersion, and returns
    /// the object as the event carries it.
    pub fn remove_and_emit(&mut self, key: &ObjectKey) -> Option<Value> {
        let stored = self.objects.remove(key)?;
        let resource_version = self.next_resource_version();
        let mut object = stored.object;
        object["metadata"]["resourceVersion"] = json!(resource_version.to_string());
        self.emit(
            resource_version,
            EventType::Deleted,
            key,
            object.clone(),
            None,
        );
        Some(object)
    }

    /// Creates or replaces an object as the system would (seeding by tests): status is
    /// kept as given and no field manager is recorded. A missing namespace is created.
    pub fn insert_system(&mut self, object: Value) -> Result<Value, ApiError> {
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let type_index = resources::by_api_version_kind(api_version, kind).ok_or_else(|| {
            ApiError::bad_request(format!(
                "the sandbox API server does not serve {api_version} {kind}"
            ))
        })?;
        let rt = &RESOURCE_TYPES[type_index];
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        validate_name(rt, &name)?;
        let namespace = if rt.namespaced {
            let namespace = object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default");
            let namespace = if namespace.is_empty() {
                "default"
            } else {
                namespace
            }
            .to_owned();
            self.ensure_namespace(&namespace);
            namespace
        } else {
            String::new()
        };
        let key = ObjectKey {
            type_index,
            namespace,
            name,
        };
        let ownership = self
            .objects
            .get(&key)
            .map(|s| s.ownership.clone())
            .unwrap_or_default();
        let context = WriteContext::new(String::new(), false);
        Ok(self.commit(key, object, ownership, &context, Mode::System))
    }

    /// Records whether a Deployment's rollouts get stuck. Unsticking a Deployment whose
    /// rollout is stuck completes that rollout at once.
    pub fn set_rollout_stuck(&mut self, namespace: &str, name: &str, stuck: bool) {
        let entry = (namespace.to_owned(), name.to_owned());
        if !stuck {
            self.stuck_rollouts.remove(&entry);
            let key = ObjectKey {
                type_index: resources::DEPLOYMENT,
                namespace: entry.0,
                name: entry.1,
            };
            if let Some(stored) = self.objects.get(&key) {
                let mut object = stored.object.clone();
                object["status"] = completed_deployment_status(&object, &now_rfc3339());
                if object != stored.object {
                    let ownership = stored.ownership.clone();
                    let context = WriteContext::new(String::new(), false);
                    self.commit(key, object, ownership, &context, Mode::System);
                }
            }
        } else {
            self.stuck_rollouts.insert(entry);
        }
    }

    fn key_for(
        &self,
        type_index: usize,
        namespace: &str,
        name: &str,
    ) -> Result<ObjectKey, ApiError> {
        let rt = &RESOURCE_TYPES[type_index];
        if rt.namespaced && !self.namespace_exists(namespace) {
            return Err(ApiError::not_found(
                &RESOURCE_TYPES[resources::NAMESPACE],
                namespace,
            ));
        }
        Ok(ObjectKey {
            type_index,
            namespace: if rt.namespaced {
                namespace.to_owned()
            } else {
                String::new()
            },
            name: name.to_owned(),
        })
    }

    fn next_resource_version(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }

    fn emit(
        &mut self,
        resource_version: u64,
        event_type: EventType,
        key: &ObjectKey,
        object: Value,
        previous: Option<Value>,
    ) {
        let record = Arc::new(WatchRecord {
            resource_version,
            event_type,
            type_index: key.type_index,
            namespace: key.namespace.clone(),
            object: Arc::new(object),
            previous: previous.map(Arc::new),
        });
        self.history.push_back(Arc::clone(&record));
        while self.history.len() > HISTORY_LIMIT {
            if let Some(dropped) = self.history.pop_front() {
                self.history_floor = dropped.resource_version;
            }
        }
        // Nobody watching is not an error.
        let _ = self.events.send(record);
    }

    /// Stores the outcome of a write (unless it is a dry run or changes nothing) and
    /// returns the object as the client sees it.
    fn commit(
        &mut self,
        key: ObjectKey,
        mut candidate: Value,
        mut ownership: Ownership,
        context: &WriteContext,
        mode: Mode,
    ) -> Value {
        let rt = &RESOURCE_TYPES[key.type_index];
        let old = self.objects.get(&key);
        let now = now_rfc3339();
        if !candidate.is_object() {
            candidate = json!({});
        }
        candidate["apiVersion"] = json!(rt.api_version());
        candidate["kind"] = json!(rt.kind);
        if !candidate.get("metadata").is_some_and(Value::is_object) {
            candidate["metadata"] = json!({});
        }
        let metadata = &mut candidate["metadata"];
        metadata["name"] = json!(key.name);
        if let Some(map) = metadata.as_object_mut() {
            for field in ["resourceVersion", "managedFields", "selfLink", "namespace"] {
                map.remove(field);
            }
        }
        if rt.namespaced {
            metadata["namespace"] = json!(key.namespace);
        }
        match old {
            Some(old) => {
                for field in ["uid", "creationTimestamp", "generation"] {
                    metadata[field] = old.object["metadata"][field].clone();
                }
            }
            None => {
                let given = |field: &str| {
                    metadata
                        .get(field)
                        .and_then(Value::as_str)
                        .filter(|v| !v.is_empty())
                        .map(str::to_owned)
                };
                let keep_given = mode == Mode::System;
                let uid = given("uid").filter(|_| keep_given).unwrap_or_else(new_uid);
                let created = given("creationTimestamp")
                    .filter(|_| keep_given)
                    .unwrap_or_else(|| now.clone());
                metadata["uid"] = json!(uid);
                metadata["creationTimestamp"] = json!(created);
                metadata["generation"] = json!(1);
            }
        }
        if rt.has_status && mode == Mode::Api(Target::Main) {
            match old.and_then(|o| o.object.get("status")) {
                Some(status) => candidate["status"] = status.clone(),
                None => {
                    if let Some(map) = candidate.as_object_mut() {
                        map.remove("status");
                    }
                    if let Some(status) = initial_status(key.type_index) {
                        candidate["status"] = status;
                    }
                }
            }
        }
        if key.type_index == resources::DEPLOYMENT && mode != Mode::System {
            default_deployment_spec(&mut candidate);
        }
        if key.type_index == resources::NAMESPACE {
            // The real server labels every namespace with its own name and gives it the
            // `kubernetes` finalizer.
            if !candidate
                .pointer("/metadata/labels")
                .is_some_and(Value::is_object)
            {
                candidate["metadata"]["labels"] = json!({});
            }
            candidate["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(key.name);
            if candidate.pointer("/spec/finalizers").is_none() {
                candidate["spec"] = json!({"finalizers": ["kubernetes"]});
            }
        }
        let spec_changed = old.is_none_or(|o| {
            without_metadata_and_status(&o.object) != without_metadata_and_status(&candidate)
        });
        if let Some(old) = old
            && spec_changed
        {
            let generation = old
                .object
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            candidate["metadata"]["generation"] = json!(generation + 1);
        }
        // The rollout is the controllers' work, which a dry run never starts: its result
        // shows the new spec (and generation) beside the old status, as the real one does.
        if key.type_index == resources::DEPLOYMENT
            && mode != Mode::System
            && spec_changed
            && !context.dry_run
        {
            let stuck = self
                .stuck_rollouts
                .contains(&(key.namespace.clone(), key.name.clone()));
            candidate["status"] = if stuck {
                stuck_deployment_status(&candidate, &now)
            } else {
                completed_deployment_status(&candidate, &now)
            };
        }
        ownership.prune(&candidate);
        if let Some(old) = old
            && without_volatile(&old.object) == without_volatile(&candidate)
            && old.ownership.same_fields(&ownership)
        {
            return old.object.clone();
        }
        let previous = old.map(|o| o.object.clone());
        if !ownership.entries.is_empty() {
            candidate["metadata"]["managedFields"] = ownership.to_managed_fields();
        }
        if context.dry_run {
            if let Some(resource_version) = previous
                .as_ref()
                .and_then(|p| p.pointer("/metadata/resourceVersion"))
            {
                candidate["metadata"]["resourceVersion"] = resource_version.clone();
            }
            return candidate;
        }
        let resource_version = self.next_resource_version();
        candidate["metadata"]["resourceVersion"] = json!(resource_version.to_string());
        let event_type = if previous.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.objects.insert(
            key.clone(),
            StoredObject {
                object: candidate.clone(),
                ownership,
            },
        );
        self.emit(
            resource_version,
            event_type,
            &key,
            candidate.clone(),
            previous,
        );
        candidate
    }
}

/// Whether a write comes through the API (and which part it targets) or from the test
/// harness acting as the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Api(Target),
    System,
}

fn scope_for(rt: &ResourceType, target: Target) -> Scope {
    match target {
        Target::Main => Scope::Main {
            has_status: rt.has_status,
        },
        Target::Status => Scope::Status,
    }
}

/// The live object with only its status taken from `body`.
fn with_status_of(live: &Value, body: &Value) -> Value {
    let mut candidate = live.clone();
    match body.get("status") {
        Some(status) => candidate["status"] = status.clone(),
        None => {
            if let Some(map) = candidate.as_object_mut() {
                map.remove("status");
            }
        }
    }
    candidate
}

/// Checks that the apiVersion, kind, namespace and name in a request body agree with the
/// URL, with the real server's messages.
fn check_identity(
    rt: &ResourceType,
    namespace: &str,
    name: Option<&str>,
    body: &Value,
) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON or YAML object",
        ));
    }
    if let Some(api_version) = body.get("apiVersion").and_then(Value::as_str)
        && !api_version.is_empty()
        && api_version != rt.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    if let Some(kind) = body.get("kind").and_then(Value::as_str)
        && !kind.is_empty()
        && kind != rt.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            rt.kind
        )));
    }
    if rt.namespaced
        && let Some(sent) = body.pointer("/metadata/namespace").and_then(Value::as_str)
        && !sent.is_empty()
        && sent != namespace
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if let Some(name) = name
        && let Some(sent) = body.pointer("/metadata/name").and_then(Value::as_str)
        && !sent.is_empty()
        && sent != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({sent}) does not match the name on the URL ({name})"
        )));
    }
    Ok(())
}

/// Checks a name against the DNS subdomain rules most types use.
fn validate_name(rt: &ResourceType, name: &str) -> Result<(), ApiError> {
    let allowed = |c: char| {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || c == '-'
            || c == '.'
            || (c == ':' && rt.group.starts_with("rbac"))
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.chars().all(allowed)
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(
            rt,
            name,
            format!(
                "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case \
                 alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        ))
    }
}

fn set_name(body: &mut Value, name: &str) {
    if !body.get("metadata").is_some_and(Value::is_object) {
        body["metadata"] = json!({});
    }
    body["metadata"]["name"] = json!(name);
}

/// The resourceVersion a merge patch sends as a precondition, if any.
/// The resourceVersion a full object sent with a write names as its precondition; an empty
/// one is no precondition.
fn sent_resource_version(object: &Value) -> Option<&str> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|sent| !sent.is_empty())
}

/// Optimistic concurrency: a write whose precondition `sent` is not the stored object's
/// resourceVersion is refused with 409 Conflict.
fn check_resource_version(
    rt: &ResourceType,
    name: &str,
    sent: Option<&str>,
    stored: &Value,
) -> Result<(), ApiError> {
    let current = stored
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str);
    match sent {
        Some(sent) if Some(sent) != current => Err(ApiError::stale_resource_version(rt, name)),
        _ => Ok(()),
    }
}

fn patch_resource_version(patch: &PatchBody) -> Option<String> {
    match patch {
        PatchBody::Merge(value) | PatchBody::Strategic(value) => value
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned),
        PatchBody::Json(_) => None,
    }
}

/// The status a new object of a type starts with when created through the API.
fn initial_status(type_index: usize) -> Option<Value> {
    match type_index {
        resources::NAMESPACE => Some(json!({"phase": "Active"})),
        resources::POD => Some(json!({"phase": "Pending"})),
        _ => None,
    }
}

/// The defaults the real server fills into a Deployment spec that the tool's diffing
/// may see.
fn default_deployment_spec(deployment: &mut Value) {
    let Some(spec) = deployment.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let defaults = [
        ("replicas", json!(1)),
        ("revisionHistoryLimit", json!(10)),
        ("progressDeadlineSeconds", json!(600)),
    ];
    for (field, value) in defaults {
        spec.entry(field.to_owned()).or_insert(value);
    }
    spec.entry("strategy".to_owned())
        .or_insert_with(|| json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}));
}

fn deployment_replicas(deployment: &Value) -> i64 {
    deployment
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

/// A short stable suffix for the name of the ReplicaSet a generation would create.
fn replica_set_name(deployment: &Value) -> String {
    let name = deployment
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let template = deployment
        .pointer("/spec/template")
        .map(Value::to_string)
        .unwrap_or_default();
    let hash = template
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{name}-{:010x}", hash % 0xff_ffff_ffff)
}

/// The status the Deployment controller reports once a rollout finished.
fn completed_deployment_status(deployment: &Value, now: &str) -> Value {
    let replicas = deployment_replicas(deployment);
    let generation = deployment
        .pointer("/metadata/generation")
        .cloned()
        .unwrap_or(json!(1));
    json!({
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            {
                "type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability.",
                "lastUpdateTime": now, "lastTransitionTime": now,
            },
            {
                "type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                "message": format!("ReplicaSet \"{}\" has successfully progressed.", replica_set_name(deployment)),
                "lastUpdateTime": now, "lastTransitionTime": now,
            },
        ],
    })
}

/// The status of a rollout that never finishes, as the Deployment controller reports it
/// once the progress deadline passed: the new generation is observed and one surge pod
/// of the new ReplicaSet is created, but it never becomes available, so the old pods keep
/// serving and Progressing turns False with ProgressDeadlineExceeded (which is what
/// `kubectl rollout status` fails on).
fn stuck_deployment_status(deployment: &Value, now: &str) -> Value {
    let previous = deployment
        .get("status")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    let old_available = previous
        .get("availableReplicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let generation = deployment
        .pointer("/metadata/generation")
        .cloned()
        .unwrap_or(json!(1));
    let updated = i64::from(deployment_replicas(deployment) > 0);
    let mut status = json!({
        "observedGeneration": generation,
        "replicas": old_available + updated,
        "updatedReplicas": updated,
        "unavailableReplicas": updated,
    });
    // The real status leaves zero counts out.
    if old_available > 0 {
        status["readyReplicas"] = json!(old_available);
        status["availableReplicas"] = json!(old_available);
    }
    let (available_status, available_reason, available_message) = if old_available > 0 {
        (
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        )
    } else {
        (
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )
    };
    status["conditions"] = json!([
        {
            "type": "Available", "status": available_status, "reason": available_reason,
            "message": available_message,
            "lastUpdateTime": now, "lastTransitionTime": now,
        },
        {
            "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
            "message": format!("ReplicaSet \"{}\" has timed out progressing.", replica_set_name(deployment)),
            "lastUpdateTime": now, "lastTransitionTime": now,
        },
    ]);
    status
}

fn without_metadata_and_status(object: &Value) -> Map<String, Value> {
    let mut map = object.as_object().cloned().unwrap_or_default();
    map.remove("metadata");
    map.remove("status");
    map
}

/// The object without the fields every write changes, for no-op detection.
fn without_volatile(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(metadata) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("resourceVersion");
        metadata.remove("managedFields");
    }
    copy
}

/// The continue token of a page ending at `last`: its namespace and name. Clients treat it
/// as opaque; neither part can contain a `/`.
fn continue_token(last: &ObjectKey) -> String {
    format!("{}/{}", last.namespace, last.name)
}

/// The namespace and name a continue token names.
fn parse_continue_token(token: &str) -> Result<(&str, &str), ApiError> {
    token
        .split_once('/')
        .ok_or_else(|| ApiError::bad_request(format!("invalid continue token {token:?}")))
}

/// One page of a list, borrowing the stored objects.
struct Page<'a> {
    kind: String,
    api_version: String,
    metadata: Value,
    items: Vec<&'a Value>,
}

/// A stored object as a list item: without apiVersion and kind, like the real server's.
struct ListItem<'a>(&'a Value);

impl serde::Serialize for ListItem<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self.0 {
            Value::Object(map) => {
                let kept = map
                    .iter()
                    .filter(|(key, _)| key.as_str() != "apiVersion" && key.as_str() != "kind");
                let mut out = serializer.serialize_map(None)?;
                for (key, value) in kept {
                    out.serialize_entry(key, value)?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}
