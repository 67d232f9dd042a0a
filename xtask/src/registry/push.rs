//! Pushing an OCI image layout to a registry over the OCI distribution API, with
//! `oci-client`: every blob the registry does not have yet, then the platform manifests by
//! digest, then the root (the image index, or the one manifest) under each tag. Nothing is
//! uploaded twice: a blob or a tag that is already there is left alone, so a second push of
//! the same image uploads no blob. ECR's tags are immutable, so a tag that already names
//! another image is kept, with a note, rather than failing the push.
//!
//! Plain HTTP is used only for registries on 127.0.0.0/8 (the sandbox's); anything else is
//! HTTPS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde_json::Value;

const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// Where to push, and as whom.
#[derive(Clone)]
pub struct RegistryLogin {
    /// `host[:port]`, as image references start.
    pub host: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLogin")
            .field("host", &self.host)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("cannot read {}: {source}; build the image first with `cargo xtask image build`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a valid OCI image layout: {reason}", dir.display())]
    Layout { dir: PathBuf, reason: String },
    #[error("pushing {what} to {reference} failed: {source}")]
    Registry {
        what: String,
        reference: String,
        #[source]
        source: OciDistributionError,
    },
}

/// A blob of the layout: its digest and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Blob {
    digest: String,
    path: PathBuf,
}

/// A manifest of the layout, with the blobs it refers to.
#[derive(Debug, Clone)]
struct Manifest {
    digest: String,
    media_type: String,
    bytes: Vec<u8>,
    blobs: Vec<Blob>,
}

/// An image layout as pushed: the root (an index, or one manifest) and the manifests
/// under it.
#[derive(Debug, Clone)]
pub struct Layout {
    root: Manifest,
    /// The platform manifests of an index root; empty when the root is a manifest.
    children: Vec<Manifest>,
}

impl Layout {
    /// Reads the layout in `dir`. The image is `index.json` itself, pushed as an image
    /// index (so its digest is the one `image build` prints), with the manifests it lists;
    /// or, when `index.json` names exactly one nested index blob, that index.
    pub fn read(dir: &Path) -> Result<Layout, PushError> {
        let index_path = dir.join("index.json");
        let index_bytes = std::fs::read(&index_path).map_err(|source| PushError::Read {
            path: index_path.clone(),
            source,
        })?;
        let index: Value = serde_json::from_slice(&index_bytes)
            .map_err(|error| layout_error(dir, &format!("index.json: {error}")))?;
        let entries = index
            .get("manifests")
            .and_then(Value::as_array)
            .filter(|entries| !entries.is_empty())
            .ok_or_else(|| layout_error(dir, "index.json lists no manifests"))?;
        let descriptors = entries
            .iter()
            .map(|entry| descriptor(dir, entry))
            .collect::<Result<Vec<_>, _>>()?;
        if let [(digest, media_type)] = descriptors.as_slice()
            && media_type == INDEX_MEDIA_TYPE
        {
            let root = manifest(dir, digest, media_type)?;
            let children = children_of(dir, &root)?;
            return Ok(Layout { root, children });
        }
        let children = descriptors
            .iter()
            .map(|(digest, media_type)| match media_type.as_str() {
                INDEX_MEDIA_TYPE => Err(layout_error(
                    dir,
                    "index.json mixes nested indexes with other images; push needs one image",
                )),
                _ => manifest(dir, digest, media_type),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let root = Manifest {
            digest: sha256_digest(&index_bytes),
            media_type: INDEX_MEDIA_TYPE.to_owned(),
            bytes: index_bytes,
            blobs: Vec::new(),
        };
        Ok(Layout { root, children })
    }

    /// The digest of the image as a registry names it: the root's.
    pub fn digest(&self) -> &str {
        &self.root.digest
    }

    /// The image config's labels (of the first platform's image for an index): what the
    /// image says it is, e.g. `org.opencontainers.image.version`.
    pub fn labels(&self) -> Result<BTreeMap<String, String>, PushError> {
        let image = self.children.first().unwrap_or(&self.root);
        let Some(config) = image.blobs.first() else {
            return Ok(BTreeMap::new());
        };
        let document = read_json(&config.path)?;
        Ok(document
            .pointer("/config/Labels")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_owned())))
            .collect())
    }

    /// Every blob, each once, in upload order (configs and layers before the manifests
    /// that name them).
    fn blobs(&self) -> Vec<&Blob> {
        let mut blobs: Vec<&Blob> = Vec::new();
        for blob in self
            .children
            .iter()
            .chain(std::iter::once(&self.root))
            .flat_map(|manifest| &manifest.blobs)
        {
            if !blobs.iter().any(|known| known.digest == blob.digest) {
                blobs.push(blob);
            }
        }
        blobs
    }
}

