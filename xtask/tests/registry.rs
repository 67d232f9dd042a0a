//! The publisher image's registry side against the sandbox: the ECR repository converged
//! against the emulator (boto3, a client we did not write, makes the drift and the foreign
//! repository), and pushes to the real OCI registry behind it, read back with skopeo.

use std::path::Path;

use sandbox::aws_emulator::RecordedRequest;
use sandbox::python_tools::workspace_root;
use serde_json::Value;
use xtask::registry::ecr::{self, Encryption, EnsuredRepository, RepositoryChange, RepositorySpec};
use xtask::registry::push::{self, Layout};

use crate::world::World;

fn spec(name: &str, adopt: bool) -> RepositorySpec {
    RepositorySpec {
        name: name.to_owned(),
        encryption: Encryption::Aes256,
        keep_images: 10,
        adopt,
    }
}

fn ecr_client(world: &World) -> aws_sdk_ecr::Client {
    aws_sdk_ecr::Client::new(&world.sandbox.sdk_config())
}

fn ecr_requests(world: &World) -> Vec<RecordedRequest> {
    world
        .sandbox
        .emulator()
        .expect("the sandbox runs an emulator")
        .recorded_requests()
        .expect("the recording is readable")
        .into_iter()
        .filter(|request| request.service.as_deref() == Some("ecr"))
        .collect()
}

fn mutating(requests: &[RecordedRequest]) -> Vec<String> {
    requests
        .iter()
        .filter(|request| request.is_mutating())
        .map(|request| request.action.clone().unwrap_or_default())
        .collect()
}

async fn ensure(world: &World, spec: &RepositorySpec) -> (EnsuredRepository, Vec<String>) {
    let before = ecr_requests(world).len();
    let ensured = ecr::ensure_repository(&ecr_client(world), spec)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let calls = mutating(&ecr_requests(world)[before..]);
    (ensured, calls)
}

#[tokio::test]
async fn the_repository_is_created_once_and_drift_is_repaired() {
    let world = World::start_with(|options| options.registry = true).await;
    let registry = world
        .sandbox
        .registry()
        .expect("a registry")
        .host()
        .to_owned();
    let wanted = spec("cni-metrics-publisher", false);

    let (created, calls) = ensure(&world, &wanted).await;
    assert_eq!(
        created.changes,
        [
            RepositoryChange::Created,
            RepositoryChange::LifecyclePolicySet
        ]
    );
    assert_eq!(calls, ["CreateRepository", "PutLifecyclePolicy"]);
    assert_eq!(created.uri, format!("{registry}/cni-metrics-publisher"));

    let (again, calls) = ensure(&world, &wanted).await;
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    assert!(calls.is_empty(), "a second run changed {calls:?}");

    // Someone turns scanning off, makes tags mutable and replaces the lifecycle policy.
    let script = world.write_script(
        "drift.py",
        "import boto3, sys\n\
         ecr = boto3.client('ecr', endpoint_url=sys.argv[1])\n\
         name = 'cni-metrics-publisher'\n\
         ecr.put_image_scanning_configuration(repositoryName=name, imageScanningConfiguration={'scanOnPush': False})\n\
         ecr.put_image_tag_mutability(repositoryName=name, imageTagMutability='MUTABLE')\n\
         policy = '{\"rules\": [{\"rulePriority\": 1, \"selection\": {\"tagStatus\": \"any\", \"countType\": \"imageCountMoreThan\", \"countNumber\": 3}, \"action\": {\"type\": \"expire\"}}]}'\n\
         ecr.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=policy)\n",
    );
    world.boto3(&script, &[world.sandbox.aws_endpoint()]).await;
    let (repaired, calls) = ensure(&world, &wanted).await;
    assert_eq!(
        repaired.changes,
        [
            RepositoryChange::ScanOnPushEnabled,
            RepositoryChange::TagsMadeImmutable,
            RepositoryChange::LifecyclePolicySet
        ]
    );
    assert_eq!(
        calls,
        [
            "PutImageScanningConfiguration",
            "PutImageTagMutability",
            "PutLifecyclePolicy"
        ]
    );
    let (_, calls) = ensure(&world, &wanted).await;
    assert!(calls.is_empty(), "{calls:?}");
}

