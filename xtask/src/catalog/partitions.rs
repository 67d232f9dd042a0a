//! AWS partitions: the ARN prefix and DNS suffix every region-specific string is built from.

use regex_lite::Regex;

use super::{DataError, table};

/// One AWS partition (`aws`, `aws-cn`, `aws-us-gov`, `aws-eusc`, the ISO partitions).
#[derive(Debug)]
pub struct Partition {
    /// The ARN partition segment, as in `arn:{id}:iam::...`.
    pub id: String,
    /// The DNS suffix of the partition's endpoints and registries.
    pub dns_suffix: String,
    region_pattern: Regex,
}

impl Partition {
    /// Whether a region name follows this partition's naming pattern.
    pub fn matches_region(&self, region: &str) -> bool {
        self.region_pattern.is_match(region)
    }
}

pub(super) fn parse(file: &'static str, text: &str) -> Result<Vec<Partition>, DataError> {
    let rows = table::rows(file, text, &["id", "dns_suffix", "region_regex"])?;
    rows.into_iter()
        .map(|row| {
            let region_pattern = Regex::new(row.fields[2]).map_err(|error| DataError {
                file,
                line: row.line,
                problem: format!("the region pattern is not a valid regex: {error}"),
            })?;
            Ok(Partition {
                id: row.fields[0].to_owned(),
                dns_suffix: row.fields[1].to_owned(),
                region_pattern,
            })
        })
        .collect()
}
