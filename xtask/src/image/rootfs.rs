//! The layer's contents, and nothing else: the publisher, the dynamic loader and shared
//! libraries it links (as Debian installed them here, recorded by package and version), the
//! CA bundle when the publisher loads the system's roots, and `/etc/passwd` and
//! `/etc/group` naming root and the user it runs as.
//!
//! No NSS configuration, `/etc/hosts` or `/etc/resolv.conf`: glibc 2.34 and later (Debian 12
//! has 2.36) build the `files` and `dns` NSS modules into libc.so.6, so name resolution works
//! without `libnss_*.so` or `/etc/nsswitch.conf`, and the container runtime (the kubelet,
//! podman) mounts `/etc/hosts` and `/etc/resolv.conf` into every container.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use super::build::{PUBLISHER, RuntimeFile};

/// Where the publisher is in the image (the image's entrypoint).
pub const BINARY_PATH: &str = "/usr/local/bin/cni-metrics-publisher";
/// Debian's CA bundle, the file `update-ca-certificates` writes from the `ca-certificates`
/// package; the image's `SSL_CERT_FILE`.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
const CA_PACKAGE: &str = "ca-certificates";
/// The user the image runs as: Debian's `nobody`/`nogroup`, numeric in the image config so
/// that Kubernetes' `runAsNonRoot` can verify it without reading `/etc/passwd`.
pub const USER: &str = "65534:65534";
const PASSWD: &str = "root:x:0:0:root:/root:/usr/sbin/nologin\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";
/// The search path container runtimes default to, so that a name resolves as anywhere else.
const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("cannot read {path} for the image ({hint})")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
        hint: &'static str,
    },
    #[error(
        "cannot run {program} (the image's runtime is taken from this machine's Debian packages: build it on Debian 12)"
    )]
    Dpkg {
        program: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} was installed by no Debian package (dpkg -S knows none of {tried}); the image records its runtime by package, so install that file with apt-get"
    )]
    NoPackage { path: PathBuf, tried: String },
    #[error(
        "dpkg-query -W {package} answered no version ({output:?}); reinstall it with apt-get install --reinstall {package}"
    )]
    NoVersion { package: String, output: String },
}

/// One entry of the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Absolute path in the image.
    pub path: PathBuf,
    pub kind: EntryKind,
    /// Permission bits: 0755 for directories and executables, 0644 for the rest, 0777 for
    /// symlinks (whose permissions nothing reads).
    pub mode: u32,
    /// Where it comes from, for the report: the publisher, a package, or this command.
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    File(Vec<u8>),
    /// A relative target, so that it also resolves in an unpacked root file system.
    Symlink(PathBuf),
}

/// A Debian package the runtime comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuntimePackage {
    pub package: String,
    pub version: String,
    pub architecture: String,
    /// The image files that come from it.
    pub files: Vec<String>,
}

impl RuntimePackage {
    /// `name:arch=version`, as apt-get installs that exact package (`name=version` for
    /// architecture-independent packages).
    pub fn pinned(&self) -> String {
        match self.architecture.as_str() {
            "all" => format!("{}={}", self.package, self.version),
            arch => format!("{}:{arch}={}", self.package, self.version),
        }
    }
}

/// The layer's contents, sorted by path, with the runtime's packages and the image's
/// environment.
#[derive(Debug, Clone)]
pub struct Rootfs {
    pub entries: Vec<Entry>,
    pub packages: Vec<RuntimePackage>,
    pub env: Vec<String>,
}

