//! The CloudWatch alarms: read under our name prefix, compared field by field with the
//! rendered `PutMetricAlarm` requests, and owned through their tags like a role is (made by
//! this tool, for this cluster, in this region). An alarm of ours that is no longer
//! rendered (an alarm switched off, a zone dropped, `--no-alarms`) is deleted; an alarm
//! under our prefix that is not ours is never written to, and a same-named one is a
//! conflict unless adopted.

use std::collections::BTreeMap;

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::types::{
    AlarmType, ComparisonOperator, Dimension, Metric, MetricAlarm, MetricDataQuery, MetricStat, Tag,
};
use serde::Serialize;
use serde_json::Value;

use super::{Change, Convergence, ResourceChange, Scope, conflict_unless_adopted, settle};
use crate::aws::AwsError;
use crate::documents::diff;
use crate::ownership::{self, Ownership};
use crate::render::alarms::AlarmRequest;

pub const KIND: &str = "CloudWatch alarm";

/// The CloudWatch alarm calls a plan makes.
#[derive(Debug, Clone)]
pub enum AlarmStep {
    /// Creates or replaces the alarm; its tags are only used when it is created.
    Put(Box<AlarmRequest>),
    /// Puts our marks (and the user's tags) on an alarm: an adoption, or new `--tag`s.
    Tag {
        name: String,
        arn: String,
        tags: Vec<(String, String)>,
    },
    Delete {
        name: String,
    },
}

/// One live alarm, as far as a plan and `status` need it.
#[derive(Debug, Clone)]
struct LiveAlarm {
    name: String,
    arn: String,
    configuration: Value,
    state: AlarmState,
}

/// An alarm's state, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlarmState {
    pub name: String,
    /// `OK`, `ALARM`, `INSUFFICIENT_DATA`, or `MISSING` when a rendered alarm is not there.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// Every metric alarm whose name starts with `prefix`, all pages.
async fn live_alarms(client: &Client, prefix: &str) -> Result<Vec<LiveAlarm>, AwsError> {
    let mut alarms = Vec::new();
    let mut next_token = None;
    loop {
        let page = client
            .describe_alarms()
            .alarm_name_prefix(prefix)
            .alarm_types(AlarmType::MetricAlarm)
            .set_next_token(next_token)
            .send()
            .await
            .map_err(AwsError::call(
                "cloudwatch",
                "DescribeAlarms",
                format!("alarms named {prefix}*"),
            ))?;
        alarms.extend(page.metric_alarms().iter().map(live_alarm));
        next_token = page.next_token().map(str::to_owned);
        if next_token.is_none() {
            return Ok(alarms);
        }
    }
}

fn live_alarm(alarm: &MetricAlarm) -> LiveAlarm {
    let name = alarm.alarm_name().unwrap_or_default().to_owned();
    LiveAlarm {
        arn: alarm.alarm_arn().unwrap_or_default().to_owned(),
        configuration: configuration(alarm),
        state: AlarmState {
            name: name.clone(),
            state: alarm
                .state_value()
                .map_or("INSUFFICIENT_DATA", |state| state.as_str())
                .to_owned(),
            reason: alarm.state_reason().map(str::to_owned),
            since: alarm.state_updated_timestamp().and_then(|moment| {
                moment
                    .fmt(aws_sdk_cloudwatch::primitives::DateTimeFormat::DateTime)
                    .ok()
            }),
        },
        name,
    }
}

