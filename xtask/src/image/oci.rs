//! The OCI documents: one image config and manifest per platform, and the image index
//! (`index.json`) that lists the manifests with their platform. Each is serialised with its
//! keys sorted (oci-spec keeps labels and annotations in hash maps, whose order changes from
//! run to run), so that the same inputs give the same digests.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use oci_spec::image::{
    ANNOTATION_CREATED, ANNOTATION_DESCRIPTION, ANNOTATION_LICENSES, ANNOTATION_REF_NAME,
    ANNOTATION_REVISION, ANNOTATION_SOURCE, ANNOTATION_TITLE, ANNOTATION_VERSION, ConfigBuilder,
    Descriptor, DescriptorBuilder, Digest, HistoryBuilder, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, PlatformBuilder, RootFsBuilder,
};

use super::build::{PUBLISHER, Provenance};
use super::layout::{Documents, Layer, LayoutError, sha256};
use super::platform::Platform;
use super::rootfs::{BINARY_PATH, Rootfs, USER};

/// The label listing the Debian packages the runtime comes from, `name:arch=version`
/// separated by spaces (what `apt-get install` takes to get the same files).
pub const RUNTIME_PACKAGES_LABEL: &str = "cni-metrics-publisher.runtime-packages";
/// The publisher's Prometheus port (`--prometheus`), as the upstream image exposes it.
const PROMETHEUS_PORT: &str = "61681/tcp";
/// The command the image runs without arguments: the daemon.
const DEFAULT_COMMAND: &str = "run";

/// One platform's image: its config and manifest blobs, and the parts they describe.
#[derive(Debug, Clone)]
pub struct Image {
    pub platform: Platform,
    pub rootfs: Rootfs,
    pub layer: Layer,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
}

/// The image config and manifest of `rootfs` on `platform`, with `layer` made from it.
pub fn image(
    platform: Platform,
    provenance: &Provenance,
    rootfs: &Rootfs,
    layer: Layer,
) -> Result<Image, LayoutError> {
    let labels = labels(provenance, rootfs);
    let document = |what| move |source| LayoutError::Document { what, source };
    let config = ConfigBuilder::default()
        .user(USER)
        .env(rootfs.env.clone())
        .entrypoint(vec![BINARY_PATH.to_owned()])
        .cmd(vec![DEFAULT_COMMAND.to_owned()])
        .exposed_ports(vec![PROMETHEUS_PORT.to_owned()])
        .labels(labels.clone().into_iter().collect::<HashMap<_, _>>())
        .build()
        .map_err(document("config"))?;
    let history = HistoryBuilder::default()
        .created(provenance.created.clone())
        .created_by("cargo xtask image build")
        .comment(format!(
            "{PUBLISHER} {}, its dynamic loader and shared libraries from Debian packages{}, /etc/passwd and /etc/group",
            provenance.version,
            if provenance.needs_ca_certificates {
                ", the CA bundle"
            } else {
                ""
            }
        ))
        .build()
        .map_err(document("history"))?;
    let mut image_config = ImageConfigurationBuilder::default()
        .created(provenance.created.clone())
        .architecture(platform.oci_arch())
        .os(platform.oci_os())
        .config(config)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![layer.diff_id.clone()])
                .build()
                .map_err(document("rootfs"))?,
        )
        .history(vec![history]);
    if let Some(variant) = platform.oci_variant() {
        image_config = image_config.variant(variant);
    }
    let config = canonical_json(
        &image_config.build().map_err(document("image config"))?,
        "image config",
    )?;
    let config_digest = sha256(&config);

    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(MediaType::ImageConfig, &config_digest, &config)?)
        .layers(vec![descriptor(
            MediaType::ImageLayerGzip,
            &layer.digest,
            &layer.gzip,
        )?])
        .annotations(labels.into_iter().collect::<HashMap<_, _>>())
        .build()
        .map_err(document("manifest"))?;
    let manifest = canonical_json(&manifest, "manifest")?;
    Ok(Image {
        platform,
        rootfs: rootfs.clone(),
        layer,
        config,
        config_digest,
        manifest_digest: sha256(&manifest),
        manifest,
    })
}

