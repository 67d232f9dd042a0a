//! The platforms an image can be asked for, and what each needs to be built.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::{Arch, Os};

/// A platform of the image index, as `--platform` names it (`os/arch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Platform {
    /// x86-64 nodes.
    LinuxAmd64,
    /// Graviton nodes. Known so that asking for it gets a precise refusal: building it needs
    /// the `aarch64-unknown-linux-gnu` Rust target and an arm64 Debian runtime, which this
    /// machine does not have (see publisher/README.md).
    LinuxArm64,
}

impl Platform {
    /// What this machine builds, as `--platform` spells it.
    pub const BUILDABLE: &'static str = "linux/amd64";

    /// Whether this machine can build the platform: it has the x86_64-unknown-linux-gnu
    /// target only (no musl, no other target can be installed), and its Debian packages are
    /// amd64 ones.
    pub fn buildable_here(self) -> bool {
        match self {
            Platform::LinuxAmd64 => true,
            Platform::LinuxArm64 => false,
        }
    }

    /// The Rust target whose binary runs on the platform.
    pub fn rust_target(self) -> &'static str {
        match self {
            Platform::LinuxAmd64 => "x86_64-unknown-linux-gnu",
            Platform::LinuxArm64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// The ELF machine (`e_machine`) of the platform's binaries.
    pub fn elf_machine(self) -> u16 {
        match self {
            Platform::LinuxAmd64 => object::elf::EM_X86_64,
            Platform::LinuxArm64 => object::elf::EM_AARCH64,
        }
    }

    /// Debian's multiarch tuple: where the platform's shared libraries live.
    pub fn multiarch(self) -> &'static str {
        match self {
            Platform::LinuxAmd64 => "x86_64-linux-gnu",
            Platform::LinuxArm64 => "aarch64-linux-gnu",
        }
    }

    /// The directories the dynamic loader searches when there is no `/etc/ld.so.cache` (the
    /// image has none), in its order, as Debian's glibc is configured (`ld.so --help` lists
    /// them as "system search path").
    pub fn loader_search_dirs(self) -> [String; 4] {
        let multiarch = self.multiarch();
        [
            format!("/lib/{multiarch}"),
            format!("/usr/lib/{multiarch}"),
            "/lib".to_owned(),
            "/usr/lib".to_owned(),
        ]
    }

    /// Debian's architecture name, as `dpkg` records packages.
    pub fn debian_arch(self) -> &'static str {
        match self {
            Platform::LinuxAmd64 => "amd64",
            Platform::LinuxArm64 => "arm64",
        }
    }

    pub fn oci_arch(self) -> Arch {
        match self {
            Platform::LinuxAmd64 => Arch::Amd64,
            Platform::LinuxArm64 => Arch::ARM64,
        }
    }

    pub fn oci_os(self) -> Os {
        match self {
            Platform::LinuxAmd64 | Platform::LinuxArm64 => Os::Linux,
        }
    }

    /// The OCI `variant` field (arm64 images carry `v8`).
    pub fn oci_variant(self) -> Option<&'static str> {
        match self {
            Platform::LinuxAmd64 => None,
            Platform::LinuxArm64 => Some("v8"),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Platform::LinuxAmd64 => "linux/amd64",
            Platform::LinuxArm64 => "linux/arm64",
        })
    }
}

impl FromStr for Platform {
    type Err = String;

    fn from_str(text: &str) -> Result<Platform, String> {
        match text.trim() {
            "linux/amd64" => Ok(Platform::LinuxAmd64),
            "linux/arm64" | "linux/arm64/v8" => Ok(Platform::LinuxArm64),
            other => Err(format!(
                "unknown platform {other:?}: the publisher's image is for linux/amd64 (built here) or linux/arm64 (needs the aarch64-unknown-linux-gnu target)"
            )),
        }
    }
}

impl serde::Serialize for Platform {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_as_docker_spells_them_and_print_back() {
        for (text, platform) in [
            ("linux/amd64", Platform::LinuxAmd64),
            ("linux/arm64", Platform::LinuxArm64),
            ("linux/arm64/v8", Platform::LinuxArm64),
        ] {
            assert_eq!(text.parse::<Platform>(), Ok(platform));
        }
        assert_eq!(Platform::LinuxArm64.to_string(), "linux/arm64");
        let error = "windows/amd64".parse::<Platform>().expect_err("unknown");
        assert!(
            error.contains("unknown platform \"windows/amd64\""),
            "{error}"
        );
    }

    #[test]
    fn only_amd64_is_built_here() {
        assert!(Platform::LinuxAmd64.buildable_here());
        assert!(!Platform::LinuxArm64.buildable_here());
        assert_eq!(Platform::BUILDABLE, Platform::LinuxAmd64.to_string());
    }
}