#[tokio::test]
async fn a_repository_without_our_tag_is_a_conflict_until_adopted() {
    let world = World::start().await;
    let script = world.write_script(
        "foreign.py",
        "import boto3, sys\n\
         boto3.client('ecr', endpoint_url=sys.argv[1]).create_repository(repositoryName='theirs')\n",
    );
    world.boto3(&script, &[world.sandbox.aws_endpoint()]).await;
    let before = ecr_requests(&world).len();
    let refused = ecr::ensure_repository(&ecr_client(&world), &spec("theirs", false))
        .await
        .expect_err("not ours");
    assert!(
        refused
            .to_string()
            .contains("not managed by cni-metrics-xtask")
            && refused.to_string().contains("--adopt"),
        "{refused}"
    );
    assert!(mutating(&ecr_requests(&world)[before..]).is_empty());

    let (adopted, calls) = ensure(&world, &spec("theirs", true)).await;
    assert_eq!(adopted.changes[0], RepositoryChange::Adopted);
    assert_eq!(calls[0], "TagResource");
    let (_, calls) = ensure(&world, &spec("theirs", false)).await;
    assert!(calls.is_empty(), "{calls:?}");
}

/// A small OCI layout (an index of one manifest of one layer) written by the sandbox's
/// Python fixture; returns the index's digest.
fn small_layout(world: &World, dir: &Path) -> String {
    small_layout_with(world, dir, "hello from the sandbox\n")
}

