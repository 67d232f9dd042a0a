//! `cargo xtask image build` end to end: the real xtask binary builds the image around the
//! debug publisher (a stripped copy, as the release profile strips; the release build takes
//! minutes), and tools we did not write read and run it: skopeo, umoci, and podman with runc.
//!
//! podman runs as root with storage of its own (vfs) in a temporary directory and a
//! containers.conf each test writes, so tests running at the same time share no state.
//! Where podman cannot start containers on a machine (no namespaces, no cgroups), the
//! container test runs the umoci-unpacked root file system under
//! `unshare --mount --pid --fork chroot` instead and says so on stderr;
//! `CNI_IMAGE_TEST_RUNTIME=chroot` takes that path on purpose.
//!
//! The layer's listing is a golden file. Re-bless it after an intended change:
//!
//!     UPDATE_SNAPSHOTS=1 cargo test -p xtask --test main image::
//!
//! and review `git diff xtask/tests/snapshots/image-layer.snap` before committing.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use crate::support::{stderr, stdout};
use crate::world::World;

/// The layer listing's golden file (see `snapshots.rs` for the rendering ones).
pub const SNAPSHOT: &str = "image-layer.snap";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The debug publisher, built once per test run and stripped into the target directory.
fn publisher() -> &'static Path {
    static PUBLISHER: OnceLock<PathBuf> = OnceLock::new();
    PUBLISHER.get_or_init(|| {
        let root = sandbox::python_tools::workspace_root();
        // Without the variables `cargo test` set for this binary, so that this build
        // and the next `cargo test` do not each find the other's output stale.
        let status = xtask::cargo_tool::cargo_command()
            .args(["build", "--quiet", "-p", "cni-metrics-publisher"])
            .current_dir(&root)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building cni-metrics-publisher failed");
        let debug = Path::new(env!("CARGO_BIN_EXE_xtask"))
            .parent()
            .expect("the target's debug directory");
        let built = debug.join("cni-metrics-publisher");
        let dir = debug.join("image-test");
        std::fs::create_dir_all(&dir).expect("image-test dir");
        let stripped = dir.join("cni-metrics-publisher");
        // Stripping takes the 100 MB debug binary to about a third, which the image build
        // gzips in a third of the time; a temporary name keeps a half-written copy unseen.
        let partial = dir.join(format!("cni-metrics-publisher.{}", std::process::id()));
        let status = Command::new("strip")
            .arg("-o")
            .arg(&partial)
            .arg(&built)
            .status()
            .expect("strip (binutils, which linking Rust needs) runs");
        assert!(status.success(), "strip failed on {}", built.display());
        std::fs::rename(&partial, &stripped).expect("renamed");
        stripped
    })
}

/// `cargo xtask image build --binary <publisher> --out DIR/oci --archive DIR/image.tar`
/// with `extra` arguments and `env`, SOURCE_DATE_EPOCH unset unless `env` sets it.
fn image_build(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command
        .args(["image", "build", "--binary"])
        .arg(publisher())
        .arg("--out")
        .arg(dir.join("oci"))
        .arg("--archive")
        .arg(dir.join("image.tar"))
        .args(extra)
        .env_remove("RUST_LOG")
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("xtask runs")
}

/// An image built as `image_build` does, with `--output json`; the test fails with the
/// command's stderr unless it succeeds.
fn built_image(dir: &Path) -> Value {
    let output = image_build(dir, &["--output", "json"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("stdout is JSON ({error}): {}", stdout(&output)))
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    std::fs::read(layout.join("blobs/sha256").join(hex)).expect("the blob is in the layout")
}

fn json_blob(layout: &Path, digest: &str) -> Value {
    serde_json::from_slice(&blob(layout, digest)).expect("a JSON blob")
}

/// The manifest and config of the one platform in the layout, through index.json.
fn manifest_and_config(layout: &Path) -> (Value, Value) {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json"))
            .expect("JSON");
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1, "one platform: {index}");
    let manifest = json_blob(layout, manifests[0]["digest"].as_str().expect("digest"));
    let config = json_blob(
        layout,
        manifest["config"]["digest"].as_str().expect("digest"),
    );
    (manifest, config)
}

/// One entry of the layer as tar records it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TarEntry {
    path: String,
    kind: &'static str,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    target: Option<String>,
    names: (String, String),
}

