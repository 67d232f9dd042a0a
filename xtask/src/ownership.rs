//! Our marks, and whose a live resource is. A resource is ours only when it carries our
//! marks; anything else with the same name is someone else's, and stays untouched unless
//! the user asks to adopt it. Every mark is defined here (the tags, the Kubernetes label
//! and field manager, the dashboard header) together with the check that reads it; the
//! planners hand the verdicts to [`crate::plan::settle`].

use std::collections::BTreeMap;

use kube::{Resource, ResourceExt};

/// The value of `app.kubernetes.io/managed-by` on every object this tool writes, and of the
/// `managed-by` tag on every AWS resource it creates.
pub const MANAGED_BY: &str = "cni-metrics-xtask";
/// The Kubernetes label that carries [`MANAGED_BY`].
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The one field manager every server-side apply of this tool uses.
pub const FIELD_MANAGER: &str = "cni-metrics-xtask";

/// The tag that marks what this tool created, on every AWS resource it creates.
pub const MANAGED_BY_TAG: &str = "managed-by";
/// The tag naming the cluster a role serves.
pub const CLUSTER_TAG: &str = "cni-metrics-xtask/cluster";
/// The tag naming the region of the cluster a role serves: IAM roles are per account, so
/// the same cluster name in two regions must not be mistaken for one owner.
pub const REGION_TAG: &str = "cni-metrics-xtask/region";
/// The tags only this tool sets; `--tag` may not use them.
pub const RESERVED_TAGS: [&str; 3] = [MANAGED_BY_TAG, CLUSTER_TAG, REGION_TAG];

/// The verdict on one live resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    Ours,
    /// Someone else's, with the reason in words (what mark is missing or names another
    /// owner).
    NotOurs(String),
}

/// Whether `tags` say this tool made the resource.
pub fn has_managed_by(tags: &BTreeMap<String, String>) -> bool {
    tags.get(MANAGED_BY_TAG).map(String::as_str) == Some(MANAGED_BY)
}

/// A resource that only needs `managed-by` (the account-wide policy, an association).
pub fn by_managed_by(tags: &BTreeMap<String, String>) -> Ownership {
    if has_managed_by(tags) {
        Ownership::Ours
    } else {
        Ownership::NotOurs(format!("not tagged {MANAGED_BY_TAG}={MANAGED_BY}"))
    }
}

/// A resource that serves one cluster (a role, an alarm): ours only when made by this tool
/// for this very cluster and region.
pub fn of_cluster_resource(
    tags: &BTreeMap<String, String>,
    cluster: &str,
    region: &str,
) -> Ownership {
    if !has_managed_by(tags) {
        return by_managed_by(tags);
    }
    match (
        tags.get(CLUSTER_TAG).map(String::as_str),
        tags.get(REGION_TAG).map(String::as_str),
    ) {
        (Some(tagged_cluster), Some(tagged_region))
            if tagged_cluster == cluster && tagged_region == region =>
        {
            Ownership::Ours
        }
        (Some(tagged_cluster), Some(tagged_region)) => Ownership::NotOurs(format!(
            "made by this tool for cluster {tagged_cluster} in {tagged_region}"
        )),
        (Some(tagged_cluster), None) => Ownership::NotOurs(format!(
            "made for cluster {tagged_cluster} without a {REGION_TAG} tag (by an earlier version of this tool or by hand), so it may serve a cluster of that name in another region"
        )),
        (None, _) => Ownership::NotOurs(format!(
            "tagged {MANAGED_BY_TAG}={MANAGED_BY} but with no {CLUSTER_TAG} tag"
        )),
    }
}

/// The words in our dashboards' header that mark them as ours, for one cluster in one
/// region: `destroy` deletes, and `deploy` overwrites without `--adopt`, only a dashboard
/// that carries them. Dashboards are global per account, so the region is part of the mark.
pub fn dashboard_marker(cluster: &str, region: &str) -> String {
    format!(
        "{} for cluster `{cluster}` in `{region}`",
        dashboard_marker_prefix()
    )
}

/// The start of every marker, whatever the cluster: a dashboard with it and another
/// cluster's or region's marker was made by this tool, for someone else.
fn dashboard_marker_prefix() -> String {
    format!("Managed by `{MANAGED_BY}`")
}

