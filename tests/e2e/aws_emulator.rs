//! The AWS emulator against the real AWS SDK clients: CloudWatch through our CBOR
//! translation layer, IAM straight to moto. Every test starts its own emulator on a
//! port the OS picks, so the tests run in parallel and in any order.

use std::collections::BTreeMap;
use std::path::Path;

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, DimensionFilter, Metric, MetricDataQuery, MetricDatum,
    MetricStat, StandardUnit, Statistic,
};
use sandbox::aws_emulator::{AwsEmulator, DEFAULT_ACCOUNT_ID, EmulatorOptions};
use sandbox::python_tools::{PythonTools, workspace_root};
use serde_json::Value;

pub(crate) const REGION: &str = "us-west-2";
pub(crate) const NAMESPACE: &str = "Kubernetes";
const CLUSTER: &str = "sandbox-cluster";

pub(crate) async fn start_emulator(options: EmulatorOptions) -> AwsEmulator {
    let tools = PythonTools::find(&workspace_root()).unwrap_or_else(|error| panic!("{error}"));
    AwsEmulator::start(&tools, options)
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

/// A CloudWatch client of the emulator in [`REGION`].
pub(crate) fn cloudwatch(emulator: &AwsEmulator) -> aws_sdk_cloudwatch::Client {
    aws_sdk_cloudwatch::Client::new(&emulator.sdk_config(REGION))
}

fn iam(emulator: &AwsEmulator) -> aws_sdk_iam::Client {
    aws_sdk_iam::Client::new(&emulator.sdk_config(REGION))
}

/// Creates the IAM role `name` with a trust policy that trusts no one, and returns its ARN.
async fn create_role(client: &aws_sdk_iam::Client, name: &str) -> String {
    client
        .create_role()
        .role_name(name)
        .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[]}"#)
        .send()
        .await
        .expect("CreateRole is accepted")
        .role()
        .expect("the answer holds the role")
        .arn()
        .to_owned()
}

/// The `CLUSTER_ID` dimension of [`CLUSTER`], the cluster the tests publish metrics for.
pub(crate) fn cluster_dimension() -> Dimension {
    Dimension::builder()
        .name("CLUSTER_ID")
        .value(CLUSTER)
        .build()
}

/// The start of the current minute in epoch seconds. Each test reads it once and
/// derives every timestamp from it, so a minute boundary passing mid-test changes
/// nothing; whole minutes line the data up with GetMetricData's periods and the alarms'
/// one-minute periods.
pub(crate) fn current_minute() -> i64 {
    let now = DateTime::from(std::time::SystemTime::now()).secs();
    now - now.rem_euclid(60)
}

fn metric_stat_query(
    id: &str,
    metric_name: &str,
    dimensions: Vec<Dimension>,
    period: i32,
) -> MetricDataQuery {
    let metric = Metric::builder()
        .namespace(NAMESPACE)
        .metric_name(metric_name)
        .set_dimensions(Some(dimensions))
        .build();
    MetricDataQuery::builder()
        .id(id)
        .metric_stat(
            MetricStat::builder()
                .metric(metric)
                .period(period)
                .stat("Sum")
                .build(),
        )
        .build()
}

/// Runs the Python fixture `tests/e2e/fixtures/{name}` with `args` in the sandbox's Python
/// tools, asserts that it succeeded (its stderr otherwise), and returns the one JSON
/// document it printed.
pub(crate) async fn run_python_fixture(name: &str, args: &[&str]) -> Value {
    let tools = PythonTools::find(&workspace_root()).unwrap_or_else(|error| panic!("{error}"));
    let script = workspace_root().join("tests/e2e/fixtures").join(name);
    let output = tokio::process::Command::new(tools.python())
        .arg(&script)
        .args(args)
        .output()
        .await
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON document")
}

fn process_is_running(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn metric_data_round_trips_values_and_timestamps() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let client = cloudwatch(&emulator);
    let minute = current_minute();
    let minutes_ago = |minutes: i64| minute - minutes * 60;
    let points = [(5, 1.5), (4, 2.0), (3, 4.25)];

    let datums = points
        .iter()
        .map(|&(minutes, value)| {
            MetricDatum::builder()
                .metric_name("assignIPAddresses")
                .dimensions(cluster_dimension())
                .timestamp(DateTime::from_secs(minutes_ago(minutes)))
                .value(value)
                .unit(StandardUnit::Count)
                .build()
        })
        .collect::<Vec<_>>();
    client
        .put_metric_data()
        .namespace(NAMESPACE)
        .set_metric_data(Some(datums))
        .send()
        .await
        .expect("PutMetricData is accepted");

    let output = client
        .get_metric_data()
        .metric_data_queries(metric_stat_query(
            "assigned",
            "assignIPAddresses",
            vec![cluster_dimension()],
            60,
        ))
        .start_time(DateTime::from_secs(minutes_ago(10)))
        .end_time(DateTime::from_secs(minutes_ago(-1)))
        .send()
        .await
        .expect("GetMetricData answers");
    let results = output.metric_data_results();
    assert_eq!(results.len(), 1, "{results:?}");
    let result = &results[0];
    assert_eq!(result.id(), Some("assigned"));
    let mut returned: Vec<(i64, f64)> = result
        .timestamps()
        .iter()
        .map(DateTime::secs)
        .zip(result.values().iter().copied())
        .collect();
    returned.sort_by_key(|&(timestamp, _)| timestamp);
    let expected: Vec<(i64, f64)> = points
        .iter()
        .map(|&(minutes, value)| (minutes_ago(minutes), value))
        .collect();
    assert_eq!(returned, expected);
    emulator.stop().expect("emulator stops");
}

fn recorded_put_metric_data(emulator: &AwsEmulator) -> usize {
    emulator
        .recorded_requests()
        .expect("recording is readable")
        .iter()
        .filter(|request| request.action.as_deref() == Some("PutMetricData"))
        .count()
}

fn count_datum(value: f64) -> MetricDatum {
    MetricDatum::builder()
        .metric_name("assignIPAddresses")
        .dimensions(cluster_dimension())
        .value(value)
        .unit(StandardUnit::Count)
        .build()
}

