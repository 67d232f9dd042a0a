//! Bytes that do not depend on when or where they are made: the layer (a tar with sorted
//! entries, uid/gid 0, one fixed mtime, explicit directories; gzip with no mtime or file
//! name in its header), and the OCI image layout and `oci-archive` written from the
//! documents. The layout is written to a temporary directory beside `--out` and renamed
//! into place when complete, so a failure leaves no half-written layout behind.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::rootfs::{EntryKind, Rootfs};

/// The gzip level: `gzip -9`. libdeflate's 10-12 save another 3% for 4-6 times the time.
const GZIP_LEVEL: i32 = 9;
/// The `oci-layout` file of every layout this command writes.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("cannot write {path} (choose a writable {flag})")]
    Write {
        path: PathBuf,
        flag: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "--out {path} exists and is not an OCI image layout (no oci-layout file), so it is not replaced; give a new or empty directory, or an earlier layout"
    )]
    NotALayout { path: PathBuf },
    #[error("--archive {path} is a directory; give a file name, e.g. {path}/image.tar")]
    ArchiveIsADirectory { path: PathBuf },
    #[error("cannot put {path} into a tar (use a shorter path or link target)")]
    Tar {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot gzip the layer ({reason}); this is a bug in the image build")]
    Gzip { reason: String },
    #[error("cannot make the image's {what} (a bug in the image build)")]
    Document {
        what: &'static str,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("cannot serialise the image's {what} (a bug in the image build)")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// The image's one layer.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The gzip blob.
    pub gzip: Vec<u8>,
    /// The blob's digest (what the manifest names).
    pub digest: String,
    /// The tar's digest (the config's `rootfs.diff_ids`).
    pub diff_id: String,
    /// The tar's size.
    pub tar_size: u64,
}

/// The layer of `rootfs`, every mtime `epoch`.
pub fn layer(rootfs: &Rootfs, epoch: i64) -> Result<Layer, LayoutError> {
    let mut tar = tar::Builder::new(Vec::new());
    // `rootfs.entries` is sorted by path, so a directory comes before what it holds.
    for entry in &rootfs.entries {
        // Paths in a layer are relative to the root: "usr/local/bin/...".
        let path = entry.path.strip_prefix("/").unwrap_or(&entry.path);
        let (kind, data, target): (tar::EntryType, &[u8], Option<&Path>) = match &entry.kind {
            EntryKind::Directory => (tar::EntryType::Directory, &[], None),
            EntryKind::File(bytes) => (tar::EntryType::Regular, bytes, None),
            EntryKind::Symlink(target) => (tar::EntryType::Symlink, &[], Some(target)),
        };
        append(&mut tar, path, kind, entry.mode, data, target, epoch)?;
    }
    let tar = tar.into_inner().map_err(|source| LayoutError::Tar {
        path: PathBuf::from("the end of the archive"),
        source,
    })?;
    let gzip = gzip(&tar)?;
    Ok(Layer {
        digest: sha256(&gzip),
        diff_id: sha256(&tar),
        tar_size: tar.len() as u64,
        gzip,
    })
}

/// One tar entry with every field fixed: ustar, uid/gid 0, no user or group names, `epoch`
/// as mtime.
fn append(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &Path,
    kind: tar::EntryType,
    mode: u32,
    data: &[u8],
    target: Option<&Path>,
    epoch: i64,
) -> Result<(), LayoutError> {
    let failed = |source| LayoutError::Tar {
        path: path.to_owned(),
        source,
    };
    let mut header = tar::Header::new_ustar();
    header.set_path(path).map_err(failed)?;
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(u64::try_from(epoch).unwrap_or(0));
    header.set_size(data.len() as u64);
    if let Some(target) = target {
        header.set_link_name(target).map_err(failed)?;
    }
    header.set_cksum();
    tar.append(&header, data).map_err(failed)
}

fn gzip(data: &[u8]) -> Result<Vec<u8>, LayoutError> {
    let level =
        libdeflater::CompressionLvl::new(GZIP_LEVEL).map_err(|error| LayoutError::Gzip {
            reason: format!("level {GZIP_LEVEL}: {error:?}"),
        })?;
    let mut compressor = libdeflater::Compressor::new(level);
    let mut out = vec![0; compressor.gzip_compress_bound(data.len())];
    let written = compressor
        .gzip_compress(data, &mut out)
        .map_err(|error| LayoutError::Gzip {
            reason: format!("{error:?}"),
        })?;
    out.truncate(written);
    Ok(out)
}

/// What the layout holds, ready to be written: blobs by digest, and `index.json`.
#[derive(Debug, Clone)]
pub struct Documents {
    /// `sha256:<hex>` -> content.
    pub blobs: std::collections::BTreeMap<String, Vec<u8>>,
    pub index: Vec<u8>,
}

impl Documents {
    /// Every file of the layout, by path in it, sorted.
    fn files(&self) -> Vec<(String, &[u8])> {
        let mut files: Vec<(String, &[u8])> = self
            .blobs
            .iter()
            .map(|(digest, bytes)| {
                let hex = digest.trim_start_matches("sha256:");
                (format!("blobs/sha256/{hex}"), bytes.as_slice())
            })
            .collect();
        files.push(("index.json".to_owned(), &self.index));
        files.push(("oci-layout".to_owned(), OCI_LAYOUT));
        files.sort();
        files
    }

    pub fn total_blob_bytes(&self) -> u64 {
        self.blobs.values().map(|blob| blob.len() as u64).sum()
    }
}

/// Where the finished layout (and archive) went.
#[derive(Debug, Clone)]
pub struct Written {
    pub layout: PathBuf,
    pub archive: Option<PathBuf>,
}

/// A layout (and archive) being written: temporary siblings of the destinations, made
/// before the slow steps so that an unwritable destination fails first.
pub struct Staging {
    out: PathBuf,
    dir: tempfile::TempDir,
    archive: Option<(PathBuf, tempfile::NamedTempFile)>,
}

impl Staging {
    pub fn new(out: &Path, archive: Option<&Path>) -> Result<Staging, LayoutError> {
        match std::fs::symlink_metadata(out) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(LayoutError::Write {
                    path: out.to_owned(),
                    flag: "--out",
                    source,
                });
            }
            Ok(meta) => {
                let replaceable =
                    meta.is_dir() && (out.join("oci-layout").is_file() || is_empty_dir(out));
                if !replaceable {
                    return Err(LayoutError::NotALayout {
                        path: out.to_owned(),
                    });
                }
            }
        }
        let dir = temp_dir_beside(out)?;
        let archive = match archive {
            None => None,
            Some(path) if path.is_dir() => {
                return Err(LayoutError::ArchiveIsADirectory {
                    path: path.to_owned(),
                });
            }
            Some(path) => {
                let parent = parent_of(path);
                let failed = |source| LayoutError::Write {
                    path: parent.clone(),
                    flag: "--archive",
                    source,
                };
                std::fs::create_dir_all(&parent).map_err(failed)?;
                let file = tempfile::Builder::new()
                    .prefix(".oci-archive-")
                    .tempfile_in(&parent)
                    .map_err(failed)?;
                Some((path.to_owned(), file))
            }
        };
        Ok(Staging {
            out: out.to_owned(),
            dir,
            archive,
        })
    }

    /// Writes `documents` into the temporary directory (and archive), then moves them into
    /// place; an earlier layout at `--out` is replaced whole.
    pub fn commit(self, documents: &Documents, epoch: i64) -> Result<Written, LayoutError> {
        let Staging { out, dir, archive } = self;
        let write_failed = |path: &Path| {
            let path = path.to_owned();
            move |source| LayoutError::Write {
                path,
                flag: "--out",
                source,
            }
        };
        let files = documents.files();
        let blobs = dir.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).map_err(write_failed(&blobs))?;
        for (name, bytes) in &files {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).map_err(write_failed(&path))?;
        }
        // A temporary directory is private (0700); the layout is not.
        for path in [dir.path(), &dir.path().join("blobs"), &blobs] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                .map_err(write_failed(path))?;
        }

        let archive = match archive {
            None => None,
            Some((path, mut file)) => {
                let bytes = archive_bytes(&files, epoch)?;
                let failed = |source| LayoutError::Write {
                    path: path.clone(),
                    flag: "--archive",
                    source,
                };
                file.write_all(&bytes).map_err(failed)?;
                file.as_file()
                    .set_permissions(std::fs::Permissions::from_mode(0o644))
                    .map_err(failed)?;
                Some((path, file))
            }
        };

        replace_dir(dir, &out)?;
        let archive = match archive {
            None => None,
            Some((path, file)) => {
                file.persist(&path).map_err(|error| LayoutError::Write {
                    path: path.clone(),
                    flag: "--archive",
                    source: error.error,
                })?;
                Some(path)
            }
        };
        Ok(Written {
            layout: out,
            archive,
        })
    }
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn is_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none())
}

