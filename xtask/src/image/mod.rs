//! `cargo xtask image build`: the publisher's container image, assembled without a
//! container engine as a reproducible OCI image layout (and, on request, an `oci-archive`
//! tarball of it). [`build`] is the library entry; [`run`] is the command around it.
//!
//! One module a step: [`build`](mod@build) gets the binary (the release build, or one
//! given) and reads its ELF headers for the dynamic loader and shared libraries it needs;
//! [`rootfs`] turns that into the layer's entries and records the Debian packages they come
//! from; [`oci`] writes the image config, manifest and index; [`layout`] makes the
//! deterministic layer and writes the layout, moving it into place only when complete.

mod build;
mod layout;
mod oci;
mod platform;
mod report;
mod rootfs;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

pub use build::{BuildError, Provenance};
pub use layout::LayoutError;
pub use platform::Platform;
pub use report::{Built, BuiltPlatform, LayerEntry, RuntimePackage};
pub use rootfs::RootfsError;

use crate::flags::{ImageBuildFlags, OutputFormat};

/// What [`build`] makes, and from what.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The workspace whose publisher is built and described.
    pub workspace_root: PathBuf,
    /// One manifest each, in this order (duplicates are dropped).
    pub platforms: Vec<Platform>,
    /// An already built publisher; `None` runs the release build.
    pub binary: Option<PathBuf>,
    /// The OCI image layout directory to write (replaced when it holds a layout).
    pub out: PathBuf,
    /// An `oci-archive` tarball of the same layout, when wanted.
    pub archive: Option<PathBuf>,
}

/// Every way [`build`] fails; each message says what failed, on what, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "platform {platform} needs the Rust target {rust_target} and a {platform} Debian 12 runtime, which this machine cannot build (it builds {buildable} only); build that image on a machine that has them (see publisher/README.md)",
        rust_target = platform.rust_target(),
        buildable = Platform::BUILDABLE
    )]
    PlatformNotBuildable { platform: Platform },
    #[error("no platform to build: pass --platform {}", Platform::BUILDABLE)]
    NoPlatform,
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

/// Builds the image for every platform in `options` and writes the layout (and archive).
/// Nothing is written unless every step succeeded.
pub fn build(options: &BuildOptions) -> Result<Built, ImageError> {
    let mut platforms: Vec<Platform> = Vec::new();
    for &platform in &options.platforms {
        if !platforms.contains(&platform) {
            platforms.push(platform);
        }
    }
    if platforms.is_empty() {
        return Err(ImageError::NoPlatform);
    }
    // Refuse before anything slow runs.
    if let Some(&platform) = platforms.iter().find(|p| !p.buildable_here()) {
        return Err(ImageError::PlatformNotBuildable { platform });
    }
    // Every platform is Linux, so the first one's dependency graph stands for all.
    let provenance = Provenance::read(&options.workspace_root, platforms[0])?;
    // A given binary is checked before anything is written.
    if let Some(binary) = &options.binary {
        build::read_elf(binary, platforms[0])?;
        build::check_version(binary, &provenance.version)?;
    }
    // An unwritable destination fails before the release build, not after it.
    let staging = layout::Staging::new(&options.out, options.archive.as_deref())?;
    let binary = match &options.binary {
        Some(path) => path.clone(),
        None => {
            let built = build::release_build(&options.workspace_root)?;
            build::check_version(&built, &provenance.version)?;
            built
        }
    };
    let mut images = Vec::new();
    for platform in platforms {
        let elf = build::read_elf(&binary, platform)?;
        let runtime = build::resolve_runtime(&elf, platform)?;
        let rootfs = rootfs::assemble(&binary, &runtime, provenance.needs_ca_certificates)?;
        let layer = layout::layer(&rootfs, provenance.epoch)?;
        images.push(oci::image(platform, &provenance, &rootfs, layer)?);
    }
    let documents = oci::layout(&provenance, &images)?;
    let written = staging.commit(&documents, provenance.epoch)?;
    Ok(report::built(&provenance, &images, &documents, written))
}

/// `cargo xtask image build`: the data (digests, sizes, files, packages) on stdout, the
/// build's progress on stderr.
pub fn run(flags: ImageBuildFlags) -> anyhow::Result<ExitCode> {
    let root = sandbox::python_tools::workspace_root();
    let out = flags.out.unwrap_or_else(|| default_out(&root));
    let options = BuildOptions {
        workspace_root: root,
        platforms: flags.platform,
        binary: flags.binary,
        out,
        archive: flags.archive,
    };
    let built = build(&options)?;
    match flags.output {
        OutputFormat::Human => print!("{}", built.to_human()),
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&built).context("serialising the build report")?
        ),
    }
    Ok(crate::exit::code(crate::exit::SUCCESS))
}

/// `image/oci` under the target directory, beside the build output it is made from.
pub fn default_out(workspace_root: &Path) -> PathBuf {
    crate::cargo_tool::target_dir(workspace_root).join("image/oci")
}
