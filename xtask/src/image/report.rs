//! What `image build` tells: the digests, the sizes, the layer's files and the runtime's
//! packages, for people (`to_human`) and for machines (serialised as JSON).

use std::fmt::Write;
use std::path::PathBuf;

use serde::Serialize;

use super::build::{PUBLISHER, Provenance};
use super::layout::{Documents, Written, sha256};
use super::oci::Image;
use super::platform::Platform;
use super::rootfs::EntryKind;

pub use super::rootfs::RuntimePackage;

/// A built image.
#[derive(Debug, Clone, Serialize)]
pub struct Built {
    /// The OCI image layout directory.
    pub layout: PathBuf,
    /// The `oci-archive` tarball, when one was asked for.
    pub archive: Option<PathBuf>,
    /// The digest of `index.json`, the image index: the image's digest.
    pub index_digest: String,
    /// The tag the layout gives each manifest (`org.opencontainers.image.ref.name`).
    pub ref_name: String,
    pub version: String,
    pub revision: String,
    pub created: String,
    /// Every blob under `blobs/sha256` together.
    pub total_blob_bytes: u64,
    pub platforms: Vec<BuiltPlatform>,
}

/// One platform's image.
#[derive(Debug, Clone, Serialize)]
pub struct BuiltPlatform {
    pub platform: Platform,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digest: String,
    /// The uncompressed layer's digest (`rootfs.diff_ids`).
    pub layer_diff_id: String,
    pub layer_compressed_bytes: u64,
    pub layer_uncompressed_bytes: u64,
    pub files: Vec<LayerEntry>,
    pub runtime_packages: Vec<RuntimePackage>,
}

/// One entry of the layer, as `tar tv` would list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerEntry {
    pub path: String,
    /// `directory`, `file` or `symlink`.
    pub kind: &'static str,
    /// Octal permission bits, e.g. `0755`.
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// The symlink's target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The file's digest (`sha256:...`), for files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Where it comes from: the publisher, a Debian package, or the image build.
    pub origin: String,
}

pub fn built(
    provenance: &Provenance,
    images: &[Image],
    documents: &Documents,
    written: Written,
) -> Built {
    Built {
        layout: written.layout,
        archive: written.archive,
        index_digest: sha256(&documents.index),
        ref_name: provenance.version.clone(),
        version: provenance.version.clone(),
        revision: provenance.revision.clone(),
        created: provenance.created.clone(),
        total_blob_bytes: documents.total_blob_bytes(),
        platforms: images.iter().map(platform).collect(),
    }
}

fn platform(image: &Image) -> BuiltPlatform {
    let files = image
        .rootfs
        .entries
        .iter()
        .map(|entry| {
            let (kind, size, target, digest) = match &entry.kind {
                EntryKind::Directory => ("directory", 0, None, None),
                EntryKind::File(bytes) => ("file", bytes.len() as u64, None, Some(sha256(bytes))),
                EntryKind::Symlink(target) => {
                    ("symlink", 0, Some(target.display().to_string()), None)
                }
            };
            LayerEntry {
                path: entry.path.display().to_string(),
                kind,
                mode: format!("{:04o}", entry.mode),
                uid: 0,
                gid: 0,
                size,
                target,
                digest,
                origin: entry.origin.clone(),
            }
        })
        .collect();
    BuiltPlatform {
        platform: image.platform,
        manifest_digest: image.manifest_digest.clone(),
        config_digest: image.config_digest.clone(),
        layer_digest: image.layer.digest.clone(),
        layer_diff_id: image.layer.diff_id.clone(),
        layer_compressed_bytes: image.layer.gzip.len() as u64,
        layer_uncompressed_bytes: image.layer.tar_size,
        files,
        runtime_packages: image.rootfs.packages.clone(),
    }
}

impl Built {
    /// A few aligned lines: what was built, its digests and sizes, and what to do with it.
    pub fn to_human(&self) -> String {
        let mut text = format!(
            "{PUBLISHER} {} (revision {}, created {})\n",
            self.version, self.revision, self.created
        );
        let width = self
            .platforms
            .iter()
            .map(|platform| platform.platform.to_string().len())
            .max()
            .unwrap_or(0)
            .max("archive".len());
        let mut row = |label: &str, value: String| {
            let _ = writeln!(text, "  {label:<width$}  {value}");
        };
        row("layout", self.layout.display().to_string());
        if let Some(archive) = &self.archive {
            row("archive", archive.display().to_string());
        }
        row(
            "index",
            format!("{}  (tag {})", self.index_digest, self.ref_name),
        );
        for platform in &self.platforms {
            row(
                &platform.platform.to_string(),
                format!(
                    "{}  layer {} compressed, {} uncompressed, {} entries",
                    platform.manifest_digest,
                    megabytes(platform.layer_compressed_bytes),
                    megabytes(platform.layer_uncompressed_bytes),
                    platform.files.len()
                ),
            );
            let packages: Vec<String> = platform
                .runtime_packages
                .iter()
                .map(RuntimePackage::pinned)
                .collect();
            row("runtime", packages.join(" "));
        }
        row(
            "blobs",
            format!("{} in total", megabytes(self.total_blob_bytes)),
        );
        let _ = writeln!(
            text,
            "Run it: podman run --rm oci:{}:{} --version",
            self.layout.display(),
            self.ref_name
        );
        text
    }
}

/// `5.81 MB (5812345 B)`: decimal megabytes, as registries show sizes, and the exact count.
fn megabytes(bytes: u64) -> String {
    format!("{:.2} MB ({bytes} B)", bytes as f64 / 1_000_000.0)
}
