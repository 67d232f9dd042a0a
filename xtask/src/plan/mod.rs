//! The typed plan: one [`ResourceChange`] per resource, which `plan` prints and `deploy` and
//! `destroy` execute as they are. A user applies exactly what they reviewed.
//!
//! Each scope lives in its own module and knows how to read its live state, compare it with
//! the desired state, and carry out its steps: [`iam`], [`kubernetes`], [`alarms`],
//! [`dashboard`].

pub mod alarms;
pub mod dashboard;
pub mod iam;
pub mod kubernetes;
pub mod pod_identity;

use std::fmt::Write as _;
use std::time::Duration;

use aws_config::SdkConfig;
use serde::Serialize;

use crate::aws::AwsError;
use crate::catalog::{Catalog, VersionStepError};
use crate::decide::{Identity, Target};
use crate::ownership::Ownership;
use crate::render::{ManifestObject, Rendered};

/// The four groups of resources, which `--only` selects from. They are applied in this
/// order: the role must exist before pods use it, the alarms before the dashboard that
/// shows their state, and the dashboard is last because nothing depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Iam,
    Kubernetes,
    Alarms,
    Dashboard,
}

impl Scope {
    pub const ALL: [Scope; 4] = [
        Scope::Iam,
        Scope::Kubernetes,
        Scope::Alarms,
        Scope::Dashboard,
    ];
}

/// What happens to one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Change {
    Create,
    Update {
        /// One line per changed field: `~ path: old -> new`, `+ path: new`, `- path: old`.
        diff: Vec<String>,
    },
    NoOp,
    Delete,
    /// A resource of that name exists and is not ours (it lacks our marks, or they name
    /// another cluster or region): nothing is written to it, and `deploy` refuses to run.
    Conflict {
        reason: String,
    },
    /// A resource that is not ours, taken over because of `--adopt`: the steps put our
    /// marks on it and converge it, and from then on it is ours.
    Adopt {
        reason: String,
        diff: Vec<String>,
    },
}

/// One resource in the plan, with the steps that carry out its change.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceChange {
    pub scope: Scope,
    pub kind: &'static str,
    pub name: String,
    #[serde(flatten)]
    pub change: Change,
    /// Why a resource is left alone although it looks like ours, e.g. a policy still used
    /// by another cluster's role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip)]
    pub steps: Vec<Step>,
}

impl ResourceChange {
    pub fn new(scope: Scope, kind: &'static str, name: impl Into<String>, change: Change) -> Self {
        ResourceChange {
            scope,
            kind,
            name: name.into(),
            change,
            note: None,
            steps: Vec::new(),
        }
    }

    pub fn with_steps<S: Into<Step>>(mut self, steps: Vec<S>) -> Self {
        self.steps = steps.into_iter().map(Into::into).collect();
        self
    }

