//! Upstream release versions (`vX.Y.Z`); the cni-metrics-helper image tag equals the CNI tag.
//! Each release row also says whether upstream's helper image of that release can use EKS
//! Pod Identity, a property of the AWS SDK it was built with.

use std::fmt;
use std::str::FromStr;

use super::{Catalog, DataError, table};

/// A release version, ordered numerically (v1.9.0 < v1.10.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One row of the versions table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    pub version: Version,
    /// Whether upstream's helper image of this release can use EKS Pod Identity: its AWS
    /// SDK must know the Pod Identity agent (aws-sdk-go v1.47.11 or later).
    pub pod_identity: bool,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum VersionError {
    #[error("version '{0}' is not of the form vX.Y.Z (e.g. v1.23.0)")]
    Malformed(String),
    #[error("version {version} is not a known release; known releases nearby: {}", nearby.join(", "))]
    Unknown {
        version: String,
        nearby: Vec<String>,
    },
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(text: &str) -> Result<Version, VersionError> {
        let malformed = || VersionError::Malformed(text.to_owned());
        let digits = text.strip_prefix('v').ok_or_else(malformed)?;
        let mut parts = digits.split('.');
        let mut number = || -> Result<u32, VersionError> {
            let part = parts.next().ok_or_else(malformed)?;
            // Leading zeros and signs are refused: they never appear in a release tag.
            let canonical = !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_digit())
                && (part == "0" || !part.starts_with('0'));
            if !canonical {
                return Err(malformed());
            }
            part.parse().map_err(|_| malformed())
        };
        let version = Version {
            major: number()?,
            minor: number()?,
            patch: number()?,
        };
        if parts.next().is_some() {
            return Err(malformed());
        }
        Ok(version)
    }
}

/// Why a version change is refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum VersionStepError {
    #[error(
        "{from} -> {to} skips a minor version; the helper is upgraded one minor at a time, as AWS advises: \
         run `cargo xtask upgrade --to {to}`, which goes {path}"
    )]
    SkipsMinor {
        from: String,
        to: String,
        path: String,
    },
    #[error("{from} -> {to} is a downgrade; pass --allow-downgrade if that is what you want")]
    Downgrade { from: String, to: String },
    #[error("{from} -> {to} changes the major version, which no known release path covers")]
    MajorChange { from: String, to: String },
    #[error(
        "no known release of v{major}.{minor} lies on the way from {from} to {to}; add it to templates/data/versions.txt"
    )]
    NoReleaseOfMinor {
        major: u32,
        minor: u32,
        from: String,
        to: String,
    },
}

impl Catalog {
    /// The releases to step through from `from` to `to`, one minor at a time, each
    /// intermediate minor at its newest known patch, `to` last. Empty when `to == from`.
    pub fn upgrade_path(
        &self,
        from: Version,
        to: Version,
    ) -> Result<Vec<Version>, VersionStepError> {
        let names = || (from.to_string(), to.to_string());
        if from.major != to.major {
            let (from, to) = names();
            return Err(VersionStepError::MajorChange { from, to });
        }
        if to < from {
            let (from, to) = names();
            return Err(VersionStepError::Downgrade { from, to });
        }
        let mut path = Vec::new();
        for minor in from.minor + 1..to.minor {
            let newest = self
                .versions()
                .filter(|known| known.major == from.major && known.minor == minor)
                .max()
                .ok_or_else(|| {
                    let major = from.major;
                    let (from, to) = names();
                    VersionStepError::NoReleaseOfMinor {
                        major,
                        minor,
                        from,
                        to,
                    }
                })?;
            path.push(newest);
        }
        if to != from {
            path.push(to);
        }
        Ok(path)
    }

    /// Refuses a change from the live version that skips a minor version, or goes back
    /// without `allow_downgrade`. Patch jumps within a minor are fine.
    pub fn check_step(
        &self,
        live: Version,
        desired: Version,
        allow_downgrade: bool,
    ) -> Result<(), VersionStepError> {
        if desired < live {
            if allow_downgrade {
                return Ok(());
            }
            return Err(VersionStepError::Downgrade {
                from: live.to_string(),
                to: desired.to_string(),
            });
        }
        if desired.major == live.major && desired.minor <= live.minor + 1 {
            return Ok(());
        }
        let path = self.upgrade_path(live, desired)?;
        Err(VersionStepError::SkipsMinor {
            from: live.to_string(),
            to: desired.to_string(),
            path: std::iter::once(live)
                .chain(path)
                .map(|version| version.to_string())
                .collect::<Vec<_>>()
                .join(" -> "),
        })
    }

