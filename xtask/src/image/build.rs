//! What goes into the image, read from its sources: the publisher binary (the release
//! build, or one given), the dynamic loader and shared libraries its ELF headers name, the
//! crate's metadata and dependency graph (does it load the system's CA certificates?), and
//! the commit it is built from.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use object::elf::{
    DT_NEEDED, DT_RPATH, DT_RUNPATH, DT_STRSZ, DT_STRTAB, ET_DYN, ET_EXEC, FileHeader64, PT_INTERP,
    PT_LOAD,
};
use object::read::elf::{Dyn, FileHeader, ProgramHeader};
use object::{Endianness, ReadRef};

use super::platform::Platform;
use crate::cargo_tool::{cargo_command, target_dir};

/// The package the image is built around.
pub const PUBLISHER: &str = "cni-metrics-publisher";

/// The crate that loads the system's CA certificates for rustls (what the AWS SDK's HTTP
/// client, and kube's platform verifier on Linux, use); when the publisher links it, the
/// image needs Debian's CA bundle.
const NATIVE_ROOTS_CRATE: &str = "rustls-native-certs";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot run `{command}` (is it installed and on the PATH?)")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}; {hint}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
        hint: &'static str,
    },
    #[error("cannot read what `cargo metadata` printed (run it by hand to see why)")]
    MetadataJson {
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "`cargo metadata` lists no workspace package {PUBLISHER}; run the command from this repository"
    )]
    NoPublisherPackage,
    #[error(
        "SOURCE_DATE_EPOCH is {value:?}, not a number of seconds since 1970; unset it or give e.g. $(git log -1 --format=%ct)"
    )]
    SourceDateEpoch { value: String },
    #[error("the commit time {epoch} is not a valid timestamp (set SOURCE_DATE_EPOCH)")]
    Timestamp {
        epoch: i64,
        #[source]
        source: jiff::Error,
    },
    #[error("cannot read {path} ({hint})")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
        hint: &'static str,
    },
    #[error(
        "{path} is not an ELF file (it does not start with the ELF magic bytes); pass the {PUBLISHER} binary built for linux"
    )]
    NotElf { path: PathBuf },
    #[error("{path} is a damaged or unsupported ELF file (rebuild it)")]
    BadElf {
        path: PathBuf,
        #[source]
        source: object::read::Error,
    },
    #[error("{path} is a damaged ELF file: {reason}; rebuild it")]
    DamagedElf { path: PathBuf, reason: &'static str },
    #[error(
        "{path} is built for ELF machine {machine}, not for {platform} (the {rust_target} target); pass a binary built for {platform}",
        rust_target = platform.rust_target()
    )]
    WrongMachine {
        path: PathBuf,
        machine: String,
        platform: Platform,
    },
    #[error(
        "{path} is an ELF file of type {elf_type}, not an executable or shared library; pass the {PUBLISHER} binary"
    )]
    NotExecutable { path: PathBuf, elf_type: u16 },
    #[error(
        "{path} sets a library search path ({tag} {value:?}), which the image does not reproduce; build it without one"
    )]
    SearchPath {
        path: PathBuf,
        tag: &'static str,
        value: String,
    },
    #[error(
        "{needed_by} needs {name}, which is in none of {dirs}; install the Debian package that provides it"
    )]
    LibraryNotFound {
        name: String,
        needed_by: PathBuf,
        dirs: String,
    },
    #[error(
        "`{path} --version` printed {printed:?}, not \"{PUBLISHER} {version}\"; pass the {PUBLISHER} built from this workspace (cargo build -p {PUBLISHER})"
    )]
    NotThePublisher {
        path: PathBuf,
        printed: String,
        version: String,
    },
}

/// Where the image comes from: the crate, the commit, and what its dependencies need.
#[derive(Debug, Clone)]
pub struct Provenance {
    pub version: String,
    pub description: Option<String>,
    pub license: Option<String>,
    /// The `repository` field of the manifest (the workspace's, when inherited).
    pub repository: Option<String>,
    /// `git rev-parse HEAD`, with `-dirty` when tracked files have changes.
    pub revision: String,
    /// Seconds since 1970: SOURCE_DATE_EPOCH, else the commit's time. The image's `created`
    /// and every mtime in the layer and archive, so that one commit gives one digest.
    pub epoch: i64,
    /// `epoch` in RFC 3339, UTC.
    pub created: String,
    /// Whether the publisher links the crate that loads the system's CA certificates.
    pub needs_ca_certificates: bool,
}