    /// A resource of our name that a destroy leaves alone because it is not ours.
    pub fn kept_as_not_ours(
        scope: Scope,
        kind: &'static str,
        name: impl Into<String>,
        reason: &str,
    ) -> Self {
        ResourceChange::new(scope, kind, name, Change::NoOp)
            .with_note(format!("kept: not ours ({reason})"))
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

/// One call that carries out (part of) a change, grouped by the scope whose client makes
/// it: `apply` routes each group to its module, and each module matches its own steps
/// exhaustively, so a step can neither be mis-routed nor silently skipped.
#[derive(Debug, Clone)]
pub enum Step {
    Iam(iam::IamStep),
    PodIdentity(pod_identity::AssociationStep),
    Kubernetes(kubernetes::KubeStep),
    Alarms(alarms::AlarmStep),
    Dashboard(dashboard::DashboardStep),
}

impl From<alarms::AlarmStep> for Step {
    fn from(step: alarms::AlarmStep) -> Step {
        Step::Alarms(step)
    }
}

impl From<iam::IamStep> for Step {
    fn from(step: iam::IamStep) -> Step {
        Step::Iam(step)
    }
}

impl From<pod_identity::AssociationStep> for Step {
    fn from(step: pod_identity::AssociationStep) -> Step {
        Step::PodIdentity(step)
    }
}

impl From<kubernetes::KubeStep> for Step {
    fn from(step: kubernetes::KubeStep) -> Step {
        Step::Kubernetes(step)
    }
}

impl From<dashboard::DashboardStep> for Step {
    fn from(step: dashboard::DashboardStep) -> Step {
        Step::Dashboard(step)
    }
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

/// The conflict a resource that is not ours is, unless the user adopts it: planners ask
/// this before they read more of a resource than it takes to say whose it is.
pub fn conflict_unless_adopted(ownership: &Ownership, adopt: bool) -> Option<Change> {
    match ownership {
        Ownership::NotOurs(reason) if !adopt => Some(Change::Conflict {
            reason: reason.clone(),
        }),
        Ownership::NotOurs(_) | Ownership::Ours => None,
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

/// Everything `plan` shows and `deploy`/`destroy` execute.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    pub cluster: String,
    pub region: String,
    pub account: String,
    pub identity: &'static str,
    pub version: String,
    pub changes: Vec<ResourceChange>,
}

/// Counts per kind of change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    pub adopt: usize,
    pub conflict: usize,
    pub unchanged: usize,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.changes
            .iter()
            .any(|change| change.change != Change::NoOp)
    }

    /// The resources that exist under our names but are not ours, each with the reason.
    pub fn conflicts(&self) -> Vec<(&ResourceChange, &str)> {
        self.changes
            .iter()
            .filter_map(|change| {
                if let Change::Conflict { reason } = &change.change {
                    Some((change, reason.as_str()))
                } else {
                    None
                }
            })
            .collect()
    }

    /// Refuses a plan with conflicts, naming each resource and the ways out; a plan that
    /// is refused is never executed, so nothing anywhere changes.
    pub fn refuse_conflicts(&self) -> Result<(), ConflictError> {
        let conflicts = self.conflicts();
        if conflicts.is_empty() {
            return Ok(());
        }
        let resources: Vec<String> = conflicts
            .iter()
            .map(|(change, reason)| format!("{} {} ({reason})", change.kind, change.name))
            .collect();
        let renames: Vec<&str> = conflicts
            .iter()
            .filter_map(|(change, _)| rename_flag(change.kind))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        Err(ConflictError {
            resources: resources.join("; "),
            ways_out: if renames.is_empty() {
                "re-run with --adopt to take them over (the plan shows each adoption with its diff), or remove them".to_owned()
            } else {
                format!(
                    "re-run with --adopt to take them over (the plan shows each adoption with its diff), or choose other names with {}",
                    renames.join("/")
                )
            },
        })
    }

    pub fn summary(&self) -> Summary {
        let mut summary = Summary::default();
        for change in &self.changes {
            match change.change {
                Change::Create => summary.create += 1,
                Change::Update { .. } => summary.update += 1,
                Change::Delete => summary.delete += 1,
                Change::Adopt { .. } => summary.adopt += 1,
                Change::Conflict { .. } => summary.conflict += 1,
                Change::NoOp => summary.unchanged += 1,
            }
        }
        summary
    }

    /// The plan for people: one line per resource, diffs indented below.
    pub fn to_human(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Plan for cluster {} in {} (account {}, identity {}, version {}):",
            self.cluster, self.region, self.account, self.identity, self.version
        );
        for change in &self.changes {
            let (mark, word) = match &change.change {
                Change::Create => ("+", "create"),
                Change::Update { .. } => ("~", "update"),
                Change::NoOp => ("=", "no-op"),
                Change::Delete => ("-", "delete"),
                Change::Adopt { .. } => ("&", "adopt"),
                Change::Conflict { .. } => ("!", "CONFLICT"),
            };
            let _ = writeln!(
                out,
                "  {mark} {word:<8} {:<26} {}",
                change.kind, change.name
            );
            match &change.change {
                Change::Update { diff } => {
                    for line in diff {
                        let _ = writeln!(out, "         {line}");
                    }
                }
                Change::Adopt { reason, diff } => {
                    let _ = writeln!(
                        out,
                        "         (not ours: {reason}; taken over because of --adopt)"
                    );
                    for line in diff {
                        let _ = writeln!(out, "         {line}");
                    }
                }
                Change::Conflict { reason } => {
                    let _ = writeln!(
                        out,
                        "         (exists and is not ours: {reason}; nothing is written to it without --adopt)"
                    );
                }
                Change::Create | Change::NoOp | Change::Delete => {}
            }
            if let Some(note) = &change.note {
                let _ = writeln!(out, "         ({note})");
            }
        }
        let summary = self.summary();
        let _ = write!(
            out,
            "Plan: {} to create, {} to update, {} to delete, ",
            summary.create, summary.update, summary.delete
        );
        if summary.adopt > 0 {
            let _ = write!(out, "{} to adopt, ", summary.adopt);
        }
        if summary.conflict > 0 {
            let _ = write!(out, "{} in conflict, ", summary.conflict);
        }
        let _ = writeln!(out, "{} unchanged.", summary.unchanged);
        out
    }

    /// The plan for machines, with `summary` and a stable `schemaVersion`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(map) = value.as_object_mut() {
            map.insert(
                "summary".to_owned(),
                serde_json::to_value(self.summary()).unwrap_or(serde_json::Value::Null),
            );
        }
        value
    }
}