/// The image index over `images` and every blob, ready to be written as a layout. Each
/// manifest carries its platform, and the version as `org.opencontainers.image.ref.name`,
/// the tag tools take (`umoci unpack --image DIR:VERSION`, `skopeo copy oci:DIR:VERSION`).
pub fn layout(provenance: &Provenance, images: &[Image]) -> Result<Documents, LayoutError> {
    let document = |what| move |source| LayoutError::Document { what, source };
    let mut manifests = Vec::new();
    let mut blobs = BTreeMap::new();
    for image in images {
        let mut platform = PlatformBuilder::default()
            .architecture(image.platform.oci_arch())
            .os(image.platform.oci_os());
        if let Some(variant) = image.platform.oci_variant() {
            platform = platform.variant(variant);
        }
        let mut manifest = descriptor(
            MediaType::ImageManifest,
            &image.manifest_digest,
            &image.manifest,
        )?;
        manifest.set_platform(Some(platform.build().map_err(document("platform"))?));
        manifest.set_annotations(Some(HashMap::from([(
            ANNOTATION_REF_NAME.to_owned(),
            provenance.version.clone(),
        )])));
        manifests.push(manifest);
        blobs.insert(image.manifest_digest.clone(), image.manifest.clone());
        blobs.insert(image.config_digest.clone(), image.config.clone());
        blobs.insert(image.layer.digest.clone(), image.layer.gzip.clone());
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(document("image index"))?;
    Ok(Documents {
        blobs,
        index: canonical_json(&index, "image index")?,
    })
}

/// The labels of the config, which the manifest carries as its annotations too.
fn labels(provenance: &Provenance, rootfs: &Rootfs) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut set = |key: &str, value: Option<&String>| {
        if let Some(value) = value {
            labels.insert(key.to_owned(), value.clone());
        }
    };
    set(ANNOTATION_TITLE, Some(&PUBLISHER.to_owned()));
    set(ANNOTATION_DESCRIPTION, provenance.description.as_ref());
    set(ANNOTATION_VERSION, Some(&provenance.version));
    set(ANNOTATION_REVISION, Some(&provenance.revision));
    set(ANNOTATION_CREATED, Some(&provenance.created));
    set(ANNOTATION_LICENSES, provenance.license.as_ref());
    // Left out when the workspace names no repository: an empty source helps no one.
    set(ANNOTATION_SOURCE, provenance.repository.as_ref());
    let packages: Vec<String> = rootfs.packages.iter().map(|p| p.pinned()).collect();
    set(RUNTIME_PACKAGES_LABEL, Some(&packages.join(" ")));
    labels
}

fn descriptor(
    media_type: MediaType,
    digest: &str,
    bytes: &[u8],
) -> Result<Descriptor, LayoutError> {
    let digest = Digest::from_str(digest).map_err(|source| LayoutError::Document {
        what: "digest",
        source,
    })?;
    DescriptorBuilder::default()
        .media_type(media_type)
        .digest(digest)
        .size(bytes.len() as u64)
        .build()
        .map_err(|source| LayoutError::Document {
            what: "descriptor",
            source,
        })
}

/// `value` as compact JSON with every object's keys sorted.
fn canonical_json(
    value: &impl serde::Serialize,
    what: &'static str,
) -> Result<Vec<u8>, LayoutError> {
    let json = |source| LayoutError::Json { what, source };
    let value = sorted(serde_json::to_value(value).map_err(json)?);
    serde_json::to_vec(&value).map_err(json)
}

/// Rebuilds every object with its keys inserted in order, which is sorted output whether
/// serde_json's maps keep insertion order (its `preserve_order` feature) or sort.
fn sorted(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let entries: BTreeMap<String, serde_json::Value> = map.into_iter().collect();
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key, sorted(value)))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted).collect())
        }
        other @ (serde_json::Value::Null
        | serde_json::Value::Bool(_)
        | serde_json::Value::Number(_)
        | serde_json::Value::String(_)) => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let labels: HashMap<&str, &str> = [("b", "2"), ("a", "1"), ("c", "3")].into();
        let bytes = canonical_json(
            &serde_json::json!({"z": labels, "y": [{"d": 1, "c": 2}]}),
            "test",
        )
        .expect("json");
        assert_eq!(
            String::from_utf8(bytes).expect("utf-8"),
            r#"{"y":[{"c":2,"d":1}],"z":{"a":"1","b":"2","c":"3"}}"#
        );
    }
}