impl Provenance {
    /// Reads the crate's metadata (`cargo metadata`) and the commit (`git`), for the graph
    /// as resolved for `platform`'s target.
    pub fn read(workspace_root: &Path, platform: Platform) -> Result<Provenance, BuildError> {
        let metadata = run(
            cargo_command()
                .args(["metadata", "--format-version", "1", "--locked"])
                .args(["--filter-platform", platform.rust_target()])
                .current_dir(workspace_root),
            "the lock file must match the manifests: run cargo build once and commit Cargo.lock",
        )?;
        let metadata: serde_json::Value = serde_json::from_str(&metadata)
            .map_err(|source| BuildError::MetadataJson { source })?;
        let package = metadata["packages"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|package| package["name"] == PUBLISHER && package["source"].is_null())
            .ok_or(BuildError::NoPublisherPackage)?;
        let text = |key: &str| package[key].as_str().map(str::to_owned);
        let needs_ca_certificates = links_crate(
            &metadata,
            package["id"].as_str().unwrap_or_default(),
            NATIVE_ROOTS_CRATE,
        );

        let git = |args: &[&str]| {
            run(
                Command::new("git").args(args).current_dir(workspace_root),
                "the image records the commit it is built from: build from a git checkout",
            )
            .map(|out| out.trim().to_owned())
        };
        let head = git(&["rev-parse", "HEAD"])?;
        // Untracked files are not part of any build input git knows of; changes to tracked
        // ones are, so they mark the revision.
        let dirty = !git(&["status", "--porcelain", "--untracked-files=no"])?.is_empty();
        let revision = if dirty { format!("{head}-dirty") } else { head };
        let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(value) => value
                .trim()
                .parse()
                .map_err(|_| BuildError::SourceDateEpoch { value })?,
            Err(_) => {
                let text = git(&["log", "-1", "--format=%ct"])?;
                text.parse()
                    .map_err(|_| BuildError::SourceDateEpoch { value: text })?
            }
        };
        let created = jiff::Timestamp::from_second(epoch)
            .map_err(|source| BuildError::Timestamp { epoch, source })?
            .to_string();
        Ok(Provenance {
            version: text("version").unwrap_or_default(),
            description: text("description"),
            license: text("license"),
            repository: text("repository"),
            revision,
            epoch,
            created,
            needs_ca_certificates,
        })
    }
}

/// Whether the package `root` reaches a crate named `name` through normal (linked)
/// dependencies, in `cargo metadata`'s resolved graph.
fn links_crate(metadata: &serde_json::Value, root: &str, name: &str) -> bool {
    let nodes: BTreeMap<&str, &serde_json::Value> = metadata["resolve"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|node| Some((node["id"].as_str()?, node)))
        .collect();
    let names: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|package| Some((package["id"].as_str()?, package["name"].as_str()?)))
        .collect();
    let mut queue = VecDeque::from([root]);
    let mut seen = std::collections::BTreeSet::new();
    while let Some(id) = queue.pop_front() {
        if !seen.insert(id) {
            continue;
        }
        if names.get(id) == Some(&name) {
            return true;
        }
        let deps = nodes.get(id).and_then(|node| node["deps"].as_array());
        for dep in deps.into_iter().flatten() {
            // Build scripts and proc macros run at build time; only normal dependencies
            // are linked into the binary.
            let linked = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|kind| kind["kind"].is_null());
            if let (true, Some(pkg)) = (linked, dep["pkg"].as_str()) {
                queue.push_back(pkg);
            }
        }
    }
    false
}

