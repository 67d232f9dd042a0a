//! Whose a live resource is. A resource is ours only when it carries our marks; anything
//! else with the same name is someone else's, and stays untouched unless the user asks to
//! adopt it. Each scope reads its own marks (tags, a dashboard header, a label) and hands
//! the verdict to [`settle`], so every scope turns a verdict into a plan entry the same way.

use std::collections::BTreeMap;

use super::Change;
use crate::render::MANAGED_BY;

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

/// A role: ours only when made by this tool for this very cluster and region.
pub fn of_role(tags: &BTreeMap<String, String>, cluster: &str, region: &str) -> Ownership {
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

/// What converging a live resource takes: the diff lines and the steps. For a resource
/// that is not ours the steps must include putting our marks on it (the tags, the label),
/// since an adoption makes it ours from then on.
#[derive(Debug)]
pub struct Convergence<S> {
    pub diff: Vec<String>,
    pub steps: Vec<S>,
}

impl<S> Default for Convergence<S> {
    fn default() -> Self {
        Convergence {
            diff: Vec::new(),
            steps: Vec::new(),
        }
    }
}

/// Turns a verdict and what converging would take into the change to plan, and the steps
/// to carry it out: our resources are updated (or left alone), someone else's are a
/// conflict, or, with `adopt`, an adoption that is its own kind of step.
pub fn settle<S>(
    ownership: Ownership,
    adopt: bool,
    convergence: Convergence<S>,
) -> (Change, Vec<S>) {
    match ownership {
        Ownership::Ours if convergence.steps.is_empty() => (Change::NoOp, Vec::new()),
        Ownership::Ours => (
            Change::Update {
                diff: convergence.diff,
            },
            convergence.steps,
        ),
        Ownership::NotOurs(reason) if adopt => (
            Change::Adopt {
                reason,
                diff: convergence.diff,
            },
            convergence.steps,
        ),
        Ownership::NotOurs(reason) => (Change::Conflict { reason }, Vec::new()),
    }
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
        assert_eq!(of_role(&ours, "prod", "eu-west-1"), Ownership::Ours);
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
            match of_role(&live, "prod", "eu-west-1") {
                Ownership::NotOurs(reason) => {
                    assert!(reason.contains(expected), "{live:?}: {reason}");
                }
                Ownership::Ours => panic!("{live:?} must not be ours"),
            }
        }
    }

    #[test]
    fn settling_never_writes_to_what_is_not_ours_without_adopt() {
        let step = || "a step";
        let converge = || Convergence {
            diff: vec!["+ tag managed-by=cni-metrics-xtask".to_owned()],
            steps: vec![step()],
        };
        let (change, steps) = settle(Ownership::NotOurs("why".to_owned()), false, converge());
        assert_eq!(
            change,
            Change::Conflict {
                reason: "why".to_owned()
            }
        );
        assert!(steps.is_empty());
        let (change, steps) = settle(Ownership::NotOurs("why".to_owned()), true, converge());
        assert!(matches!(change, Change::Adopt { .. }));
        assert_eq!(steps.len(), 1);
        let (change, steps) = settle(Ownership::Ours, false, converge());
        assert!(matches!(change, Change::Update { .. }));
        assert_eq!(steps.len(), 1);
        let (change, steps) = settle(Ownership::Ours, true, Convergence::<&str>::default());
        assert_eq!(change, Change::NoOp);
        assert!(steps.is_empty());
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