/// How a plan is made and carried out.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    pub scopes: Vec<Scope>,
    /// Take over same-named resources that are not ours (`--adopt`).
    pub adopt: bool,
    pub rollout_timeout: Duration,
    /// Allows a version older than the live one.
    pub allow_downgrade: bool,
}

/// What a plan is made from: the decided target, its rendered artifacts, and the clients
/// that read the live state.
pub struct PlanInputs<'a> {
    pub sdk: &'a SdkConfig,
    /// Only when the Kubernetes scope is in use.
    pub kube: Option<&'a kube::Client>,
    pub catalog: &'a Catalog,
    pub target: &'a Target,
    pub rendered: &'a Rendered,
    /// Every Kubernetes object the tool may have made for this target, in any mode.
    pub possible_objects: &'a [ManifestObject],
    /// Whether the EKS cluster exists; its Pod Identity associations went with it if not.
    pub cluster_exists: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Iam(#[from] iam::IamError),
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Kubernetes(#[from] kubernetes::KubeError),
    #[error(transparent)]
    VersionStep(#[from] VersionStepError),
}

impl PlanInputs<'_> {
    fn empty_plan(&self) -> Plan {
        Plan {
            schema_version: 1,
            cluster: self.target.cluster.clone(),
            region: self.target.region.clone(),
            account: self.target.account.clone(),
            identity: self.target.identity.as_str(),
            version: self.target.version.to_string(),
            changes: Vec::new(),
        }
    }

    /// The Pod Identity association: wanted in pod-identity mode unless destroying.
    async fn association(
        &self,
        destroying: bool,
        adopt: bool,
    ) -> Result<Option<ResourceChange>, PlanError> {
        if !self.cluster_exists {
            return Ok(None);
        }
        let wanted = (!destroying && self.target.identity == Identity::PodIdentity)
            .then_some(self.target.role_arn.as_str());
        Ok(pod_identity::plan(
            &aws_sdk_eks::Client::new(self.sdk),
            &self.target.cluster,
            &self.target.namespace,
            crate::settings::SERVICE_ACCOUNT,
            wanted,
            &self.target.role_tags,
            adopt,
        )
        .await?)
    }

    fn alarms(&self) -> alarms::DesiredAlarms<'_> {
        alarms::DesiredAlarms {
            prefix: &self.target.alarms.name_prefix,
            requests: &self.rendered.alarms,
            tags: &self.target.role_tags,
            cluster: &self.target.cluster,
            region: &self.target.region,
        }
    }

    fn dashboard(&self) -> dashboard::DesiredDashboard<'_> {
        dashboard::DesiredDashboard {
            name: &self.target.dashboard_name,
            body: &self.rendered.dashboard,
            cluster: &self.target.cluster,
            region: &self.target.region,
        }
    }

    /// The plan that brings every selected scope to the rendered state.
    pub async fn plan(&self, options: &DeployOptions) -> Result<Plan, PlanError> {
        let mut plan = self.empty_plan();
        for scope in Scope::ALL
            .into_iter()
            .filter(|scope| options.scopes.contains(scope))
        {
            match scope {
                Scope::Iam => {
                    let client = aws_sdk_iam::Client::new(self.sdk);
                    let desired = iam::DesiredIam::of(self.target, self.rendered);
                    plan.changes
                        .extend(iam::plan(&client, &desired, options.adopt).await?);
                    plan.changes
                        .extend(self.association(false, options.adopt).await?);
                }
                Scope::Kubernetes => {
                    if let Some(client) = self.kube {
                        self.check_version_step(client, options).await?;
                        plan.changes.extend(
                            kubernetes::plan(
                                client,
                                &self.rendered.objects,
                                self.possible_objects,
                                options.adopt,
                            )
                            .await?,
                        );
                    }
                }
                Scope::Alarms => {
                    let client = aws_sdk_cloudwatch::Client::new(self.sdk);
                    plan.changes
                        .extend(alarms::plan(&client, self.alarms(), options.adopt).await?);
                }
                Scope::Dashboard => {
                    let client = aws_sdk_cloudwatch::Client::new(self.sdk);
                    plan.changes
                        .push(dashboard::plan(&client, self.dashboard(), options.adopt).await?);
                }
            }
        }
        Ok(plan)
    }

    /// Refuses a version change that skips a minor (or goes back without leave).
    async fn check_version_step(
        &self,
        client: &kube::Client,
        options: &DeployOptions,
    ) -> Result<(), PlanError> {
        let live = kubernetes::live_deployment(
            client,
            &self.target.namespace,
            crate::settings::SERVICE_ACCOUNT,
        )
        .await?;
        if let Some(live_version) = live.and_then(|live| live.version) {
            self.catalog
                .check_step(live_version, self.target.version, options.allow_downgrade)?;
        }
        Ok(())
    }

    /// The plan that removes what this tool created, in the reverse order of deploy.
    pub async fn plan_destroy(&self, options: &DeployOptions) -> Result<Plan, PlanError> {
        let mut plan = self.empty_plan();
        for scope in Scope::ALL
            .into_iter()
            .rev()
            .filter(|scope| options.scopes.contains(scope))
        {
            match scope {
                Scope::Dashboard => {
                    let client = aws_sdk_cloudwatch::Client::new(self.sdk);
                    let desired = self.dashboard();
                    plan.changes.extend(
                        dashboard::plan_destroy(
                            &client,
                            desired.name,
                            desired.cluster,
                            desired.region,
                        )
                        .await?,
                    );
                }
                Scope::Alarms => {
                    let client = aws_sdk_cloudwatch::Client::new(self.sdk);
                    let desired = self.alarms();
                    plan.changes.extend(
                        alarms::plan_destroy(
                            &client,
                            desired.prefix,
                            desired.cluster,
                            desired.region,
                        )
                        .await?,
                    );
                }
                Scope::Kubernetes => {
                    if let Some(client) = self.kube {
                        plan.changes
                            .extend(kubernetes::plan_destroy(client, self.possible_objects).await?);
                    }
                }
                Scope::Iam => {
                    plan.changes.extend(self.association(true, false).await?);
                    let client = aws_sdk_iam::Client::new(self.sdk);
                    let desired = iam::DesiredIam::of(self.target, self.rendered);
                    plan.changes
                        .extend(iam::plan_destroy(&client, &desired).await?);
                }
            }
        }
        Ok(plan)
    }
}