/// The layer blob, gunzipped and read entry by entry.
fn layer_entries(layout: &Path, manifest: &Value) -> Vec<TarEntry> {
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "one layer");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let gzip = blob(layout, layers[0]["digest"].as_str().expect("digest"));
    // gzip's trailer holds the uncompressed size (modulo 4 GiB, far above a layer's).
    let size_bytes: [u8; 4] = gzip[gzip.len() - 4..].try_into().expect("4 bytes");
    let mut tar = vec![0; u32::from_le_bytes(size_bytes) as usize];
    let unpacked = libdeflater::Decompressor::new()
        .gzip_decompress(&gzip, &mut tar)
        .expect("the layer is gzip");
    assert_eq!(unpacked, tar.len());
    let mut archive = tar::Archive::new(tar.as_slice());
    let mut entries = Vec::new();
    for entry in archive.entries().expect("a tar") {
        let mut entry = entry.expect("an entry");
        let header = entry.header().clone();
        let kind = match header.entry_type() {
            tar::EntryType::Directory => "d",
            tar::EntryType::Regular => "f",
            tar::EntryType::Symlink => "l",
            other => panic!("unexpected entry type {other:?}"),
        };
        let mut content = Vec::new();
        entry.read_to_end(&mut content).expect("content");
        entries.push(TarEntry {
            path: entry.path().expect("path").display().to_string(),
            kind,
            mode: header.mode().expect("mode"),
            uid: header.uid().expect("uid"),
            gid: header.gid().expect("gid"),
            size: content.len() as u64,
            mtime: header.mtime().expect("mtime"),
            target: entry
                .link_name()
                .expect("link name")
                .map(|target| target.display().to_string()),
            names: (
                String::from_utf8_lossy(header.username_bytes().unwrap_or_default()).into_owned(),
                String::from_utf8_lossy(header.groupname_bytes().unwrap_or_default()).into_owned(),
            ),
        });
    }
    entries
}

/// The layer's listing and the config's runtime fields, with what varies between builds
/// and machines (the publisher's size, Debian's file sizes and versions, the revision and
/// dates) left out.
fn snapshot_text(entries: &[TarEntry], files: &[Value], config: &Value) -> String {
    let origins: BTreeMap<String, String> = files
        .iter()
        .map(|file| {
            (
                file["path"].as_str().expect("path").to_owned(),
                file["origin"].as_str().expect("origin").to_owned(),
            )
        })
        .collect();
    let mut text = String::from(
        "# cargo xtask image build --binary <the debug publisher, stripped>\n\
         # The layer as tar lists it: type, mode, uid/gid, size, path, origin. The publisher's\n\
         # size and the sizes of files from Debian packages vary by build and package version: *\n",
    );
    for entry in entries {
        let origin = &origins[&format!("/{}", entry.path)];
        let size = if entry.kind == "f" && origin != "image build" {
            "*".to_owned()
        } else {
            entry.size.to_string()
        };
        let target = entry
            .target
            .as_ref()
            .map(|target| format!(" -> {target}"))
            .unwrap_or_default();
        text.push_str(&format!(
            "{} {:04o} {}/{} {size} {}{target}  ({origin})\n",
            entry.kind, entry.mode, entry.uid, entry.gid, entry.path
        ));
    }
    let inner = &config["config"];
    let mut labels: Vec<&String> = inner["Labels"]
        .as_object()
        .expect("labels")
        .keys()
        .collect();
    labels.sort();
    text.push_str("\n# The image config, less the values that name the build\n");
    for key in ["architecture", "os"] {
        text.push_str(&format!("{key}: {}\n", config[key]));
    }
    for key in ["User", "Entrypoint", "Cmd", "Env", "ExposedPorts"] {
        text.push_str(&format!("{key}: {}\n", inner[key]));
    }
    text.push_str(&format!("Labels: {labels:?}\n"));
    text
}

fn snapshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(SNAPSHOT)
}