/// `cargo build --release -p cni-metrics-publisher --locked`: the binary that ships. Its
/// output goes to stderr with the rest of the log.
pub fn release_build(workspace_root: &Path) -> Result<PathBuf, BuildError> {
    let args = ["build", "--release", "-p", PUBLISHER, "--locked"];
    tracing::info!(
        "building the release publisher: cargo {} (fat LTO: minutes when nothing is built yet)",
        args.join(" ")
    );
    let command = format!("cargo {}", args.join(" "));
    let status = cargo_command()
        .args(args)
        .current_dir(workspace_root)
        .stdout(Stdio::from(io::stderr()))
        .status()
        .map_err(|source| BuildError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !status.success() {
        return Err(BuildError::Failed {
            command,
            status,
            stderr: "see cargo's messages above".to_owned(),
            hint: "fix the build, or pass --binary PATH to use a binary built already",
        });
    }
    Ok(target_dir(workspace_root).join("release").join(PUBLISHER))
}

/// Checks that `binary` is the publisher of this workspace's version: its `--version` line
/// is what the image's labels will say. (Only a binary for this machine's platform is
/// built here, so it runs.)
pub fn check_version(binary: &Path, version: &str) -> Result<(), BuildError> {
    let printed = run(
        Command::new(binary).arg("--version"),
        "pass the cni-metrics-publisher binary",
    )?;
    // The first line is enough to tell, and keeps the error on one line.
    let printed = printed.lines().next().unwrap_or_default().trim();
    if printed != format!("{PUBLISHER} {version}") {
        return Err(BuildError::NotThePublisher {
            path: binary.to_owned(),
            printed: printed.to_owned(),
            version: version.to_owned(),
        });
    }
    Ok(())
}

/// What the dynamic loader needs to start an ELF file.
#[derive(Debug, Clone)]
pub struct Elf {
    pub path: PathBuf,
    /// `PT_INTERP`: the loader's path, absent in a static binary.
    pub interpreter: Option<PathBuf>,
    /// `DT_NEEDED`, in order.
    pub needed: Vec<String>,
}

/// Reads `path`'s ELF headers and checks that it is an executable or shared library for
/// `platform`.
pub fn read_elf(path: &Path, platform: Platform) -> Result<Elf, BuildError> {
    let data = std::fs::read(path).map_err(|source| BuildError::Read {
        path: path.to_owned(),
        source,
        hint: "pass the path of a built cni-metrics-publisher",
    })?;
    parse_elf(path, &data, platform)
}

fn parse_elf(path: &Path, data: &[u8], platform: Platform) -> Result<Elf, BuildError> {
    if !data.starts_with(b"\x7fELF") {
        return Err(BuildError::NotElf {
            path: path.to_owned(),
        });
    }
    let bad = |source| BuildError::BadElf {
        path: path.to_owned(),
        source,
    };
    let damaged = |reason| BuildError::DamagedElf {
        path: path.to_owned(),
        reason,
    };
    // Both platforms are 64-bit; a 32-bit file is a wrong machine, said as such.
    if data.get(4) != Some(&object::elf::ELFCLASS64) {
        return Err(BuildError::WrongMachine {
            path: path.to_owned(),
            machine: "32-bit".to_owned(),
            platform,
        });
    }
    let header = FileHeader64::<Endianness>::parse(data).map_err(bad)?;
    let endian = header.endian().map_err(bad)?;
    let machine = header.e_machine(endian);
    if machine != platform.elf_machine() {
        return Err(BuildError::WrongMachine {
            path: path.to_owned(),
            machine: machine_name(machine),
            platform,
        });
    }
    let elf_type = header.e_type(endian);
    if elf_type != ET_EXEC && elf_type != ET_DYN {
        return Err(BuildError::NotExecutable {
            path: path.to_owned(),
            elf_type,
        });
    }
    // The program headers are what the kernel and the loader read (section headers may be
    // stripped), so the loader and the libraries come from PT_INTERP and PT_DYNAMIC.
    let segments = header.program_headers(endian, data).map_err(bad)?;
    let mut interpreter = None;
    for segment in segments {
        if segment.p_type(endian) == PT_INTERP {
            let bytes = segment
                .data(endian, data)
                .map_err(|()| damaged("PT_INTERP is outside the file"))?;
            let text = bytes.split(|&b| b == 0).next().unwrap_or_default();
            interpreter = Some(PathBuf::from(String::from_utf8_lossy(text).into_owned()));
        }
    }
    let mut needed = Vec::new();
    let dynamic = segments
        .iter()
        .find_map(|segment| segment.dynamic(endian, data).transpose())
        .transpose()
        .map_err(bad)?;
    if let Some(entries) = dynamic {
        let tag_of = |entry: &object::elf::Dyn64<Endianness>| entry.d_tag(endian);
        let address = |tag: i64| {
            entries
                .iter()
                .find(|entry| tag_of(entry) == tag)
                .map(|entry| entry.d_val(endian))
        };
        let (Some(strtab), Some(strsz)) = (address(DT_STRTAB), address(DT_STRSZ)) else {
            return Err(damaged(
                "PT_DYNAMIC has no string table (DT_STRTAB, DT_STRSZ)",
            ));
        };
        // DT_STRTAB is an address in memory: the PT_LOAD segment holding it says where it
        // is in the file.
        let offset = segments
            .iter()
            .filter(|segment| segment.p_type(endian) == PT_LOAD)
            .find_map(|segment| {
                let start = segment.p_vaddr(endian);
                let end = start.checked_add(segment.p_filesz(endian))?;
                (start..end)
                    .contains(&strtab)
                    .then(|| strtab - start + segment.p_offset(endian))
            })
            .ok_or_else(|| damaged("DT_STRTAB is in no PT_LOAD segment"))?;
        let strings = data
            .read_bytes_at(offset, strsz)
            .map_err(|()| damaged("the string table is outside the file"))?;
        let string = |value: u64| -> Result<String, BuildError> {
            let start = usize::try_from(value).unwrap_or(usize::MAX);
            let tail = strings
                .get(start..)
                .ok_or_else(|| damaged("a name is outside the string table"))?;
            let text = tail.split(|&b| b == 0).next().unwrap_or_default();
            Ok(String::from_utf8_lossy(text).into_owned())
        };
        for entry in entries {
            match tag_of(entry) {
                DT_NEEDED => needed.push(string(entry.d_val(endian))?),
                tag @ (DT_RPATH | DT_RUNPATH) => {
                    return Err(BuildError::SearchPath {
                        path: path.to_owned(),
                        tag: if tag == DT_RPATH {
                            "DT_RPATH"
                        } else {
                            "DT_RUNPATH"
                        },
                        value: string(entry.d_val(endian))?,
                    });
                }
                _ => {}
            }
        }
    }
    Ok(Elf {
        path: path.to_owned(),
        interpreter,
        needed,
    })
}

fn machine_name(machine: u16) -> String {
    match machine {
        object::elf::EM_X86_64 => "x86_64".to_owned(),
        object::elf::EM_AARCH64 => "aarch64".to_owned(),
        object::elf::EM_386 => "i386".to_owned(),
        object::elf::EM_ARM => "arm".to_owned(),
        object::elf::EM_RISCV => "riscv".to_owned(),
        other => format!("{other}"),
    }
}

/// A file of the runtime: the loader or a shared library, as it is on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeFile {
    /// Where the file is, every symlink resolved; it has the same path in the image.
    pub real: PathBuf,
    /// The paths the loader opens that are not `real` (PT_INTERP's path, a library name
    /// that is a symlink): symlinks to `real` in the image.
    pub links: Vec<PathBuf>,
    /// Every path the file was found by, `real` included: dpkg may know it by any of them
    /// (Debian 12 packages install into /lib, which is a symlink to /usr/lib).
    pub found_as: Vec<PathBuf>,
    /// `true` for the dynamic loader, which runs as a program.
    pub is_loader: bool,
}

