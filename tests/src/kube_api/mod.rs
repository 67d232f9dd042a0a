//! A fake Kubernetes API server that the production `kube::Client` (and a user's
//! `kubectl`) reaches over real HTTP on loopback through a generated kubeconfig.
//!
//! It serves the kinds the tool deploys and reads (Namespace, Node, Pod, ServiceAccount,
//! ConfigMap, Event, Role, ClusterRole, RoleBinding, ClusterRoleBinding, Deployment,
//! ReplicaSet, Lease) with the verbs get, list, watch, create, update, patch (JSON, merge,
//! strategic merge and server-side apply), delete and deletecollection, plus discovery,
//! the OpenAPI v3 and v2 documents (from the official v1.33 schemas), the pods
//! proxy, the status and scale subresources, and SelfSubjectAccessReview,
//! SelfSubjectRulesReview and SelfSubjectReview (`kubectl auth whoami`).
//!
//! The sandbox's own user may do everything (its reviews say allowed unless a test denies
//! it with [`FakeApiServer::deny`]); a client that impersonates another user
//! (`kubectl --as`) is held to the stored RBAC roles and bindings. Behaviour follows the
//! real server where a client can observe it: `metav1.Status` errors, resourceVersion and
//! generation bumped only on real changes, field validation (`fieldValidation`) against
//! the schemas, server-side apply with field ownership and conflicts, dry runs, optimistic
//! concurrency on replace, and watch streams that resume from a resourceVersion. Lists,
//! objects and watch events are answered as `meta.k8s.io` Tables when the client asks for
//! them (`kubectl get`), with the columns of the real server's printers. Deployments
//! report a finished rollout as soon as their spec changes, unless a test makes the
//! rollout stuck. `tests/README.md` lists where it differs from a real server.
//!
//! Tests observe and steer the server through [`FakeApiServer`]: seed objects, read the
//! request log, inject failures.

mod access;
mod apply;
mod clock;
mod discovery;
mod errors;
mod http;
mod openapi;
mod protobuf;
mod rbac;
mod request_info;
mod resources;
mod scale;
mod schema;
mod selector;
mod store;
mod strategic;
mod table;
mod validation;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use self::access::Denial;
use self::http::Shared;
use self::resources::RESOURCE_TYPES;
use self::store::{Fault, ObjectKey, State};

/// How many watch events may queue for a slow watcher before it is told to relist.
const WATCH_CHANNEL_CAPACITY: usize = 4096;

/// The bearer token written into the kubeconfig. The server accepts any token; this one
/// only makes the kubeconfig look like a real one.
const SANDBOX_TOKEN: &str = "sandbox-token";

/// Failures of the fake API server's own setup and seeding.
#[derive(Debug, thiserror::Error)]
pub enum KubeApiError {
    #[error("could not listen on 127.0.0.1 for the sandbox Kubernetes API server: {0}")]
    Bind(#[source] std::io::Error),
    #[error("could not write the sandbox kubeconfig to {path}: {source}")]
    WriteKubeconfig {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not serialize the object to seed: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("the sandbox API server refused to store the object: {0}")]
    Rejected(String),
}

/// One request the server answered, for tests to assert on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: ::http::Method,
    /// The path as sent, without the query.
    pub path: String,
    /// The decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    pub content_type: Option<String>,
    /// The `fieldManager` query parameter, when sent.
    pub field_manager: Option<String>,
    /// Whether the request asked for `dryRun=All` (query or DeleteOptions body).
    pub dry_run: bool,
    /// The HTTP status of the response.
    pub status: u16,
    /// The bearer token the client sent, which tells clients with their own kubeconfigs
    /// ([`FakeApiServer::kubeconfig_yaml_for`]) apart.
    pub token: Option<String>,
}

/// A fault for the requests of one client (by bearer token) whose path starts with a
/// prefix, in force until [`FakeApiServer::set_client_fault`] changes it: an overloaded or
/// partitioned API server as one client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFault {
    pub token: String,
    pub path_prefix: String,
    pub behaviour: ClientFaultBehaviour,
}

/// What the server does with a request a [`ClientFault`] matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFaultBehaviour {
    /// Read the request and answer nothing while the fault lasts; when it is changed, the
    /// held requests are answered as the new setting says (normally, once it is cleared).
    Hang,
    /// Answer this status with a `metav1.Status` body (e.g. 503, as an overloaded server).
    Fail(u16),
}

impl LoggedRequest {
    /// Whether the request could have changed state: not a GET, not a dry run, and not
    /// a SelfSubjectAccessReview (a POST that only asks a question and stores nothing).
    pub fn is_write(&self) -> bool {
        self.method != ::http::Method::GET && !self.dry_run && !self.is_access_review()
    }

    /// Whether the request was a SelfSubjectAccessReview, SelfSubjectRulesReview or
    /// SelfSubjectReview: POSTs that only ask a question and store nothing.
    pub fn is_access_review(&self) -> bool {
        let path = self.path.trim_end_matches('/');
        let rules = format!(
            "/apis/{}/{}/{}",
            access::GROUP,
            access::VERSION,
            access::RULES_PLURAL
        );
        let whoami = format!(
            "/apis/{}/{}/{}",
            access::AUTHENTICATION_GROUP,
            access::VERSION,
            access::WHOAMI_PLURAL
        );
        path == access::PATH || path == rules || path == whoami
    }