#[tokio::test]
async fn put_metric_data_refuses_out_of_range_values_like_cloudwatch() {
    use aws_sdk_cloudwatch::error::ProvideErrorMetadata;
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let client = cloudwatch(&emulator);
    let put = |values: Vec<f64>| {
        client
            .put_metric_data()
            .namespace(NAMESPACE)
            .set_metric_data(Some(values.into_iter().map(count_datum).collect()))
            .send()
    };
    // The edges of CloudWatch's range, and zero, are accepted.
    put(vec![0.0, 1.0e108, -1.0e108, 1.0e-108, -1.0e-108, 42.0])
        .await
        .expect("values within CloudWatch's range are accepted");
    assert_eq!(recorded_put_metric_data(&emulator), 1);

    for (values, member) in [
        (vec![1.0, 1.0e200], "MetricData.member.2.Value"),
        (vec![1.0e-200, 1.0], "MetricData.member.1.Value"),
        (vec![2.0, 3.0, -1.0e109], "MetricData.member.3.Value"),
    ] {
        let error = put(values.clone())
            .await
            .expect_err("an out-of-range value fails the call");
        let service = error
            .as_service_error()
            .unwrap_or_else(|| panic!("{values:?}: not a service error: {error:?}"));
        assert_eq!(service.code(), Some("InvalidParameterValue"), "{values:?}");
        let message = service.message().unwrap_or_default();
        assert!(
            message.contains(member) && message.contains("out of range"),
            "{values:?}: {message}"
        );
    }
    // Refused calls never reach moto, so nothing of them is stored or recorded.
    assert_eq!(recorded_put_metric_data(&emulator), 1);
    emulator.stop().expect("emulator stops");
}

#[tokio::test]
async fn a_cloudwatch_hang_holds_put_metric_data_until_it_ends() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let client = cloudwatch(&emulator);
    let put = || {
        client
            .put_metric_data()
            .namespace(NAMESPACE)
            .metric_data(count_datum(1.0))
            .send()
    };

    // A 2 s hang: the first attempt is held, answered 503 and not stored; the SDK's retry
    // after the hang is stored. Exactly one copy ends up recorded.
    emulator
        .hang_cloudwatch(std::time::Duration::from_secs(2))
        .await
        .expect("the hang knob answers");
    let started = std::time::Instant::now();
    put()
        .await
        .expect("the SDK's retry succeeds after the hang");
    let held = started.elapsed();
    assert!(
        held >= std::time::Duration::from_millis(1500),
        "the call returned after {held:?}, during the hang"
    );
    assert_eq!(recorded_put_metric_data(&emulator), 1);

    // A long hang ended early: the held call completes soon after the hang is ended.
    emulator
        .hang_cloudwatch(std::time::Duration::from_secs(600))
        .await
        .expect("the hang knob answers");
    let started = std::time::Instant::now();
    let (put_result, ()) = tokio::join!(put(), async {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        emulator
            .hang_cloudwatch(std::time::Duration::ZERO)
            .await
            .expect("ending the hang answers");
    });
    put_result.expect("the call succeeds once the hang ended");
    let held = started.elapsed();
    assert!(
        held >= std::time::Duration::from_millis(800) && held < std::time::Duration::from_secs(60),
        "the call took {held:?}"
    );
    assert_eq!(recorded_put_metric_data(&emulator), 2);
    emulator.stop().expect("emulator stops");
}

#[tokio::test]
async fn a_thousand_datums_in_one_compressed_call_are_all_stored() {
    const DATUMS: usize = 1000;
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let client = cloudwatch(&emulator);
    let minute = current_minute();
    let timestamp = DateTime::from_secs(minute - 120);
    let index_dimension = |index: usize| {
        Dimension::builder()
            .name("Index")
            .value(format!("{index:04}"))
            .build()
    };

    let datums = (0..DATUMS)
        .map(|index| {
            MetricDatum::builder()
                .metric_name("bulk")
                .dimensions(index_dimension(index))
                .timestamp(timestamp)
                .value(index as f64 + 0.5)
                .build()
        })
        .collect::<Vec<_>>();
    // About 60 KB of CBOR: far above the SDK's 10 KiB threshold, so it is gzipped.
    client
        .put_metric_data()
        .namespace(NAMESPACE)
        .set_metric_data(Some(datums))
        .send()
        .await
        .expect("PutMetricData of 1000 datums is accepted");

    let recorded = emulator.recorded_requests().expect("recording is readable");
    let puts: Vec<_> = recorded
        .iter()
        .filter(|request| request.action.as_deref() == Some("PutMetricData"))
        .collect();
    assert_eq!(puts.len(), 1, "one call on the wire");
    assert_eq!(
        puts[0]
            .headers
            .get("x-cbor-shim-original-content-encoding")
            .map(String::as_str),
        Some("gzip"),
        "the SDK compresses a large PutMetricData"
    );
    let body = puts[0].json_body().expect("translated body is JSON");
    assert_eq!(body["MetricData"].as_array().map(Vec::len), Some(DATUMS));

    // 500 queries per call is CloudWatch's limit; stay within it.
    let mut values_by_index = BTreeMap::new();
    for chunk_start in (0..DATUMS).step_by(500) {
        let queries = (chunk_start..chunk_start + 500)
            .map(|index| {
                metric_stat_query(
                    &format!("q{index}"),
                    "bulk",
                    vec![index_dimension(index)],
                    300,
                )
            })
            .collect::<Vec<_>>();
        let output = client
            .get_metric_data()
            .set_metric_data_queries(Some(queries))
            .start_time(DateTime::from_secs(minute - 240))
            .end_time(DateTime::from_secs(minute + 60))
            .send()
            .await
            .expect("GetMetricData answers");
        for result in output.metric_data_results() {
            let index: usize = result
                .id()
                .and_then(|id| id.strip_prefix('q'))
                .and_then(|index| index.parse().ok())
                .expect("query ids are q<index>");
            let sum: f64 = result.values().iter().sum();
            values_by_index.insert(index, sum);
        }
    }
    assert_eq!(values_by_index.len(), DATUMS);
    for (index, value) in values_by_index {
        assert_eq!(value, index as f64 + 0.5, "datum {index}");
    }
    emulator.stop().expect("emulator stops");
}

#[tokio::test]
async fn dashboards_are_stored_returned_and_deleted() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let client = cloudwatch(&emulator);
    let body = r#"{"widgets":[{"type":"metric","x":0,"y":0,"width":12,"height":6,"properties":{"metrics":[["Kubernetes","assignIPAddresses","CLUSTER_ID","c"]],"region":"us-west-2","title":"IPs"}}]}"#;

    client
        .put_dashboard()
        .dashboard_name("cni-metrics")
        .dashboard_body(body)
        .send()
        .await
        .expect("PutDashboard is accepted");
    let fetched = client
        .get_dashboard()
        .dashboard_name("cni-metrics")
        .send()
        .await
        .expect("GetDashboard finds it");
    assert_eq!(fetched.dashboard_body(), Some(body));
    assert_eq!(fetched.dashboard_name(), Some("cni-metrics"));

    let missing = client
        .get_dashboard()
        .dashboard_name("no-such-dashboard")
        .send()
        .await
        .expect_err("a missing dashboard is an error");
    let service_error = missing
        .as_service_error()
        .expect("a modelled service error");
    assert!(
        service_error.is_dashboard_not_found_error(),
        "{service_error:?}"
    );

    let listed = client
        .list_dashboards()
        .send()
        .await
        .expect("ListDashboards answers");
    let names: Vec<_> = listed
        .dashboard_entries()
        .iter()
        .filter_map(|entry| entry.dashboard_name())
        .collect();
    assert_eq!(names, ["cni-metrics"]);
    assert!(listed.dashboard_entries()[0].last_modified().is_some());

    client
        .delete_dashboards()
        .dashboard_names("cni-metrics")
        .send()
        .await
        .expect("DeleteDashboards is accepted");
    let gone = client
        .get_dashboard()
        .dashboard_name("cni-metrics")
        .send()
        .await
        .expect_err("a deleted dashboard is gone");
    assert!(
        gone.as_service_error()
            .is_some_and(|error| error.is_dashboard_not_found_error()),
        "{gone:?}"
    );
    emulator.stop().expect("emulator stops");
}

