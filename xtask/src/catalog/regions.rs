//! Regions: which partition a region belongs to and which ECR registry serves the
//! cni-metrics-helper image there.
//!
//! Resolution order: the exact table first, then the partitions' region patterns, then a
//! refusal that names the nearest known regions. Nothing ever falls back to us-west-2:
//! pulling from the wrong registry fails in opt-in regions (403 / NotFound) and pointing a
//! trust policy at the wrong partition fails at AssumeRole time, both far from the cause.

use super::{Catalog, DataError, Partition, table};

/// The ECR registry that serves EKS add-on images in one region.
#[derive(Debug)]
pub struct EcrRegistry {
    pub region: String,
    /// A 12-digit AWS account id, kept as a string: some start with 0.
    pub account: String,
    pub domain: String,
    pub partition: String,
}

impl EcrRegistry {
    /// The registry host, `{account}.dkr.ecr.{region}.{domain}`.
    pub fn host(&self) -> String {
        format!("{}.dkr.ecr.{}.{}", self.account, self.region, self.domain)
    }
}

/// A region the tool knows how to render for.
#[derive(Debug, Clone)]
pub struct ResolvedRegion<'a> {
    pub name: String,
    pub partition: &'a Partition,
    /// `None` for a region that matches a partition's naming pattern but is newer than our
    /// table: everything but the upstream image can still be rendered.
    pub registry: Option<&'a EcrRegistry>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RegionError {
    #[error(
        "unknown region '{region}': it is in no known partition; nearest known regions: {}",
        nearest.join(", ")
    )]
    Unknown {
        region: String,
        nearest: Vec<String>,
    },
    #[error(
        "no known ECR registry serves the cni-metrics-helper image in region '{region}' \
         (partition {partition}); pass --image with an image you can pull there (e.g. a mirror), \
         or add the region to templates/data/ecr-registries.csv; nearest known regions: {}",
        nearest.join(", ")
    )]
    NoRegistry {
        region: String,
        partition: String,
        nearest: Vec<String>,
    },
}

impl Catalog {
    /// Resolves a region name to its partition and, when known, its ECR registry.
    pub fn resolve_region<'a>(&'a self, region: &str) -> Result<ResolvedRegion<'a>, RegionError> {
        if let Some(registry) = self.registries.iter().find(|row| row.region == region) {
            let partition =
                self.partition(&registry.partition)
                    .ok_or_else(|| RegionError::Unknown {
                        region: region.to_owned(),
                        nearest: self.nearest_regions(region),
                    })?;
            return Ok(ResolvedRegion {
                name: region.to_owned(),
                partition,
                registry: Some(registry),
            });
        }
        match self
            .partitions
            .iter()
            .find(|partition| partition.matches_region(region))
        {
            Some(partition) => Ok(ResolvedRegion {
                name: region.to_owned(),
                partition,
                registry: None,
            }),
            None => Err(RegionError::Unknown {
                region: region.to_owned(),
                nearest: self.nearest_regions(region),
            }),
        }
    }

    /// The three known regions closest to `region` by edit distance, closest first.
    pub fn nearest_regions(&self, region: &str) -> Vec<String> {
        let mut scored: Vec<(usize, &str)> = self
            .registries
            .iter()
            .map(|row| (edit_distance(region, &row.region), row.region.as_str()))
            .collect();
        scored.sort();
        scored
            .into_iter()
            .take(3)
            .map(|(_, name)| name.to_owned())
            .collect()
    }
}

impl ResolvedRegion<'_> {
    /// The host of the ECR registry that serves upstream's cni-metrics-helper image in this
    /// region; refused, with the nearest known regions, for a region without a table row.
    pub fn upstream_registry_host(&self, catalog: &Catalog) -> Result<String, RegionError> {
        match self.registry {
            Some(registry) => Ok(registry.host()),
            None => Err(RegionError::NoRegistry {
                region: self.name.clone(),
                partition: self.partition.id.clone(),
                nearest: catalog.nearest_regions(&self.name),
            }),
        }
    }
}

/// Levenshtein distance over bytes; region names are ASCII.
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, &left) in a.as_bytes().iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, &right) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(left != right);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// Whether `account` is an AWS account id: exactly 12 digits.
pub fn is_account_id(account: &str) -> bool {
    account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())
}

pub(super) fn parse(
    file: &'static str,
    text: &str,
    partitions: &[Partition],
) -> Result<Vec<EcrRegistry>, DataError> {
    let rows = table::rows(file, text, &["region", "account", "domain", "partition"])?;
    let mut registries: Vec<EcrRegistry> = Vec::with_capacity(rows.len());
    for row in rows {
        let problem = |problem: String| DataError {
            file,
            line: row.line,
            problem,
        };
        let [region, account, domain, partition_id] = [0, 1, 2, 3].map(|i| row.fields[i]);
        if !is_account_id(account) {
            return Err(problem(format!("account '{account}' is not 12 digits")));
        }
        let partition = partitions
            .iter()
            .find(|partition| partition.id == partition_id)
            .ok_or_else(|| problem(format!("unknown partition '{partition_id}'")))?;
        if partition.dns_suffix != domain {
            return Err(problem(format!(
                "domain '{domain}' differs from the DNS suffix of partition {partition_id} ({})",
                partition.dns_suffix
            )));
        }
        if !partition.matches_region(region) {
            return Err(problem(format!(
                "region '{region}' does not match the naming pattern of partition {partition_id}"
            )));
        }
        if registries.iter().any(|known| known.region == region) {
            return Err(problem(format!("region '{region}' is listed twice")));
        }
        registries.push(EcrRegistry {
            region: region.to_owned(),
            account: account.to_owned(),
            domain: domain.to_owned(),
            partition: partition_id.to_owned(),
        });
    }
    Ok(registries)
}

#[cfg(test)]
mod tests {
    use super::edit_distance;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("us-west-2", "us-west-2"), 0);
        assert_eq!(edit_distance("us-wst-2", "us-west-2"), 1);
        assert_eq!(edit_distance("us-west-9", "us-west-2"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