/// A live alarm in the shape of [`AlarmRequest::configuration`], with CloudWatch's
/// defaults filled in as CloudWatch applies them, so that an alarm nobody touched compares
/// equal. A single-metric alarm (made or edited elsewhere) keeps its own fields, which show
/// in the diff.
fn configuration(alarm: &MetricAlarm) -> Value {
    let evaluation_periods = alarm.evaluation_periods().unwrap_or(0).max(0);
    let request = AlarmRequest {
        alarm_name: alarm.alarm_name().unwrap_or_default().to_owned(),
        alarm_description: alarm.alarm_description().unwrap_or_default().to_owned(),
        actions_enabled: alarm.actions_enabled().unwrap_or(true),
        alarm_actions: alarm.alarm_actions().to_vec(),
        ok_actions: alarm.ok_actions().to_vec(),
        insufficient_data_actions: alarm.insufficient_data_actions().to_vec(),
        metrics: alarm.metrics().iter().map(query).collect(),
        threshold: alarm.threshold().unwrap_or(f64::NAN),
        comparison_operator: alarm
            .comparison_operator()
            .map(|operator| operator.as_str().to_owned())
            .unwrap_or_default(),
        evaluation_periods: u32::try_from(evaluation_periods).unwrap_or(0),
        datapoints_to_alarm: alarm
            .datapoints_to_alarm()
            .and_then(|count| u32::try_from(count).ok())
            .unwrap_or(u32::try_from(evaluation_periods).unwrap_or(0)),
        treat_missing_data: alarm.treat_missing_data().unwrap_or("missing").to_owned(),
        tags: Vec::new(),
    };
    let mut value = request.configuration();
    if let (Some(map), Some(metric_name)) = (value.as_object_mut(), alarm.metric_name()) {
        map.insert("MetricName".to_owned(), Value::from(metric_name));
        map.insert(
            "Namespace".to_owned(),
            Value::from(alarm.namespace().unwrap_or_default()),
        );
        map.insert(
            "Statistic".to_owned(),
            Value::from(alarm.statistic().map_or("", |statistic| statistic.as_str())),
        );
        map.insert(
            "Period".to_owned(),
            Value::from(alarm.period().unwrap_or(0)),
        );
    }
    value
}

fn query(query: &MetricDataQuery) -> crate::render::alarms::MetricQuery {
    use crate::render::alarms as rendered;
    rendered::MetricQuery {
        id: query.id().unwrap_or_default().to_owned(),
        expression: query.expression().map(str::to_owned),
        metric_stat: query.metric_stat().map(|stat| rendered::MetricStat {
            metric: rendered::Metric {
                namespace: stat
                    .metric()
                    .and_then(Metric::namespace)
                    .unwrap_or_default()
                    .to_owned(),
                metric_name: stat
                    .metric()
                    .and_then(Metric::metric_name)
                    .unwrap_or_default()
                    .to_owned(),
                dimensions: stat
                    .metric()
                    .map(Metric::dimensions)
                    .unwrap_or_default()
                    .iter()
                    .map(|dimension| rendered::Dimension {
                        name: dimension.name().unwrap_or_default().to_owned(),
                        value: dimension.value().unwrap_or_default().to_owned(),
                    })
                    .collect(),
            },
            period: stat
                .period()
                .and_then(|period| u32::try_from(period).ok())
                .unwrap_or(0),
            stat: stat.stat().unwrap_or_default().to_owned(),
        }),
        label: query.label().map(str::to_owned),
        // CloudWatch's default for a query that does not say.
        return_data: query.return_data().unwrap_or(true),
    }
}