fn dashboard_names(
    listed: &aws_sdk_cloudwatch::operation::list_dashboards::ListDashboardsOutput,
) -> Vec<String> {
    listed
        .dashboard_entries()
        .iter()
        .filter_map(|entry| entry.dashboard_name().map(str::to_owned))
        .collect()
}

/// CloudWatch dashboards are global per account, not per region, as on AWS: the same name
/// put from two regions is one dashboard. moto keeps them per region; the sandbox does
/// not, so that a collision real AWS would have shows up in tests. boto3, a client we did
/// not write, sees the same.
#[tokio::test]
async fn dashboards_are_global_per_account_as_on_aws() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let west = aws_sdk_cloudwatch::Client::new(&emulator.sdk_config("us-west-2"));
    let ireland = aws_sdk_cloudwatch::Client::new(&emulator.sdk_config("eu-west-1"));
    let beijing = aws_sdk_cloudwatch::Client::new(&emulator.sdk_config("cn-north-1"));
    let body = |region: &str| {
        format!(
            r#"{{"widgets":[{{"type":"text","x":0,"y":0,"width":6,"height":2,"properties":{{"markdown":"from {region}"}}}}]}}"#
        )
    };
    west.put_dashboard()
        .dashboard_name("shared")
        .dashboard_body(body("us-west-2"))
        .send()
        .await
        .expect("put from us-west-2");
    let seen = ireland
        .get_dashboard()
        .dashboard_name("shared")
        .send()
        .await
        .expect("eu-west-1 sees the dashboard put from us-west-2");
    assert_eq!(seen.dashboard_body(), Some(body("us-west-2").as_str()));
    assert_eq!(
        dashboard_names(&ireland.list_dashboards().send().await.expect("listed")),
        ["shared"]
    );
    // A put from the other region replaces the one dashboard, as it would on AWS.
    ireland
        .put_dashboard()
        .dashboard_name("shared")
        .dashboard_body(body("eu-west-1"))
        .send()
        .await
        .expect("put from eu-west-1");
    let seen = west
        .get_dashboard()
        .dashboard_name("shared")
        .send()
        .await
        .expect("still one dashboard");
    assert_eq!(seen.dashboard_body(), Some(body("eu-west-1").as_str()));
    // Another partition is another set of accounts.
    assert!(dashboard_names(&beijing.list_dashboards().send().await.expect("listed")).is_empty());

    let tools = PythonTools::find(&workspace_root()).unwrap_or_else(|error| panic!("{error}"));
    let script = "import boto3, json, sys\n\
        client = boto3.client('cloudwatch', region_name='ap-southeast-2', endpoint_url=sys.argv[1],\n\
            aws_access_key_id='testing', aws_secret_access_key='testing')\n\
        print(json.dumps([d['DashboardName'] for d in client.list_dashboards()['DashboardEntries']]))\n";
    let output = std::process::Command::new(tools.python())
        .args(["-c", script, &emulator.endpoint_url()])
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        r#"["shared"]"#
    );

    ireland
        .delete_dashboards()
        .dashboard_names("shared")
        .send()
        .await
        .expect("deleted from eu-west-1");
    assert!(
        west.get_dashboard()
            .dashboard_name("shared")
            .send()
            .await
            .is_err(),
        "gone everywhere"
    );

    // A reset empties the shared table too.
    west.put_dashboard()
        .dashboard_name("before-reset")
        .dashboard_body(body("us-west-2"))
        .send()
        .await
        .expect("put");
    emulator.reset().await.expect("reset");
    assert!(dashboard_names(&ireland.list_dashboards().send().await.expect("listed")).is_empty());
    emulator.stop().expect("emulator stops");
}

#[tokio::test]
async fn invalid_dashboard_json_is_a_typed_error() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let error = cloudwatch(&emulator)
        .put_dashboard()
        .dashboard_name("broken")
        .dashboard_body("{not json")
        .send()
        .await
        .expect_err("invalid JSON is refused");
    let service_error = error.as_service_error().expect("a modelled service error");
    assert!(
        service_error.is_dashboard_invalid_input_error(),
        "{service_error:?}"
    );
    emulator.stop().expect("emulator stops");
}

#[tokio::test]
async fn alarms_are_described_as_they_were_put() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let client = cloudwatch(&emulator);
    client
        .put_metric_alarm()
        .alarm_name("ipamd-errors")
        .namespace(NAMESPACE)
        .metric_name("ipamdErr")
        .dimensions(cluster_dimension())
        .statistic(Statistic::Sum)
        .period(60)
        .evaluation_periods(3)
        .threshold(2.5)
        .comparison_operator(ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .expect("PutMetricAlarm is accepted");

    let output = client
        .describe_alarms()
        .alarm_names("ipamd-errors")
        .send()
        .await
        .expect("DescribeAlarms answers");
    let alarms = output.metric_alarms();
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    let alarm = &alarms[0];
    assert_eq!(alarm.alarm_name(), Some("ipamd-errors"));
    assert_eq!(alarm.metric_name(), Some("ipamdErr"));
    assert_eq!(alarm.threshold(), Some(2.5));
    assert_eq!(alarm.evaluation_periods(), Some(3));
    assert_eq!(alarm.period(), Some(60));
    assert_eq!(
        alarm.comparison_operator(),
        Some(&ComparisonOperator::GreaterThanThreshold)
    );
    assert_eq!(alarm.dimensions(), [cluster_dimension()]);
    let updated = alarm
        .state_updated_timestamp()
        .expect("the alarm has a state timestamp");
    let age = DateTime::from(std::time::SystemTime::now()).secs() - updated.secs();
    assert!((0..3600).contains(&age), "state updated {age} s ago");
    emulator.stop().expect("emulator stops");
}

#[tokio::test]
async fn list_metrics_finds_what_was_put() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let client = cloudwatch(&emulator);
    let datums = ["totalIPAddresses", "eniAllocated"]
        .into_iter()
        .map(|name| {
            MetricDatum::builder()
                .metric_name(name)
                .dimensions(cluster_dimension())
                .value(3.0)
                .build()
        })
        .collect::<Vec<_>>();
    client
        .put_metric_data()
        .namespace(NAMESPACE)
        .set_metric_data(Some(datums))
        .send()
        .await
        .expect("PutMetricData is accepted");

    let output = client
        .list_metrics()
        .namespace(NAMESPACE)
        .dimensions(
            DimensionFilter::builder()
                .name("CLUSTER_ID")
                .value(CLUSTER)
                .build(),
        )
        .send()
        .await
        .expect("ListMetrics answers");
    let mut names: Vec<_> = output
        .metrics()
        .iter()
        .filter_map(|metric| metric.metric_name())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["eniAllocated", "totalIPAddresses"]);
    emulator.stop().expect("emulator stops");
}

