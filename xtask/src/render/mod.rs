//! `render`: the five artifacts for one cluster, offline.
//!
//! Every artifact is rendered from an embedded template and parsed back before anything is
//! written, so a template mistake fails here, loudly, instead of at `kubectl apply` or
//! `iam create-policy` time. Files are staged next to their destination and renamed into
//! place only when all five are ready: a failed render never leaves a half-written set.

pub mod alarms;
pub mod dashboard;
pub mod manifests;
pub mod templates;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use crate::arn;
use crate::decide::{Identity, Target};
use crate::ownership::{MANAGED_BY, MANAGED_BY_LABEL, dashboard_marker};
use crate::pod::PodSettings;
use crate::settings::{IRSA_AUDIENCE, ImageChoice, METRICS_NAMESPACE, SERVICE_ACCOUNT};
pub use manifests::{ManifestError, ManifestObject};

pub const IAM_POLICY_FILE: &str = "iam-policy.json";
pub const TRUST_POLICY_FILE: &str = "trust-policy.json";
pub const MANIFESTS_FILE: &str = "manifests.yaml";
pub const DASHBOARD_FILE: &str = "dashboard.json";
pub const ALARMS_FILE: &str = "alarms.json";

/// The Lease the publisher's replicas elect their leader through; the Lease Role grants
/// get and update on this one name only.
pub const LEASE_NAME: &str = "cni-metrics-publisher";

/// The five artifacts, as text (what is written) and parsed (what later steps use).
#[derive(Debug, Clone)]
pub struct Rendered {
    pub iam_policy: String,
    pub trust_policy: String,
    pub manifests: String,
    pub dashboard: String,
    /// `alarms.json`: the PutMetricAlarm requests, `[]` with `--no-alarms`.
    pub alarms_json: String,
    pub alarms: Vec<alarms::AlarmRequest>,
    pub objects: Vec<ManifestObject>,
    pub image: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("rendering {template} failed: {message}; this is a bug in the template")]
    Template {
        template: &'static str,
        message: String,
    },
    #[error("the rendered {file} is not valid JSON ({message}); this is a bug in the template")]
    Json { file: &'static str, message: String },
    #[error(
        "the rendered manifests are not valid Kubernetes objects: {0}; this is a bug in the template"
    )]
    Manifest(#[from] ManifestError),
    #[error(
        "the rendered dashboard body is not valid for CloudWatch: {0}; this is a bug in the template"
    )]
    Dashboard(String),
    #[error(
        "the rendered alarms are not valid for CloudWatch: {0}; this is a bug in the alarm definitions"
    )]
    Alarms(String),
    #[error("cannot write the rendered files to {}: {error}; choose a writable --out directory", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// What the templates see: every value they use, named and typed, built from the
/// [`Target`] in one place.
#[derive(Debug, Serialize)]
struct TemplateContext {
    cluster: String,
    region: String,
    namespace: String,
    service_account: &'static str,
    service_account_subject: String,
    image: String,
    irsa: bool,
    publisher: bool,
    leader_election: bool,
    lease_name: &'static str,
    replicas: u8,
    aws_node_namespace: &'static str,
    /// Changes whenever the pods' AWS identity changes, which restarts them.
    identity_fingerprint: String,
    role_arn: String,
    cluster_arn: String,
    oidc_provider_arn: String,
    oidc_audience_key: String,
    oidc_subject_key: String,
    audience: &'static str,
    metrics_namespace: &'static str,
    labels: BTreeMap<&'static str, String>,
    /// The pod template's labels: ours and the user's `pod-labels` (which cannot clash).
    pod_labels: BTreeMap<String, String>,
    /// The user's `pod-annotations`, beside our identity annotation.
    pod_annotations: BTreeMap<String, String>,
    node_selector: BTreeMap<String, String>,
    /// The optional pod spec fields the user set, by their pod spec name, as JSON values:
    /// the template writes each one as it is (JSON is YAML), so it never has to know the
    /// shape of a toleration or an affinity.
    pod_spec_extras: BTreeMap<&'static str, Value>,
    /// The user's `resources`, replacing the default requests and limits whole.
    custom_resources: bool,
    resources: Value,
    log_level: &'static str,
    /// Upstream's helper serves Prometheus only when asked; our publisher always does.
    prometheus: bool,
    /// Our publisher's `--self-metrics false` when its own metrics stay off CloudWatch.
    self_metrics: bool,
    /// Our publisher's `--per-az`, and the Node-reading ClusterRole it needs (the template
    /// renders both inside its publisher branch; settings refuse it for upstream's helper).
    per_az: bool,
    /// The alarms the dashboard's alarm-status widget shows; none, no widget.
    has_alarms: bool,
    alarm_arns: Vec<String>,
    alarm_widget_height: usize,
    has_interval: bool,
    interval: String,
    extra_env: Vec<Value>,
    header_markdown: String,
}