async fn live_tags(
    client: &Client,
    alarm: &LiveAlarm,
) -> Result<BTreeMap<String, String>, AwsError> {
    let output = client
        .list_tags_for_resource()
        .resource_arn(&alarm.arn)
        .send()
        .await
        .map_err(AwsError::call(
            "cloudwatch",
            "ListTagsForResource",
            format!("alarm {}", alarm.name),
        ))?;
    Ok(output
        .tags()
        .iter()
        .map(|tag| {
            (
                tag.key().unwrap_or_default().to_owned(),
                tag.value().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

/// The alarms of our prefix for `cluster` in `region`, and what they should be.
#[derive(Debug, Clone, Copy)]
pub struct DesiredAlarms<'a> {
    pub prefix: &'a str,
    pub requests: &'a [AlarmRequest],
    /// Our marks and the user's tags, on every alarm.
    pub tags: &'a BTreeMap<String, String>,
    pub cluster: &'a str,
    pub region: &'a str,
}

/// The prefix every alarm name has: `<name prefix>-`, so that `prod` never reads `prod2`'s.
fn name_prefix(prefix: &str) -> String {
    format!("{prefix}-")
}

pub async fn plan(
    client: &Client,
    desired: DesiredAlarms<'_>,
    adopt: bool,
) -> Result<Vec<ResourceChange>, AwsError> {
    let live = live_alarms(client, &name_prefix(desired.prefix)).await?;
    let mut changes = Vec::new();
    for request in desired.requests {
        let name = &request.alarm_name;
        let Some(alarm) = live.iter().find(|alarm| &alarm.name == name) else {
            changes.push(
                ResourceChange::new(Scope::Alarms, KIND, name, Change::Create)
                    .with_steps(vec![AlarmStep::Put(Box::new(request.clone()))]),
            );
            continue;
        };
        let tags = live_tags(client, alarm).await?;
        let ownership = ownership::of_cluster_resource(&tags, desired.cluster, desired.region);
        if let Some(conflict) = conflict_unless_adopted(&ownership, adopt) {
            changes.push(ResourceChange::new(Scope::Alarms, KIND, name, conflict));
            continue;
        }
        let mut lines = diff(&alarm.configuration, &request.configuration());
        let mut steps = Vec::new();
        if !lines.is_empty() {
            steps.push(AlarmStep::Put(Box::new(AlarmRequest {
                tags: Vec::new(),
                ..request.clone()
            })));
        }
        let missing = ownership::missing_tags(&tags, desired.tags);
        if !missing.is_empty() {
            lines.extend(ownership::tag_lines(&tags, &missing));
            steps.push(AlarmStep::Tag {
                name: name.clone(),
                arn: alarm.arn.clone(),
                tags: missing,
            });
        }
        let (change, steps) = settle(ownership, adopt, Convergence { diff: lines, steps });
        changes.push(ResourceChange::new(Scope::Alarms, KIND, name, change).with_steps(steps));
    }
    for alarm in &live {
        if desired
            .requests
            .iter()
            .any(|request| request.alarm_name == alarm.name)
        {
            continue;
        }
        // Under our prefix but no longer rendered: ours goes, anyone else's is not ours
        // to mention in a deploy.
        let tags = live_tags(client, alarm).await?;
        match ownership::of_cluster_resource(&tags, desired.cluster, desired.region) {
            Ownership::Ours => {
                changes.push(delete(alarm).with_note("made by this tool and no longer rendered"));
            }
            Ownership::NotOurs(_) => {}
        }
    }
    Ok(changes)
}

/// The deletion of a live alarm of ours.
fn delete(alarm: &LiveAlarm) -> ResourceChange {
    ResourceChange::new(Scope::Alarms, KIND, &alarm.name, Change::Delete).with_steps(vec![
        AlarmStep::Delete {
            name: alarm.name.clone(),
        },
    ])
}

/// Plans the deletion of every alarm under our prefix that is ours, for this cluster and
/// region; the others under the prefix are shown as kept.
pub async fn plan_destroy(
    client: &Client,
    prefix: &str,
    cluster: &str,
    region: &str,
) -> Result<Vec<ResourceChange>, AwsError> {
    let mut changes = Vec::new();
    for alarm in live_alarms(client, &name_prefix(prefix)).await? {
        let tags = live_tags(client, &alarm).await?;
        changes.push(
            match ownership::of_cluster_resource(&tags, cluster, region) {
                Ownership::Ours => delete(&alarm),
                Ownership::NotOurs(reason) => {
                    ResourceChange::kept_as_not_ours(Scope::Alarms, KIND, &alarm.name, &reason)
                }
            },
        );
    }
    Ok(changes)
}

/// The state of each rendered alarm (`MISSING` when it is not there), in the rendered
/// order, for `status`.
pub async fn states(
    client: &Client,
    prefix: &str,
    requests: &[AlarmRequest],
) -> Result<Vec<AlarmState>, AwsError> {
    let live = live_alarms(client, &name_prefix(prefix)).await?;
    Ok(requests
        .iter()
        .map(|request| {
            live.iter()
                .find(|alarm| alarm.name == request.alarm_name)
                .map_or_else(
                    || AlarmState {
                        name: request.alarm_name.clone(),
                        state: "MISSING".to_owned(),
                        reason: Some("not deployed: run cargo xtask deploy".to_owned()),
                        since: None,
                    },
                    |alarm| alarm.state.clone(),
                )
        })
        .collect())
}

pub async fn apply(client: &Client, step: &AlarmStep) -> Result<(), AwsError> {
    match step {
        AlarmStep::Put(request) => {
            put(client, request).await.map_err(AwsError::call(
                "cloudwatch",
                "PutMetricAlarm",
                format!("alarm {}", request.alarm_name),
            ))?;
        }
        AlarmStep::Tag { name, arn, tags } => {
            client
                .tag_resource()
                .resource_arn(arn)
                .set_tags(Some(sdk_tags(tags.iter().map(|(key, value)| (key, value)))))
                .send()
                .await
                .map_err(AwsError::call(
                    "cloudwatch",
                    "TagResource",
                    format!("alarm {name}"),
                ))?;
        }
        AlarmStep::Delete { name } => {
            client
                .delete_alarms()
                .alarm_names(name)
                .send()
                .await
                .map_err(AwsError::call(
                    "cloudwatch",
                    "DeleteAlarms",
                    format!("alarm {name}"),
                ))?;
        }
    }
    Ok(())
}

fn sdk_tags<'a>(tags: impl Iterator<Item = (&'a String, &'a String)>) -> Vec<Tag> {
    tags.map(|(key, value)| Tag::builder().key(key).value(value).build())
        .collect()
}

/// A rendered count as the SDK's `i32` (validated counts and periods are far below its
/// limit).
fn sdk_count(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// The rendered queries as the SDK's `MetricDataQuery`s.
fn sdk_queries(queries: &[crate::render::alarms::MetricQuery]) -> Vec<MetricDataQuery> {
    queries
        .iter()
        .map(|query| {
            MetricDataQuery::builder()
                .id(&query.id)
                .set_expression(query.expression.clone())
                .set_label(query.label.clone())
                .return_data(query.return_data)
                .set_metric_stat(query.metric_stat.as_ref().map(|stat| {
                    let dimensions = stat
                        .metric
                        .dimensions
                        .iter()
                        .map(|dimension| {
                            Dimension::builder()
                                .name(&dimension.name)
                                .value(&dimension.value)
                                .build()
                        })
                        .collect();
                    MetricStat::builder()
                        .metric(
                            Metric::builder()
                                .namespace(&stat.metric.namespace)
                                .metric_name(&stat.metric.metric_name)
                                .set_dimensions(Some(dimensions))
                                .build(),
                        )
                        .period(sdk_count(stat.period))
                        .stat(&stat.stat)
                        .build()
                }))
                .build()
        })
        .collect()
}

async fn put(
    client: &Client,
    request: &AlarmRequest,
) -> Result<
    aws_sdk_cloudwatch::operation::put_metric_alarm::PutMetricAlarmOutput,
    aws_sdk_cloudwatch::error::SdkError<
        aws_sdk_cloudwatch::operation::put_metric_alarm::PutMetricAlarmError,
    >,
> {
    let metrics = sdk_queries(&request.metrics);
    let tags = sdk_tags(request.tags.iter().map(|tag| (&tag.key, &tag.value)));
    client
        .put_metric_alarm()
        .alarm_name(&request.alarm_name)
        .alarm_description(&request.alarm_description)
        .actions_enabled(request.actions_enabled)
        .set_alarm_actions(Some(request.alarm_actions.clone()))
        .set_ok_actions(Some(request.ok_actions.clone()))
        .set_insufficient_data_actions(Some(request.insufficient_data_actions.clone()))
        .set_metrics(Some(metrics))
        .threshold(request.threshold)
        .comparison_operator(ComparisonOperator::from(
            request.comparison_operator.as_str(),
        ))
        .evaluation_periods(sdk_count(request.evaluation_periods))
        .datapoints_to_alarm(sdk_count(request.datapoints_to_alarm))
        .treat_missing_data(&request.treat_missing_data)
        .set_tags((!tags.is_empty()).then_some(tags))
        .send()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::alarms as rendered;

    fn request() -> AlarmRequest {
        let stat = |id: &str, name: &str| rendered::MetricQuery {
            id: id.to_owned(),
            expression: None,
            metric_stat: Some(rendered::MetricStat {
                metric: rendered::Metric {
                    namespace: "Kubernetes".to_owned(),
                    metric_name: name.to_owned(),
                    dimensions: vec![rendered::Dimension {
                        name: "CLUSTER_ID".to_owned(),
                        value: "prod".to_owned(),
                    }],
                },
                period: 60,
                stat: "Maximum".to_owned(),
            }),
            label: Some(name.to_owned()),
            return_data: false,
        };
        AlarmRequest {
            alarm_name: "CNI-Metrics-prod-eu-west-1-ip-utilisation-critical".to_owned(),
            alarm_description: "IPs".to_owned(),
            actions_enabled: true,
            alarm_actions: vec!["arn:aws:sns:eu-west-1:111122223333:oncall".to_owned()],
            ok_actions: vec!["arn:aws:sns:eu-west-1:111122223333:oncall".to_owned()],
            insufficient_data_actions: Vec::new(),
            metrics: vec![
                stat("assigned", "assignIPAddresses"),
                stat("capacity", "maxIPAddresses"),
                rendered::MetricQuery {
                    id: "utilisation".to_owned(),
                    expression: Some("100 * assigned / capacity".to_owned()),
                    metric_stat: None,
                    label: None,
                    return_data: true,
                },
            ],
            threshold: 90.0,
            comparison_operator: "GreaterThanThreshold".to_owned(),
            evaluation_periods: 5,
            datapoints_to_alarm: 5,
            treat_missing_data: "missing".to_owned(),
            tags: vec![rendered::Tag {
                key: "managed-by".to_owned(),
                value: "cni-metrics-xtask".to_owned(),
            }],
        }
    }

    /// The alarm as DescribeAlarms returns what `request` put, with `edit` applied.
    fn described(
        request: &AlarmRequest,
        edit: impl FnOnce(
            aws_sdk_cloudwatch::types::builders::MetricAlarmBuilder,
        ) -> aws_sdk_cloudwatch::types::builders::MetricAlarmBuilder,
    ) -> MetricAlarm {
        let metrics = sdk_queries(&request.metrics);
        edit(
            MetricAlarm::builder()
                .alarm_name(&request.alarm_name)
                .alarm_arn("arn:aws:cloudwatch:eu-west-1:111122223333:alarm:x")
                .alarm_description(&request.alarm_description)
                .actions_enabled(true)
                .set_alarm_actions(Some(request.alarm_actions.clone()))
                .set_ok_actions(Some(request.ok_actions.clone()))
                .set_metrics(Some(metrics))
                .threshold(request.threshold)
                .comparison_operator(ComparisonOperator::GreaterThanThreshold)
                .evaluation_periods(5)
                .datapoints_to_alarm(5)
                .treat_missing_data("missing"),
        )
        .build()
    }

    #[test]
    fn an_alarm_read_back_as_put_is_no_drift_and_an_edit_is_one_line() {
        let request = request();
        let unchanged = described(&request, |alarm| alarm);
        assert_eq!(
            diff(&configuration(&unchanged), &request.configuration()),
            Vec::<String>::new()
        );
        let edited = described(&request, |alarm| alarm.threshold(95.0).ok_actions("arn:x"));
        assert_eq!(
            diff(&configuration(&edited), &request.configuration()),
            [
                "~ .OKActions: [\"arn:aws:sns:eu-west-1:111122223333:oncall\",\"arn:x\"] -> [\"arn:aws:sns:eu-west-1:111122223333:oncall\"]".to_owned(),
                "~ .Threshold: 95.0 -> 90.0".to_owned()
            ]
        );
    }

    #[test]
    fn cloudwatch_defaults_fill_what_an_alarm_made_elsewhere_leaves_out() {
        let request = request();
        // Made without DatapointsToAlarm, TreatMissingData or ReturnData: CloudWatch's
        // defaults (all periods, missing, true for the one query) apply.
        let mut elsewhere = described(&request, |alarm| {
            alarm
                .set_datapoints_to_alarm(None)
                .set_treat_missing_data(None)
        });
        elsewhere.metrics = Some(vec![
            MetricDataQuery::builder().id("m1").expression("1").build(),
        ]);
        let live = configuration(&elsewhere);
        assert_eq!(live["DatapointsToAlarm"], 5);
        assert_eq!(live["TreatMissingData"], "missing");
        assert_eq!(live["Metrics"][0]["ReturnData"], true);
        // A single-metric alarm keeps its own fields, which show as drift.
        let single = described(&request, |alarm| {
            alarm
                .set_metrics(None)
                .metric_name("assignIPAddresses")
                .namespace("Kubernetes")
                .period(300)
        });
        let lines = diff(&configuration(&single), &request.configuration());
        assert!(
            lines.iter().any(|line| line.starts_with("- .MetricName")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|line| line.starts_with("~ .Metrics: [] -> [")),
            "{lines:?}"
        );
    }
}