#[tokio::test]
async fn the_recording_counts_mutating_calls_and_reset_wipes_state() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let cloudwatch = cloudwatch(&emulator);
    let iam = iam(&emulator);
    let policy_document = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"cloudwatch:PutMetricData","Resource":"*"}]}"#;

    // Calls made before the clear must not be counted.
    cloudwatch
        .list_dashboards()
        .send()
        .await
        .expect("ListDashboards answers");
    emulator.clear_recording().expect("recording is cleared");
    assert_eq!(emulator.recorded_requests().expect("readable"), []);

    for name in ["one", "two"] {
        cloudwatch
            .put_dashboard()
            .dashboard_name(name)
            .dashboard_body("{}")
            .send()
            .await
            .expect("PutDashboard is accepted");
    }
    for name in ["one", "two", "one"] {
        cloudwatch
            .get_dashboard()
            .dashboard_name(name)
            .send()
            .await
            .expect("GetDashboard finds it");
    }
    let policy = iam
        .create_policy()
        .policy_name("cni-metrics-helper")
        .policy_document(policy_document)
        .send()
        .await
        .expect("CreatePolicy is accepted");
    let policy_arn = policy
        .policy()
        .and_then(|policy| policy.arn())
        .expect("the new policy has an ARN")
        .to_owned();
    assert!(policy_arn.contains(DEFAULT_ACCOUNT_ID), "{policy_arn}");
    iam.get_policy()
        .policy_arn(&policy_arn)
        .send()
        .await
        .expect("GetPolicy finds it");

    let recorded = emulator.recorded_requests().expect("recording is readable");
    let calls: Vec<(Option<&str>, Option<&str>)> = recorded
        .iter()
        .map(|request| (request.service.as_deref(), request.action.as_deref()))
        .collect();
    assert_eq!(
        calls,
        [
            (Some("monitoring"), Some("PutDashboard")),
            (Some("monitoring"), Some("PutDashboard")),
            (Some("monitoring"), Some("GetDashboard")),
            (Some("monitoring"), Some("GetDashboard")),
            (Some("monitoring"), Some("GetDashboard")),
            (Some("iam"), Some("CreatePolicy")),
            (Some("iam"), Some("GetPolicy")),
        ]
    );
    let mutating: Vec<_> = recorded
        .iter()
        .filter(|request| request.is_mutating())
        .filter_map(|request| request.action.as_deref())
        .collect();
    assert_eq!(mutating, ["PutDashboard", "PutDashboard", "CreatePolicy"]);

    emulator.reset().await.expect("reset is accepted");
    let dashboard = cloudwatch
        .get_dashboard()
        .dashboard_name("one")
        .send()
        .await;
    assert!(
        dashboard
            .as_ref()
            .err()
            .and_then(|error| error.as_service_error())
            .is_some_and(|error| error.is_dashboard_not_found_error()),
        "dashboards survive a reset: {dashboard:?}"
    );
    let policy = iam.get_policy().policy_arn(&policy_arn).send().await;
    assert!(
        policy
            .as_ref()
            .err()
            .and_then(|error| error.as_service_error())
            .is_some_and(|error| error.is_no_such_entity_exception()),
        "policies survive a reset: {policy:?}"
    );
    emulator.stop().expect("emulator stops");
}

#[tokio::test]
async fn two_emulators_run_side_by_side_independently() {
    let (first, second) = tokio::join!(
        start_emulator(EmulatorOptions::default()),
        start_emulator(EmulatorOptions::default().with_account_id("111122223333")),
    );
    assert_ne!(first.endpoint_url(), second.endpoint_url());
    assert_ne!(first.pid(), second.pid());

    cloudwatch(&first)
        .put_dashboard()
        .dashboard_name("only-in-first")
        .dashboard_body("{}")
        .send()
        .await
        .expect("PutDashboard is accepted");
    let in_second = cloudwatch(&second)
        .get_dashboard()
        .dashboard_name("only-in-first")
        .send()
        .await;
    assert!(in_second.is_err(), "state leaked between emulators");

    let role_arn = |emulator: &AwsEmulator| {
        let client = iam(emulator);
        async move { create_role(&client, "cni-metrics-helper").await }
    };
    let (first_arn, second_arn) = tokio::join!(role_arn(&first), role_arn(&second));
    assert_eq!(
        first_arn,
        "arn:aws:iam::123456789012:role/cni-metrics-helper"
    );
    assert_eq!(
        second_arn,
        "arn:aws:iam::111122223333:role/cni-metrics-helper"
    );
    assert_eq!(first.recorded_requests().expect("readable").len(), 2);
    assert_eq!(second.recorded_requests().expect("readable").len(), 2);

    first.stop().expect("first emulator stops");
    second.stop().expect("second emulator stops");
}

#[tokio::test]
async fn stop_and_drop_leave_no_process_behind() {
    let stopped = start_emulator(EmulatorOptions::default()).await;
    let stopped_pid = stopped.pid();
    let stopped_dir = stopped.dir().to_path_buf();
    assert!(process_is_running(stopped_pid));
    stopped.stop().expect("emulator stops");
    assert!(
        !process_is_running(stopped_pid),
        "pid {stopped_pid} survived stop"
    );
    assert!(!stopped_dir.exists(), "the temporary directory is removed");

    let dropped = start_emulator(EmulatorOptions::default()).await;
    let dropped_pid = dropped.pid();
    drop(dropped);
    assert!(
        !process_is_running(dropped_pid),
        "pid {dropped_pid} survived drop"
    );
}

#[test]
fn ensure_is_a_no_op_when_the_tools_are_current() {
    // find() succeeding means the stamp matches, so ensure() must not install anything.
    let found = PythonTools::find(&workspace_root()).unwrap_or_else(|error| panic!("{error}"));
    let ensured = PythonTools::ensure(&workspace_root()).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(found, ensured);
    assert!(ensured.python().exists());
    assert!(ensured.bin("moto_server").exists());
}

fn eks(emulator: &AwsEmulator) -> aws_sdk_eks::Client {
    aws_sdk_eks::Client::new(&emulator.sdk_config(REGION))
}

/// Creates an EKS cluster in moto, as the sandbox does.
async fn create_cluster(emulator: &AwsEmulator, name: &str) {
    eks(emulator)
        .create_cluster()
        .name(name)
        .role_arn(format!(
            "arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/eks-cluster"
        ))
        .resources_vpc_config(
            aws_sdk_eks::types::VpcConfigRequest::builder()
                .subnet_ids("subnet-0a")
                .build(),
        )
        .send()
        .await
        .expect("CreateCluster is accepted");
}

fn role(name: &str) -> String {
    format!("arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/{name}")
}

