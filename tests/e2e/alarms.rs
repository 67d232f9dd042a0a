//! CloudWatch metric alarms in the AWS emulator: what is put is described back field for
//! field (aws-sdk-cloudwatch through the CBOR layer, and boto3), and the sandbox's
//! evaluation (`AwsEmulator::evaluate_alarms`) moves them between OK, ALARM and
//! INSUFFICIENT_DATA as CloudWatch would.

use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Metric, MetricAlarm, MetricDataQuery, MetricDatum, MetricStat, StateValue,
    Statistic, Tag,
};
use sandbox::aws_emulator::{EmulatorError, EmulatorOptions, EvaluatedAlarm, evaluate_alarms_at};
use serde_json::Value;

use crate::aws_emulator::{
    NAMESPACE, REGION, cloudwatch, cluster_dimension, current_minute, run_python_fixture,
    start_emulator,
};

const OTHER_REGION: &str = "eu-central-1";
const TOPIC: &str = "arn:aws:sns:us-west-2:123456789012:cni-alerts";
const ALARM: &str = "cni-ip-utilization";

fn at(epoch_seconds: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(epoch_seconds).expect("after 1970"))
}

fn metric_query(id: &str, metric_name: &str) -> MetricDataQuery {
    MetricDataQuery::builder()
        .id(id)
        .metric_stat(
            MetricStat::builder()
                .metric(
                    Metric::builder()
                        .namespace(NAMESPACE)
                        .metric_name(metric_name)
                        .dimensions(cluster_dimension())
                        .build(),
                )
                .period(60)
                .stat("Maximum")
                .build(),
        )
        .return_data(false)
        .build()
}

/// The product's alarm: IP utilization of the cluster in percent, above 90.
fn utilization_queries() -> Vec<MetricDataQuery> {
    vec![
        metric_query("m1", "assignIPAddresses"),
        metric_query("m2", "maxIPAddresses"),
        MetricDataQuery::builder()
            .id("utilization")
            .expression("100*m1/m2")
            .label("IP utilization (%)")
            .return_data(true)
            .build(),
    ]
}

async fn put_utilization_alarm(client: &aws_sdk_cloudwatch::Client, threshold: f64, tag: Tag) {
    client
        .put_metric_alarm()
        .alarm_name(ALARM)
        .alarm_description("IP addresses of the cluster nearly exhausted")
        .actions_enabled(true)
        .alarm_actions(TOPIC)
        .ok_actions(TOPIC)
        .threshold(threshold)
        .comparison_operator(ComparisonOperator::GreaterThanThreshold)
        .evaluation_periods(1)
        .datapoints_to_alarm(1)
        .treat_missing_data("notBreaching")
        .set_metrics(Some(utilization_queries()))
        .tags(tag)
        .send()
        .await
        .expect("PutMetricAlarm is accepted");
}

async fn put_value(client: &aws_sdk_cloudwatch::Client, metric_name: &str, value: f64, secs: i64) {
    client
        .put_metric_data()
        .namespace(NAMESPACE)
        .metric_data(
            MetricDatum::builder()
                .metric_name(metric_name)
                .dimensions(cluster_dimension())
                .timestamp(DateTime::from_secs(secs))
                .value(value)
                .build(),
        )
        .send()
        .await
        .expect("PutMetricData is accepted");
}

async fn described(client: &aws_sdk_cloudwatch::Client, name: &str) -> MetricAlarm {
    let output = client
        .describe_alarms()
        .alarm_names(name)
        .alarm_types(aws_sdk_cloudwatch::types::AlarmType::MetricAlarm)
        .send()
        .await
        .expect("DescribeAlarms answers");
    assert!(output.composite_alarms().is_empty());
    let alarms = output.metric_alarms();
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    alarms[0].clone()
}

async fn tags_of(client: &aws_sdk_cloudwatch::Client, arn: &str) -> Vec<(String, String)> {
    let mut tags: Vec<(String, String)> = client
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .expect("ListTagsForResource answers")
        .tags()
        .iter()
        .map(|tag| {
            (
                tag.key().expect("a tag has a key").to_owned(),
                tag.value().expect("a tag has a value").to_owned(),
            )
        })
        .collect();
    tags.sort();
    tags
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

fn evaluated<'a>(evaluations: &'a [EvaluatedAlarm], name: &str) -> &'a EvaluatedAlarm {
    evaluations
        .iter()
        .find(|evaluation| evaluation.alarm_name == name)
        .unwrap_or_else(|| panic!("{name} was not evaluated: {evaluations:?}"))
}

