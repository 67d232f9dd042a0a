//! The fake API server's OpenAPI documents, read by clients we did not write:
//! `openapi-spec-validator` checks every served document against the OpenAPI 2.0 and 3.0
//! specifications (the kubectl tests in `kubectl_apply` use them for validation, patches
//! and `explain`).

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sandbox::kube_api::FakeApiServer;
use sandbox::python_tools::{PythonTools, workspace_root};
use serde_json::Value;

/// GETs a path and returns the status, the headers and the body.
async fn get(
    server: &FakeApiServer,
    path: &str,
    accept: &str,
) -> (u16, http::HeaderMap, bytes::Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let request = http::Request::get(format!("{}{path}", server.url()))
        .header(http::header::ACCEPT, accept)
        .body(Empty::new())
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(20), client.request(request))
        .await
        .expect("the server answers promptly")
        .expect("the server answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    (status, headers, body)
}

fn validate(tools: &PythonTools, dir: &std::path::Path, name: &str, body: &[u8]) {
    let file = dir.join(name);
    std::fs::write(&file, body).expect("the document is written");
    let output = std::process::Command::new(tools.bin("openapi-spec-validator"))
        .arg(&file)
        .output()
        .expect("openapi-spec-validator runs");
    assert!(
        output.status.success(),
        "{name} is not a valid OpenAPI document:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn every_served_openapi_document_passes_openapi_spec_validator() {
    let tools = PythonTools::find(&workspace_root()).unwrap_or_else(|error| panic!("{error}"));
    let server = FakeApiServer::start().await.expect("the server starts");
    let dir = tempfile::tempdir().expect("temp dir");

    let (status, _, body) = get(&server, "/openapi/v3", "application/json").await;
    assert_eq!(status, 200);
    let index: Value = serde_json::from_slice(&body).expect("the index is JSON");
    let paths = index["paths"].as_object().expect("the index lists paths");
    // One document per group-version discovery lists.
    let (_, _, groups) = get(&server, "/apis", "application/json").await;
    let groups: Value = serde_json::from_slice(&groups).expect("JSON");
    let mut listed: Vec<String> = groups["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            format!(
                "apis/{}",
                g["preferredVersion"]["groupVersion"].as_str().expect("gv")
            )
        })
        .collect();
    listed.push("api/v1".to_owned());
    listed.sort();
    let mut served: Vec<String> = paths.keys().cloned().collect();
    served.sort();
    assert_eq!(served, listed);

    for (key, entry) in paths {
        let url = entry["serverRelativeURL"].as_str().expect("a URL");
        let (status, headers, body) = get(&server, url, "application/json").await;
        assert_eq!(status, 200, "{url}");
        assert_eq!(
            headers
                .get(http::header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
            Some("public, immutable"),
            "{url}: a document asked for by its current hash may be cached"
        );
        validate(
            &tools,
            dir.path(),
            &format!("{}.json", key.replace('/', "_")),
            &body,
        );
    }

    let (status, _, body) = get(&server, "/openapi/v2", "application/json").await;
    assert_eq!(status, 200);
    validate(&tools, dir.path(), "v2.json", &body);

    // client-go takes nothing but the protobuf form (kubectl reads it through
    // `explain --output plaintext-openapiv2`, in kubectl_apply); a format the server does
    // not have is refused.
    let (status, headers, body) = get(
        &server,
        "/openapi/v2",
        "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
    );
    assert!(
        body.starts_with(b"\x0a\x032.0"),
        "a Document whose swagger field is 2.0"
    );
    let (status, _, _) = get(&server, "/openapi/v2", "application/xml").await;
    assert_eq!(status, 406);
    server.shutdown().await;
}