#[tokio::test]
async fn pod_identity_associations_are_created_listed_updated_and_deleted() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let client = eks(&emulator);
    create_cluster(&emulator, CLUSTER).await;

    let created = client
        .create_pod_identity_association()
        .cluster_name(CLUSTER)
        .namespace("kube-system")
        .service_account("cni-metrics-helper")
        .role_arn(role("cni-metrics-helper"))
        .tags("app.kubernetes.io/managed-by", "cni-metrics-helper")
        .send()
        .await
        .expect("CreatePodIdentityAssociation is accepted")
        .association
        .expect("the answer has the association");
    let id = created.association_id().expect("an id").to_owned();
    let suffix = id.strip_prefix("a-").expect("ids start with a-");
    assert_eq!(suffix.len(), 17, "{id}");
    assert!(
        suffix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "{id}"
    );
    assert_eq!(
        created.association_arn(),
        Some(
            format!(
                "arn:aws:eks:{REGION}:{DEFAULT_ACCOUNT_ID}:podidentityassociation/{CLUSTER}/{id}"
            )
            .as_str()
        )
    );
    assert_eq!(created.cluster_name(), Some(CLUSTER));
    assert_eq!(created.namespace(), Some("kube-system"));
    assert_eq!(created.service_account(), Some("cni-metrics-helper"));
    assert_eq!(
        created.role_arn(),
        Some(role("cni-metrics-helper").as_str())
    );
    assert_eq!(
        created
            .tags()
            .and_then(|tags| tags.get("app.kubernetes.io/managed-by"))
            .map(String::as_str),
        Some("cni-metrics-helper")
    );
    let created_at = created.created_at().expect("createdAt");
    assert_eq!(created.modified_at(), Some(created_at));

    // The same service account again is a conflict; an unknown cluster is not found.
    let duplicate = client
        .create_pod_identity_association()
        .cluster_name(CLUSTER)
        .namespace("kube-system")
        .service_account("cni-metrics-helper")
        .role_arn(role("other"))
        .send()
        .await
        .expect_err("a second association for one service account is refused");
    assert!(
        duplicate
            .as_service_error()
            .is_some_and(|error| error.is_resource_in_use_exception()),
        "{duplicate:?}"
    );
    let unknown = client
        .create_pod_identity_association()
        .cluster_name("no-such-cluster")
        .namespace("kube-system")
        .service_account("cni-metrics-helper")
        .role_arn(role("cni-metrics-helper"))
        .send()
        .await
        .expect_err("an unknown cluster is refused");
    assert!(
        unknown
            .as_service_error()
            .is_some_and(|error| error.is_resource_not_found_exception()),
        "{unknown:?}"
    );

    // A second association, to see filters and pages.
    client
        .create_pod_identity_association()
        .cluster_name(CLUSTER)
        .namespace("monitoring")
        .service_account("cni-metrics-helper")
        .role_arn(role("cni-metrics-helper"))
        .send()
        .await
        .expect("another namespace is fine");
    let in_kube_system = client
        .list_pod_identity_associations()
        .cluster_name(CLUSTER)
        .namespace("kube-system")
        .service_account("cni-metrics-helper")
        .send()
        .await
        .expect("ListPodIdentityAssociations answers");
    let summaries = in_kube_system.associations();
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].association_id(), Some(id.as_str()));
    assert_eq!(summaries[0].namespace(), Some("kube-system"));
    assert_eq!(in_kube_system.next_token(), None);
    let mut pages = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .list_pod_identity_associations()
            .cluster_name(CLUSTER)
            .max_results(1)
            .set_next_token(token.clone())
            .send()
            .await
            .expect("a page");
        pages.extend(
            page.associations()
                .iter()
                .filter_map(|summary| summary.namespace().map(str::to_owned)),
        );
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, ["kube-system", "monitoring"]);

    // Describe, update, delete.
    let described = client
        .describe_pod_identity_association()
        .cluster_name(CLUSTER)
        .association_id(&id)
        .send()
        .await
        .expect("DescribePodIdentityAssociation finds it")
        .association
        .expect("an association");
    assert_eq!(described, created);
    let updated = client
        .update_pod_identity_association()
        .cluster_name(CLUSTER)
        .association_id(&id)
        .role_arn(role("replacement"))
        .send()
        .await
        .expect("UpdatePodIdentityAssociation is accepted")
        .association
        .expect("an association");
    assert_eq!(updated.role_arn(), Some(role("replacement").as_str()));
    assert_eq!(updated.created_at(), Some(created_at));
    assert!(updated.modified_at().is_some_and(|at| at >= created_at));
    let deleted = client
        .delete_pod_identity_association()
        .cluster_name(CLUSTER)
        .association_id(&id)
        .send()
        .await
        .expect("DeletePodIdentityAssociation is accepted")
        .association
        .expect("an association");
    assert_eq!(deleted.association_id(), Some(id.as_str()));
    let gone = client
        .describe_pod_identity_association()
        .cluster_name(CLUSTER)
        .association_id(&id)
        .send()
        .await
        .expect_err("deleted");
    assert!(
        gone.as_service_error()
            .is_some_and(|error| error.is_resource_not_found_exception()),
        "{gone:?}"
    );
    let remaining = client
        .list_pod_identity_associations()
        .cluster_name(CLUSTER)
        .send()
        .await
        .expect("a list");
    assert_eq!(remaining.associations().len(), 1);
    emulator.stop().expect("emulator stops");
}