    /// The value of a query parameter, if sent.
    pub fn query_value(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Whether the request was a watch.
    pub fn is_watch(&self) -> bool {
        matches!(self.query_value("watch"), Some("true" | "1"))
    }
}

/// A running fake API server on `127.0.0.1` with a port the OS picked. It stops on
/// [`FakeApiServer::shutdown`] or when dropped.
pub struct FakeApiServer {
    address: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    accept_task: JoinHandle<()>,
}

impl FakeApiServer {
    /// Binds `127.0.0.1:0` and starts serving, with the namespaces `default`,
    /// `kube-system`, `kube-public` and `kube-node-lease` in place.
    pub async fn start() -> Result<FakeApiServer, KubeApiError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(KubeApiError::Bind)?;
        let address = listener.local_addr().map_err(KubeApiError::Bind)?;
        let (shutdown, shutdown_receiver) = watch::channel(false);
        let (events, _) = broadcast::channel(WATCH_CHANNEL_CAPACITY);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(events)),
            proxy_client: Client::builder(TokioExecutor::new()).build(proxy_connector()),
            proxy_route: std::sync::OnceLock::new(),
            server_address: address.to_string(),
            shutdown: shutdown_receiver.clone(),
            client_fault_changes: watch::channel(0).0,
        });
        let accept_task = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&shared),
            shutdown_receiver,
        ));
        Ok(FakeApiServer {
            address,
            shared,
            shutdown,
            accept_task,
        })
    }

    /// Registers a simulated fleet as the cluster's nodes: each node's Node and aws-node
    /// Pod, and, for a fleet served from one listener, the route the pods proxy takes to it.
    pub fn host_fleet(&self, fleet: &crate::fleet::Fleet) -> Result<(), KubeApiError> {
        for (pod, node) in fleet.pods().iter().zip(fleet.kube_nodes()) {
            self.insert(&node)?;
            self.insert(pod)?;
        }
        if let Some(listener) = fleet.shared_listener() {
            self.route_pod_proxy_via(listener);
        }
        Ok(())
    }

    /// Sends every pods-proxy request to `listener` instead of the pod's IP, with the pod's
    /// `IP:port` as the Host header, for a fleet that serves all its nodes from one
    /// listener. Set once; a later call changes nothing and returns false.
    pub fn route_pod_proxy_via(&self, listener: SocketAddr) -> bool {
        self.shared.proxy_route.set(listener).is_ok()
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A kubeconfig with cluster, token user and context all named `sandbox`, the
    /// context current and its namespace `default`.
    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig_yaml_for(SANDBOX_TOKEN)
    }

    /// [`FakeApiServer::kubeconfig_yaml`] with its own bearer `token`, so that the server
    /// can tell this client's requests apart ([`LoggedRequest::token`],
    /// [`FakeApiServer::set_client_fault`]).
    pub fn kubeconfig_yaml_for(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: sandbox\n  \
               cluster:\n    \
                 server: {url}\n\
             users:\n\
             - name: sandbox\n  \
               user:\n    \
                 token: {token}\n\
             contexts:\n\
             - name: sandbox\n  \
               context:\n    \
                 cluster: sandbox\n    \
                 user: sandbox\n    \
                 namespace: default\n\
             current-context: sandbox\n\
             preferences: {{}}\n",
            url = self.url()
        )
    }

    /// Writes [`FakeApiServer::kubeconfig_yaml`] to a file.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), KubeApiError> {
        std::fs::write(path, self.kubeconfig_yaml()).map_err(|source| {
            KubeApiError::WriteKubeconfig {
                path: path.display().to_string(),
                source,
            }
        })
    }

    /// Creates or replaces an object as the cluster itself would (for seeding nodes and
    /// pods): status is stored as given, a missing namespace is created, and watches see
    /// the change.
    pub fn insert<K: k8s_openapi::Resource + serde::Serialize>(
        &self,
        object: &K,
    ) -> Result<(), KubeApiError> {
        let mut value = serde_json::to_value(object)?;
        // Typed objects may leave apiVersion and kind unset; the type knows them.
        value["apiVersion"] = Value::String(K::API_VERSION.to_owned());
        value["kind"] = Value::String(K::KIND.to_owned());
        self.insert_json(value)
    }

    /// Like [`FakeApiServer::insert`], for an object given as JSON with `apiVersion` and
    /// `kind`.
    pub fn insert_json(&self, object: Value) -> Result<(), KubeApiError> {
        self.shared
            .lock()
            .insert_system(object)
            .map(|_| ())
            .map_err(|error| KubeApiError::Rejected(error.message))
    }

    /// The stored object, if present.
    pub fn get_json(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let key = key_for(api_version, kind, namespace, name)?;
        self.shared
            .lock()
            .objects
            .get(&key)
            .map(|stored| stored.object.clone())
    }

    /// Deletes an object (watches see DELETED); false when it did not exist.
    pub fn remove(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> bool {
        match key_for(api_version, kind, namespace, name) {
            Some(key) => self.shared.lock().remove_and_emit(&key).is_some(),
            None => false,
        }
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Makes rollouts of the named Deployment stuck (the next spec change is observed but
    /// its new pods never become available, and Progressing turns False with
    /// ProgressDeadlineExceeded, as after the progress deadline passed), or unsticks
    /// it, which completes a pending rollout at once. A Deployment that already finished
    /// its rollout keeps its status until its spec changes.
    pub fn set_rollout_stuck(&self, namespace: &str, name: &str, stuck: bool) {
        self.shared.lock().set_rollout_stuck(namespace, name, stuck);
    }

    /// Makes the next `count` requests with this method whose path starts with
    /// `path_prefix` fail with `status` (a `metav1.Status` body with the usual reason).
    pub fn fail_next(&self, method: ::http::Method, path_prefix: &str, status: u16, count: usize) {
        if count == 0 {
            return;
        }
        self.shared.lock().faults.push(Fault {
            method,
            path_prefix: path_prefix.to_owned(),
            status,
            remaining: count,
        });
    }

    /// Sets (`Some`) or clears (`None`) the fault for the requests of the client with bearer
    /// `token` whose path starts with `path_prefix`; it replaces any fault for the same
    /// token and prefix, and held requests re-check at once.
    ///
    /// kube-rs sends its kubeconfig's token over plain HTTP; client-go (`kubectl`) does
    /// not, so kubectl's requests never match a client fault.
    pub fn set_client_fault(
        &self,
        token: &str,
        path_prefix: &str,
        behaviour: Option<ClientFaultBehaviour>,
    ) {
        {
            let mut state = self.shared.lock();
            state
                .client_faults
                .retain(|fault| !(fault.token == token && fault.path_prefix == path_prefix));
            if let Some(behaviour) = behaviour {
                state.client_faults.push(ClientFault {
                    token: token.to_owned(),
                    path_prefix: path_prefix.to_owned(),
                    behaviour,
                });
            }
        }
        self.shared
            .client_fault_changes
            .send_modify(|generation| *generation += 1);
    }

    /// Makes SelfSubjectAccessReviews for `verb` on `resource` in API `group` (`""` for
    /// the core group) answer `allowed: false` with a reason, in `namespace`, or in every
    /// namespace and at the cluster scope when `None`. `verb`, `group` and `resource`
    /// may be `*` to match anything. Only the reviews of the sandbox's own user change:
    /// its requests themselves still succeed. (Requests and reviews of an impersonated
    /// user follow the stored RBAC instead.)
    pub fn deny(&self, verb: &str, group: &str, resource: &str, namespace: Option<&str>) {
        let denial = Denial {
            verb: verb.to_owned(),
            group: group.to_owned(),
            resource: resource.to_owned(),
            namespace: namespace.map(str::to_owned),
        };
        let mut state = self.shared.lock();
        if !state.denials.contains(&denial) {
            state.denials.push(denial);
        }
    }

    /// Takes back every [`FakeApiServer::deny`]: all reviews answer allowed again.
    pub fn clear_denials(&self) {
        self.shared.lock().denials.clear();
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().resource_version
    }

    /// Stops accepting connections and ends open connections and watches.
    pub async fn shutdown(mut self) {
        // Signalling is enough for the accept loop to return; waiting for it makes sure
        // the listening socket is closed when this returns. Drop then aborts nothing new.
        let _ = self.shutdown.send(true);
        let waited =
            tokio::time::timeout(std::time::Duration::from_secs(5), &mut self.accept_task).await;
        if waited.is_err() {
            self.accept_task.abort();
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.accept_task.abort();
    }
}

/// The connector of the pods proxy: plain HTTP to pod IPs with TCP_NODELAY, as the real
/// server's (Go) dialer has.
fn proxy_connector() -> hyper_util::client::legacy::connect::HttpConnector {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    connector
}

fn key_for(
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> Option<ObjectKey> {
    let type_index = resources::by_api_version_kind(api_version, kind)?;
    let namespaced = RESOURCE_TYPES[type_index].namespaced;
    Some(ObjectKey {
        type_index,
        namespace: if namespaced {
            namespace.unwrap_or("default").to_owned()
        } else {
            String::new()
        },
        name: name.to_owned(),
    })
}

/// Accepts connections until shutdown; each connection is served by its own task, so a
/// slow proxied request or a long watch never blocks other requests.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = http::stopped(&mut shutdown) => return,
        };
        let Ok((stream, _)) = accepted else {
            // Accept errors (e.g. too many open files) are transient; keep serving.
            tokio::task::yield_now().await;
            continue;
        };
        // kube-apiserver (Go's net/http) sets TCP_NODELAY on every connection; without it a
        // response written in two pieces waits for the client's delayed ACK (~40 ms) on a
        // kept-alive connection. Failing to set it only costs speed.
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let mut connection_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| http::handle(Arc::clone(&shared), request));
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = http::stopped(&mut connection_shutdown) => {}
            }
        });
    }
}