/// The dynamic loader and every shared library `binary` needs, directly or through another
/// library, found as the loader finds them with no `/etc/ld.so.cache` (the image has none):
/// in Debian's multiarch directories, then /lib and /usr/lib.
pub fn resolve_runtime(binary: &Elf, platform: Platform) -> Result<Vec<RuntimeFile>, BuildError> {
    let dirs = platform.loader_search_dirs();
    let mut files: Vec<RuntimeFile> = Vec::new();
    let mut add = |real: PathBuf, looked_up: PathBuf, loader_opens: PathBuf, is_loader| {
        let index = match files.iter().position(|file| file.real == real) {
            Some(index) => index,
            None => {
                files.push(RuntimeFile {
                    real: real.clone(),
                    links: Vec::new(),
                    found_as: vec![real.clone()],
                    is_loader,
                });
                files.len() - 1
            }
        };
        let file = &mut files[index];
        file.is_loader |= is_loader;
        if loader_opens != real && !file.links.contains(&loader_opens) {
            file.links.push(loader_opens);
        }
        if !file.found_as.contains(&looked_up) {
            file.found_as.push(looked_up);
        }
        real
    };
    let mut queue: VecDeque<(String, PathBuf)> = VecDeque::new();
    let enqueue = |elf: &Elf, queue: &mut VecDeque<(String, PathBuf)>| {
        for name in &elf.needed {
            queue.push_back((name.clone(), elf.path.clone()));
        }
    };
    enqueue(binary, &mut queue);
    if let Some(interpreter) = &binary.interpreter {
        let real = canonical(interpreter, &binary.path)?;
        let real = add(real, interpreter.clone(), interpreter.clone(), true);
        enqueue(&read_elf(&real, platform)?, &mut queue);
    }
    let mut done = std::collections::BTreeSet::new();
    while let Some((name, needed_by)) = queue.pop_front() {
        if !done.insert(name.clone()) {
            continue;
        }
        let Some(found) = dirs
            .iter()
            .map(|dir| Path::new(dir).join(&name))
            .find(|path| path.exists())
        else {
            return Err(BuildError::LibraryNotFound {
                name,
                needed_by,
                dirs: dirs.join(", "),
            });
        };
        let real = canonical(&found, &needed_by)?;
        // The loader finds the library under its name in the first search directory that
        // has it; in the image only `real`'s directory does, when it is a search directory.
        let in_search_dir = real
            .parent()
            .filter(|parent| dirs.iter().any(|dir| Path::new(dir) == *parent));
        let loader_opens = match in_search_dir {
            Some(parent) => parent.join(&name),
            None => found.clone(),
        };
        let real = add(real, found, loader_opens, false);
        enqueue(&read_elf(&real, platform)?, &mut queue);
    }
    files.sort_by(|a, b| a.real.cmp(&b.real));
    Ok(files)
}