impl TemplateContext {
    fn new(target: &Target, alarms: &[alarms::AlarmRequest]) -> TemplateContext {
        // Pod Identity renders no IRSA trust, so its provider fields stay empty.
        let issuer = match &target.identity {
            Identity::Irsa { issuer_host_path } => issuer_host_path.as_str(),
            Identity::PodIdentity => "",
        };
        TemplateContext {
            cluster: target.cluster.clone(),
            region: target.region.clone(),
            namespace: target.namespace.clone(),
            service_account: SERVICE_ACCOUNT,
            service_account_subject: format!(
                "system:serviceaccount:{}:{SERVICE_ACCOUNT}",
                target.namespace
            ),
            image: target.image(),
            irsa: matches!(target.identity, Identity::Irsa { .. }),
            publisher: target.publisher(),
            leader_election: target.leader_elect,
            lease_name: LEASE_NAME,
            replicas: target.pod.replicas,
            aws_node_namespace: "kube-system",
            identity_fingerprint: format!("{}:{}", target.identity.as_str(), target.role_arn),
            role_arn: target.role_arn.clone(),
            cluster_arn: target.cluster_arn.clone(),
            oidc_provider_arn: arn::oidc_provider(&target.partition, &target.account, issuer),
            oidc_audience_key: format!("{issuer}:aud"),
            oidc_subject_key: format!("{issuer}:sub"),
            audience: IRSA_AUDIENCE,
            metrics_namespace: METRICS_NAMESPACE,
            labels: BTreeMap::from([
                ("app.kubernetes.io/name", SERVICE_ACCOUNT.to_owned()),
                ("app.kubernetes.io/instance", SERVICE_ACCOUNT.to_owned()),
                ("app.kubernetes.io/version", target.version.to_string()),
                (MANAGED_BY_LABEL, MANAGED_BY.to_owned()),
            ]),
            pod_labels: target.pod.pod_labels.clone(),
            pod_annotations: target.pod.pod_annotations.clone(),
            node_selector: target.pod.node_selector.clone(),
            pod_spec_extras: pod_spec_extras(&target.pod),
            custom_resources: target.pod.resources.is_some(),
            resources: to_value(&target.pod.resources),
            log_level: target.pod.log_level.as_str(),
            prometheus: target.pod.prometheus,
            self_metrics: target.pod.self_metrics,
            per_az: target.per_az,
            has_alarms: !alarms.is_empty(),
            alarm_arns: alarms
                .iter()
                .map(|alarm| alarms::alarm_arn(target, &alarm.alarm_name))
                .collect(),
            alarm_widget_height: alarms::status_widget_height(alarms.len()),
            has_interval: target.pod.interval.is_some(),
            interval: target
                .pod
                .interval
                .map(|seconds| seconds.to_string())
                .unwrap_or_default(),
            extra_env: target.pod.extra_env.iter().map(to_value).collect(),
            header_markdown: format!(
                "## Amazon VPC CNI: IP addresses and ENIs of cluster `{}` ({})\n\
                 Published by the CNI metrics helper to namespace `{METRICS_NAMESPACE}`, dimension `CLUSTER_ID`. \
                 Capacity gauges use the Maximum statistic (Sum would add up every data point of a period); \
                 error and call counters are per-interval deltas and use Sum. \
                 {}: edits made here are replaced by the next deploy.",
                target.cluster,
                target.region,
                dashboard_marker(&target.cluster, &target.region)
            ),
        }
    }
}

/// The optional pod spec fields of `pod` that are set, keyed by their pod spec name.
fn pod_spec_extras(pod: &PodSettings) -> BTreeMap<&'static str, Value> {
    let mut extras = BTreeMap::new();
    if let Some(affinity) = &pod.affinity {
        extras.insert("affinity", to_value(affinity));
    }
    if !pod.image_pull_secrets.is_empty() {
        extras.insert("imagePullSecrets", to_value(&pod.image_pull_secrets));
    }
    if let Some(name) = &pod.priority_class_name {
        extras.insert("priorityClassName", Value::String(name.clone()));
    }
    if !pod.tolerations.is_empty() {
        extras.insert("tolerations", to_value(&pod.tolerations));
    }
    extras
}