/// Resources under our names that are not ours: the one line `plan` and `deploy` end with.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to change anything: these exist and were not made by this tool for this cluster: {resources}; {ways_out}"
)]
pub struct ConflictError {
    pub resources: String,
    pub ways_out: String,
}

/// The flag that gives a resource of `kind` another name, where one exists.
fn rename_flag(kind: &str) -> Option<&'static str> {
    match kind {
        iam::ROLE_KIND => Some("--role-name"),
        iam::POLICY_KIND => Some("--policy-name"),
        dashboard::KIND => Some("--dashboard-name"),
        alarms::KIND => Some("the config file's alarms: name-prefix"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(changes: Vec<ResourceChange>) -> Plan {
        Plan {
            schema_version: 1,
            cluster: "prod".to_owned(),
            region: "eu-west-1".to_owned(),
            account: "111122223333".to_owned(),
            identity: "irsa",
            version: "v1.23.0".to_owned(),
            changes,
        }
    }

    fn conflict(kind: &'static str, name: &str) -> ResourceChange {
        ResourceChange::new(
            Scope::Iam,
            kind,
            name,
            Change::Conflict {
                reason: "not tagged managed-by=cni-metrics-xtask".to_owned(),
            },
        )
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
    fn a_plan_with_conflicts_is_refused_with_every_resource_and_the_ways_out() {
        let refused = plan(vec![
            ResourceChange::new(Scope::Iam, iam::POLICY_KIND, "p", Change::Create),
            conflict(iam::ROLE_KIND, "AmazonEKSVPCCNIMetricsHelperRole"),
            conflict(dashboard::KIND, "CNI-Metrics-prod-eu-west-1"),
            conflict(iam::ROLE_KIND, "another-role"),
        ]);
        let message = refused.refuse_conflicts().expect_err("refused").to_string();
        assert!(!message.contains('\n'), "one line: {message}");
        for expected in [
            "IAM role AmazonEKSVPCCNIMetricsHelperRole (not tagged managed-by=cni-metrics-xtask)",
            "CloudWatch dashboard CNI-Metrics-prod-eu-west-1",
            "--adopt",
            "--dashboard-name/--role-name",
        ] {
            assert!(message.contains(expected), "{expected} in {message}");
        }
        let kubernetes_only = plan(vec![ResourceChange::new(
            Scope::Kubernetes,
            "Deployment",
            "kube-system/cni-metrics-helper",
            Change::Conflict {
                reason: "labelled app.kubernetes.io/managed-by=Helm".to_owned(),
            },
        )]);
        let message = kubernetes_only
            .refuse_conflicts()
            .expect_err("refused")
            .to_string();
        assert!(message.ends_with("or remove them"), "{message}");
        assert!(plan(vec![]).refuse_conflicts().is_ok());
    }

    #[test]
    fn adoptions_and_conflicts_are_counted_and_shown_with_their_reasons() {
        let shown = plan(vec![
            conflict(iam::POLICY_KIND, "AmazonEKSVPCCNIMetricsHelperPolicy"),
            ResourceChange::new(
                Scope::Iam,
                iam::ROLE_KIND,
                "r",
                Change::Adopt {
                    reason: "made for cluster prod without a region tag".to_owned(),
                    diff: vec!["+ tag cni-metrics-xtask/region=eu-west-1".to_owned()],
                },
            ),
            ResourceChange::new(Scope::Dashboard, dashboard::KIND, "d", Change::NoOp),
        ]);
        let summary = shown.summary();
        assert_eq!(
            (summary.conflict, summary.adopt, summary.unchanged),
            (1, 1, 1)
        );
        assert!(shown.has_changes());
        let text = shown.to_human();
        assert!(text.contains("! CONFLICT IAM policy"), "{text}");
        assert!(
            text.contains("(exists and is not ours: not tagged managed-by=cni-metrics-xtask; nothing is written to it without --adopt)"),
            "{text}"
        );
        assert!(text.contains("& adopt    IAM role"), "{text}");
        assert!(
            text.contains("+ tag cni-metrics-xtask/region=eu-west-1"),
            "{text}"
        );
        assert!(
            text.ends_with("Plan: 0 to create, 0 to update, 0 to delete, 1 to adopt, 1 in conflict, 1 unchanged.\n"),
            "{text}"
        );
        let json = shown.to_json();
        assert_eq!(json["changes"][0]["action"], "conflict");
        assert_eq!(json["changes"][1]["action"], "adopt");
        assert_eq!(json["summary"]["adopt"], 1);
    }
}