/// The manifests an index blob lists.
fn children_of(dir: &Path, index: &Manifest) -> Result<Vec<Manifest>, PushError> {
    let document: Value = serde_json::from_slice(&index.bytes)
        .map_err(|error| layout_error(dir, &format!("the index {}: {error}", index.digest)))?;
    document
        .get("manifests")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|child| {
            let (digest, media_type) = descriptor(dir, child)?;
            manifest(dir, &digest, &media_type)
        })
        .collect()
}

/// `sha256:<hex>` of `bytes`.
fn sha256_digest(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("sha256:{hex}")
}

fn layout_error(dir: &Path, reason: &str) -> PushError {
    PushError::Layout {
        dir: dir.to_owned(),
        reason: reason.to_owned(),
    }
}

fn read_json(path: &Path) -> Result<Value, PushError> {
    let bytes = std::fs::read(path).map_err(|source| PushError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|error| PushError::Layout {
        dir: path.to_owned(),
        reason: error.to_string(),
    })
}

/// The digest and media type of a descriptor.
fn descriptor(dir: &Path, entry: &Value) -> Result<(String, String), PushError> {
    let digest = entry
        .get("digest")
        .and_then(Value::as_str)
        .filter(|digest| digest.starts_with("sha256:"))
        .ok_or_else(|| layout_error(dir, "a descriptor without a sha256 digest"))?;
    let media_type = entry
        .get("mediaType")
        .and_then(Value::as_str)
        .unwrap_or(MANIFEST_MEDIA_TYPE);
    Ok((digest.to_owned(), media_type.to_owned()))
}

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    dir.join("blobs").join("sha256").join(hex)
}

