//! The CloudWatch alarms, rendered as the exact `PutMetricAlarm` requests `deploy` sends
//! (`alarms.json`, in the API's own member names, so each entry also works with
//! `aws cloudwatch put-metric-alarm --cli-input-json`), and checked like CloudWatch would
//! check them before anything is written.
//!
//! Every alarm is written in the metric-math form (`Metrics`, one query returning data),
//! even the single-metric ones: one shape to render, compare and read back.

use serde::{Deserialize, Serialize};

use crate::alarms::{AlarmKind, AlarmParams};
use crate::arn;
use crate::decide::Target;
use crate::settings::METRICS_NAMESPACE;

/// The dimension every metric carries.
pub const CLUSTER_DIMENSION: &str = "CLUSTER_ID";
/// The dimension of the per-zone capacity metrics (`--per-az`).
pub const ZONE_DIMENSION: &str = "AvailabilityZone";

/// One `PutMetricAlarm` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AlarmRequest {
    pub alarm_name: String,
    pub alarm_description: String,
    pub actions_enabled: bool,
    pub alarm_actions: Vec<String>,
    #[serde(rename = "OKActions")]
    pub ok_actions: Vec<String>,
    pub insufficient_data_actions: Vec<String>,
    pub metrics: Vec<MetricQuery>,
    pub threshold: f64,
    pub comparison_operator: String,
    pub evaluation_periods: u32,
    pub datapoints_to_alarm: u32,
    pub treat_missing_data: String,
    /// Only on creation: CloudWatch ignores the tags of a PutMetricAlarm that updates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