/// `skopeo inspect --tls-verify=false` of a reference in the sandbox's registry, with
/// `extra` options; its stdout.
fn skopeo_inspect(reference: &str, extra: &[&str]) -> String {
    let output = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .args(extra)
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo runs (cargo xtask test installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn skopeo_raw_manifest(reference: &str) -> Value {
    serde_json::from_str(&skopeo_inspect(reference, &["--raw"])).expect("a manifest")
}

fn skopeo_digest(reference: &str) -> String {
    skopeo_inspect(reference, &["--format", "{{.Digest}}"])
        .trim()
        .to_owned()
}

#[tokio::test]
async fn a_pushed_layout_reads_back_by_digest_and_a_second_push_uploads_nothing() {
    let world = World::start_with(|options| options.registry = true).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let digest = small_layout(&world, dir.path());
    let layout = Layout::read(dir.path()).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(layout.digest(), digest);

    let client = ecr_client(&world);
    ecr::ensure_repository(&client, &spec("pushed", false))
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let login = xtask::registry::login(&client)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let registry = world
        .sandbox
        .registry()
        .expect("a registry")
        .host()
        .to_owned();
    assert_eq!(login.host, registry);
    let tags = ["0.1.0".to_owned(), "rev-abc".to_owned()];
    let first = push::push(&layout, &login, "pushed", &tags)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(first.reference, format!("{registry}/pushed@{digest}"));
    // The layer and the config; the manifest and the index are pushed as manifests.
    assert_eq!((first.blobs_uploaded, first.blobs_present), (2, 0));
    assert_eq!(first.tags_pushed, tags);

    assert_eq!(skopeo_digest(&format!("{registry}/pushed:0.1.0")), digest);
    assert_eq!(skopeo_digest(&format!("{registry}/pushed:rev-abc")), digest);
    let index = skopeo_raw_manifest(&first.reference);
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(1));
    // ECR sees what the registry holds.
    assert_eq!(
        ecr::image_digest(&client, "pushed", "0.1.0")
            .await
            .expect("described"),
        digest
    );

    let second = push::push(&layout, &login, "pushed", &tags)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!((second.blobs_uploaded, second.blobs_present), (0, 2));
    assert!(second.tags_pushed.is_empty());
    assert_eq!(second.tags_unchanged, tags);

    // Another image under a taken tag: the tag stays on the first image.
    let other_dir = tempfile::tempdir().expect("a temp dir");
    let other_digest = small_layout_with(&world, other_dir.path(), "another file\n");
    let other = Layout::read(other_dir.path()).unwrap_or_else(|error| panic!("{error}"));
    let third = push::push(
        &other,
        &login,
        "pushed",
        &["0.1.0".to_owned(), "rev-def".to_owned()],
    )
    .await
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(third.tags_kept, ["0.1.0"]);
    assert_eq!(third.tags_pushed, ["rev-def"]);
    assert_eq!(skopeo_digest(&format!("{registry}/pushed:0.1.0")), digest);
    assert_eq!(
        skopeo_digest(&format!("{registry}/pushed:rev-def")),
        other_digest
    );
}

/// A small OCI layout like [`small_layout`]'s with `content` as its one file (another
/// content, another digest); returns the index's digest.
fn small_layout_with(world: &World, dir: &Path, content: &str) -> String {
    let fixtures = workspace_root().join("tests/e2e/fixtures");
    let output = std::process::Command::new(world.python())
        .args([
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import ecr_registry_roundtrip as r; r.small_image(sys.argv[2], sys.argv[3].encode()); print(r.index_digest(sys.argv[2]))",
            &fixtures.display().to_string(),
            &dir.display().to_string(),
            content,
        ])
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The Deployment's image in the sandbox.
async fn deployed_image(world: &World) -> String {
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(world.kube().await, "kube-system");
    let live = deployments
        .get("cni-metrics-helper")
        .await
        .expect("the Deployment");
    live.spec
        .and_then(|spec| spec.template.spec)
        .and_then(|pod| pod.containers.into_iter().next())
        .and_then(|container| container.image)
        .expect("an image")
}

#[tokio::test(flavor = "multi_thread")]
async fn publisher_ours_deploys_the_pushed_image_by_digest_and_plans_a_new_digest_as_a_change() {
    let world = World::start_with(|options| options.registry = true).await;
    let ours = ["--publisher", "ours", "--leader-elect"];

    // Nothing pushed yet: a clear error that says how to push, and nothing written.
    world.clear_request_logs();
    let refused = world
        .xtask(&[
            "deploy",
            "--cluster",
            "sandbox",
            "--yes",
            "--publisher",
            "ours",
        ])
        .await;
    assert_eq!(refused.status.code(), Some(1));
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(
        text.contains("ECR repository cni-metrics-publisher does not exist")
            && text.contains("cargo xtask image push"),
        "{text}"
    );
    assert!(world.mutating_aws_calls().is_empty());
    assert!(world.kubernetes_writes().is_empty());

    let client = ecr_client(&world);
    let repository = ecr::ensure_repository(&client, &spec("cni-metrics-publisher", false))
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let login = xtask::registry::login(&client)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let dir = tempfile::tempdir().expect("a temp dir");
    let digest = small_layout(&world, dir.path());
    let layout = Layout::read(dir.path()).unwrap_or_else(|error| panic!("{error}"));
    let version = cni_metrics_publisher::VERSION.to_owned();
    push::push(&layout, &login, "cni-metrics-publisher", &[version])
        .await
        .unwrap_or_else(|error| panic!("{error}"));

    world.deploy(&ours).await;
    let first = format!("{}@{digest}", repository.uri);
    assert_eq!(deployed_image(&world).await, first);
    let (code, _) = world.plan_json(&ours).await;
    assert_eq!(code, Some(0), "converged");

    // A newer image under another tag: plan shows the digest change, deploy rolls it out.
    let newer_dir = tempfile::tempdir().expect("a temp dir");
    let newer_digest = small_layout_with(&world, newer_dir.path(), "newer\n");
    let newer = Layout::read(newer_dir.path()).unwrap_or_else(|error| panic!("{error}"));
    push::push(
        &newer,
        &login,
        "cni-metrics-publisher",
        &["rev-newer".to_owned()],
    )
    .await
    .unwrap_or_else(|error| panic!("{error}"));
    let newer_flags = [
        "--publisher",
        "ours",
        "--leader-elect",
        "--publisher-tag",
        "rev-newer",
    ];
    let (code, plan) = world.plan_json(&newer_flags).await;
    assert_eq!(code, Some(2), "{plan}");
    let text = plan.to_string();
    assert!(
        text.contains(&digest) && text.contains(&newer_digest),
        "the plan shows the digest change: {plan}"
    );
    world.deploy(&newer_flags).await;
    assert_eq!(
        deployed_image(&world).await,
        format!("{}@{newer_digest}", repository.uri)
    );

    // render resolves the digest the same way (one ECR read, nothing else live).
    let out = tempfile::tempdir().expect("a temp dir");
    let rendered = world
        .xtask(&[
            "render",
            "--region",
            world.sandbox.region(),
            "--cluster",
            "sandbox",
            "--account",
            world.sandbox.account(),
            "--identity",
            "pod-identity",
            "--publisher",
            "ours",
            "--out",
            &out.path().display().to_string(),
        ])
        .await;
    assert_eq!(
        rendered.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let manifests = std::fs::read_dir(out.path())
        .expect("rendered files")
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .collect::<String>();
    assert!(
        manifests.contains(&first),
        "render runs the tagged image by digest"
    );
}