/// Reads a manifest (or index) blob and lists the blobs it names (config and layers).
fn manifest(dir: &Path, digest: &str, media_type: &str) -> Result<Manifest, PushError> {
    let path = blob_path(dir, digest);
    let bytes = std::fs::read(&path).map_err(|source| PushError::Read {
        path: path.clone(),
        source,
    })?;
    let document: Value = serde_json::from_slice(&bytes)
        .map_err(|error| layout_error(dir, &format!("the manifest {digest}: {error}")))?;
    let mut blobs = Vec::new();
    if media_type != INDEX_MEDIA_TYPE {
        let config = document.get("config").into_iter();
        let layers = document
            .get("layers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for descriptor_value in config.chain(layers) {
            let (blob_digest, _) = descriptor(dir, descriptor_value)?;
            blobs.push(Blob {
                path: blob_path(dir, &blob_digest),
                digest: blob_digest,
            });
        }
    }
    Ok(Manifest {
        digest: digest.to_owned(),
        media_type: media_type.to_owned(),
        bytes,
        blobs,
    })
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PushReport {
    /// `<host>/<repository>@<digest>`.
    pub reference: String,
    pub digest: String,
    pub blobs_uploaded: usize,
    pub blobs_present: usize,
    pub tags_pushed: Vec<String>,
    pub tags_unchanged: Vec<String>,
    /// Tags that already name another image and stay (immutable tags).
    pub tags_kept: Vec<String>,
}

/// Pushes `layout` to `repository` on the registry of `login`, under `tags`.
pub async fn push(
    layout: &Layout,
    login: &RegistryLogin,
    repository: &str,
    tags: &[String],
) -> Result<PushReport, PushError> {
    let client = client_for(&login.host);
    let auth = RegistryAuth::Basic(login.username.clone(), login.password.clone());
    let by_digest = |digest: &str| {
        Reference::with_digest(login.host.clone(), repository.to_owned(), digest.to_owned())
    };
    let root_reference = by_digest(layout.digest());
    client
        .auth(&root_reference, &auth, RegistryOperation::Push)
        .await
        .map_err(registry_error("the login", &root_reference))?;
    let mut report = PushReport {
        reference: format!("{}/{repository}@{}", login.host, layout.digest()),
        digest: layout.digest().to_owned(),
        ..PushReport::default()
    };
    for blob in layout.blobs() {
        let exists = client
            .blob_exists(&root_reference, &blob.digest)
            .await
            .map_err(registry_error(
                &format!("blob {}", blob.digest),
                &root_reference,
            ))?;
        if exists {
            report.blobs_present += 1;
            continue;
        }
        let data = std::fs::read(&blob.path).map_err(|source| PushError::Read {
            path: blob.path.clone(),
            source,
        })?;
        client
            .push_blob(&root_reference, data, &blob.digest)
            .await
            .map_err(registry_error(
                &format!("blob {}", blob.digest),
                &root_reference,
            ))?;
        report.blobs_uploaded += 1;
    }
    for child in &layout.children {
        push_manifest(&client, &by_digest(&child.digest), child).await?;
    }
    for tag in tags {
        let tagged = Reference::with_tag(login.host.clone(), repository.to_owned(), tag.clone());
        match existing_digest(&client, &tagged, &auth).await? {
            Some(digest) if digest == layout.digest() => report.tags_unchanged.push(tag.clone()),
            Some(other) => {
                tracing::warn!(
                    %tag,
                    %other,
                    "the tag already names another image and tags are immutable; it stays"
                );
                report.tags_kept.push(tag.clone());
            }
            None => {
                push_manifest(&client, &tagged, &layout.root).await?;
                report.tags_pushed.push(tag.clone());
            }
        }
    }
    if report.tags_pushed.is_empty() && report.tags_unchanged.is_empty() {
        // Every tag is taken: the image is still pushed, by digest.
        push_manifest(&client, &root_reference, &layout.root).await?;
    }
    Ok(report)
}

fn client_for(host: &str) -> Client {
    // reqwest's rustls is built without a provider; ring is the one the workspace uses.
    // Installing twice fails harmlessly: the first one stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let protocol = if host.starts_with("127.") {
        ClientProtocol::HttpsExcept(vec![host.to_owned()])
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        ..ClientConfig::default()
    })
}

async fn push_manifest(
    client: &Client,
    reference: &Reference,
    manifest: &Manifest,
) -> Result<(), PushError> {
    let content_type =
        http::HeaderValue::from_str(&manifest.media_type).map_err(|_| PushError::Layout {
            dir: PathBuf::from(&manifest.digest),
            reason: format!(
                "the media type {:?} is not a header value",
                manifest.media_type
            ),
        })?;
    client
        .push_manifest_raw(reference, manifest.bytes.clone(), content_type)
        .await
        .map_err(registry_error(
            &format!("manifest {}", manifest.digest),
            reference,
        ))?;
    Ok(())
}

/// The digest `reference` (a tag) names, or `None` when the registry has no such tag.
async fn existing_digest(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
) -> Result<Option<String>, PushError> {
    match client.fetch_manifest_digest(reference, auth).await {
        Ok(digest) => Ok(Some(digest)),
        Err(error) if is_not_found(&error) => Ok(None),
        Err(source) => Err(PushError::Registry {
            what: "the tag".to_owned(),
            reference: reference.whole(),
            source,
        }),
    }
}

fn is_not_found(error: &OciDistributionError) -> bool {
    match error {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::RegistryError { envelope, .. } => {
            envelope.errors.iter().any(|error| {
                matches!(
                    error.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown
                )
            })
        }
        _ => false,
    }
}

fn registry_error<'a>(
    what: &'a str,
    reference: &'a Reference,
) -> impl FnOnce(OciDistributionError) -> PushError + 'a {
    move |source| PushError::Registry {
        what: what.to_owned(),
        reference: reference.whole(),
        source,
    }
}
