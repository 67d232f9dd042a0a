//! Kubernetes: the helper's ServiceAccount, RBAC and Deployment, through server-side apply
//! with one field manager. Planning is a `dryRun=All` apply compared with the live object,
//! so the plan shows what the API server would really store, defaults included.
//!
//! Ownership: an object that carries our `managed-by` label is ours, and a field someone
//! changed behind our back (`kubectl edit`, `kubectl scale`) is drift that deploy takes back.
//! An object that exists without our label belongs to someone else (a Helm release, a
//! hand-applied upstream manifest): it is a conflict, and nothing is sent to it, not even a
//! dry run, unless the user adopts it with `--adopt`; then our apply takes every field we
//! set (force) and labels it, and from then on it is ours.
//!
//! The objects the tool may have made in another mode (the upstream helper's ClusterRole,
//! the publisher's Roles) are looked up too: the ones that carry our label and are no longer
//! rendered are deleted, so switching modes leaves no grant behind.

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::wait::{Condition, await_condition, conditions::is_deployment_completed};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Change, ResourceChange, Scope};
use super::{Convergence, conflict_unless_adopted, settle};
use crate::catalog::Version;
use crate::documents::diff;
use crate::ownership::{self, FIELD_MANAGER, Ownership};
use crate::render::ManifestObject;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("{operation} {kind} {name} failed: {message}")]
    Call {
        operation: &'static str,
        kind: &'static str,
        name: String,
        message: String,
    },
    #[error(
        "the rollout of Deployment {name} did not complete within {seconds} s; check `kubectl -n {namespace} rollout status deployment/{name}` and the pods' events, then run deploy again"
    )]
    RolloutTimeout {
        namespace: String,
        name: String,
        seconds: u64,
    },
}

/// The Kubernetes calls a plan makes.
#[derive(Debug, Clone)]
pub enum KubeStep {
    /// A server-side apply that takes every field we set: planned only for objects that
    /// are ours, new, or adopted.
    Apply {
        object: Box<ManifestObject>,
        /// Wait for the Deployment's rollout after applying.
        wait_for_rollout: bool,
    },
    DeleteObject {
        object: Box<ManifestObject>,
    },
}

fn call_error(
    operation: &'static str,
    kind: &'static str,
    name: &str,
    error: kube::Error,
) -> KubeError {
    let message = match &error {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    };
    KubeError::Call {
        operation,
        kind,
        name: name.to_owned(),
        message,
    }
}

/// The fields the server owns and that say nothing about what we asked for.
fn comparable(object: &impl Serialize) -> Value {
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
        if let Some(Value::Object(metadata)) = map.get_mut("metadata") {
            for key in [
                "managedFields",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "uid",
                "selfLink",
            ] {
                metadata.remove(key);
            }
        }
    }
    value
}

/// Runs `$body` with `$api` (the typed `Api` for the object's kind and scope) and `$object`
/// (the typed object) for any rendered manifest: one place that knows which kinds are
/// namespaced, instead of a match per operation.
macro_rules! with_typed_api {
    ($client:expr, $manifest:expr, |$api:ident, $object:ident| $body:expr) => {
        match $manifest {
            ManifestObject::ServiceAccount($object) => {
                let $api = api_for($client, $object);
                $body
            }
            ManifestObject::ClusterRole($object) => {
                let $api = Api::<ClusterRole>::all($client.clone());
                $body
            }
            ManifestObject::ClusterRoleBinding($object) => {
                let $api = Api::<ClusterRoleBinding>::all($client.clone());
                $body
            }
            ManifestObject::Role($object) => {
                let $api = api_for($client, $object);
                $body
            }
            ManifestObject::RoleBinding($object) => {
                let $api = api_for($client, $object);
                $body
            }
            ManifestObject::Deployment(boxed) => {
                let $object = boxed.as_ref();
                let $api = api_for($client, $object);
                $body
            }
        }
    };
}