fn canonical(path: &Path, needed_by: &Path) -> Result<PathBuf, BuildError> {
    std::fs::canonicalize(path).map_err(|source| BuildError::Read {
        path: path.to_owned(),
        source,
        hint: if needed_by.as_os_str().is_empty() {
            "install the Debian package that provides it"
        } else {
            "the binary needs it: install the Debian package that provides it"
        },
    })
}

/// Runs `command` and returns its stdout; a failure carries its stderr and `hint`.
pub fn run(command: &mut Command, hint: &'static str) -> Result<String, BuildError> {
    let shown = describe(command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BuildError::Spawn {
            command: shown.clone(),
            source,
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(BuildError::Failed {
            command: shown,
            status: output.status,
            stderr: stderr.split_whitespace().collect::<Vec<_>>().join(" "),
            hint,
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn describe(command: &Command) -> String {
    let program: OsString = command.get_program().to_owned();
    std::iter::once(program.as_os_str())
        .chain(command.get_args())
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_the_elf_magic_is_refused_as_such() {
        let error = parse_elf(Path::new("x.sh"), b"#!/bin/sh\n", Platform::LinuxAmd64)
            .expect_err("not ELF");
        assert!(matches!(error, BuildError::NotElf { .. }), "{error}");
        assert!(error.to_string().contains("x.sh is not an ELF file"));
    }

    #[test]
    fn this_test_binary_names_the_loader_and_libc() {
        // The test binary is a dynamically linked x86_64 glibc program, as the publisher is.
        let exe = std::env::current_exe().expect("current exe");
        let elf = read_elf(&exe, Platform::LinuxAmd64).expect("readable");
        assert_eq!(
            elf.interpreter.as_deref(),
            Some(Path::new("/lib64/ld-linux-x86-64.so.2"))
        );
        assert!(elf.needed.iter().any(|name| name == "libc.so.6"), "{elf:?}");
        let error = read_elf(&exe, Platform::LinuxArm64).expect_err("wrong machine");
        assert!(
            error
                .to_string()
                .contains("is built for ELF machine x86_64, not for linux/arm64"),
            "{error}"
        );
    }

    #[test]
    fn the_runtime_is_the_loader_and_libc_with_the_names_the_loader_opens() {
        let exe = std::env::current_exe().expect("current exe");
        let elf = read_elf(&exe, Platform::LinuxAmd64).expect("readable");
        let files = resolve_runtime(&elf, Platform::LinuxAmd64).expect("resolved");
        let loader = files.iter().find(|file| file.is_loader).expect("loader");
        assert!(
            loader
                .links
                .contains(&PathBuf::from("/lib64/ld-linux-x86-64.so.2"))
                || loader.real == Path::new("/lib64/ld-linux-x86-64.so.2"),
            "{loader:?}"
        );
        let libc = files
            .iter()
            .find(|file| file.real.file_name() == Some("libc.so.6".as_ref()))
            .expect("libc");
        assert!(!libc.is_loader);
        // Every file is listed once, by its real path.
        let mut reals: Vec<_> = files.iter().map(|file| &file.real).collect();
        reals.dedup();
        assert_eq!(reals.len(), files.len());
    }

    #[test]
    fn links_crate_follows_normal_dependencies_only() {
        let metadata = serde_json::json!({
            "packages": [
                {"id": "a", "name": "a"}, {"id": "b", "name": "b"}, {"id": "c", "name": "c"}
            ],
            "resolve": {"nodes": [
                {"id": "a", "deps": [
                    {"pkg": "b", "dep_kinds": [{"kind": null}]},
                    {"pkg": "c", "dep_kinds": [{"kind": "build"}]}
                ]},
                {"id": "b", "deps": []},
                {"id": "c", "deps": []}
            ]}
        });
        assert!(links_crate(&metadata, "a", "b"));
        assert!(!links_crate(&metadata, "a", "c"));
    }
}