/// Collects the layer's entries: `binary` as the publisher, `runtime` as the loader and
/// libraries, the CA bundle when `ca_certificates`, the user database, and every parent
/// directory.
pub fn assemble(
    binary: &Path,
    runtime: &[RuntimeFile],
    ca_certificates: bool,
) -> Result<Rootfs, RootfsError> {
    let mut entries: BTreeMap<PathBuf, Entry> = BTreeMap::new();
    let add = |entries: &mut BTreeMap<PathBuf, Entry>, entry: Entry| {
        entries.insert(entry.path.clone(), entry);
    };
    add(
        &mut entries,
        Entry {
            path: BINARY_PATH.into(),
            kind: EntryKind::File(read(binary, "pass a readable binary")?),
            mode: 0o755,
            origin: PUBLISHER.to_owned(),
        },
    );

    let owners = owners(runtime)?;
    let mut packages: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in runtime {
        let package = &owners[&file.real];
        let bytes = read(&file.real, "reinstall the package that provides it")?;
        let executable = std::fs::metadata(&file.real)
            .map(|meta| meta.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        add(
            &mut entries,
            Entry {
                path: file.real.clone(),
                kind: EntryKind::File(bytes),
                mode: if executable || file.is_loader {
                    0o755
                } else {
                    0o644
                },
                origin: package_name(package).to_owned(),
            },
        );
        packages
            .entry(package.clone())
            .or_default()
            .push(file.real.display().to_string());
        for link in &file.links {
            add(
                &mut entries,
                Entry {
                    path: link.clone(),
                    kind: EntryKind::Symlink(relative_target(link, &file.real)),
                    mode: 0o777,
                    origin: package_name(package).to_owned(),
                },
            );
            packages
                .entry(package.clone())
                .or_default()
                .push(link.display().to_string());
        }
    }

    let mut env = vec![PATH.to_owned()];
    if ca_certificates {
        // The bundle is generated at install time from the package's certificates (and
        // any the administrator added), so dpkg -S knows no owner: the package that
        // generated it is recorded.
        let bundle = Path::new(CA_BUNDLE);
        add(
            &mut entries,
            Entry {
                path: bundle.to_owned(),
                kind: EntryKind::File(read(
                    bundle,
                    "install the ca-certificates package (apt-get install ca-certificates)",
                )?),
                mode: 0o644,
                origin: format!("{CA_PACKAGE} (generated by update-ca-certificates)"),
            },
        );
        packages
            .entry(CA_PACKAGE.to_owned())
            .or_default()
            .push(CA_BUNDLE.to_owned());
        env.push(format!("SSL_CERT_FILE={CA_BUNDLE}"));
    }
    for (path, text) in [("/etc/passwd", PASSWD), ("/etc/group", GROUP)] {
        add(
            &mut entries,
            Entry {
                path: path.into(),
                kind: EntryKind::File(text.as_bytes().to_vec()),
                mode: 0o644,
                origin: "image build".to_owned(),
            },
        );
    }

    // Explicit directory entries, so that every runtime unpacks them 0755 root-owned
    // rather than with whatever it makes up for a missing parent.
    let directories: BTreeSet<PathBuf> = entries
        .keys()
        .flat_map(|path| path.ancestors().skip(1))
        .filter(|dir| *dir != Path::new("/"))
        .map(Path::to_path_buf)
        .collect();
    for dir in directories {
        add(
            &mut entries,
            Entry {
                path: dir,
                kind: EntryKind::Directory,
                mode: 0o755,
                origin: "image build".to_owned(),
            },
        );
    }

    let packages = versions(packages)?;
    Ok(Rootfs {
        entries: entries.into_values().collect(),
        packages,
        env,
    })
}

fn read(path: &Path, hint: &'static str) -> Result<Vec<u8>, RootfsError> {
    std::fs::read(path).map_err(|source| RootfsError::Read {
        path: path.to_owned(),
        source,
        hint,
    })
}

/// `libc6:amd64` -> `libc6`.
fn package_name(package: &str) -> &str {
    package.split(':').next().unwrap_or(package)
}

/// `target` as seen from `link`'s directory: `../usr/lib/...` for `/lib64/ld-linux...`.
fn relative_target(link: &Path, target: &Path) -> PathBuf {
    let from: Vec<Component> = link
        .parent()
        .map(|dir| dir.components().collect())
        .unwrap_or_default();
    let to: Vec<Component> = target.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut relative = PathBuf::new();
    for _ in common..from.len() {
        relative.push("..");
    }
    for component in &to[common..] {
        relative.push(component);
    }
    relative
}

/// The same path with and without the `/usr` prefix for the directories Debian merged into
/// /usr: a Debian 12 package that installs `/lib/x86_64-linux-gnu/libc.so.6` leaves dpkg
/// knowing that path only, while the file is at `/usr/lib/...`.
fn merged_usr_twin(path: &Path) -> Option<PathBuf> {
    const MERGED: [&str; 4] = ["bin", "sbin", "lib", "lib64"];
    let text = path.to_str()?;
    if let Some(rest) = text.strip_prefix("/usr/") {
        let top = rest.split('/').next()?;
        return MERGED
            .contains(&top)
            .then(|| PathBuf::from(format!("/{rest}")));
    }
    let top = text.strip_prefix('/')?.split('/').next()?;
    MERGED
        .contains(&top)
        .then(|| PathBuf::from(format!("/usr{text}")))
}

/// The package (as dpkg names it, `libc6:amd64`) that installed each runtime file.
fn owners(runtime: &[RuntimeFile]) -> Result<BTreeMap<PathBuf, String>, RootfsError> {
    let candidates = |file: &RuntimeFile| -> Vec<PathBuf> {
        let mut paths = Vec::new();
        for path in &file.found_as {
            for candidate in [Some(path.clone()), merged_usr_twin(path)]
                .into_iter()
                .flatten()
            {
                if !paths.contains(&candidate) {
                    paths.push(candidate);
                }
            }
        }
        paths
    };
    let all: Vec<PathBuf> = runtime.iter().flat_map(candidates).collect();
    if all.is_empty() {
        return Ok(BTreeMap::new());
    }
    // dpkg-query -S exits 1 when some path is unknown, which the twins often are; what it
    // found is still on stdout.
    let output = Command::new("dpkg-query")
        .arg("-S")
        .args(&all)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|source| RootfsError::Dpkg {
            program: "dpkg-query -S",
            source,
        })?;
    let mut known: BTreeMap<PathBuf, String> = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        // "libc6:amd64: /lib/x86_64-linux-gnu/libc.so.6"; "a, b: path" when shared;
        // diversions are reported as "diversion by ...", which names no owner.
        if line.starts_with("diversion by") {
            continue;
        }
        if let Some((packages, path)) = line.split_once(": ") {
            let first = packages.split(", ").next().unwrap_or(packages);
            known.insert(PathBuf::from(path), first.to_owned());
        }
    }
    runtime
        .iter()
        .map(|file| {
            let tried = candidates(file);
            match tried.iter().find_map(|path| known.get(path)) {
                Some(package) => Ok((file.real.clone(), package.clone())),
                None => Err(RootfsError::NoPackage {
                    path: file.real.clone(),
                    tried: tried
                        .iter()
                        .map(|path| path.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            }
        })
        .collect()
}

/// Each package's version and architecture, from `dpkg-query -W`.
fn versions(packages: BTreeMap<String, Vec<String>>) -> Result<Vec<RuntimePackage>, RootfsError> {
    let mut found = Vec::new();
    for (package, mut files) in packages {
        let output = Command::new("dpkg-query")
            .args(["-W", "-f", "${Package}\t${Version}\t${Architecture}"])
            .arg(&package)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(|source| RootfsError::Dpkg {
                program: "dpkg-query -W",
                source,
            })?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let fields: Vec<&str> = text.trim().split('\t').collect();
        let [name, version, architecture] = fields[..] else {
            return Err(RootfsError::NoVersion {
                package,
                output: text,
            });
        };
        if !output.status.success() || version.is_empty() {
            return Err(RootfsError::NoVersion {
                package,
                output: text,
            });
        }
        files.sort();
        found.push(RuntimePackage {
            package: name.to_owned(),
            version: version.to_owned(),
            architecture: architecture.to_owned(),
            files,
        });
    }
    found.sort_by(|a, b| a.package.cmp(&b.package));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets_are_relative_to_the_link() {
        assert_eq!(
            relative_target(
                Path::new("/lib64/ld-linux-x86-64.so.2"),
                Path::new("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
            ),
            Path::new("../usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        );
        assert_eq!(
            relative_target(
                Path::new("/usr/lib/libz.so.1"),
                Path::new("/usr/lib/libz.so.1.3")
            ),
            Path::new("libz.so.1.3")
        );
    }

    #[test]
    fn merged_usr_twins_cover_the_merged_directories_only() {
        assert_eq!(
            merged_usr_twin(Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6")),
            Some(PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"))
        );
        assert_eq!(
            merged_usr_twin(Path::new("/lib64/ld-linux-x86-64.so.2")),
            Some(PathBuf::from("/usr/lib64/ld-linux-x86-64.so.2"))
        );
        assert_eq!(merged_usr_twin(Path::new("/usr/share/doc/x")), None);
        assert_eq!(merged_usr_twin(Path::new("/etc/passwd")), None);
    }

    #[test]
    fn pinned_names_the_architecture_unless_it_is_all() {
        let package = |arch: &str| RuntimePackage {
            package: "p".to_owned(),
            version: "1.0-1".to_owned(),
            architecture: arch.to_owned(),
            files: Vec::new(),
        };
        assert_eq!(package("amd64").pinned(), "p:amd64=1.0-1");
        assert_eq!(package("all").pinned(), "p=1.0-1");
    }
}