fn api_for<K>(client: &Client, object: &K) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    match object.meta().namespace.as_deref() {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::default_namespaced(client.clone()),
    }
}

/// `namespace/name`, or the name of a cluster-scoped object, as plans show it.
fn display_name<K: Resource>(object: &K) -> String {
    let name = object.name_any();
    match object.meta().namespace.as_deref() {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name,
    }
}

async fn plan_one<K>(
    api: Api<K>,
    object: &K,
    manifest: &ManifestObject,
    adopt: bool,
) -> Result<ResourceChange, KubeError>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let kind = manifest.kind();
    let name = object.name_any();
    let display_name = display_name(object);
    let live = api
        .get_opt(&name)
        .await
        .map_err(|error| call_error("reading", kind, &name, error))?;
    let Some(live) = live else {
        // Nobody has it: ours to create. The dry run still runs, so that an object the API
        // server would refuse fails the plan rather than the deploy.
        apply_one(&api, object, kind, ApplyMode::DryRun).await?;
        return Ok(
            ResourceChange::new(Scope::Kubernetes, kind, display_name, Change::Create)
                .with_steps(vec![apply_step(manifest)]),
        );
    };
    let ownership = ownership::of_object(&live);
    if let Some(change) = conflict_unless_adopted(&ownership, adopt) {
        // Someone else's: not even a dry run is sent to it.
        return Ok(ResourceChange::new(
            Scope::Kubernetes,
            kind,
            display_name,
            change,
        ));
    }
    // Ours, or adopted: our apply takes every field we set, whoever set it last.
    let applied = apply_one(&api, object, kind, ApplyMode::DryRun).await?;
    let lines = diff(&comparable(&live), &comparable(&applied));
    let convergence = if lines.is_empty() {
        Convergence::default()
    } else {
        Convergence {
            diff: lines,
            steps: vec![apply_step(manifest)],
        }
    };
    let (change, steps) = settle(ownership, adopt, convergence);
    Ok(ResourceChange::new(Scope::Kubernetes, kind, display_name, change).with_steps(steps))
}

fn apply_step(manifest: &ManifestObject) -> KubeStep {
    KubeStep::Apply {
        object: Box::new(manifest.clone()),
        wait_for_rollout: matches!(manifest, ManifestObject::Deployment(_)),
    }
}

/// Plans every rendered object, in the order they are applied, then the deletion of the
/// objects of ours among `possible` that are no longer rendered (left by another mode).
pub async fn plan(
    client: &Client,
    objects: &[ManifestObject],
    possible: &[ManifestObject],
    adopt: bool,
) -> Result<Vec<ResourceChange>, KubeError> {
    let mut changes = Vec::with_capacity(objects.len());
    for manifest in objects {
        changes.push(with_typed_api!(client, manifest, |api, object| {
            plan_one(api, object, manifest, adopt).await?
        }));
    }
    let rendered: Vec<_> = objects.iter().map(ManifestObject::identity).collect();
    for manifest in possible.iter().rev() {
        if rendered.contains(&manifest.identity()) {
            continue;
        }
        let stale = with_typed_api!(client, manifest, |api, object| {
            plan_delete_one(api, object, manifest).await?
        });
        // Only our leftovers are planned; someone else's object of that name is not ours
        // to mention, as the current mode does not use it.
        if let Some(change) = stale.filter(|change| change.change == Change::Delete) {
            changes.push(change.with_note("no longer needed in this mode"));
        }
    }
    Ok(changes)
}

async fn plan_delete_one<K>(
    api: Api<K>,
    object: &K,
    manifest: &ManifestObject,
) -> Result<Option<ResourceChange>, KubeError>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let kind = manifest.kind();
    let name = object.name_any();
    let Some(live) = api
        .get_opt(&name)
        .await
        .map_err(|error| call_error("reading", kind, &name, error))?
    else {
        return Ok(None);
    };
    let display_name = display_name(object);
    Ok(Some(match ownership::of_object(&live) {
        Ownership::Ours => {
            ResourceChange::new(Scope::Kubernetes, kind, display_name, Change::Delete).with_steps(
                vec![KubeStep::DeleteObject {
                    object: Box::new(manifest.clone()),
                }],
            )
        }
        Ownership::NotOurs(reason) => {
            ResourceChange::kept_as_not_ours(Scope::Kubernetes, kind, display_name, &reason)
        }
    }))
}