    /// The known releases, oldest first.
    pub fn versions(&self) -> impl Iterator<Item = Version> + '_ {
        self.releases.iter().map(|release| release.version)
    }

    /// The newest known release: the default when no version is pinned.
    pub fn latest_version(&self) -> Option<Version> {
        self.releases.last().map(|release| release.version)
    }

    /// The oldest release whose upstream helper image can use EKS Pod Identity. The table
    /// is checked to have one and to say yes for every release after it, so any version,
    /// listed or not (a live one may be older than the table), is judged by comparing with
    /// it.
    pub fn pod_identity_since(&self) -> Option<Version> {
        self.releases
            .iter()
            .find(|release| release.pod_identity)
            .map(|release| release.version)
    }

    /// Parses `text` and checks that it is a known release.
    pub fn known_version(&self, text: &str) -> Result<Version, VersionError> {
        let version: Version = text.parse()?;
        if self.versions().any(|known| known == version) {
            return Ok(version);
        }
        Err(VersionError::Unknown {
            version: version.to_string(),
            nearby: self.nearby_versions(version),
        })
    }

    /// The known releases of the same minor, or the three closest ones when that minor is
    /// unknown.
    fn nearby_versions(&self, version: Version) -> Vec<String> {
        let same_minor: Vec<String> = self
            .versions()
            .filter(|known| (known.major, known.minor) == (version.major, version.minor))
            .map(|known| known.to_string())
            .collect();
        if !same_minor.is_empty() {
            return same_minor;
        }
        let position = self
            .releases
            .partition_point(|known| known.version < version);
        let start = position.saturating_sub(2);
        let end = (position + 1).min(self.releases.len());
        self.releases[start..end]
            .iter()
            .map(|release| release.version.to_string())
            .collect()
    }
}

pub(super) fn parse(file: &'static str, text: &str) -> Result<Vec<Release>, DataError> {
    let mut releases: Vec<Release> = Vec::new();
    for row in table::rows(file, text, &["version", "pod_identity"])? {
        let problem = |problem: String| DataError {
            file,
            line: row.line,
            problem,
        };
        let version: Version = row.fields[0]
            .parse()
            .map_err(|error| problem(format!("{error}")))?;
        let pod_identity = match row.fields[1] {
            "yes" => true,
            "no" => false,
            other => {
                return Err(problem(format!(
                    "pod_identity is '{other}'; write yes or no"
                )));
            }
        };
        if let Some(previous) = releases.last() {
            if previous.version >= version {
                return Err(problem(format!(
                    "{version} is not newer than the line before it; keep the file sorted oldest first"
                )));
            }
            // A newer release never goes back to an older SDK; the check keeps
            // `pod_identity_since` right for versions between or before the rows.
            if previous.pod_identity && !pod_identity {
                return Err(problem(format!(
                    "{version} says pod_identity no after {} said yes; once a release can use Pod Identity, every later one can",
                    previous.version
                )));
            }
        }
        releases.push(Release {
            version,
            pod_identity,
        });
    }
    if releases.is_empty() {
        return Err(DataError {
            file,
            line: 0,
            problem: "no versions listed".to_owned(),
        });
    }
    if !releases.iter().any(|release| release.pod_identity) {
        return Err(DataError {
            file,
            line: 0,
            problem: "no release says pod_identity yes; the newest releases can use Pod Identity"
                .to_owned(),
        });
    }
    Ok(releases)
}

#[cfg(test)]
mod tests {
    use super::{Version, VersionError, parse};

    #[test]
    fn parses_release_tags_and_refuses_everything_else() {
        let parsed: Version = "v1.23.0".parse().expect("a release tag parses");
        assert_eq!((parsed.major, parsed.minor, parsed.patch), (1, 23, 0));
        for bad in [
            "1.23.0",
            "v1.23",
            "v1.23.0.1",
            "v1.023.0",
            "v1.x.0",
            "v1.23.0-rc1",
            "",
            "v",
        ] {
            assert_eq!(
                bad.parse::<Version>(),
                Err(VersionError::Malformed(bad.to_owned())),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn orders_numerically() {
        let older: Version = "v1.9.9".parse().expect("valid");
        let newer: Version = "v1.10.0".parse().expect("valid");
        assert!(older < newer);
    }

    fn parse_error(text: &str) -> String {
        parse("versions.txt", text).expect_err("refused").problem
    }

    #[test]
    fn the_pod_identity_column_is_yes_or_no_and_never_goes_back() {
        let parsed = parse(
            "versions.txt",
            "version,pod_identity\nv1.15.4,no\nv1.15.5,yes\n",
        )
        .expect("a valid table");
        assert_eq!(
            parsed.iter().map(|r| r.pod_identity).collect::<Vec<_>>(),
            [false, true]
        );
        assert_eq!(
            parse_error("version,pod_identity\nv1.15.5,true\n"),
            "pod_identity is 'true'; write yes or no"
        );
        assert!(
            parse_error("version,pod_identity\nv1.15.5,yes\nv1.16.0,no\n")
                .contains("once a release can use Pod Identity, every later one can")
        );
        assert!(
            parse_error("version,pod_identity\nv1.15.4,no\n")
                .starts_with("no release says pod_identity yes")
        );
        assert!(parse_error("v1.15.5\n").starts_with("expected the header"));
    }
}