/// TagResource on an association's ARN is answered by the emulation (moto knows only
/// cluster tags); on a cluster's ARN it still reaches moto.
#[tokio::test]
async fn pod_identity_associations_can_be_tagged() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let client = eks(&emulator);
    create_cluster(&emulator, CLUSTER).await;
    let created = client
        .create_pod_identity_association()
        .cluster_name(CLUSTER)
        .namespace("kube-system")
        .service_account("cni-metrics-helper")
        .role_arn(role("someone-elses"))
        .tags("team", "network")
        .send()
        .await
        .expect("created")
        .association
        .expect("association");
    let arn = created.association_arn().expect("arn");
    client
        .tag_resource()
        .resource_arn(arn)
        .tags("managed-by", "cni-metrics-xtask")
        .send()
        .await
        .expect("TagResource is accepted");
    let described = client
        .describe_pod_identity_association()
        .cluster_name(CLUSTER)
        .association_id(created.association_id().expect("id"))
        .send()
        .await
        .expect("described")
        .association
        .expect("association");
    let tags: BTreeMap<&str, &str> = described
        .tags()
        .expect("tags")
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    assert_eq!(
        tags,
        BTreeMap::from([("managed-by", "cni-metrics-xtask"), ("team", "network")])
    );
    // boto3, a client we did not write, tags and reads the association the same way.
    let tools = PythonTools::find(&workspace_root()).unwrap_or_else(|error| panic!("{error}"));
    let script = "import boto3, json, sys\n\
        eks = boto3.client('eks', region_name=sys.argv[2], endpoint_url=sys.argv[1],\n\
            aws_access_key_id='testing', aws_secret_access_key='testing')\n\
        eks.tag_resource(resourceArn=sys.argv[3], tags={'owner': 'boto3'})\n\
        found = eks.describe_pod_identity_association(clusterName=sys.argv[4], associationId=sys.argv[5])\n\
        print(json.dumps(found['association']['tags'], sort_keys=True))\n";
    let output = std::process::Command::new(tools.python())
        .args([
            "-c",
            script,
            &emulator.endpoint_url(),
            REGION,
            arn,
            CLUSTER,
            created.association_id().expect("id"),
        ])
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        r#"{"managed-by": "cni-metrics-xtask", "owner": "boto3", "team": "network"}"#
    );
    let empty = client
        .tag_resource()
        .resource_arn(arn)
        .set_tags(Some(std::collections::HashMap::new()))
        .send()
        .await;
    assert!(empty.is_err(), "EKS refuses an empty tag map");

    let cluster_arn = client
        .describe_cluster()
        .name(CLUSTER)
        .send()
        .await
        .expect("described")
        .cluster
        .and_then(|cluster| cluster.arn)
        .expect("arn");
    client
        .tag_resource()
        .resource_arn(&cluster_arn)
        .tags("team", "network")
        .send()
        .await
        .expect("moto tags the cluster");
    let cluster_tags = client
        .list_tags_for_resource()
        .resource_arn(&cluster_arn)
        .send()
        .await
        .expect("listed");
    assert_eq!(
        cluster_tags
            .tags()
            .and_then(|tags| tags.get("team"))
            .map(String::as_str),
        Some("network")
    );
    emulator.stop().expect("emulator stops");
}

#[tokio::test]
async fn addons_are_active_at_once_and_missing_ones_are_not_found() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let client = eks(&emulator);
    create_cluster(&emulator, CLUSTER).await;
    let addon = "eks-pod-identity-agent";

    let missing = client
        .describe_addon()
        .cluster_name(CLUSTER)
        .addon_name(addon)
        .send()
        .await
        .expect_err("no add-on yet");
    assert!(
        missing
            .as_service_error()
            .is_some_and(|error| error.is_resource_not_found_exception()),
        "{missing:?}"
    );

    let created = client
        .create_addon()
        .cluster_name(CLUSTER)
        .addon_name(addon)
        .addon_version("v1.3.4-eksbuild.1")
        .send()
        .await
        .expect("CreateAddon is accepted")
        .addon
        .expect("an add-on");
    assert_eq!(
        created.status(),
        Some(&aws_sdk_eks::types::AddonStatus::Active)
    );
    assert_eq!(created.addon_version(), Some("v1.3.4-eksbuild.1"));
    assert!(
        created
            .addon_arn()
            .is_some_and(|arn| arn.starts_with(&format!(
                "arn:aws:eks:{REGION}:{DEFAULT_ACCOUNT_ID}:addon/{CLUSTER}/{addon}/"
            ))),
        "{created:?}"
    );
    let again = client
        .create_addon()
        .cluster_name(CLUSTER)
        .addon_name(addon)
        .send()
        .await
        .expect_err("installed already");
    assert!(
        again
            .as_service_error()
            .is_some_and(|error| error.is_resource_in_use_exception()),
        "{again:?}"
    );
    let described = client
        .describe_addon()
        .cluster_name(CLUSTER)
        .addon_name(addon)
        .send()
        .await
        .expect("DescribeAddon finds it")
        .addon
        .expect("an add-on");
    assert_eq!(described, created);
    let listed = client
        .list_addons()
        .cluster_name(CLUSTER)
        .send()
        .await
        .expect("ListAddons answers");
    assert_eq!(listed.addons(), [addon]);

    // The control API can make the add-on unhealthy.
    emulator
        .set_addon_status(CLUSTER, addon, "DEGRADED")
        .await
        .expect("the status is set");
    let degraded = client
        .describe_addon()
        .cluster_name(CLUSTER)
        .addon_name(addon)
        .send()
        .await
        .expect("DescribeAddon finds it")
        .addon
        .expect("an add-on");
    assert_eq!(
        degraded.status(),
        Some(&aws_sdk_eks::types::AddonStatus::Degraded)
    );
    let bad_status = emulator
        .set_addon_status(CLUSTER, addon, "SLEEPY")
        .await
        .expect_err("not an AddonStatus");
    assert!(
        matches!(
            bad_status,
            sandbox::aws_emulator::EmulatorError::ControlRefused { status: 400, .. }
        ),
        "{bad_status}"
    );

    client
        .delete_addon()
        .cluster_name(CLUSTER)
        .addon_name(addon)
        .send()
        .await
        .expect("DeleteAddon is accepted");
    let listed = client
        .list_addons()
        .cluster_name(CLUSTER)
        .send()
        .await
        .expect("ListAddons answers");
    assert!(listed.addons().is_empty());
    let unknown_cluster = client
        .list_addons()
        .cluster_name("no-such-cluster")
        .send()
        .await
        .expect_err("unknown cluster");
    assert!(
        unknown_cluster
            .as_service_error()
            .is_some_and(|error| error.is_resource_not_found_exception()),
        "{unknown_cluster:?}"
    );
    emulator.stop().expect("emulator stops");
}

#[tokio::test]
async fn describe_cluster_reports_the_endpoint_the_sandbox_sets_until_a_reset() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let client = eks(&emulator);
    create_cluster(&emulator, CLUSTER).await;
    let endpoint = |client: aws_sdk_eks::Client| async move {
        client
            .describe_cluster()
            .name(CLUSTER)
            .send()
            .await
            .expect("DescribeCluster answers")
            .cluster
            .and_then(|cluster| cluster.endpoint)
            .expect("an endpoint")
    };
    let default = endpoint(client.clone()).await;
    assert!(default.ends_with(".eks.amazonaws.com/"), "{default}");

    emulator
        .set_cluster_endpoint(CLUSTER, "http://127.0.0.1:6443")
        .await
        .expect("the endpoint is set");
    assert_eq!(endpoint(client.clone()).await, "http://127.0.0.1:6443");
    let unknown = emulator
        .set_cluster_endpoint("no-such-cluster", "http://127.0.0.1:6443")
        .await
        .expect_err("unknown cluster");
    assert!(
        matches!(
            unknown,
            sandbox::aws_emulator::EmulatorError::ControlRefused { status: 404, .. }
        ),
        "{unknown}"
    );

    // A reset wipes the override with the cluster, and the emulated EKS state too.
    client
        .create_addon()
        .cluster_name(CLUSTER)
        .addon_name("eks-pod-identity-agent")
        .send()
        .await
        .expect("CreateAddon is accepted");
    emulator.reset().await.expect("reset is accepted");
    create_cluster(&emulator, CLUSTER).await;
    assert_ne!(endpoint(client.clone()).await, "http://127.0.0.1:6443");
    let addons = client
        .list_addons()
        .cluster_name(CLUSTER)
        .send()
        .await
        .expect("ListAddons answers");
    assert!(addons.addons().is_empty(), "{addons:?}");
    emulator.stop().expect("emulator stops");
}

