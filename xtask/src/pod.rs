//! The pod knobs a Helm user expects (resources, tolerations, affinity, node selector,
//! priority class, image pull secrets, pod annotations and labels, replicas, interval,
//! Prometheus, log level, extra env), validated once into [`PodSettings`].
//!
//! The structured values arrive as raw YAML from the config file and are checked against
//! the k8s-openapi types here, before anything is rendered. Those types' deserialisers skip
//! keys they do not know, so each value is also serialised back and compared with what was
//! written: a key that did not survive the round trip is a field Kubernetes does not have,
//! and it is refused with its path instead of being silently dropped.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, ResourceRequirements, Toleration,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::ownership::MANAGED_BY_LABEL;

/// The node label every pod is pinned to: the helpers are Linux binaries.
pub const OS_LABEL: &str = "kubernetes.io/os";
/// The pod annotation that rolls the pods when their AWS identity changes.
pub const IDENTITY_ANNOTATION: &str = "cni-metrics-xtask/identity";
/// The pod labels the tool sets itself: the selector label and the recommended labels the
/// tool's ownership checks read. A user's label with one of these keys would break the
/// selector or the ownership mark, so it is refused.
pub const OWN_POD_LABELS: [&str; 5] = [
    "k8s-app",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    MANAGED_BY_LABEL,
];
/// The container env the template renders itself; `extra-env` cannot set these (a second
/// entry with the same name would silently win or lose depending on the image).
pub const RENDERED_ENV: [&str; 8] = [
    "AWS_CLUSTER_ID",
    "AWS_REGION",
    "AWS_VPC_K8S_CNI_LOGLEVEL",
    "USE_CLOUDWATCH",
    "USE_PROMETHEUS",
    "METRIC_UPDATE_INTERVAL",
    "POD_NAME",
    "POD_NAMESPACE",
];

/// `AWS_VPC_K8S_CNI_LOGLEVEL`, the levels both upstream's helper and our publisher read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn parse(text: &str) -> Option<LogLevel> {
        match text.to_ascii_uppercase().as_str() {
            "DEBUG" => Some(LogLevel::Debug),
            "INFO" => Some(LogLevel::Info),
            "WARN" => Some(LogLevel::Warn),
            "ERROR" => Some(LogLevel::Error),
            _ => None,
        }
    }

    /// Upper case, as upstream's documentation writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warn => "WARN",
            LogLevel::Error => "ERROR",
        }
    }
}

/// The pod knobs, validated and typed.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSettings {
    pub replicas: u8,
    /// `METRIC_UPDATE_INTERVAL` in seconds; `None` leaves the image's default.
    pub interval: Option<u32>,
    pub log_level: LogLevel,
    /// `prometheus: true` (our publisher serves Prometheus whatever this says).
    pub prometheus: bool,
    /// Our publisher's own podsScraped and scrapeErrors in CloudWatch (`self-metrics`).
    pub self_metrics: bool,
    pub priority_class_name: Option<String>,
    /// The user's selector merged with `kubernetes.io/os: linux`.
    pub node_selector: BTreeMap<String, String>,
    pub pod_annotations: BTreeMap<String, String>,
    pub pod_labels: BTreeMap<String, String>,
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Replaces the default requests and limits whole when given.
    pub resources: Option<ResourceRequirements>,
    pub tolerations: Vec<Toleration>,
    pub affinity: Option<Affinity>,
    pub extra_env: Vec<EnvVar>,
}