fn temp_dir_beside(out: &Path) -> Result<tempfile::TempDir, LayoutError> {
    let parent = parent_of(out);
    let failed = |source| LayoutError::Write {
        path: parent.clone(),
        flag: "--out",
        source,
    };
    std::fs::create_dir_all(&parent).map_err(failed)?;
    tempfile::Builder::new()
        .prefix(".oci-layout-")
        .tempdir_in(&parent)
        .map_err(failed)
}

/// Renames the finished `staged` directory to `out`, moving an earlier `out` aside first
/// and putting it back if the rename fails.
fn replace_dir(staged: tempfile::TempDir, out: &Path) -> Result<(), LayoutError> {
    let failed = |source| LayoutError::Write {
        path: out.to_owned(),
        flag: "--out",
        source,
    };
    let old = if out.exists() {
        let graveyard = temp_dir_beside(out)?;
        let aside = graveyard.path().join("old");
        std::fs::rename(out, &aside).map_err(failed)?;
        Some((graveyard, aside))
    } else {
        None
    };
    if let Err(source) = std::fs::rename(staged.path(), out) {
        if let Some((_, aside)) = &old {
            // Best effort: the earlier layout goes back where it was.
            let _ = std::fs::rename(aside, out);
        }
        return Err(failed(source));
    }
    // The staged directory is `out` now; dropping `staged` must not remove it. Dropping
    // the graveyard removes the earlier layout.
    let _ = staged.keep();
    drop(old);
    Ok(())
}