#[test]
fn built_twice_from_one_binary_and_commit_the_image_is_the_same_and_its_layer_is_as_recorded() {
    let first_dir = tempfile::tempdir().expect("temp dir");
    let second_dir = tempfile::tempdir().expect("temp dir");
    let first = built_image(first_dir.path());
    let second = built_image(second_dir.path());
    let platform = &first["platforms"][0];
    assert_eq!(platform["platform"], "linux/amd64");
    assert_eq!(first["index_digest"], second["index_digest"]);
    assert_eq!(
        platform["manifest_digest"],
        second["platforms"][0]["manifest_digest"]
    );
    for file in ["index.json", "oci-layout"] {
        assert_eq!(
            std::fs::read(first_dir.path().join("oci").join(file)).expect("read"),
            std::fs::read(second_dir.path().join("oci").join(file)).expect("read"),
            "{file}"
        );
    }
    assert_eq!(
        std::fs::read(first_dir.path().join("image.tar")).expect("archive"),
        std::fs::read(second_dir.path().join("image.tar")).expect("archive"),
        "the oci-archive is the same bytes"
    );
    let layout = first_dir.path().join("oci");
    let index = std::fs::read(layout.join("index.json")).expect("index.json");
    assert_eq!(
        first["index_digest"],
        format!("sha256:{}", sha256_hex(&index)),
        "the printed index digest is index.json's"
    );

    let (manifest, config) = manifest_and_config(&layout);
    let entries = layer_entries(&layout, &manifest);
    let created = config["created"].as_str().expect("created");
    let epoch = seconds_since_1970(created);
    for entry in &entries {
        assert_eq!((entry.uid, entry.gid), (0, 0), "{entry:?}");
        assert_eq!(entry.names, (String::new(), String::new()), "{entry:?}");
        assert_eq!(
            entry.mtime, epoch,
            "every mtime is the created time: {entry:?}"
        );
    }
    let mut sorted = entries.clone();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(entries, sorted, "the entries are sorted");
    // What --output json lists is what the layer holds.
    let files = platform["files"].as_array().expect("files");
    let listed: Vec<(String, String, u64)> = files
        .iter()
        .map(|file| {
            (
                file["path"]
                    .as_str()
                    .expect("path")
                    .trim_start_matches('/')
                    .to_owned(),
                file["mode"].as_str().expect("mode").to_owned(),
                file["size"].as_u64().expect("size"),
            )
        })
        .collect();
    let in_layer: Vec<(String, String, u64)> = entries
        .iter()
        .map(|entry| {
            (
                entry.path.clone(),
                format!("{:04o}", entry.mode),
                entry.size,
            )
        })
        .collect();
    assert_eq!(listed, in_layer);
    assert_eq!(
        platform["layer_compressed_bytes"].as_u64(),
        Some(
            blob(
                &layout,
                manifest["layers"][0]["digest"].as_str().expect("digest")
            )
            .len() as u64
        )
    );

    // The runtime's packages, recorded separately from the snapshot (their versions differ
    // between machines): each as dpkg knows it, and in the label.
    let packages = platform["runtime_packages"].as_array().expect("packages");
    let names: Vec<&str> = packages
        .iter()
        .map(|package| package["package"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        ["ca-certificates", "libc6", "libgcc-s1"],
        "{packages:?}"
    );
    let mut pinned = Vec::new();
    for package in packages {
        let name = package["package"].as_str().expect("name");
        let output = Command::new("dpkg-query")
            .args(["-W", "-f", "${Version}", name])
            .output()
            .expect("dpkg-query runs");
        assert_eq!(
            package["version"].as_str(),
            Some(String::from_utf8_lossy(&output.stdout).trim()),
            "{name}"
        );
        eprintln!(
            "runtime package: {name} {} ({}): {}",
            package["version"], package["architecture"], package["files"]
        );
        let arch = package["architecture"].as_str().expect("arch");
        let version = package["version"].as_str().expect("version");
        pinned.push(match arch {
            "all" => format!("{name}={version}"),
            arch => format!("{name}:{arch}={version}"),
        });
    }
    assert_eq!(
        config["config"]["Labels"]["cni-metrics-publisher.runtime-packages"],
        pinned.join(" ")
    );
    assert_eq!(manifest["annotations"], config["config"]["Labels"]);

    let snapshot = snapshot_text(&entries, files, &config);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(snapshot_path(), &snapshot).expect("snapshot written");
    } else {
        let expected = std::fs::read_to_string(snapshot_path()).unwrap_or_default();
        assert!(
            expected == snapshot,
            "the layer differs from {}:\n{}\nif the change is intended, run \
             `UPDATE_SNAPSHOTS=1 cargo test -p xtask --test main image::` and review the diff",
            snapshot_path().display(),
            similar::TextDiff::from_lines(&expected, &snapshot)
                .unified_diff()
                .header(SNAPSHOT, "the layer built now")
        );
    }

    // SOURCE_DATE_EPOCH sets the created time, and so another digest; the human output
    // names the digests and sizes.
    let third_dir = tempfile::tempdir().expect("temp dir");
    let output = image_build(third_dir.path(), &[], &[("SOURCE_DATE_EPOCH", "0")]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("created 1970-01-01T00:00:00Z"), "{text}");
    let index_line = text
        .lines()
        .find(|line| line.trim_start().starts_with("index"))
        .unwrap_or_else(|| panic!("an index line: {text}"));
    assert!(index_line.contains("sha256:"), "{text}");
    assert!(
        !index_line.contains(first["index_digest"].as_str().expect("digest")),
        "another created time gives another digest: {text}"
    );
    assert!(text.contains("linux/amd64  sha256:"), "{text}");
    assert!(text.contains("compressed"), "{text}");
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// An RFC 3339 time in seconds since 1970.
fn seconds_since_1970(text: &str) -> u64 {
    let timestamp: jiff::Timestamp = text.parse().expect("an RFC 3339 time");
    u64::try_from(timestamp.as_second()).expect("after 1970")
}

#[test]
fn skopeo_and_umoci_read_the_layout_and_see_the_user_entrypoint_and_labels() {
    let dir = tempfile::tempdir().expect("temp dir");
    let built = built_image(dir.path());
    let layout = dir.path().join("oci");
    let manifest_digest = &built["platforms"][0]["manifest_digest"];
    for reference in [
        format!("oci:{}", layout.display()),
        format!("oci-archive:{}", dir.path().join("image.tar").display()),
    ] {
        let output = tool("skopeo", &["inspect", &reference]);
        let inspected: Value = serde_json::from_slice(&output.stdout).expect("skopeo prints JSON");
        assert_eq!(&inspected["Digest"], manifest_digest, "{reference}");
        assert_eq!(inspected["Architecture"], "amd64");
        assert_eq!(inspected["Os"], "linux");
        let labels = &inspected["Labels"];
        assert_eq!(labels["org.opencontainers.image.version"], VERSION);
        assert_eq!(
            labels["org.opencontainers.image.title"],
            "cni-metrics-publisher"
        );
        assert_eq!(
            labels["org.opencontainers.image.revision"],
            built["revision"]
        );
        assert_eq!(labels["org.opencontainers.image.created"], built["created"]);
        assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    }

    let bundle = dir.path().join("bundle");
    let image = format!("{}:{VERSION}", layout.display());
    tool(
        "umoci",
        &["unpack", "--image", &image, &bundle.display().to_string()],
    );
    let runtime: Value = serde_json::from_slice(
        &std::fs::read(bundle.join("config.json")).expect("umoci writes config.json"),
    )
    .expect("JSON");
    let process = &runtime["process"];
    assert_eq!(process["user"]["uid"], 65534);
    assert_eq!(process["user"]["gid"], 65534);
    assert_eq!(
        process["args"],
        serde_json::json!(["/usr/local/bin/cni-metrics-publisher", "run"])
    );
    let env: Vec<&str> = process["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        env.contains(&"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"),
        "{env:?}"
    );
    let annotations = &runtime["annotations"];
    assert_eq!(annotations["org.opencontainers.image.version"], VERSION);
    assert_eq!(
        annotations["org.opencontainers.image.revision"],
        built["revision"]
    );
    // The unpacked root file system holds what the layer lists, and nothing else.
    let mut unpacked = Vec::new();
    collect_paths(&bundle.join("rootfs"), Path::new("/"), &mut unpacked);
    unpacked.sort();
    let listed: Vec<String> = built["platforms"][0]["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|file| file["path"].as_str().expect("path").to_owned())
        .collect();
    assert_eq!(unpacked, listed);
}

fn collect_paths(dir: &Path, prefix: &Path, into: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("readable") {
        let entry = entry.expect("entry");
        let path = prefix.join(entry.file_name());
        into.push(path.display().to_string());
        if entry.file_type().expect("type").is_dir() {
            collect_paths(&entry.path(), &path, into);
        }
    }
}

/// Runs a tool the tests need (`cargo xtask test` installs it); fails the test, with its
/// stderr, unless it succeeds.
fn tool(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("{program} runs ({error}); `cargo xtask test` installs it"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        stderr(&output)
    );
    output
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_runs_in_a_real_runtime_and_publishes_a_dry_run_of_the_sandbox_fleet() {
    const NODES: usize = 3;
    let world = World::start_with(|options| options.nodes = NODES).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let built = built_image(dir.path());
    let runtime = match std::env::var("CNI_IMAGE_TEST_RUNTIME").as_deref() {
        Ok("chroot") => {
            eprintln!("CNI_IMAGE_TEST_RUNTIME=chroot: running the image with unshare and chroot");
            Runtime::start_chroot(dir.path(), &built)
        }
        _ => Runtime::start_podman(dir.path(), &built),
    };
    let kubeconfig = world.sandbox.kubeconfig_path();

    let version = runtime.run(None, &["--version"]);
    assert_eq!(
        stdout(&version).trim(),
        format!("cni-metrics-publisher {VERSION}"),
        "{}",
        stderr(&version)
    );

    let dry_run = runtime.run(
        Some(&kubeconfig),
        &[
            "once",
            "--dry-run",
            "--cluster-id",
            "sandbox",
            "--region",
            world.sandbox.region(),
        ],
    );
    assert!(
        dry_run.status.success(),
        "once --dry-run in the container failed: {}",
        stderr(&dry_run)
    );
    let printed: Value = serde_json::from_slice(&dry_run.stdout)
        .unwrap_or_else(|_| panic!("stdout is JSON: {}", stdout(&dry_run)));
    let datums = printed["rounds"][0]["datums"].as_array().expect("datums");
    let datum = |name: &str| {
        datums
            .iter()
            .find(|datum| datum["MetricName"] == name)
            .unwrap_or_else(|| panic!("{name} is printed: {printed}"))["Value"]
            .as_f64()
    };
    assert_eq!(datum("podsScraped"), Some(NODES as f64), "{printed}");
    assert_eq!(datum("scrapeErrors"), Some(0.0), "{printed}");
    assert_eq!(
        datum("assignIPAddresses"),
        Some(
            world
                .sandbox
                .fleet()
                .expected_gauge_sum("awscni_assigned_ip_addresses")
        ),
        "{printed}"
    );
}

/// `podman` as root with state of its own under `dir`: storage (vfs, which needs no
/// overlay or FUSE), its run directory, containers.conf and temporary files.
fn podman(dir: &Path, args: &[&str]) -> Output {
    Command::new("podman")
        .arg("--root")
        .arg(dir.join("podman/root"))
        .arg("--runroot")
        .arg(dir.join("podman/runroot"))
        .args([
            "--storage-driver",
            "vfs",
            "--runtime",
            "runc",
            "--cgroup-manager",
            "cgroupfs",
        ])
        .args(args)
        .env("CONTAINERS_CONF", dir.join("containers.conf"))
        .env("TMPDIR", dir)
        .stdin(Stdio::null())
        .output()
        .expect("podman runs (`cargo xtask test` installs it)")
}

/// Where the container test runs the image.
enum Runtime {
    /// podman with runc, as root, with state of its own under `dir`.
    Podman { dir: PathBuf, image_id: String },
    /// The umoci-unpacked bundle under `unshare --mount --pid --fork chroot`, as the
    /// bundle's config.json says (user, environment, arguments).
    Chroot { bundle: PathBuf, process: Value },
}

/// What podman prints when the machine, not the image, keeps it from starting a container.
const NO_CONTAINERS_HERE: [&str; 6] = [
    "user namespace",
    "newuidmap",
    "cgroup",
    "unshare",
    "pivot_root",
    "mount proc",
];

impl Runtime {
    fn start_podman(dir: &Path, built: &Value) -> Runtime {
        let conf = dir.join("containers.conf");
        // No ulimits to copy (a container's default ones cannot be raised here), the cgroup
        // manager and runtime that work without systemd, events to a file.
        std::fs::write(&conf, xtask::demo_cmd::PODMAN_CONTAINERS_CONF)
            .expect("containers.conf written");
        let archive = format!("oci-archive:{}", dir.join("image.tar").display());
        let pulled = podman(dir, &["pull", "--quiet", &archive]);
        assert!(
            pulled.status.success(),
            "podman pull {archive} failed: {}",
            stderr(&pulled)
        );
        // podman's image id is the config's digest.
        let image_id = stdout(&pulled).trim().to_owned();
        assert_eq!(
            format!("sha256:{image_id}"),
            built["platforms"][0]["config_digest"]
                .as_str()
                .expect("digest"),
        );
        let podman = Runtime::Podman {
            dir: dir.to_owned(),
            image_id,
        };
        let probe = podman.run(None, &["--version"]);
        let error = stderr(&probe);
        if probe.status.success() {
            return podman;
        }
        if NO_CONTAINERS_HERE
            .iter()
            .any(|sign| error.to_lowercase().contains(sign))
        {
            eprintln!(
                "podman cannot start containers on this machine ({}); running the image with \
                 unshare --mount --pid --fork chroot on the umoci-unpacked root file system instead",
                error.trim()
            );
            return Runtime::start_chroot(dir, built);
        }
        panic!("podman ran the image and it failed: {error}");
    }

    fn start_chroot(dir: &Path, built: &Value) -> Runtime {
        let bundle = dir.join("bundle");
        let image = format!("{}:{VERSION}", dir.join("oci").display());
        tool(
            "umoci",
            &["unpack", "--image", &image, &bundle.display().to_string()],
        );
        let config: Value = serde_json::from_slice(
            &std::fs::read(bundle.join("config.json")).expect("config.json"),
        )
        .expect("JSON");
        assert!(built["platforms"][0]["files"].is_array());
        Runtime::Chroot {
            bundle,
            process: config["process"].clone(),
        }
    }

    /// Runs the image's entrypoint with `args` on the host's network, with `kubeconfig`
    /// inside at /etc/cni-metrics/kubeconfig (KUBECONFIG) when given.
    fn run(&self, kubeconfig: Option<&Path>, args: &[&str]) -> Output {
        const INSIDE: &str = "/etc/cni-metrics/kubeconfig";
        match self {
            Runtime::Podman { dir, image_id } => {
                let mut podman_args = vec![
                    "run".to_owned(),
                    "--rm".to_owned(),
                    "--network".to_owned(),
                    "host".to_owned(),
                ];
                if let Some(kubeconfig) = kubeconfig {
                    podman_args.extend([
                        "--volume".to_owned(),
                        format!("{}:{INSIDE}:ro", kubeconfig.display()),
                        "--env".to_owned(),
                        format!("KUBECONFIG={INSIDE}"),
                    ]);
                }
                podman_args.push(image_id.clone());
                podman_args.extend(args.iter().map(|arg| (*arg).to_owned()));
                let podman_args: Vec<&str> = podman_args.iter().map(String::as_str).collect();
                podman(dir, &podman_args)
            }
            Runtime::Chroot { bundle, process } => {
                let rootfs = bundle.join("rootfs");
                if let Some(kubeconfig) = kubeconfig {
                    let target = rootfs.join(INSIDE.trim_start_matches('/'));
                    std::fs::create_dir_all(target.parent().expect("parent")).expect("dir");
                    std::fs::copy(kubeconfig, &target).expect("kubeconfig copied in");
                }
                let user = format!("{}:{}", process["user"]["uid"], process["user"]["gid"]);
                let entrypoint = process["args"][0].as_str().expect("entrypoint");
                let mut command = Command::new("unshare");
                command
                    .args(["--mount", "--pid", "--fork", "chroot", "--userspec", &user])
                    .arg(&rootfs)
                    .arg(entrypoint)
                    .args(args)
                    .env_clear()
                    .env("KUBECONFIG", INSIDE)
                    .stdin(Stdio::null());
                for pair in process["env"].as_array().expect("env") {
                    if let Some((name, value)) = pair.as_str().and_then(|p| p.split_once('=')) {
                        command.env(name, value);
                    }
                }
                command.output().expect("unshare runs")
            }
        }
    }
}

#[test]
fn bad_input_is_one_line_with_exit_code_1_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let not_a_dir = dir.path().join("a-file");
    std::fs::write(&not_a_dir, "x").expect("written");
    let script = dir.path().join("script.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").expect("written");
    let unwritable = not_a_dir.join("oci");
    let out = dir.path().join("out").display().to_string();
    let archive = dir.path().join("image.tar").display().to_string();
    let publisher = publisher().display().to_string();
    let script = script.display().to_string();
    let unwritable = unwritable.display().to_string();
    let cases: [(Vec<&str>, &str); 5] = [
        (
            vec!["--binary", &publisher, "--platform", "windows/amd64"],
            "unknown platform \"windows/amd64\"",
        ),
        (
            vec![
                "--binary",
                &publisher,
                "--platform",
                "linux/amd64,linux/arm64",
            ],
            "platform linux/arm64 needs the Rust target aarch64-unknown-linux-gnu",
        ),
        (vec!["--binary", &script], "is not an ELF file"),
        (
            vec!["--binary", "/bin/true"],
            "printed \"true (GNU coreutils)",
        ),
        (
            vec!["--binary", &publisher, "--out", &unwritable],
            "cannot write",
        ),
    ];
    for (args, expected) in cases {
        let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
        command
            .args(["image", "build", "--archive", &archive])
            .args(&args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        if !args.contains(&"--out") {
            command.args(["--out", &out]);
        }
        let output = command.output().expect("xtask runs");
        let error = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {error}");
        assert_eq!(error.lines().count(), 1, "{args:?}: one line: {error}");
        assert!(error.starts_with("error: "), "{args:?}: {error}");
        assert!(error.contains(expected), "{args:?}: {error}");
        assert!(stdout(&output).is_empty(), "{args:?}: nothing on stdout");
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["a-file", "script.sh"],
            "{args:?}: nothing was written"
        );
    }
}

/// `image push --output json` against the world's ECR and registry.
async fn image_push(world: &World, layout: &Path) -> Value {
    let output = world
        .xtask(&[
            "image",
            "push",
            "--layout",
            &layout.display().to_string(),
            "--output",
            "json",
        ])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("stdout is JSON ({error}): {}", stdout(&output)))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_built_image_is_pushed_once_read_back_by_skopeo_deployed_by_digest_and_runs() {
    let world = World::start_with(|options| options.registry = true).await;
    let registry = world
        .sandbox
        .registry()
        .expect("a registry")
        .host()
        .to_owned();
    let dir = tempfile::tempdir().expect("temp dir");
    let built = built_image(dir.path());
    let digest = built["index_digest"]
        .as_str()
        .expect("an index digest")
        .to_owned();
    let revision = built["revision"].as_str().expect("a revision").to_owned();

    let pushed = image_push(&world, &dir.path().join("oci")).await;
    let reference = format!("{registry}/cni-metrics-publisher@{digest}");
    assert_eq!(pushed["reference"], reference.as_str(), "{pushed}");
    assert_eq!(
        pushed["blobs_uploaded"], 2,
        "the config and the layer: {pushed}"
    );
    assert_eq!(
        pushed["tags_pushed"],
        serde_json::json!([VERSION, revision])
    );
    assert_eq!(
        pushed["repository_changes"][0], "created",
        "the repository is made on first push: {pushed}"
    );
    let inspected = tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
            &format!("docker://{registry}/cni-metrics-publisher:{VERSION}"),
        ],
    );
    assert_eq!(stdout(&inspected).trim(), digest, "{}", stderr(&inspected));

    world.clear_request_logs();
    let again = image_push(&world, &dir.path().join("oci")).await;
    assert_eq!(again["blobs_uploaded"], 0, "{again}");
    assert_eq!(
        again["tags_unchanged"],
        serde_json::json!([VERSION, revision])
    );
    assert!(
        world.mutating_aws_calls().is_empty(),
        "a second push changed the repository: {:?}",
        world.mutating_aws_calls()
    );

    world
        .deploy(&["--publisher", "ours", "--leader-elect"])
        .await;
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(world.kube().await, "kube-system");
    let image = deployments
        .get("cni-metrics-helper")
        .await
        .expect("the Deployment")
        .spec
        .and_then(|spec| spec.template.spec)
        .and_then(|pod| pod.containers.into_iter().next())
        .and_then(|container| container.image);
    assert_eq!(image.as_deref(), Some(reference.as_str()));

    // What the Deployment names is pullable and runs: podman takes it from the registry.
    let podman_dir = dir.path().join("pull");
    std::fs::create_dir_all(&podman_dir).expect("a podman dir");
    std::fs::write(
        podman_dir.join("containers.conf"),
        xtask::demo_cmd::PODMAN_CONTAINERS_CONF,
    )
    .expect("containers.conf written");
    let pulled = podman(
        &podman_dir,
        &[
            "pull",
            "--quiet",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ],
    );
    assert!(pulled.status.success(), "podman pull: {}", stderr(&pulled));
    let ran = podman(
        &podman_dir,
        &["run", "--rm", "--network", "host", &reference, "--version"],
    );
    // (The runtime test above covers machines where podman cannot start containers with
    // its chroot fallback; here the pull from the registry is the point, so it must run.)
    assert_eq!(
        stdout(&ran).trim(),
        format!("cni-metrics-publisher {VERSION}"),
        "podman run of the pushed image: {}",
        stderr(&ran)
    );
}