/// Plans the deletion of every object the tool may have made (`possible`, in apply order)
/// that exists and is ours, Deployment first.
pub async fn plan_destroy(
    client: &Client,
    possible: &[ManifestObject],
) -> Result<Vec<ResourceChange>, KubeError> {
    let mut changes = Vec::new();
    for manifest in possible.iter().rev() {
        changes.extend(with_typed_api!(client, manifest, |api, object| {
            plan_delete_one(api, object, manifest).await?
        }));
    }
    Ok(changes)
}

/// Whether a server-side apply changes the object or only returns what it would become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ApplyMode {
    /// Planning: the API server computes the result and stores nothing.
    DryRun,
    /// Deploying.
    Commit,
}

/// Server-side applies `object` with our field manager and returns the object as the API
/// server has it afterwards (or would have it, in a dry run). It is only ever called for an
/// object that is ours, new or adopted, so it takes every field we set (force); whether the
/// object is someone else's is decided before, from its label, not from field conflicts.
async fn apply_one<K>(
    api: &Api<K>,
    object: &K,
    kind: &'static str,
    mode: ApplyMode,
) -> Result<K, KubeError>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let name = object.name_any();
    let (mut params, action) = match mode {
        ApplyMode::DryRun => (
            PatchParams::apply(FIELD_MANAGER).dry_run(),
            "planning (server-side apply dry run)",
        ),
        ApplyMode::Commit => (PatchParams::apply(FIELD_MANAGER), "applying"),
    };
    params.force = true;
    api.patch(&name, &params, &Patch::Apply(object))
        .await
        .map_err(|error| call_error(action, kind, &name, error))
}

async fn delete_one<K>(api: &Api<K>, object: &K, kind: &'static str) -> Result<(), KubeError>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let name = object.name_any();
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        // Already gone: the goal of the step is reached.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(call_error("deleting", kind, &name, error)),
    }
}

/// Waits until the live Deployment's current generation has rolled out.
pub async fn wait_for_current_rollout(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), KubeError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let live = api
        .get(name)
        .await
        .map_err(|error| call_error("reading", "Deployment", name, error))?;
    let generation = live.metadata.generation.unwrap_or(0);
    wait_for_rollout(api, namespace, name, generation, timeout).await
}

/// Waits until the Deployment's controller has observed `generation` and the rollout is
/// complete.
async fn wait_for_rollout(
    api: Api<Deployment>,
    namespace: &str,
    name: &str,
    generation: i64,
    timeout: Duration,
) -> Result<(), KubeError> {
    let completed = is_deployment_completed();
    let condition = move |deployment: Option<&Deployment>| {
        let observed = deployment
            .and_then(|deployment| deployment.status.as_ref())
            .and_then(|status| status.observed_generation)
            .unwrap_or(0);
        observed >= generation && completed.matches_object(deployment)
    };
    match tokio::time::timeout(timeout, await_condition(api, name, condition)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(KubeError::Call {
            operation: "watching the rollout of",
            kind: "Deployment",
            name: name.to_owned(),
            message: error.to_string(),
        }),
        Err(_) => Err(KubeError::RolloutTimeout {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            seconds: timeout.as_secs(),
        }),
    }
}

/// Where the helper's Deployment stands in the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct LiveDeployment {
    /// From the `app.kubernetes.io/version` label, else from the image tag.
    pub version: Option<Version>,
    pub image: Option<String>,
    pub rollout: RolloutState,
}