/// Serialising k8s-openapi types into a Value cannot fail: they hold only strings,
/// numbers, maps and lists.
fn to_value(value: &impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Renders and checks every artifact for `target`.
pub fn render(target: &Target) -> Result<Rendered, RenderError> {
    let alarm_requests = alarms::requests(target);
    alarms::check(&alarm_requests, &target.cluster).map_err(RenderError::Alarms)?;
    let mut alarms_json =
        serde_json::to_string_pretty(&alarm_requests).map_err(|error| RenderError::Json {
            file: ALARMS_FILE,
            message: error.to_string(),
        })?;
    alarms_json.push('\n');
    let context = TemplateContext::new(target, &alarm_requests);
    let data = serde_json::to_value(&context).map_err(|error| RenderError::Json {
        file: "the template context",
        message: error.to_string(),
    })?;
    let image = context.image;
    let irsa = context.irsa;
    let trust_template = if irsa {
        templates::TRUST_POLICY_IRSA
    } else {
        templates::TRUST_POLICY_POD_IDENTITY
    };
    let iam_policy = render_json(templates::IAM_POLICY, IAM_POLICY_FILE, &data)?;
    let trust_policy = render_json(trust_template, TRUST_POLICY_FILE, &data)?;
    let (dashboard, dashboard_body) =
        render_json_value(templates::DASHBOARD, DASHBOARD_FILE, &data)?;
    dashboard::check(&dashboard_body, METRICS_NAMESPACE, &target.cluster)
        .map_err(RenderError::Dashboard)?;
    let manifests = render_text(templates::MANIFESTS, &data)?;
    let objects = manifests::parse(&manifests)?;
    Ok(Rendered {
        iam_policy,
        trust_policy,
        manifests,
        dashboard,
        alarms_json,
        alarms: alarm_requests,
        objects,
        image,
    })
}

/// Every Kubernetes object the tool may have applied for `target`, in any mode (the
/// upstream helper's cluster-wide RBAC, the publisher's namespaced Roles and its Lease
/// Role), in apply order with the Deployment last. `deploy` deletes the ones of ours that
/// the current mode no longer renders, and `destroy` looks for all of them, so that
/// switching modes never leaves a grant behind. Rendered, not listed by hand, so that a new
/// object in the templates is covered without another list to keep in step.
pub fn possible_objects(target: &Target) -> Result<Vec<ManifestObject>, RenderError> {
    // The image does not change which objects exist, only whether it is our publisher.
    let placeholder = "cni-metrics-xtask.invalid/any:any".to_owned();
    let variants = [
        Target {
            image: ImageChoice::Mirror(placeholder.clone()),
            leader_elect: false,
            ..target.clone()
        },
        Target {
            image: ImageChoice::Publisher(placeholder),
            leader_elect: true,
            per_az: true,
            ..target.clone()
        },
    ];
    let mut objects: Vec<ManifestObject> = Vec::new();
    for variant in &variants {
        for object in render(variant)?.objects {
            if !objects
                .iter()
                .any(|known| known.identity() == object.identity())
            {
                objects.push(object);
            }
        }
    }
    // A stable sort: the Deployment goes last, everything else keeps its order.
    objects.sort_by_key(|object| matches!(object, ManifestObject::Deployment(_)));
    Ok(objects)
}

fn render_text(template: templates::Template, data: &Value) -> Result<String, RenderError> {
    let mut text = templates::render(template, data).map_err(|error| RenderError::Template {
        template: template.path,
        message: error.to_string(),
    })?;
    // Text files end with a newline, whatever the template's last line does.
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

fn render_json_value(
    template: templates::Template,
    file: &'static str,
    data: &Value,
) -> Result<(String, Value), RenderError> {
    let text = render_text(template, data)?;
    let value = serde_json::from_str(&text).map_err(|error| RenderError::Json {
        file,
        message: error.to_string(),
    })?;
    Ok((text, value))
}

fn render_json(
    template: templates::Template,
    file: &'static str,
    data: &Value,
) -> Result<String, RenderError> {
    render_json_value(template, file, data).map(|(text, _)| text)
}

impl Rendered {
    /// The artifacts as `(file name, text)`, in a fixed order.
    pub fn files(&self) -> [(&'static str, &str); 5] {
        [
            (IAM_POLICY_FILE, &self.iam_policy),
            (TRUST_POLICY_FILE, &self.trust_policy),
            (MANIFESTS_FILE, &self.manifests),
            (DASHBOARD_FILE, &self.dashboard),
            (ALARMS_FILE, &self.alarms_json),
        ]
    }

    /// One JSON object keyed by file name; JSON files as objects, the manifests as a list
    /// of objects, so a machine reader never has to parse text twice.
    pub fn to_json(&self) -> Value {
        let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
        json!({
            IAM_POLICY_FILE: parse(&self.iam_policy),
            TRUST_POLICY_FILE: parse(&self.trust_policy),
            MANIFESTS_FILE: self.objects.iter().map(ManifestObject::to_json).collect::<Vec<_>>(),
            DASHBOARD_FILE: parse(&self.dashboard),
            ALARMS_FILE: parse(&self.alarms_json),
        })
    }

    /// Writes the five files into `dir` (created when missing), all or nothing.
    pub fn write_to_dir(&self, dir: &Path) -> Result<Vec<PathBuf>, RenderError> {
        let write_error = |path: &Path| {
            let path = path.to_owned();
            move |error| RenderError::Write { path, error }
        };
        fs::create_dir_all(dir).map_err(write_error(dir))?;
        // Stage every file first; the temporary files delete themselves if we bail out.
        let mut staged = Vec::new();
        for (name, text) in self.files() {
            let mut file = tempfile::Builder::new()
                .prefix(&format!(".{name}."))
                .tempfile_in(dir)
                .map_err(write_error(dir))?;
            file.write_all(text.as_bytes())
                .and_then(|()| file.as_file().sync_all())
                .map_err(write_error(file.path()))?;
            staged.push((dir.join(name), file));
        }
        let mut written = Vec::new();
        for (path, file) in staged {
            file.persist(&path).map_err(|failure| RenderError::Write {
                path: path.clone(),
                error: failure.error,
            })?;
            written.push(path);
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::{OWN_POD_LABELS, PodSettings, RENDERED_ENV};
    use k8s_openapi::api::core::v1::EnvVar;

    fn target(image: ImageChoice, leader_elect: bool, pod: PodSettings) -> Target {
        Target {
            region: "us-west-2".to_owned(),
            partition: "aws".to_owned(),
            cluster: "prod".to_owned(),
            account: "111122223333".to_owned(),
            identity: Identity::PodIdentity,
            identity_reason: None,
            version: "v1.23.0".parse().expect("version"),
            namespace: "kube-system".to_owned(),
            image,
            leader_elect,
            pod,
            role_name: "role".to_owned(),
            role_arn: "arn:aws:iam::111122223333:role/role".to_owned(),
            policy_name: "policy".to_owned(),
            policy_arn: "arn:aws:iam::111122223333:policy/policy".to_owned(),
            cluster_arn: "arn:aws:eks:us-west-2:111122223333:cluster/prod".to_owned(),
            dashboard_name: "dashboard".to_owned(),
            role_tags: BTreeMap::new(),
            policy_tags: BTreeMap::new(),
            per_az: false,
            alarms: crate::alarms::AlarmSettings {
                name_prefix: "CNI-Metrics-prod-us-west-2".to_owned(),
                alarms: Vec::new(),
                zones: Vec::new(),
                heartbeat_metric: "podsScraped",
            },
        }
    }

    fn pod_template(target: &Target) -> k8s_openapi::api::core::v1::PodTemplateSpec {
        render(target)
            .expect("renders")
            .objects
            .into_iter()
            .find_map(|object| match object {
                ManifestObject::Deployment(deployment) => deployment.spec.map(|spec| spec.template),
                _ => None,
            })
            .expect("a Deployment")
    }

    /// `extra-env` and `pod-labels` are checked against these lists, so a variable or a
    /// label the template gains must be added to them, or a user could override it.
    #[test]
    fn the_refusal_lists_cover_every_env_and_label_the_template_renders() {
        let image = "registry.example.com/p:v1".to_owned();
        for target in [
            target(
                ImageChoice::Mirror(image.clone()),
                false,
                PodSettings::default(),
            ),
            target(
                ImageChoice::Publisher(image),
                true,
                PodSettings {
                    interval: Some(60),
                    ..PodSettings::default()
                },
            ),
        ] {
            let template = pod_template(&target);
            for label in template
                .metadata
                .expect("metadata")
                .labels
                .expect("labels")
                .keys()
            {
                assert!(OWN_POD_LABELS.contains(&label.as_str()), "{label}");
            }
            let container = &template.spec.expect("spec").containers[0];
            for variable in container.env.as_deref().unwrap_or_default() {
                assert!(
                    RENDERED_ENV.contains(&variable.name.as_str()),
                    "{}",
                    variable.name
                );
            }
        }
    }

    #[test]
    fn extra_env_follows_ours_and_resources_replace_the_defaults() {
        let pod = PodSettings {
            extra_env: vec![EnvVar {
                name: "HTTPS_PROXY".to_owned(),
                value: Some("http://proxy:3128".to_owned()),
                ..EnvVar::default()
            }],
            resources: Some(k8s_openapi::api::core::v1::ResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "memory".to_owned(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity("32Mi".to_owned()),
                )])),
                ..Default::default()
            }),
            ..PodSettings::default()
        };
        let template = pod_template(&target(
            ImageChoice::Mirror("registry.example.com/h:v1".to_owned()),
            false,
            pod,
        ));
        let container = &template.spec.expect("spec").containers[0];
        let env = container.env.as_deref().unwrap_or_default();
        assert_eq!(
            env.last().map(|variable| variable.name.as_str()),
            Some("HTTPS_PROXY")
        );
        let resources = container.resources.clone().expect("resources");
        assert_eq!(
            resources.limits, None,
            "the user's resources replace ours whole"
        );
        assert_eq!(resources.requests.expect("requests")["memory"].0, "32Mi");
    }
}