/// The `oci-archive`: a tar of the layout, as deterministic as the layer.
fn archive_bytes(files: &[(String, &[u8])], epoch: i64) -> Result<Vec<u8>, LayoutError> {
    let mut tar = tar::Builder::new(Vec::new());
    for dir in ["blobs", "blobs/sha256"] {
        append(
            &mut tar,
            Path::new(dir),
            tar::EntryType::Directory,
            0o755,
            &[],
            None,
            epoch,
        )?;
    }
    for (name, bytes) in files {
        append(
            &mut tar,
            Path::new(name),
            tar::EntryType::Regular,
            0o644,
            bytes,
            None,
            epoch,
        )?;
    }
    tar.into_inner().map_err(|source| LayoutError::Tar {
        path: PathBuf::from("the end of the archive"),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::rootfs::Entry;

    fn rootfs() -> Rootfs {
        let entry = |path: &str, kind, mode| Entry {
            path: PathBuf::from(path),
            kind,
            mode,
            origin: String::new(),
        };
        Rootfs {
            entries: vec![
                entry("/etc", EntryKind::Directory, 0o755),
                entry(
                    "/etc/group",
                    EntryKind::File(b"root:x:0:\n".to_vec()),
                    0o644,
                ),
                entry(
                    "/etc/link",
                    EntryKind::Symlink(PathBuf::from("group")),
                    0o777,
                ),
            ],
            packages: Vec::new(),
            env: Vec::new(),
        }
    }

    #[test]
    fn the_layer_is_the_same_bytes_every_time_and_has_fixed_headers() {
        let first = layer(&rootfs(), 1_700_000_000).expect("layer");
        let second = layer(&rootfs(), 1_700_000_000).expect("layer");
        assert_eq!(first.gzip, second.gzip);
        assert_eq!(first.digest, sha256(&first.gzip));
        // gzip: magic, deflate, no flags (no file name), mtime 0, OS unknown.
        assert_eq!(&first.gzip[..4], &[0x1f, 0x8b, 8, 0]);
        assert_eq!(&first.gzip[4..8], &[0, 0, 0, 0]);
        assert_eq!(first.gzip[9], 255);
        let other_time = layer(&rootfs(), 1_700_000_001).expect("layer");
        assert_ne!(first.diff_id, other_time.diff_id);
    }

    #[test]
    fn sha256_is_the_standard_one() {
        assert_eq!(
            sha256(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn an_existing_directory_that_is_not_a_layout_is_not_replaced() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("keep-me"), "x").expect("written");
        let error = Staging::new(dir.path(), None).err().expect("refused");
        assert!(matches!(error, LayoutError::NotALayout { .. }), "{error}");
    }

    #[test]
    fn a_layout_replaces_an_earlier_one_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("oci");
        let documents = |blob: &[u8]| Documents {
            blobs: [(sha256(blob), blob.to_vec())].into_iter().collect(),
            index: b"{}".to_vec(),
        };
        let archive = dir.path().join("image.tar");
        Staging::new(&out, Some(&archive))
            .expect("staged")
            .commit(&documents(b"one"), 0)
            .expect("written");
        Staging::new(&out, Some(&archive))
            .expect("staged")
            .commit(&documents(b"two"), 0)
            .expect("written");
        let blobs: Vec<_> = std::fs::read_dir(out.join("blobs/sha256"))
            .expect("blobs")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(blobs.len(), 1, "the earlier blob is gone: {blobs:?}");
        // Nothing but the layout and the archive is left beside them.
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["image.tar", "oci"]);
        let mode = std::fs::metadata(&out).expect("out").permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }
}