/// The Deployment's last rollout, as its status tells.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutState {
    pub complete: bool,
    pub generation: i64,
    pub observed_generation: i64,
    pub replicas: i32,
    pub updated_replicas: i32,
    pub ready_replicas: i32,
    /// The Progressing condition's reason, e.g. NewReplicaSetAvailable or ProgressDeadlineExceeded.
    pub reason: Option<String>,
}

/// The IAM role the live service account is annotated with for IRSA, if any.
pub async fn live_irsa_role(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<String>, KubeError> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let account = accounts
        .get_opt(name)
        .await
        .map_err(|error| call_error("reading", "ServiceAccount", name, error))?;
    Ok(account
        .and_then(|account| account.metadata.annotations)
        .and_then(|mut annotations| annotations.remove(IRSA_ROLE_ANNOTATION)))
}

/// The annotation EKS's pod identity webhook reads the IRSA role from.
pub const IRSA_ROLE_ANNOTATION: &str = "eks.amazonaws.com/role-arn";

/// Reads the live Deployment named like the rendered one, if any.
pub async fn live_deployment(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<LiveDeployment>, KubeError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let Some(deployment) = api
        .get_opt(name)
        .await
        .map_err(|error| call_error("reading", "Deployment", name, error))?
    else {
        return Ok(None);
    };
    let image = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .and_then(|pod| pod.containers.first())
        .and_then(|container| container.image.clone());
    let version = deployment
        .labels()
        .get("app.kubernetes.io/version")
        .and_then(|label| label.parse().ok())
        .or_else(|| {
            image
                .as_deref()
                .and_then(|image| image.rsplit(':').next())
                .and_then(|tag| tag.parse().ok())
        });
    let status = deployment.status.clone().unwrap_or_default();
    let generation = deployment.metadata.generation.unwrap_or(0);
    let observed_generation = status.observed_generation.unwrap_or(0);
    let reason = status
        .conditions
        .as_ref()
        .and_then(|conditions| {
            conditions
                .iter()
                .find(|condition| condition.type_ == "Progressing")
        })
        .and_then(|condition| condition.reason.clone());
    let complete = observed_generation >= generation
        && is_deployment_completed().matches_object(Some(&deployment));
    Ok(Some(LiveDeployment {
        version,
        image,
        rollout: RolloutState {
            complete,
            generation,
            observed_generation,
            replicas: status.replicas.unwrap_or(0),
            updated_replicas: status.updated_replicas.unwrap_or(0),
            ready_replicas: status.ready_replicas.unwrap_or(0),
            reason,
        },
    }))
}

/// Carries out one Kubernetes step.
pub async fn apply(
    client: &Client,
    step: &KubeStep,
    rollout_timeout: Duration,
) -> Result<(), KubeError> {
    match step {
        KubeStep::Apply {
            object,
            wait_for_rollout: wait,
        } => {
            let kind = object.kind();
            if let ManifestObject::Deployment(deployment) = object.as_ref() {
                let api = api_for(client, deployment.as_ref());
                let applied = apply_one(&api, deployment.as_ref(), kind, ApplyMode::Commit).await?;
                if *wait {
                    let namespace = applied.namespace().unwrap_or_default();
                    let generation = applied.metadata.generation.unwrap_or(0);
                    tracing::info!(deployment = %applied.name_any(), "waiting for the rollout to complete");
                    wait_for_rollout(
                        api,
                        &namespace,
                        &applied.name_any(),
                        generation,
                        rollout_timeout,
                    )
                    .await?;
                }
            } else {
                with_typed_api!(client, object.as_ref(), |api, typed| {
                    apply_one(&api, typed, kind, ApplyMode::Commit)
                        .await
                        .map(drop)?
                });
            }
        }
        KubeStep::DeleteObject { object } => {
            let kind = object.kind();
            with_typed_api!(client, object.as_ref(), |api, typed| {
                delete_one(&api, typed, kind).await?
            });
        }
    }
    Ok(())
}