#[tokio::test]
async fn emulated_eks_calls_are_recorded_like_moto_records_its_own() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let client = eks(&emulator);
    create_cluster(&emulator, CLUSTER).await;
    emulator.clear_recording().expect("recording is cleared");

    let association = client
        .create_pod_identity_association()
        .cluster_name(CLUSTER)
        .namespace("kube-system")
        .service_account("cni-metrics-helper")
        .role_arn(role("cni-metrics-helper"))
        .send()
        .await
        .expect("created")
        .association
        .and_then(|association| association.association_id)
        .expect("an id");
    client
        .list_pod_identity_associations()
        .cluster_name(CLUSTER)
        .namespace("kube-system")
        .send()
        .await
        .expect("listed");
    client
        .update_pod_identity_association()
        .cluster_name(CLUSTER)
        .association_id(&association)
        .role_arn(role("other"))
        .send()
        .await
        .expect("updated");
    client
        .delete_pod_identity_association()
        .cluster_name(CLUSTER)
        .association_id(&association)
        .send()
        .await
        .expect("deleted");
    client
        .create_addon()
        .cluster_name(CLUSTER)
        .addon_name("eks-pod-identity-agent")
        .send()
        .await
        .expect("installed");
    client
        .describe_addon()
        .cluster_name(CLUSTER)
        .addon_name("eks-pod-identity-agent")
        .send()
        .await
        .expect("described");
    // moto answers this one itself; the control API call is not recorded at all.
    client
        .describe_cluster()
        .name(CLUSTER)
        .send()
        .await
        .expect("described");
    emulator
        .set_cluster_endpoint(CLUSTER, "http://127.0.0.1:6443")
        .await
        .expect("the endpoint is set");

    let recorded = emulator.recorded_requests().expect("readable");
    let operations: Vec<(Option<&str>, bool)> = recorded
        .iter()
        .map(|request| (request.eks_operation(), request.is_mutating()))
        .collect();
    assert_eq!(
        operations,
        [
            (Some("CreatePodIdentityAssociation"), true),
            (Some("ListPodIdentityAssociations"), false),
            (Some("UpdatePodIdentityAssociation"), true),
            (Some("DeletePodIdentityAssociation"), true),
            (Some("CreateAddon"), true),
            (Some("DescribeAddon"), false),
            (Some("DescribeCluster"), false),
        ]
    );
    assert!(
        recorded
            .iter()
            .all(|request| request.service.as_deref() == Some("eks"))
    );
    let create = recorded[0].json_body().expect("a JSON body");
    assert_eq!(create["serviceAccount"], "cni-metrics-helper");
    assert_eq!(create["roleArn"], role("cni-metrics-helper"));
    assert_eq!(
        recorded[1].path,
        format!("/clusters/{CLUSTER}/pod-identity-associations")
    );
    emulator.stop().expect("emulator stops");
}

#[tokio::test]
async fn ecr_points_at_a_real_registry_that_skopeo_pushes_to() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let registry = sandbox::registry::LocalRegistry::start(&dir.path().join("registry"))
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    emulator
        .register_registry(Some(&registry.endpoint()))
        .await
        .expect("the registry is registered");

    let said = run_python_fixture(
        "ecr_registry_roundtrip.py",
        &[
            emulator.endpoint_url().as_str(),
            "eu-west-1",
            &dir.path().display().to_string(),
        ],
    )
    .await;
    let host = registry.host();
    assert_eq!(said["user"], "AWS");
    assert_eq!(said["proxy_endpoint"], format!("http://{host}"));
    assert_eq!(said["repository_uri"], format!("{host}/roundtrip"));
    assert_eq!(said["images_before"], 0);
    let described = said["described"].as_array().expect("a list");
    assert_eq!(described.len(), 1, "{said}");
    assert_eq!(described[0]["digest"], said["pushed_digest"]);
    assert_eq!(described[0]["tags"], serde_json::json!(["v1"]));
    assert!(described[0]["size"].as_u64().is_some_and(|size| size > 0));
    assert_eq!(said["missing_tag"], "ImageNotFoundException");
    assert_eq!(said["missing_repository"], "RepositoryNotFoundException");

    // Without a registry, ECR is moto's own again.
    emulator
        .register_registry(None)
        .await
        .expect("unregistered");
    emulator.stop().expect("emulator stops");
}

/// Puts `assignIPAddresses` = `value` for each of the last `minutes` minutes.
async fn put_assigned(client: &aws_sdk_cloudwatch::Client, minute: i64, minutes: i64, value: f64) {
    let datums = (1..=minutes)
        .map(|ago| {
            MetricDatum::builder()
                .metric_name("assignIPAddresses")
                .dimensions(cluster_dimension())
                .timestamp(DateTime::from_secs(minute - ago * 60))
                .value(value + ago as f64)
                .build()
        })
        .collect::<Vec<_>>();
    client
        .put_metric_data()
        .namespace(NAMESPACE)
        .set_metric_data(Some(datums))
        .send()
        .await
        .expect("PutMetricData is accepted");
}

async fn widget_image(client: &aws_sdk_cloudwatch::Client, widget: &Value) -> Vec<u8> {
    client
        .get_metric_widget_image()
        .metric_widget(widget.to_string())
        .send()
        .await
        .expect("GetMetricWidgetImage answers")
        .metric_widget_image()
        .expect("the answer holds an image")
        .as_ref()
        .to_vec()
}

#[tokio::test]
async fn metric_widget_images_are_pngs_of_the_requested_size_drawn_from_the_data() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let client = cloudwatch(&emulator);
    let minute = current_minute();
    put_assigned(&client, minute, 10, 5.0).await;
    let widget = serde_json::json!({
        "title": "IPs assigned to pods",
        "view": "timeSeries",
        "stat": "Maximum",
        "period": 60,
        "region": REGION,
        "start": "-PT3H",
        "width": 640,
        "height": 280,
        "metrics": [
            [NAMESPACE, "assignIPAddresses", "CLUSTER_ID", CLUSTER, { "id": "assigned" }],
            [{ "expression": "100 * assigned / 20", "label": "of 20" }]
        ],
        "yAxis": { "left": { "min": 0 } }
    });
    let before = widget_image(&client, &widget).await;
    assert_eq!(sandbox::png::dimensions(&before), Ok((640, 280)));

    // Higher values move the lines, so the picture changes.
    put_assigned(&client, minute, 10, 50.0).await;
    let after = widget_image(&client, &widget).await;
    assert_eq!(sandbox::png::dimensions(&after), Ok((640, 280)));
    assert_ne!(before, after, "new datapoints change the image");

    // A widget CloudWatch would refuse is a typed error that names the problem.
    let error = client
        .get_metric_widget_image()
        .metric_widget(r#"{"metrics": []}"#)
        .send()
        .await
        .expect_err("a widget without metrics is refused");
    let message = format!("{:?}", error.into_service_error());
    assert!(
        message.contains("`metrics` must be a non-empty array"),
        "{message}"
    );
    emulator.stop().expect("emulator stops");
}