/// A `MetricDataQuery`: a metric (`MetricStat`) or an expression over other queries' ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MetricQuery {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_stat: Option<MetricStat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub return_data: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MetricStat {
    pub metric: Metric,
    pub period: u32,
    pub stat: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Metric {
    pub namespace: String,
    pub metric_name: String,
    pub dimensions: Vec<Dimension>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Dimension {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    pub key: String,
    pub value: String,
}

impl AlarmRequest {
    /// The alarm's configuration as compared with a live alarm: the request without its
    /// tags, which are compared on their own.
    pub fn configuration(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(map) = value.as_object_mut() {
            map.remove("Tags");
        }
        value
    }
}

/// The ARN of alarm `name` of `target`'s account and region.
pub fn alarm_arn(target: &Target, name: &str) -> String {
    arn::alarm(&target.partition, &target.region, &target.account, name)
}

/// The zone an alarm covers, or the whole cluster.
#[derive(Debug, Clone, Copy)]
enum Scope<'a> {
    Cluster,
    Zone(&'a str),
}

/// Every alarm of `target`, in a fixed order: the cluster's alarms in [`AlarmKind::ALL`]
/// order, each utilisation alarm followed by its per-zone copies.
pub fn requests(target: &Target) -> Vec<AlarmRequest> {
    let settings = &target.alarms;
    let mut requests = Vec::new();
    for params in &settings.alarms {
        requests.push(request(target, params, Scope::Cluster));
        match params.kind {
            AlarmKind::IpUtilisationWarning | AlarmKind::IpUtilisationCritical => {
                for zone in &settings.zones {
                    requests.push(request(target, params, Scope::Zone(zone)));
                }
            }
            AlarmKind::WarmPoolLow
            | AlarmKind::PublisherSilent
            | AlarmKind::PublisherScrapeErrors
            | AlarmKind::IpamdErrors
            | AlarmKind::AwsApiErrors => {}
        }
    }
    requests
}

fn request(target: &Target, params: &AlarmParams, scope: Scope) -> AlarmRequest {
    let cluster = target.cluster.as_str();
    let region = target.region.as_str();
    let name = match scope {
        Scope::Cluster => format!("{}-{}", target.alarms.name_prefix, params.kind.key()),
        Scope::Zone(zone) => format!("{}-{}-{zone}", target.alarms.name_prefix, params.kind.key()),
    };
    let where_ = match scope {
        Scope::Cluster => format!("cluster {cluster} ({region})"),
        Scope::Zone(zone) => format!("zone {zone} of cluster {cluster} ({region})"),
    };
    let metric = |id: &str, metric_name: &str, stat: &str| MetricQuery {
        id: id.to_owned(),
        expression: None,
        metric_stat: Some(MetricStat {
            metric: Metric {
                namespace: METRICS_NAMESPACE.to_owned(),
                metric_name: metric_name.to_owned(),
                dimensions: dimensions(cluster, scope),
            },
            period: params.period,
            stat: stat.to_owned(),
        }),
        label: Some(metric_name.to_owned()),
        return_data: false,
    };
    let expression = |id: &str, expression: &str, label: &str| MetricQuery {
        id: id.to_owned(),
        expression: Some(expression.to_owned()),
        metric_stat: None,
        label: Some(label.to_owned()),
        return_data: true,
    };
    let returned = |mut query: MetricQuery| {
        query.return_data = true;
        query
    };
    let threshold = params.threshold;
    let minutes = u64::from(params.period) * u64::from(params.evaluation_periods) / 60;
    let window = format!(
        "{} of {} periods of {} s ({minutes} min)",
        params.datapoints_to_alarm, params.evaluation_periods, params.period
    );
    let (metrics, comparison, missing, description) = match params.kind {
        AlarmKind::IpUtilisationWarning | AlarmKind::IpUtilisationCritical => (
            vec![
                metric("assigned", "assignIPAddresses", "Maximum"),
                metric("capacity", "maxIPAddresses", "Maximum"),
                expression(
                    "utilisation",
                    "100 * assigned / capacity",
                    "IPs assigned to pods, % of capacity",
                ),
            ],
            "GreaterThanThreshold",
            "missing",
            format!(
                "IPs assigned to pods in {where_} are above {threshold} % of what the nodes' ENIs can hold (100 * assignIPAddresses / maxIPAddresses), in {window}. \
                 New pods there will soon stay Pending without an IP: add subnets or nodes in other zones, enable prefix delegation, or move workloads."
            ),
        ),
        AlarmKind::WarmPoolLow => (
            vec![
                metric("allocated", "totalIPAddresses", "Maximum"),
                metric("assigned", "assignIPAddresses", "Maximum"),
                expression(
                    "warm",
                    "allocated - assigned",
                    "IPs allocated to nodes but not assigned",
                ),
            ],
            "LessThanThreshold",
            "missing",
            format!(
                "Fewer than {threshold} IPs are free on the nodes of {where_} (totalIPAddresses - assignIPAddresses), in {window}. \
                 New pods wait for ipamd to attach ENIs or allocate IPs, and fail when the subnets are empty: check the subnets' free IPs and WARM_IP_TARGET / MINIMUM_IP_TARGET."
            ),
        ),
        AlarmKind::PublisherSilent => (
            vec![returned(metric(
                "heartbeat",
                target.alarms.heartbeat_metric,
                "SampleCount",
            ))],
            "LessThanThreshold",
            "breaching",
            format!(
                "No {} datapoint from the CNI metrics helper of {where_} in {window}: the helper is not running, cannot reach the API server, or cannot publish (credentials, PutMetricData). \
                 Every other alarm of this cluster is blind meanwhile: kubectl -n {} logs deploy/cni-metrics-helper.",
                target.alarms.heartbeat_metric, target.namespace
            ),
        ),
        AlarmKind::PublisherScrapeErrors => (
            vec![returned(metric("errors", "scrapeErrors", "Maximum"))],
            "GreaterThanThreshold",
            "notBreaching",
            format!(
                "The publisher of {where_} failed to read some aws-node pods (scrapeErrors above {threshold}) in {window}: \
                 their IPs are missing from the totals. Check the control plane's access to the nodes on tcp/61678 and the publisher's log."
            ),
        ),
        AlarmKind::IpamdErrors => (
            vec![returned(metric("errors", "ipamdErr", "Sum"))],
            "GreaterThanThreshold",
            "notBreaching",
            format!(
                "ipamd (aws-node) reported more than {threshold} errors per {} s in {where_}, in {window}. kubectl -n kube-system logs -l k8s-app=aws-node -c aws-node.",
                params.period
            ),
        ),
        AlarmKind::AwsApiErrors => (
            vec![returned(metric("errors", "awsAPIErr", "Sum"))],
            "GreaterThanThreshold",
            "notBreaching",
            format!(
                "ipamd's AWS API calls failed more than {threshold} times per {} s in {where_}, in {window}: throttling or missing EC2 permissions of the aws-node role stop new ENIs and IPs.",
                params.period
            ),
        ),
    };
    AlarmRequest {
        alarm_name: name,
        alarm_description: format!(
            "{description} Managed by {}: edits are replaced by the next deploy.",
            crate::ownership::MANAGED_BY
        ),
        actions_enabled: true,
        alarm_actions: params.actions.clone(),
        // Whoever is paged also learns that it cleared.
        ok_actions: params.actions.clone(),
        insufficient_data_actions: Vec::new(),
        metrics,
        threshold,
        comparison_operator: comparison.to_owned(),
        evaluation_periods: params.evaluation_periods,
        datapoints_to_alarm: params.datapoints_to_alarm,
        treat_missing_data: missing.to_owned(),
        tags: target
            .role_tags
            .iter()
            .map(|(key, value)| Tag {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
    }
}

fn dimensions(cluster: &str, scope: Scope) -> Vec<Dimension> {
    let mut dimensions = vec![Dimension {
        name: CLUSTER_DIMENSION.to_owned(),
        value: cluster.to_owned(),
    }];
    if let Scope::Zone(zone) = scope {
        dimensions.push(Dimension {
            name: ZONE_DIMENSION.to_owned(),
            value: zone.to_owned(),
        });
    }
    dimensions
}

/// CloudWatch's limits that the requests must respect.
const DESCRIPTION_MAX: usize = 1024;
const METRICS_MAX: usize = 10;

/// Checks every request as PutMetricAlarm would, plus our contract (namespace, the
/// cluster's dimension), so that a mistake fails at render time.
pub fn check(requests: &[AlarmRequest], cluster: &str) -> Result<(), String> {
    let mut names = std::collections::BTreeSet::new();
    for request in requests {
        let name = &request.alarm_name;
        check_request(request, cluster).map_err(|problem| format!("alarm {name}: {problem}"))?;
        if !names.insert(name) {
            return Err(format!("alarm {name} is rendered twice"));
        }
    }
    Ok(())
}

fn check_request(request: &AlarmRequest, cluster: &str) -> Result<(), String> {
    if request.alarm_name.is_empty() || request.alarm_name.len() > crate::alarms::NAME_MAX {
        return Err("the name is not 1-255 characters".to_owned());
    }
    if request.alarm_description.chars().count() > DESCRIPTION_MAX {
        return Err(format!(
            "the description is longer than {DESCRIPTION_MAX} characters"
        ));
    }
    if !(1..=METRICS_MAX).contains(&request.metrics.len()) {
        return Err(format!(
            "{} metrics, not 1-{METRICS_MAX}",
            request.metrics.len()
        ));
    }
    let mut ids: Vec<&str> = Vec::new();
    let mut periods = std::collections::BTreeSet::new();
    for query in &request.metrics {
        if !is_query_id(&query.id) {
            return Err(format!(
                "query id '{}' must start with a lowercase letter and hold only letters, digits and _",
                query.id
            ));
        }
        if ids.contains(&query.id.as_str()) {
            return Err(format!("query id '{}' is used twice", query.id));
        }
        match (&query.expression, &query.metric_stat) {
            (Some(expression), None) => {
                for name in identifiers(expression) {
                    if !ids.contains(&name) {
                        return Err(format!(
                            "expression '{expression}' uses '{name}', which is no query defined before it"
                        ));
                    }
                }
            }
            (None, Some(stat)) => {
                let metric = &stat.metric;
                if metric.namespace != METRICS_NAMESPACE {
                    return Err(format!("metric in namespace {}", metric.namespace));
                }
                if !metric.dimensions.iter().any(|dimension| {
                    dimension.name == CLUSTER_DIMENSION && dimension.value == cluster
                }) {
                    return Err(format!(
                        "metric {} lacks CLUSTER_ID={cluster}",
                        metric.metric_name
                    ));
                }
                if stat.period == 0 || stat.period % 60 != 0 {
                    return Err(format!("period {} is not a multiple of 60", stat.period));
                }
                periods.insert(stat.period);
            }
            (Some(_), Some(_)) | (None, None) => {
                return Err(format!(
                    "query '{}' must have exactly one of Expression and MetricStat",
                    query.id
                ));
            }
        }
        ids.push(&query.id);
    }
    if periods.len() != 1 {
        return Err(format!(
            "its metrics have periods {periods:?}; an alarm evaluates one period"
        ));
    }
    let returned = request
        .metrics
        .iter()
        .filter(|query| query.return_data)
        .count();
    if returned != 1 {
        return Err(format!("{returned} queries return data; exactly one must"));
    }
    if request.datapoints_to_alarm == 0 || request.datapoints_to_alarm > request.evaluation_periods
    {
        return Err("datapoints to alarm must be 1 to the evaluation periods".to_owned());
    }
    let period = periods.first().copied().unwrap_or(60);
    if u64::from(period) * u64::from(request.evaluation_periods) > 86_400 {
        return Err("the evaluation window is longer than a day".to_owned());
    }
    if !request.threshold.is_finite() {
        return Err("the threshold is not finite".to_owned());
    }
    for actions in [&request.alarm_actions, &request.ok_actions] {
        if actions.len() > crate::alarms::MAX_ACTIONS {
            return Err("more than 5 actions".to_owned());
        }
    }
    Ok(())
}

/// CloudWatch: "The first character must be a lowercase letter", then letters, digits, `_`.
fn is_query_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    bytes.next().is_some_and(|first| first.is_ascii_lowercase())
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
        && id.len() <= 255
}

/// The names an expression refers to (our expressions use no functions).
fn identifiers(expression: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut start = None;
    for (index, character) in expression.char_indices().chain([(expression.len(), ' ')]) {
        let word = character.is_ascii_alphanumeric() || character == '_';
        match (start, word) {
            (None, true) => start = Some(index),
            (Some(from), false) => {
                let token = &expression[from..index];
                if !token
                    .bytes()
                    .next()
                    .is_some_and(|byte| byte.is_ascii_digit())
                {
                    names.push(token);
                }
                start = None;
            }
            (None, false) | (Some(_), true) => {}
        }
    }
    names
}

/// The height of the dashboard's alarm-status widget for `count` alarms: CloudWatch shows
/// them as tiles, about six to a row of the full width.
pub fn status_widget_height(count: usize) -> usize {
    2 + count.div_ceil(6) * 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(id: &str, expression: Option<&str>, return_data: bool) -> MetricQuery {
        MetricQuery {
            id: id.to_owned(),
            expression: expression.map(str::to_owned),
            metric_stat: expression.is_none().then(|| MetricStat {
                metric: Metric {
                    namespace: "Kubernetes".to_owned(),
                    metric_name: "maxIPAddresses".to_owned(),
                    dimensions: vec![Dimension {
                        name: "CLUSTER_ID".to_owned(),
                        value: "prod".to_owned(),
                    }],
                },
                period: 60,
                stat: "Maximum".to_owned(),
            }),
            label: None,
            return_data,
        }
    }

    fn request(metrics: Vec<MetricQuery>) -> AlarmRequest {
        AlarmRequest {
            alarm_name: "a".to_owned(),
            alarm_description: String::new(),
            actions_enabled: true,
            alarm_actions: Vec::new(),
            ok_actions: Vec::new(),
            insufficient_data_actions: Vec::new(),
            metrics,
            threshold: 1.0,
            comparison_operator: "GreaterThanThreshold".to_owned(),
            evaluation_periods: 1,
            datapoints_to_alarm: 1,
            treat_missing_data: "missing".to_owned(),
            tags: Vec::new(),
        }
    }

    #[test]
    fn expressions_may_only_use_the_queries_defined_before_them() {
        let good = request(vec![
            query("m1", None, false),
            query("m2", None, false),
            query("e1", Some("100 * m1 / (m2 + 1e-9)"), true),
        ]);
        assert_eq!(check(&[good], "prod"), Ok(()));
        for (metrics, expected) in [
            (
                vec![query("m1", None, false), query("e1", Some("m1 / m3"), true)],
                "uses 'm3'",
            ),
            (
                vec![query("e1", Some("m1 * 2"), true), query("m1", None, false)],
                "uses 'm1'",
            ),
            (vec![query("M1", None, true)], "lowercase"),
            (
                vec![query("m1", None, true), query("m1", Some("1"), false)],
                "used twice",
            ),
            (
                vec![query("m1", None, true), query("e1", Some("m1"), true)],
                "2 queries return data",
            ),
            (vec![query("m1", None, false)], "0 queries return data"),
        ] {
            let message = check(&[request(metrics)], "prod").expect_err(expected);
            assert!(message.contains(expected), "{expected} in {message}");
        }
        let other_cluster = check(&[request(vec![query("m1", None, true)])], "staging")
            .expect_err("another cluster");
        assert!(
            other_cluster.contains("CLUSTER_ID=staging"),
            "{other_cluster}"
        );
    }

    #[test]
    fn identifiers_skip_numbers_and_operators() {
        assert_eq!(
            identifiers("100 * assigned/capacity - 1.5e3 + (x_1) * 1e-9"),
            ["assigned", "capacity", "x_1"]
        );
    }
}
