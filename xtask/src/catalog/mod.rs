//! The data tables the renderer is driven by: AWS partitions, the region -> ECR registry
//! table and the known upstream versions.
//!
//! The tables live as plain text files under `templates/data/` so that a new region or a
//! new release is a one-line data change, reviewed as data. They are embedded at compile
//! time, parsed once on first use, and every row is exercised by the table tests.

mod partitions;
mod regions;
mod table;
mod versions;

use std::sync::LazyLock;

pub use partitions::Partition;
pub use regions::{EcrRegistry, RegionError, ResolvedRegion, is_account_id};
pub use versions::{Release, Version, VersionError, VersionStepError};

/// A malformed embedded data file. This is a bug in the repository, not a user error, and
/// the table tests catch it before a release; it is still reported, never panicked on.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the embedded data table {file} is malformed at line {line}: {problem}; this is a bug in the tool, please report it"
)]
pub struct DataError {
    pub file: &'static str,
    pub line: usize,
    pub problem: String,
}

/// Every embedded table, parsed and cross-checked.
#[derive(Debug)]
pub struct Catalog {
    pub partitions: Vec<Partition>,
    pub registries: Vec<EcrRegistry>,
    pub releases: Vec<Release>,
}

const PARTITIONS_CSV: &str = include_str!("../../../templates/data/partitions.csv");
const REGISTRIES_CSV: &str = include_str!("../../../templates/data/ecr-registries.csv");
const VERSIONS_TXT: &str = include_str!("../../../templates/data/versions.txt");

static CATALOG: LazyLock<Result<Catalog, DataError>> = LazyLock::new(Catalog::parse_embedded);

/// The embedded catalog, parsed on first use.
pub fn catalog() -> Result<&'static Catalog, DataError> {
    CATALOG.as_ref().map_err(Clone::clone)
}

impl Catalog {
    fn parse_embedded() -> Result<Catalog, DataError> {
        let partitions = partitions::parse("templates/data/partitions.csv", PARTITIONS_CSV)?;
        let registries = regions::parse(
            "templates/data/ecr-registries.csv",
            REGISTRIES_CSV,
            &partitions,
        )?;
        let releases = versions::parse("templates/data/versions.txt", VERSIONS_TXT)?;
        Ok(Catalog {
            partitions,
            registries,
            releases,
        })
    }

    /// The partition with this id (`aws`, `aws-cn`, ...).
    pub fn partition(&self, id: &str) -> Option<&Partition> {
        self.partitions.iter().find(|partition| partition.id == id)
    }
}
