//! The typed plan: one [`ResourceChange`] per resource, which `plan` prints and `deploy` and
//! `destroy` execute as they are. A user applies exactly what they reviewed.
//!
//! Each scope lives in its own module and knows how to read its live state, compare it with
//! the desired state, and carry out its steps: [`iam`], [`kubernetes`], [`dashboard`].

pub mod dashboard;
pub mod iam;
pub mod kubernetes;
pub mod pod_identity;

use std::fmt::Write as _;

use serde::Serialize;

use crate::render::ManifestObject;

/// The three groups of resources, which `--only` selects from. They are applied in this
/// order: the role must exist before pods use it, and the dashboard is last because
/// nothing depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Iam,
    Kubernetes,
    Dashboard,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Iam, Scope::Kubernetes, Scope::Dashboard];
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

    pub fn with_steps(mut self, steps: Vec<Step>) -> Self {
        self.steps = steps;
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

/// One call that carries out (part of) a change.
#[derive(Debug, Clone)]
pub enum Step {
    CreatePolicy {
        name: String,
        document: String,
        tags: Vec<(String, String)>,
    },
    /// A new default version; `delete_version` first when the policy already has five.
    NewPolicyVersion {
        arn: String,
        document: String,
        delete_version: Option<String>,
    },
    TagPolicy {
        arn: String,
        tags: Vec<(String, String)>,
    },
    CreateRole {
        name: String,
        trust: String,
        tags: Vec<(String, String)>,
    },
    UpdateTrust {
        role: String,
        trust: String,
    },
    TagRole {
        role: String,
        tags: Vec<(String, String)>,
    },
    AttachPolicy {
        role: String,
        policy_arn: String,
    },
    DetachPolicy {
        role: String,
        policy_arn: String,
    },
    DeleteRole {
        role: String,
    },
    /// Deletes the non-default versions, then the policy.
    DeletePolicy {
        arn: String,
        versions: Vec<String>,
    },
    Apply {
        object: Box<ManifestObject>,
        force: bool,
        /// Wait for the Deployment's rollout after applying.
        wait_for_rollout: bool,
    },
    DeleteObject {
        object: Box<ManifestObject>,
    },
    PutDashboard {
        name: String,
        body: String,
    },
    DeleteDashboard {
        name: String,
    },
    CreateAssociation {
        cluster: String,
        namespace: String,
        service_account: String,
        role_arn: String,
        tags: std::collections::BTreeMap<String, String>,
    },
    UpdateAssociation {
        cluster: String,
        id: String,
        role_arn: String,
    },
    DeleteAssociation {
        cluster: String,
        id: String,
    },
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
    pub unchanged: usize,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.changes
            .iter()
            .any(|change| change.change != Change::NoOp)
    }

    pub fn summary(&self) -> Summary {
        let mut summary = Summary::default();
        for change in &self.changes {
            match change.change {
                Change::Create => summary.create += 1,
                Change::Update { .. } => summary.update += 1,
                Change::Delete => summary.delete += 1,
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
            };
            let _ = writeln!(
                out,
                "  {mark} {word:<7} {:<26} {}",
                change.kind, change.name
            );
            if let Change::Update { diff } = &change.change {
                for line in diff {
                    let _ = writeln!(out, "        {line}");
                }
            }
            if let Some(note) = &change.note {
                let _ = writeln!(out, "        ({note})");
            }
        }
        let summary = self.summary();
        let _ = writeln!(
            out,
            "Plan: {} to create, {} to update, {} to delete, {} unchanged.",
            summary.create, summary.update, summary.delete, summary.unchanged
        );
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