/// A dashboard body: ours when its header names this cluster and region.
pub fn of_dashboard(body: &str, cluster: &str, region: &str) -> Ownership {
    if body.contains(&dashboard_marker(cluster, region)) {
        Ownership::Ours
    } else if body.contains(&dashboard_marker_prefix()) {
        Ownership::NotOurs(
            "made by this tool for another cluster or region (see its header)".to_owned(),
        )
    } else {
        Ownership::NotOurs("its header has no cni-metrics-xtask marker".to_owned())
    }
}

/// A Kubernetes object: ours when it carries our label. Otherwise the reason names who
/// does manage it, as far as the object tells.
pub fn of_object<K: Resource>(live: &K) -> Ownership {
    match live.labels().get(MANAGED_BY_LABEL).map(String::as_str) {
        Some(MANAGED_BY) => Ownership::Ours,
        Some(other) => Ownership::NotOurs(format!("labelled {MANAGED_BY_LABEL}={other}")),
        None => {
            let mut managers: Vec<&str> = live
                .meta()
                .managed_fields
                .iter()
                .flatten()
                .filter_map(|entry| entry.manager.as_deref())
                .collect();
            managers.sort_unstable();
            managers.dedup();
            if managers.is_empty() {
                Ownership::NotOurs(format!("not labelled {MANAGED_BY_LABEL}={MANAGED_BY}"))
            } else {
                Ownership::NotOurs(format!(
                    "not labelled {MANAGED_BY_LABEL}={MANAGED_BY}; its fields are managed by {}",
                    managers.join(", ")
                ))
            }
        }
    }
}

/// The tags of `desired` that `live` lacks or holds with another value. Tags someone else
/// added are left alone.
pub fn missing_tags(
    live: &BTreeMap<String, String>,
    desired: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    desired
        .iter()
        .filter(|(key, value)| live.get(*key) != Some(*value))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// The plan lines for tags that will be added or changed.
pub fn tag_lines(live: &BTreeMap<String, String>, tags: &[(String, String)]) -> Vec<String> {
    tags.iter()
        .map(|(key, value)| match live.get(key) {
            Some(old) => format!("~ tag {key}: {old} -> {value}"),
            None => format!("+ tag {key}={value}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn a_role_is_ours_only_with_every_mark_for_this_cluster_and_region() {
        let ours = tags(&[
            (MANAGED_BY_TAG, MANAGED_BY),
            (CLUSTER_TAG, "prod"),
            (REGION_TAG, "eu-west-1"),
        ]);
        assert_eq!(
            of_cluster_resource(&ours, "prod", "eu-west-1"),
            Ownership::Ours
        );
        let cases = [
            (tags(&[]), "not tagged managed-by=cni-metrics-xtask"),
            (
                tags(&[(MANAGED_BY_TAG, "terraform")]),
                "not tagged managed-by=cni-metrics-xtask",
            ),
            (
                tags(&[(MANAGED_BY_TAG, MANAGED_BY), (CLUSTER_TAG, "prod")]),
                "without a cni-metrics-xtask/region tag",
            ),
            (
                tags(&[
                    (MANAGED_BY_TAG, MANAGED_BY),
                    (CLUSTER_TAG, "prod"),
                    (REGION_TAG, "us-east-1"),
                ]),
                "for cluster prod in us-east-1",
            ),
            (
                tags(&[
                    (MANAGED_BY_TAG, MANAGED_BY),
                    (CLUSTER_TAG, "staging"),
                    (REGION_TAG, "eu-west-1"),
                ]),
                "for cluster staging in eu-west-1",
            ),
            (
                tags(&[(MANAGED_BY_TAG, MANAGED_BY)]),
                "no cni-metrics-xtask/cluster tag",
            ),
        ];
        for (live, expected) in cases {
            match of_cluster_resource(&live, "prod", "eu-west-1") {
                Ownership::NotOurs(reason) => {
                    assert!(reason.contains(expected), "{live:?}: {reason}");
                }
                Ownership::Ours => panic!("{live:?} must not be ours"),
            }
        }
    }

    #[test]
    fn tag_lines_show_added_and_changed_tags() {
        let live = tags(&[(MANAGED_BY_TAG, "hand")]);
        let desired = tags(&[(MANAGED_BY_TAG, MANAGED_BY), (CLUSTER_TAG, "prod")]);
        let missing = missing_tags(&live, &desired);
        assert_eq!(
            tag_lines(&live, &missing),
            [
                "+ tag cni-metrics-xtask/cluster=prod",
                "~ tag managed-by: hand -> cni-metrics-xtask"
            ]
        );
    }
}