#[tokio::test]
async fn alarms_metric_math_alarm_round_trips_through_the_rust_sdk() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let client = cloudwatch(&emulator);
    put_utilization_alarm(&client, 90.0, tag("owner", "platform")).await;

    let alarm = described(&client, ALARM).await;
    let arn = format!("arn:aws:cloudwatch:{REGION}:123456789012:alarm:{ALARM}");
    assert_eq!(alarm.alarm_name(), Some(ALARM));
    assert_eq!(alarm.alarm_arn(), Some(arn.as_str()));
    assert_eq!(
        alarm.alarm_description(),
        Some("IP addresses of the cluster nearly exhausted")
    );
    assert_eq!(alarm.actions_enabled(), Some(true));
    assert_eq!(alarm.alarm_actions(), [TOPIC]);
    assert_eq!(alarm.ok_actions(), [TOPIC]);
    assert!(alarm.insufficient_data_actions().is_empty());
    assert_eq!(alarm.threshold(), Some(90.0));
    assert_eq!(
        alarm.comparison_operator(),
        Some(&ComparisonOperator::GreaterThanThreshold)
    );
    assert_eq!(alarm.evaluation_periods(), Some(1));
    assert_eq!(alarm.datapoints_to_alarm(), Some(1));
    assert_eq!(alarm.treat_missing_data(), Some("notBreaching"));
    assert_eq!(alarm.metrics(), utilization_queries().as_slice());
    assert_eq!(alarm.metric_name(), None);
    assert_eq!(alarm.namespace(), None);
    assert_eq!(alarm.statistic(), None);
    assert_eq!(alarm.period(), None);
    // A new alarm has not been evaluated yet.
    assert_eq!(alarm.state_value(), Some(&StateValue::InsufficientData));
    assert_eq!(
        alarm.state_reason(),
        Some("Unchecked: Initial alarm creation")
    );
    let now = DateTime::from(SystemTime::now()).secs();
    for stamp in [
        alarm.state_updated_timestamp(),
        alarm.state_transitioned_timestamp(),
        alarm.alarm_configuration_updated_timestamp(),
    ] {
        let stamp = stamp.expect("the alarm has its timestamps");
        assert!((now - stamp.secs()).abs() < 600, "{stamp:?}");
    }
    assert_eq!(
        tags_of(&client, &arn).await,
        [("owner".to_owned(), "platform".to_owned())]
    );

    // Evaluated over 95 of 100 addresses: ALARM, and DescribeAlarms says so.
    let minute = current_minute();
    put_value(&client, "assignIPAddresses", 95.0, minute - 30).await;
    put_value(&client, "maxIPAddresses", 100.0, minute - 30).await;
    let evaluations = emulator
        .evaluate_alarms(Some(at(minute)))
        .await
        .expect("the alarms are evaluated");
    let evaluation = evaluated(&evaluations, ALARM);
    assert_eq!(
        (
            evaluation.state.as_str(),
            evaluation.changed,
            evaluation.region.as_str()
        ),
        ("ALARM", true, REGION)
    );
    let alarm = described(&client, ALARM).await;
    assert_eq!(alarm.state_value(), Some(&StateValue::Alarm));
    assert_eq!(alarm.state_reason(), Some(evaluation.reason.as_str()));
    assert!(
        evaluation
            .reason
            .starts_with("Threshold Crossed: 1 out of the last 1 datapoints [95.0 ("),
        "{evaluation:?}"
    );
    let reason_data: Value = serde_json::from_str(
        alarm
            .state_reason_data()
            .expect("the evaluation left its data"),
    )
    .expect("StateReasonData is JSON");
    assert_eq!(reason_data["recentDatapoints"], serde_json::json!([95.0]));
    assert_eq!(
        alarm.state_transitioned_timestamp(),
        alarm.state_updated_timestamp()
    );

    // An update replaces the configuration, keeps the state and ignores the tags.
    put_utilization_alarm(&client, 97.5, tag("ignored", "on update")).await;
    let updated = described(&client, ALARM).await;
    assert_eq!(updated.threshold(), Some(97.5));
    assert_eq!(updated.state_value(), Some(&StateValue::Alarm));
    assert_eq!(
        updated.state_updated_timestamp(),
        alarm.state_updated_timestamp()
    );
    assert_eq!(
        tags_of(&client, &arn).await,
        [("owner".to_owned(), "platform".to_owned())]
    );
    client
        .tag_resource()
        .resource_arn(&arn)
        .tags(tag("team", "cni"))
        .send()
        .await
        .expect("TagResource is accepted");
    assert_eq!(
        tags_of(&client, &arn).await,
        [
            ("owner".to_owned(), "platform".to_owned()),
            ("team".to_owned(), "cni".to_owned())
        ]
    );
    // 95 is not above 97.5: back to OK.
    let evaluations = emulator
        .evaluate_alarms(Some(at(minute)))
        .await
        .expect("the alarms are evaluated");
    assert_eq!(evaluated(&evaluations, ALARM).state, "OK");

    // Per region: another region has none of it.
    let other = aws_sdk_cloudwatch::Client::new(&emulator.sdk_config(OTHER_REGION));
    let elsewhere = other
        .describe_alarms()
        .alarm_name_prefix("cni-")
        .send()
        .await
        .expect("DescribeAlarms answers");
    assert!(elsewhere.metric_alarms().is_empty(), "{elsewhere:?}");

    // Deleted, the alarm takes its tags along.
    client
        .delete_alarms()
        .alarm_names(ALARM)
        .send()
        .await
        .expect("DeleteAlarms is accepted");
    let gone = client
        .describe_alarms()
        .alarm_names(ALARM)
        .send()
        .await
        .expect("DescribeAlarms answers");
    assert!(gone.metric_alarms().is_empty());
    let untagged = client
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .expect_err("a deleted alarm has no tags to list")
        .into_service_error();
    assert!(untagged.is_resource_not_found_exception(), "{untagged:?}");
    put_utilization_alarm(&client, 90.0, tag("fresh", "yes")).await;
    assert_eq!(
        tags_of(&client, &arn).await,
        [("fresh".to_owned(), "yes".to_owned())]
    );

    // What the SDK sent is recorded; the evaluations are not.
    let actions: Vec<String> = emulator
        .recorded_requests()
        .expect("the recording reads")
        .into_iter()
        .filter_map(|request| request.action)
        .collect();
    assert_eq!(
        actions
            .iter()
            .filter(|action| *action == "PutMetricAlarm")
            .count(),
        3,
        "{actions:?}"
    );
    assert!(actions.iter().all(|action| !action.contains("valuate")));
    emulator.stop().expect("emulator stops");
}