impl Default for PodSettings {
    fn default() -> PodSettings {
        PodSettings {
            replicas: 1,
            interval: None,
            log_level: LogLevel::Info,
            prometheus: false,
            self_metrics: true,
            priority_class_name: None,
            node_selector: BTreeMap::from([(OS_LABEL.to_owned(), "linux".to_owned())]),
            pod_annotations: BTreeMap::new(),
            pod_labels: BTreeMap::new(),
            image_pull_secrets: Vec::new(),
            resources: None,
            tolerations: Vec::new(),
            affinity: None,
            extra_env: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PodError {
    #[error("invalid {key}: {problem}")]
    Invalid { key: &'static str, problem: String },
    #[error(
        "invalid {key}: unknown fields {paths} (values are written as in a Kubernetes pod spec; check the spelling)"
    )]
    UnknownFields { key: &'static str, paths: String },
    #[error(
        "replicas {replicas} needs leader election, or every replica would publish the same metrics: add --leader-elect (our publisher), or use replicas 1"
    )]
    ReplicasNeedLeaderElection { replicas: u8 },
    #[error(
        "replicas {replicas}: upstream's cni-metrics-helper has no leader election, so it runs exactly 1 replica (every replica would publish the same metrics); run our publisher with --leader-elect for more"
    )]
    ReplicasUpstream { replicas: u8 },
    #[error("replicas 0 would stop the helper; use `cargo xtask destroy` to remove it")]
    ReplicasZero,
    #[error("interval 0: METRIC_UPDATE_INTERVAL is whole seconds above 0")]
    IntervalZero,
    #[error(
        "self-metrics: false applies to our publisher; upstream's helper publishes no podsScraped or scrapeErrors to turn off (run ours with --publisher ours, or drop self-metrics)"
    )]
    SelfMetricsUpstream,
    #[error("invalid log-level '{0}': expected DEBUG, INFO, WARN or ERROR")]
    LogLevel(String),
    #[error(
        "node-selector {OS_LABEL}={0}: the helpers are Linux images and always run with {OS_LABEL}=linux; remove that entry"
    )]
    OsConflict(String),
    #[error(
        "pod-labels '{0}' is a label the tool sets itself (selector and ownership labels: {labels}); choose another key",
        labels = OWN_POD_LABELS.join(", ")
    )]
    OwnLabel(String),
    #[error(
        "pod-annotations '{IDENTITY_ANNOTATION}' is the annotation the tool sets itself to roll the pods when their identity changes; choose another key"
    )]
    OwnAnnotation,
    #[error(
        "extra-env '{0}' is rendered by the tool itself; use the matching key instead (log-level, interval, prometheus) or leave it out"
    )]
    OwnEnv(String),
    #[error("extra-env '{0}' is given twice; give each variable once")]
    DuplicateEnv(String),
}

/// The raw knobs and what they depend on: whether our publisher runs, with election.
pub struct PodInputs<'a> {
    pub input: &'a crate::settings::PodInput,
    pub publisher: bool,
    pub leader_elect: bool,
}