/// The CloudWatch alarm permissions the product's preflight asks IAM about.
const ALARM_ACTIONS: [&str; 5] = [
    "cloudwatch:PutMetricAlarm",
    "cloudwatch:DeleteAlarms",
    "cloudwatch:DescribeAlarms",
    "cloudwatch:TagResource",
    "cloudwatch:ListTagsForResource",
];

#[tokio::test]
async fn simulate_principal_policy_evaluates_a_roles_policies_for_the_rust_sdk() {
    use aws_sdk_iam::types::PolicyEvaluationDecisionType as Decision;

    let emulator = start_emulator(EmulatorOptions::default()).await;
    let client = iam(&emulator);
    let role_arn = create_role(&client, "cni-deployer").await;
    client
        .put_role_policy()
        .role_name("cni-deployer")
        .policy_name("alarms")
        .policy_document(
            serde_json::json!({
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": ["cloudwatch:PutMetricAlarm", "cloudwatch:Describe*", "cloudwatch:DeleteAlarms", "cloudwatch:ListTagsForResource"], "Resource": "*"},
                    {"Effect": "Deny", "Action": "cloudwatch:deletealarms", "Resource": "*"}
                ]
            })
            .to_string(),
        )
        .send()
        .await
        .expect("PutRolePolicy is accepted");

    let output = client
        .simulate_principal_policy()
        .policy_source_arn(&role_arn)
        .set_action_names(Some(ALARM_ACTIONS.map(str::to_owned).to_vec()))
        .send()
        .await
        .expect("SimulatePrincipalPolicy answers");
    assert!(!output.is_truncated());
    let decisions: Vec<(&str, &str, &Decision)> = output
        .evaluation_results()
        .iter()
        .map(|result| {
            (
                result.eval_action_name(),
                result.eval_resource_name().unwrap_or_default(),
                result.eval_decision(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [
            ("cloudwatch:PutMetricAlarm", "*", &Decision::Allowed),
            // The Deny matches case-insensitively and wins over the Allow.
            ("cloudwatch:DeleteAlarms", "*", &Decision::ExplicitDeny),
            ("cloudwatch:DescribeAlarms", "*", &Decision::Allowed),
            // Nothing allows it.
            ("cloudwatch:TagResource", "*", &Decision::ImplicitDeny),
            ("cloudwatch:ListTagsForResource", "*", &Decision::Allowed),
        ]
    );
    let matched = output.evaluation_results()[0].matched_statements();
    assert_eq!(matched.len(), 1, "{matched:?}");
    assert_eq!(matched[0].source_policy_id(), Some("alarms"));
    assert_eq!(
        matched[0].source_policy_type(),
        Some(&aws_sdk_iam::types::PolicySourceType::Role)
    );

    // A Deny limited to some regions, judged in the region given as context, through the
    // paginator as the product's preflight asks.
    client
        .put_role_policy()
        .role_name("cni-deployer")
        .policy_name("only-eu")
        .policy_document(
            serde_json::json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Deny",
                    "Action": "cloudwatch:*",
                    "Resource": "*",
                    "Condition": {"StringNotEquals": {"aws:RequestedRegion": ["eu-west-1", "eu-central-1"]}}
                }]
            })
            .to_string(),
        )
        .send()
        .await
        .expect("PutRolePolicy is accepted");
    let in_region = |region: &'static str| {
        client
            .simulate_principal_policy()
            .policy_source_arn(&role_arn)
            .action_names("cloudwatch:PutMetricAlarm")
            .resource_arns("*")
            .context_entries(
                aws_sdk_iam::types::ContextEntry::builder()
                    .context_key_name("aws:RequestedRegion")
                    .context_key_values(region)
                    .context_key_type(aws_sdk_iam::types::ContextKeyTypeEnum::String)
                    .build(),
            )
            .into_paginator()
            .items()
            .send()
            .try_collect()
    };
    let decision = |results: Vec<aws_sdk_iam::types::EvaluationResult>| {
        assert_eq!(results.len(), 1, "{results:?}");
        assert!(
            results[0].missing_context_values().is_empty(),
            "{results:?}"
        );
        results[0].eval_decision().clone()
    };
    assert_eq!(
        decision(in_region("eu-west-1").await.expect("simulated")),
        Decision::Allowed
    );
    assert_eq!(
        decision(in_region("us-west-2").await.expect("simulated")),
        Decision::ExplicitDeny
    );
    // Without the context, the Deny's condition cannot hold, and the answer names the key.
    let blind = client
        .simulate_principal_policy()
        .policy_source_arn(&role_arn)
        .action_names("cloudwatch:PutMetricAlarm")
        .send()
        .await
        .expect("SimulatePrincipalPolicy answers");
    assert_eq!(
        blind.evaluation_results()[0].eval_decision(),
        &Decision::Allowed
    );
    assert_eq!(
        blind.evaluation_results()[0].missing_context_values(),
        ["aws:RequestedRegion"]
    );

    // A role IAM does not have.
    let error = client
        .simulate_principal_policy()
        .policy_source_arn(format!("arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/nobody"))
        .action_names("cloudwatch:DescribeAlarms")
        .send()
        .await
        .expect_err("an unknown role is refused")
        .into_service_error();
    assert!(error.is_no_such_entity_exception(), "{error:?}");

    // Recorded as IAM's own requests are, and not counted as a change.
    let simulations: Vec<_> = emulator
        .recorded_requests()
        .expect("the recording reads")
        .into_iter()
        .filter(|request| request.action.as_deref() == Some("SimulatePrincipalPolicy"))
        .collect();
    assert_eq!(simulations.len(), 5);
    assert!(
        simulations
            .iter()
            .all(|request| !request.is_mutating() && request.service.as_deref() == Some("iam"))
    );
    emulator.stop().expect("emulator stops");
}

#[tokio::test]
async fn simulate_principal_policy_answers_boto3() {
    let emulator = start_emulator(EmulatorOptions::default()).await;
    let said = run_python_fixture(
        "iam_simulate_principal_policy.py",
        &[emulator.endpoint_url().as_str()],
    )
    .await;
    assert_eq!(
        said["role"]["cloudwatch:PutMetricAlarm"], "allowed",
        "{said}"
    );
    assert_eq!(said["role"]["cloudwatch:DeleteAlarms"], "allowed");
    assert_eq!(said["delete_in_eu_west_1"], "explicitDeny");
    assert_eq!(said["delete_in_us_west_2"], "allowed");
    assert_eq!(said["role"]["cloudwatch:TagResource"], "implicitDeny");
    assert_eq!(said["unknown"][0], "NoSuchEntity");
    assert_eq!(said["not_a_principal"], "InvalidInput");
    emulator.stop().expect("emulator stops");
}