#[tokio::test]
async fn alarms_describe_alarms_pages_in_name_order() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let client = cloudwatch(&emulator);
    for name in ["cni-c", "cni-a", "other", "cni-b"] {
        client
            .put_metric_alarm()
            .alarm_name(name)
            .namespace(NAMESPACE)
            .metric_name("ipamdErrInc")
            .dimensions(cluster_dimension())
            .statistic(Statistic::Sum)
            .period(60)
            .evaluation_periods(1)
            .threshold(0.0)
            .comparison_operator(ComparisonOperator::GreaterThanThreshold)
            .send()
            .await
            .expect("PutMetricAlarm is accepted");
    }
    let pages = client
        .describe_alarms()
        .alarm_name_prefix("cni-")
        .max_records(2)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("every page answers");
    let names: Vec<Vec<&str>> = pages
        .iter()
        .map(|page| {
            page.metric_alarms()
                .iter()
                .filter_map(MetricAlarm::alarm_name)
                .collect()
        })
        .collect();
    assert_eq!(names, [vec!["cni-a", "cni-b"], vec!["cni-c"]]);
    emulator.stop().expect("emulator stops");
}

#[tokio::test]
async fn alarms_are_evaluated_m_out_of_n_and_by_missing_data() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let client = cloudwatch(&emulator);
    let minute = current_minute();
    client
        .put_metric_alarm()
        .alarm_name("ipamd-errors")
        .namespace(NAMESPACE)
        .metric_name("ipamdErrInc")
        .dimensions(cluster_dimension())
        .statistic(Statistic::Average)
        .period(60)
        .evaluation_periods(3)
        .datapoints_to_alarm(2)
        .threshold(5.0)
        .comparison_operator(ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .expect("PutMetricAlarm is accepted");
    for treat in ["breaching", "notBreaching", "missing"] {
        client
            .put_metric_alarm()
            .alarm_name(format!("silent-{treat}"))
            .namespace(NAMESPACE)
            .metric_name("neverPublished")
            .statistic(Statistic::Maximum)
            .period(60)
            .evaluation_periods(3)
            .threshold(1.0)
            .comparison_operator(ComparisonOperator::LessThanThreshold)
            .treat_missing_data(treat)
            .send()
            .await
            .expect("PutMetricAlarm is accepted");
    }
    // Averages per minute, newest first: 8 (6 and 10), 1, 9.
    for (value, ago) in [(6.0, 40), (10.0, 20), (1.0, 90), (9.0, 150)] {
        put_value(&client, "ipamdErrInc", value, minute - ago).await;
    }
    let now = emulator
        .evaluate_alarms(Some(at(minute)))
        .await
        .expect("the alarms are evaluated");
    let errors = evaluated(&now, "ipamd-errors");
    assert_eq!((errors.state.as_str(), errors.changed), ("ALARM", true));
    assert!(
        errors
            .reason
            .starts_with("Threshold Crossed: 2 out of the last 3 datapoints [8.0 ("),
        "{errors:?}"
    );
    // Two minutes later only the 8 is left in the three periods: 1 of 3 is not enough.
    let later = emulator
        .evaluate_alarms(Some(at(minute + 120)))
        .await
        .expect("the alarms are evaluated");
    let errors = evaluated(&later, "ipamd-errors");
    assert_eq!((errors.state.as_str(), errors.changed), ("OK", true));

    // Three periods without data, as of the first evaluation.
    let silent = |treat: &str| {
        let evaluation = evaluated(&now, &format!("silent-{treat}"));
        (evaluation.state.clone(), evaluation.changed)
    };
    assert_eq!(silent("breaching"), ("ALARM".to_owned(), true));
    assert_eq!(silent("notBreaching"), ("OK".to_owned(), true));
    assert_eq!(silent("missing"), ("INSUFFICIENT_DATA".to_owned(), false));
    assert_eq!(
        described(&client, "silent-breaching").await.state_value(),
        Some(&StateValue::Alarm)
    );

    // The free function reaches the same emulator by its URL, and only on loopback.
    let again = evaluate_alarms_at(&emulator.endpoint_url(), None)
        .await
        .expect("evaluated by URL");
    assert_eq!(again.len(), 4, "{again:?}");
    let refused = evaluate_alarms_at("https://monitoring.us-west-2.amazonaws.com", None).await;
    assert!(
        matches!(refused, Err(EmulatorError::NotLoopback { .. })),
        "{refused:?}"
    );
    emulator.stop().expect("emulator stops");
}

#[tokio::test]
async fn alarms_boto3_puts_describes_updates_and_evaluates() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let said = run_python_fixture(
        "alarms_roundtrip.py",
        &[emulator.endpoint_url().as_str(), REGION, OTHER_REGION],
    )
    .await;
    assert_eq!(said["math"]["state"], "ALARM", "{said}");
    assert_eq!(said["no_data"]["no-data-breaching"]["state"], "ALARM");
    assert_eq!(said["no_data"]["no-data-notBreaching"]["state"], "OK");
    assert_eq!(
        said["no_data"]["no-data-missing"]["state"],
        "INSUFFICIENT_DATA"
    );
    assert_eq!(said["m_of_n"]["state"], "ALARM");
    assert_eq!(said["refused"]["long_name"], "ValidationError");
    // What boto3 left is what the Rust SDK reads.
    let client = cloudwatch(&emulator);
    assert_eq!(
        described(&client, "no-data-breaching").await.state_value(),
        Some(&StateValue::Alarm)
    );
    emulator.stop().expect("emulator stops");
}
