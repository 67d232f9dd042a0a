//! What an HTTP request asks to do, in the terms authorization speaks: the verb, API
//! group, resource, subresource, namespace and name, or a non-resource path.
//!
//! The rules follow the behaviour of kube-apiserver's request-info resolver: only paths
//! under `/api/VERSION` and `/apis/GROUP/VERSION` are resource requests; the HTTP method
//! gives the verb (GET is `get` for one object and `list` for a collection, `watch` with
//! `?watch=true`, DELETE of a collection is `deletecollection`); `namespaces/NS/...`
//! sets the namespace; the segment after the name is the subresource, and anything
//! after that (a proxied path) does not change what is authorized.

use http::Method;

/// The authorization attributes of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RequestInfo {
    Resource(ResourceRequest),
    /// A path outside the resource tree (`/version`, `/healthz`, `/api`, `/apis/apps`),
    /// with the verb the HTTP method names.
    NonResource {
        verb: String,
        path: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ResourceRequest {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    /// Empty for cluster-scoped requests and for requests across all namespaces.
    pub namespace: String,
    /// Empty for collection requests.
    pub name: String,
}

impl ResourceRequest {
    /// `resource` or `resource/subresource`, as RBAC rules name it.
    pub fn qualified_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// The verb a method means for a resource request before collections and watches are
/// told apart.
fn method_verb(method: &Method) -> String {
    match *method {
        Method::POST => "create".to_owned(),
        Method::GET | Method::HEAD => "get".to_owned(),
        Method::PUT => "update".to_owned(),
        Method::PATCH => "patch".to_owned(),
        Method::DELETE => "delete".to_owned(),
        // Any other method keeps its own name, lower-cased, as the real resolver does.
        ref other => other.as_str().to_ascii_lowercase(),
    }
}

/// Resolves a request. `path` is the raw path, `query` the decoded query pairs.
pub(crate) fn resolve(method: &Method, path: &str, query: &[(String, String)]) -> RequestInfo {
    let non_resource = || RequestInfo::NonResource {
        verb: method.as_str().to_ascii_lowercase(),
        path: path.to_owned(),
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // The group (empty for the core group) and the segments below the version.
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return non_resource(),
    };
    if rest.is_empty() {
        // `/api/v1` and `/apis/apps/v1` are discovery documents, not resources.
        return non_resource();
    }
    let query_value = |name: &str| {
        query
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let mut verb = method_verb(method);
    let mut rest: &[&str] = rest;
    // The legacy `/watch/` and `/proxy/` path prefixes name the verb themselves.
    if let Some((first, after)) = rest.split_first()
        && matches!(*first, "watch" | "proxy")
        && !after.is_empty()
    {
        verb = (*first).to_owned();
        rest = after;
    }
    let mut request = ResourceRequest {
        group: group.to_owned(),
        ..ResourceRequest::default()
    };
    // `namespaces/NS/...` scopes the request; `namespaces/NS` alone and its `status` and
    // `finalize` subresources are requests on the Namespace object itself.
    let parts: Vec<&str> = match rest {
        ["namespaces", namespace, kind, below @ ..] if !matches!(*kind, "status" | "finalize") => {
            request.namespace = (*namespace).to_owned();
            std::iter::once(*kind)
                .chain(below.iter().copied())
                .collect()
        }
        ["namespaces", namespace, ..] => {
            request.namespace = (*namespace).to_owned();
            rest.to_vec()
        }
        _ => rest.to_vec(),
    };
    request.resource = parts.first().copied().unwrap_or_default().to_owned();
    request.name = parts.get(1).copied().unwrap_or_default().to_owned();
    request.subresource = parts.get(2).copied().unwrap_or_default().to_owned();
    if request.name.is_empty() {
        // Only reads and deletes change meaning on a collection; creating in a collection
        // and the verbs the path names stay as they are.
        if verb == "get" {
            let watching = matches!(query_value("watch"), Some("true" | "1"));
            verb = if watching { "watch" } else { "list" }.to_owned();
        } else if verb == "delete" {
            verb = "deletecollection".to_owned();
        }
        // A list or watch narrowed to one name by field selector is about that object.
        if matches!(verb.as_str(), "list" | "watch")
            && let Some(selector) = query_value("fieldSelector")
        {
            for requirement in selector.split(',') {
                if let Some(name) = requirement
                    .strip_prefix("metadata.name=")
                    .map(|name| name.trim_start_matches('='))
                {
                    request.name = name.to_owned();
                }
            }
        }
    }
    request.verb = verb;
    RequestInfo::Resource(request)
}

/// Decodes `%XX` escapes in a path segment or header value.
pub(crate) fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%'
            && let Some(hex) = segment.get(index + 1..index + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(method: Method, path: &str, query: &[(&str, &str)]) -> ResourceRequest {
        let query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        match resolve(&method, path, &query) {
            RequestInfo::Resource(request) => request,
            RequestInfo::NonResource { .. } => panic!("{path} is a resource request"),
        }
    }

    #[test]
    fn verbs_follow_method_and_collection() {
        let list = resource(Method::GET, "/api/v1/namespaces/default/pods", &[]);
        assert_eq!(
            (
                list.verb.as_str(),
                list.namespace.as_str(),
                list.name.as_str()
            ),
            ("list", "default", "")
        );
        let watch = resource(Method::GET, "/api/v1/pods", &[("watch", "true")]);
        assert_eq!(
            (watch.verb.as_str(), watch.namespace.as_str()),
            ("watch", "")
        );
        let get = resource(Method::GET, "/apis/apps/v1/namespaces/a/deployments/b", &[]);
        assert_eq!(
            (get.verb.as_str(), get.group.as_str(), get.name.as_str()),
            ("get", "apps", "b")
        );
        let collection = resource(Method::DELETE, "/api/v1/namespaces/a/pods", &[]);
        assert_eq!(collection.verb, "deletecollection");
        let create = resource(Method::POST, "/api/v1/namespaces/a/pods", &[]);
        assert_eq!(create.verb, "create");
    }

    #[test]
    fn subresources_and_proxy_paths() {
        let proxy = resource(
            Method::GET,
            "/api/v1/namespaces/kube-system/pods/aws-node-1:61678/proxy/metrics",
            &[],
        );
        assert_eq!(proxy.qualified_resource(), "pods/proxy");
        assert_eq!(proxy.name, "aws-node-1:61678");
        let scale = resource(
            Method::PATCH,
            "/apis/apps/v1/namespaces/a/deployments/b/scale",
            &[],
        );
        assert_eq!(
            (scale.verb.as_str(), scale.qualified_resource().as_str()),
            ("patch", "deployments/scale")
        );
        let namespace_status = resource(Method::PUT, "/api/v1/namespaces/a/status", &[]);
        assert_eq!(
            (
                namespace_status.resource.as_str(),
                namespace_status.name.as_str(),
                namespace_status.subresource.as_str()
            ),
            ("namespaces", "a", "status")
        );
        let namespace = resource(Method::GET, "/api/v1/namespaces/a", &[]);
        assert_eq!(
            (namespace.resource.as_str(), namespace.name.as_str()),
            ("namespaces", "a")
        );
    }

    #[test]
    fn a_field_selector_on_the_name_names_the_object() {
        let watch = resource(
            Method::GET,
            "/apis/apps/v1/namespaces/a/deployments",
            &[("watch", "1"), ("fieldSelector", "metadata.name=b")],
        );
        assert_eq!((watch.verb.as_str(), watch.name.as_str()), ("watch", "b"));
    }

    #[test]
    fn discovery_and_other_paths_are_non_resource() {
        for path in ["/api", "/api/v1", "/apis/apps/v1", "/version", "/healthz"] {
            assert_eq!(
                resolve(&Method::GET, path, &[]),
                RequestInfo::NonResource {
                    verb: "get".to_owned(),
                    path: path.to_owned()
                }
            );
        }
    }
}