/// Validates every knob of `inputs` into [`PodSettings`].
pub fn resolve(inputs: PodInputs<'_>) -> Result<PodSettings, PodError> {
    let input = inputs.input;
    let replicas = match (input.replicas, inputs.publisher, inputs.leader_elect) {
        (Some(0), _, _) => return Err(PodError::ReplicasZero),
        // One leader and one standby, so that a node drain does not pause publishing.
        (None, _, true) => 2,
        (None, _, false) => 1,
        (Some(replicas), _, true) => replicas,
        (Some(1), _, false) => 1,
        (Some(replicas), true, false) => {
            return Err(PodError::ReplicasNeedLeaderElection { replicas });
        }
        (Some(replicas), false, false) => return Err(PodError::ReplicasUpstream { replicas }),
    };
    if input.interval == Some(0) {
        return Err(PodError::IntervalZero);
    }
    let log_level = match &input.log_level {
        Some(text) => LogLevel::parse(text).ok_or_else(|| PodError::LogLevel(text.clone()))?,
        None => LogLevel::Info,
    };
    if let Some(name) = &input.priority_class_name
        && !is_dns_subdomain(name)
    {
        return Err(invalid(
            "priority-class-name",
            format!("'{name}' is not a valid object name (lowercase letters, digits, '-' and '.')"),
        ));
    }
    let mut node_selector = BTreeMap::from([(OS_LABEL.to_owned(), "linux".to_owned())]);
    for (key, value) in &input.node_selector {
        check_label("node-selector", key, value)?;
        if key == OS_LABEL && value != "linux" {
            return Err(PodError::OsConflict(value.clone()));
        }
        node_selector.insert(key.clone(), value.clone());
    }
    for (key, value) in &input.pod_labels {
        check_label("pod-labels", key, value)?;
        if OWN_POD_LABELS.contains(&key.as_str()) {
            return Err(PodError::OwnLabel(key.clone()));
        }
    }
    for key in input.pod_annotations.keys() {
        if !is_qualified_name(key) {
            return Err(invalid(
                "pod-annotations",
                format!("'{key}' is not a valid annotation key"),
            ));
        }
        if key == IDENTITY_ANNOTATION {
            return Err(PodError::OwnAnnotation);
        }
    }
    let mut image_pull_secrets = Vec::new();
    for secret in &input.image_pull_secrets {
        // A bare name (as `--image-pull-secret` gives) or the pod spec's `{name: ...}`.
        let reference = match secret {
            Value::String(name) => LocalObjectReference { name: name.clone() },
            other => strict::<LocalObjectReference>("image-pull-secrets", other)?,
        };
        if !is_dns_subdomain(&reference.name) {
            return Err(invalid(
                "image-pull-secrets",
                format!("'{}' is not a valid Secret name", reference.name),
            ));
        }
        if !image_pull_secrets.contains(&reference) {
            image_pull_secrets.push(reference);
        }
    }
    let resources = input
        .resources
        .as_ref()
        .map(|value| strict::<ResourceRequirements>("resources", &quantities_as_strings(value)))
        .transpose()?;
    let tolerations = input
        .tolerations
        .as_ref()
        .map(|value| strict::<Vec<Toleration>>("tolerations", value))
        .transpose()?
        .unwrap_or_default();
    let affinity = input
        .affinity
        .as_ref()
        .map(|value| strict::<Affinity>("affinity", value))
        .transpose()?;
    let extra_env = input
        .extra_env
        .as_ref()
        .map(|value| strict::<Vec<EnvVar>>("extra-env", value))
        .transpose()?
        .unwrap_or_default();
    let mut seen = Vec::new();
    for variable in &extra_env {
        if RENDERED_ENV.contains(&variable.name.as_str()) {
            return Err(PodError::OwnEnv(variable.name.clone()));
        }
        if seen.contains(&&variable.name) {
            return Err(PodError::DuplicateEnv(variable.name.clone()));
        }
        seen.push(&variable.name);
    }
    Ok(PodSettings {
        replicas,
        interval: input.interval,
        log_level,
        prometheus: input.prometheus,
        self_metrics: match (input.self_metrics, inputs.publisher) {
            (Some(false), false) => return Err(PodError::SelfMetricsUpstream),
            (Some(wanted), _) => wanted,
            (None, _) => true,
        },
        priority_class_name: input.priority_class_name.clone(),
        node_selector,
        pod_annotations: input.pod_annotations.clone(),
        pod_labels: input.pod_labels.clone(),
        image_pull_secrets,
        resources,
        tolerations,
        affinity,
        extra_env,
    })
}

fn invalid(key: &'static str, problem: String) -> PodError {
    PodError::Invalid { key, problem }
}

/// `value` as a `T`, refusing the fields `T` does not have (see the module comment).
fn strict<T: DeserializeOwned + Serialize>(
    key: &'static str,
    value: &Value,
) -> Result<T, PodError> {
    let typed = T::deserialize(value).map_err(|error| invalid(key, error.to_string()))?;
    let kept = serde_json::to_value(&typed).map_err(|error| invalid(key, error.to_string()))?;
    if kept != *value {
        let paths = crate::render::manifests::unknown_paths(value, &kept, "");
        return Err(PodError::UnknownFields {
            key,
            paths: paths.join(", "),
        });
    }
    Ok(typed)
}

/// `cpu: 1` is a quantity to Kubernetes, but YAML reads it as a number, which the
/// `Quantity` type refuses; the quantities of `requests` and `limits` are made strings.
fn quantities_as_strings(resources: &Value) -> Value {
    let mut resources = resources.clone();
    for section in ["requests", "limits"] {
        if let Some(Value::Object(quantities)) = resources.get_mut(section) {
            for quantity in quantities.values_mut() {
                if let Value::Number(number) = quantity {
                    *quantity = Value::String(number.to_string());
                }
            }
        }
    }
    resources
}

/// A label `key: value` as Kubernetes accepts it.
fn check_label(key_name: &'static str, key: &str, value: &str) -> Result<(), PodError> {
    if !is_qualified_name(key) {
        return Err(invalid(
            key_name,
            format!(
                "'{key}' is not a valid label key ([prefix/]name, the name 1-63 letters, digits, '-', '_', '.')"
            ),
        ));
    }
    if !value.is_empty() && !is_label_name(value) {
        return Err(invalid(
            key_name,
            format!(
                "'{key}={value}': a label value is at most 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit"
            ),
        ));
    }
    Ok(())
}

/// `[prefix/]name`: the prefix a DNS subdomain, the name a label name.
fn is_qualified_name(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(key),
    }
}

fn is_label_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
}

fn is_dns_subdomain(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=253).contains(&bytes.len())
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::PodInput;
    use serde_json::json;

    fn resolve_with(input: PodInput) -> Result<PodSettings, PodError> {
        resolve(PodInputs {
            input: &input,
            publisher: false,
            leader_elect: false,
        })
    }

    #[test]
    fn a_misspelt_field_in_a_structured_knob_is_refused_with_its_path() {
        let error = resolve_with(PodInput {
            tolerations: Some(json!([{"key": "dedicated", "efect": "NoSchedule"}])),
            ..PodInput::default()
        })
        .expect_err("a typo must not pass");
        assert_eq!(
            error,
            PodError::UnknownFields {
                key: "tolerations",
                paths: "[0].efect".to_owned()
            }
        );
        let error = resolve_with(PodInput {
            resources: Some(json!({"limits": {"memory": "1Gi"}, "limit": {}})),
            ..PodInput::default()
        })
        .expect_err("a typo must not pass");
        assert!(error.to_string().contains(".limit"), "{error}");
    }

    #[test]
    fn numeric_quantities_are_accepted_and_kept_as_written() {
        let pod = resolve_with(PodInput {
            resources: Some(json!({"requests": {"cpu": 1, "memory": "64Mi"}})),
            ..PodInput::default()
        })
        .expect("valid");
        let requests = pod
            .resources
            .expect("resources")
            .requests
            .expect("requests");
        assert_eq!(requests["cpu"].0, "1");
    }

    #[test]
    fn the_log_level_is_case_insensitive_and_rendered_upper_case() {
        for (given, kept) in [("debug", "DEBUG"), ("Warn", "WARN"), ("ERROR", "ERROR")] {
            let pod = resolve_with(PodInput {
                log_level: Some(given.to_owned()),
                ..PodInput::default()
            })
            .expect("valid");
            assert_eq!(pod.log_level.as_str(), kept);
        }
        assert_eq!(
            resolve_with(PodInput {
                log_level: Some("verbose".to_owned()),
                ..PodInput::default()
            }),
            Err(PodError::LogLevel("verbose".to_owned()))
        );
    }

    #[test]
    fn replicas_follow_leader_election() {
        let input = |replicas| PodInput {
            replicas,
            ..PodInput::default()
        };
        let with = |replicas, publisher, leader_elect| {
            resolve(PodInputs {
                input: &input(replicas),
                publisher,
                leader_elect,
            })
            .map(|pod| pod.replicas)
        };
        assert_eq!(with(None, true, true), Ok(2));
        assert_eq!(with(Some(3), true, true), Ok(3));
        assert_eq!(with(None, false, false), Ok(1));
        assert_eq!(with(Some(1), false, false), Ok(1));
        assert_eq!(
            with(Some(2), true, false),
            Err(PodError::ReplicasNeedLeaderElection { replicas: 2 })
        );
        assert_eq!(
            with(Some(2), false, false),
            Err(PodError::ReplicasUpstream { replicas: 2 })
        );
        assert_eq!(with(Some(0), true, true), Err(PodError::ReplicasZero));
    }

    #[test]
    fn the_node_selector_keeps_linux_and_refuses_another_os() {
        let pod = resolve_with(PodInput {
            node_selector: BTreeMap::from([("pool".to_owned(), "system".to_owned())]),
            ..PodInput::default()
        })
        .expect("valid");
        assert_eq!(pod.node_selector[OS_LABEL], "linux");
        assert_eq!(pod.node_selector["pool"], "system");
        assert_eq!(
            resolve_with(PodInput {
                node_selector: BTreeMap::from([(OS_LABEL.to_owned(), "windows".to_owned())]),
                ..PodInput::default()
            }),
            Err(PodError::OsConflict("windows".to_owned()))
        );
    }

    #[test]
    fn image_pull_secrets_take_names_or_references() {
        let pod = resolve_with(PodInput {
            image_pull_secrets: vec![json!("a"), json!({"name": "b"}), json!("a")],
            ..PodInput::default()
        })
        .expect("valid");
        let names: Vec<&str> = pod
            .image_pull_secrets
            .iter()
            .map(|secret| secret.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert!(
            resolve_with(PodInput {
                image_pull_secrets: vec![json!({"nmae": "b"})],
                ..PodInput::default()
            })
            .is_err()
        );
    }
}
