//! The aggregator against "Metric semantics" in `publisher/README.md`, and the offline `aggregate` rounds.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use cni_metrics_publisher::aggregate::{
    AVAILABILITY_ZONE_DIMENSION, Aggregator, AggregatorOptions, DEFAULT_STALE_ROUNDS, PodScrape,
    RoundCounts, RoundStats, ScrapeOutcome,
};
use cni_metrics_publisher::datum::{Round, Unit};
use cni_metrics_publisher::offline::{OfflineError, aggregate_rounds, aggregate_rounds_with_stats};

const FULL: &str = include_str!("fixtures/exposition/ipamd-full.prom");
const CNI_TEST1_LIKE: &str = include_str!("fixtures/exposition/cni-test1-like.prom");
const CNI_TEST2_LIKE: &str = include_str!("fixtures/exposition/cni-test2-like.prom");

fn aggregator() -> Aggregator {
    Aggregator::new(AggregatorOptions {
        cluster_id: "c".to_owned(),
        per_az: false,
        max_series_per_pod: cni_metrics_publisher::aggregate::DEFAULT_MAX_SERIES_PER_POD,
        stale_rounds: cni_metrics_publisher::aggregate::DEFAULT_STALE_ROUNDS,
    })
}

fn pod<'a>(uid: &'a str, body: &'a str) -> PodScrape<'a> {
    PodScrape {
        uid,
        name: uid,
        zone: None,
        outcome: ScrapeOutcome::Body(body),
    }
}

fn failed(uid: &str) -> PodScrape<'_> {
    PodScrape {
        uid,
        name: uid,
        zone: None,
        outcome: ScrapeOutcome::Failed,
    }
}

fn in_zone<'a>(zone: &'a str, scrape: PodScrape<'a>) -> PodScrape<'a> {
    PodScrape {
        zone: Some(zone),
        ..scrape
    }
}

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
}

/// The round's datums as (metric name, value) pairs, in order.
fn values(round: &Round) -> Vec<(&str, f64)> {
    round
        .datums
        .iter()
        .map(|datum| (datum.metric_name.as_str(), datum.value))
        .collect()
}

fn value_of(round: &Round, metric_name: &str) -> Option<f64> {
    let matching: Vec<_> = round
        .datums
        .iter()
        .filter(|datum| datum.metric_name == metric_name && datum.dimensions.len() == 1)
        .collect();
    assert!(matching.len() <= 1, "{metric_name} published twice");
    matching.first().map(|datum| datum.value)
}

fn counter(family: &str, value: &str) -> String {
    format!("# TYPE {family} counter\n{family} {value}\n")
}

fn gauge(family: &str, value: &str) -> String {
    format!("# TYPE {family} gauge\n{family} {value}\n")
}

fn latency_summary(sum: f64, count: f64) -> String {
    format!(
        "# TYPE awscni_aws_api_latency_ms summary\n\
         awscni_aws_api_latency_ms_sum{{api=\"DescribeNetworkInterfaces\",error=\"false\",status=\"200\"}} {sum}\n\
         awscni_aws_api_latency_ms_count{{api=\"DescribeNetworkInterfaces\",error=\"false\",status=\"200\"}} {count}\n"
    )
}

fn latency_quantile(api: &str, p99: &str) -> String {
    format!(
        "# TYPE awscni_aws_api_latency_ms summary\n\
         awscni_aws_api_latency_ms{{api=\"{api}\",error=\"false\",quantile=\"0.5\"}} 0.5\n\
         awscni_aws_api_latency_ms{{api=\"{api}\",error=\"false\",quantile=\"0.99\"}} {p99}\n\
         awscni_aws_api_latency_ms_sum{{api=\"{api}\",error=\"false\"}} 100\n\
         awscni_aws_api_latency_ms_count{{api=\"{api}\",error=\"false\"}} 10\n"
    )
}

fn add_requests(value: &str) -> String {
    counter("awscni_add_ip_req_count", value)
}

#[test]
fn counters_are_summed_per_pod_deltas_not_upstreams_shared_state() {
    let mut aggregator = aggregator();
    let (a, b, c) = (add_requests("20"), add_requests("50"), add_requests("30"));
    let (round, stats) = aggregator.round(&[pod("a", &a), pod("b", &b), pod("c", &c)], at(0));
    // First sight of every series: 0, not the cumulative totals and not upstream's 10.
    assert_eq!(values(&round), vec![("addReqCount", 0.0)]);
    assert_eq!(stats.pods_scraped, 3);

    let (a, b, c) = (add_requests("25"), add_requests("50"), add_requests("35"));
    let (round, _) = aggregator.round(&[pod("a", &a), pod("b", &b), pod("c", &c)], at(60));
    assert_eq!(values(&round), vec![("addReqCount", 10.0)]);

    // Nothing changed: upstream would publish 10 again forever; the increase is 0.
    let (round, _) = aggregator.round(&[pod("a", &a), pod("b", &b), pod("c", &c)], at(120));
    assert_eq!(values(&round), vec![("addReqCount", 0.0)]);
}

#[test]
fn counter_series_are_tracked_per_label_set() {
    let mut aggregator = aggregator();
    let body = |describe: u32, assign: u32| {
        format!(
            "# TYPE awscni_ec2api_req_count counter\n\
             awscni_ec2api_req_count{{fn=\"DescribeNetworkInterfaces\"}} {describe}\n\
             awscni_ec2api_req_count{{fn=\"AssignPrivateIpAddresses\"}} {assign}\n"
        )
    };
    let first = body(10, 100);
    aggregator.round(&[pod("a", &first)], at(0));
    // One series restarts lower while the other grows: 4 (reset: the new value) + 5.
    let second = body(4, 105);
    let (round, _) = aggregator.round(&[pod("a", &second)], at(60));
    assert_eq!(value_of(&round, "ec2ApiReqCount"), Some(9.0));
    // A series that appears later starts at 0.
    let third = format!(
        "{}awscni_ec2api_req_count{{fn=\"CreateNetworkInterface\"}} 7\n",
        body(4, 105)
    );
    let (round, _) = aggregator.round(&[pod("a", &third)], at(120));
    assert_eq!(value_of(&round, "ec2ApiReqCount"), Some(0.0));
    assert_eq!(aggregator.tracked_series(), 3);
}

#[test]
fn a_counter_reset_publishes_the_new_value() {
    let mut aggregator = aggregator();
    let before = add_requests("100");
    aggregator.round(&[pod("a", &before)], at(0));
    let after_restart = add_requests("5");
    let (round, _) = aggregator.round(&[pod("a", &after_restart)], at(60));
    assert_eq!(values(&round), vec![("addReqCount", 5.0)]);
}

#[test]
fn a_pod_that_disappears_is_forgotten() {
    let mut aggregator = aggregator();
    let (a, b) = (add_requests("10"), add_requests("20"));
    aggregator.round(&[pod("a", &a), pod("b", &b)], at(0));
    assert_eq!(aggregator.tracked_pods(), 2);
    let a = add_requests("15");
    let (round, _) = aggregator.round(&[pod("a", &a)], at(60));
    assert_eq!(values(&round), vec![("addReqCount", 5.0)]);
    assert_eq!(aggregator.tracked_pods(), 1);
    // If the same UID comes back after being gone, it is a first sight again.
    let b = add_requests("90");
    let (round, _) = aggregator.round(&[pod("a", &a), pod("b", &b)], at(120));
    assert_eq!(values(&round), vec![("addReqCount", 0.0)]);
}

#[test]
fn a_replaced_pod_starts_fresh() {
    let mut aggregator = aggregator();
    let old = add_requests("500");
    aggregator.round(&[pod("uid-old", &old)], at(0));
    // The DaemonSet replaced the pod: new UID, a counter that is higher than the old one by
    // chance. With state keyed by name it would publish 100; keyed by UID it is a first sight.
    let new = add_requests("600");
    let (round, _) = aggregator.round(&[pod("uid-new", &new)], at(60));
    assert_eq!(values(&round), vec![("addReqCount", 0.0)]);
    assert_eq!(aggregator.tracked_pods(), 1);
}

#[test]
fn a_pod_that_fails_to_parse_is_skipped_and_counted() {
    let mut aggregator = aggregator();
    let good = format!(
        "{}{}",
        add_requests("10"),
        gauge("awscni_assigned_ip_addresses", "3")
    );
    // The error is at the end, after good samples: none of this pod's samples may be used.
    let broken = format!(
        "{}{}awscni_eni_max{{oops 1\n",
        add_requests("1000"),
        gauge("awscni_assigned_ip_addresses", "100")
    );
    let (round, stats) = aggregator.round(&[pod("good", &good), pod("broken", &broken)], at(0));
    assert_eq!(
        values(&round),
        vec![("assignIPAddresses", 3.0), ("addReqCount", 0.0)]
    );
    assert_eq!(stats.pods_scraped, 1);
    assert_eq!(stats.parse_errors, 1);
    assert_eq!(stats.scrape_errors, 0);
    assert_eq!(stats.parse_failures.len(), 1);
    assert_eq!(stats.parse_failures[0].pod, "broken");
    assert_eq!(stats.parse_failures[0].error.line, 5);
}

#[test]
fn failed_scrapes_are_counted_and_keep_their_state() {
    let mut aggregator = aggregator();
    let (a, b) = (add_requests("10"), add_requests("100"));
    aggregator.round(&[pod("a", &a), pod("b", &b)], at(0));

    let a = add_requests("12");
    let (round, stats) = aggregator.round(&[pod("a", &a), failed("b")], at(60));
    assert_eq!(values(&round), vec![("addReqCount", 2.0)]);
    assert_eq!(
        stats,
        RoundStats {
            pods_scraped: 1,
            scrape_errors: 1,
            parse_errors: 0,
            parse_failures: Vec::new(),
            series_limit_errors: 0,
            series_limit_pods: Vec::new(),
            // b's last good scrape stands in for it, with no gauges to add.
            stale_pods: 1,
            stale_expired: 0,
        }
    );
    assert_eq!(aggregator.tracked_pods(), 2, "a failed pod's state is kept");

    // Recovery: b's increase since its last good scrape (130 - 100), not a first-sight 0 that
    // would lose it and not its cumulative 130.
    let b = add_requests("130");
    let (round, _) = aggregator.round(&[pod("a", &a), pod("b", &b)], at(120));
    assert_eq!(values(&round), vec![("addReqCount", 30.0)]);
}

#[test]
fn a_parse_failure_keeps_state_too() {
    let mut aggregator = aggregator();
    let first = add_requests("10");
    aggregator.round(&[pod("a", &first)], at(0));
    let garbage = "awscni_add_ip_req_count{";
    let (round, stats) = aggregator.round(&[pod("a", garbage)], at(60));
    assert!(round.datums.is_empty(), "nobody exposed anything");
    assert_eq!(stats.parse_errors, 1);
    let recovered = add_requests("14");
    let (round, _) = aggregator.round(&[pod("a", &recovered)], at(120));
    assert_eq!(values(&round), vec![("addReqCount", 4.0)]);
}

#[test]
fn type_drift_between_rounds() {
    let mut aggregator = aggregator();
    let family = "awscni_add_ip_req_count";
    // ipamd v1.19.2: a gauge, summed as is.
    let as_gauge = gauge(family, "40");
    let (round, _) = aggregator.round(&[pod("a", &as_gauge)], at(0));
    assert_eq!(values(&round), vec![("addReqCount", 40.0)]);
    // v1.19.4: a counter; no counter state yet, so a first sight.
    let as_counter = counter(family, "45");
    let (round, _) = aggregator.round(&[pod("a", &as_counter)], at(60));
    assert_eq!(values(&round), vec![("addReqCount", 0.0)]);
    let as_counter = counter(family, "48");
    let (round, _) = aggregator.round(&[pod("a", &as_counter)], at(120));
    assert_eq!(values(&round), vec![("addReqCount", 3.0)]);
    // And back to a gauge.
    let as_gauge = gauge(family, "50");
    let (round, _) = aggregator.round(&[pod("a", &as_gauge)], at(180));
    assert_eq!(values(&round), vec![("addReqCount", 50.0)]);
    // Counter again: the gauge round cleared the counter state, so a first sight again.
    let as_counter = counter(family, "60");
    let (round, _) = aggregator.round(&[pod("a", &as_counter)], at(240));
    assert_eq!(values(&round), vec![("addReqCount", 0.0)]);
}

#[test]
fn type_drift_between_pods_of_one_round() {
    let mut aggregator = aggregator();
    let family = "awscni_force_removed_ips";
    let (old, new) = (gauge(family, "7"), counter(family, "3"));
    aggregator.round(&[pod("old", &old), pod("new", &new)], at(0));
    let (old, new) = (gauge(family, "7"), counter(family, "5"));
    let (round, _) = aggregator.round(&[pod("old", &old), pod("new", &new)], at(60));
    // Each pod by its own type: the gauge's 7 plus the counter's increase of 2.
    assert_eq!(values(&round), vec![("forceRemoveIPs", 9.0)]);
}

#[test]
fn untyped_samples_are_ignored() {
    let mut aggregator = aggregator();
    let body = "awscni_assigned_ip_addresses 5\n";
    let (round, stats) = aggregator.round(&[pod("a", body)], at(0));
    assert!(round.datums.is_empty());
    assert_eq!(stats.pods_scraped, 1);
}

#[test]
fn gauges_sum_every_series_of_every_pod() {
    let mut aggregator = aggregator();
    let a = "# TYPE awscni_assigned_ip_per_cidr gauge\n\
             awscni_assigned_ip_per_cidr{cidr=\"10.0.1.17/32\"} 1\n\
             awscni_assigned_ip_per_cidr{cidr=\"10.0.1.23/32\"} 1\n\
             awscni_assigned_ip_per_cidr{cidr=\"10.0.1.88/32\"} 0\n";
    let b = "# TYPE awscni_assigned_ip_per_cidr gauge\n\
             awscni_assigned_ip_per_cidr{cidr=\"10.0.2.0/28\"} 5\n";
    let (round, _) = aggregator.round(&[pod("a", a), pod("b", b)], at(0));
    assert_eq!(values(&round), vec![("totalAssignedIPv4sPerCidr", 7.0)]);
}

#[test]
fn latency_is_the_max_finite_p99_when_quantiles_exist() {
    let mut aggregator = aggregator();
    let a = latency_quantile("GetMetadata", "1");
    let b = latency_quantile("DescribeNetworkInterfaces", "250.5");
    let c = latency_quantile("CreateTags", "NaN");
    let d = latency_quantile("AttachNetworkInterface", "+Inf");
    let (round, _) = aggregator.round(
        &[pod("a", &a), pod("b", &b), pod("c", &c), pod("d", &d)],
        at(0),
    );
    assert_eq!(values(&round), vec![("awsAPILatency", 250.5)]);
    assert_eq!(round.datums[0].unit, Unit::Milliseconds);
}

#[test]
fn latency_falls_back_to_the_mean_over_the_interval() {
    let mut aggregator = aggregator();
    let (a, b) = (latency_summary(1000.0, 100.0), latency_summary(50.0, 5.0));
    let (round, _) = aggregator.round(&[pod("a", &a), pod("b", &b)], at(0));
    assert!(
        round.datums.is_empty(),
        "first sight: no increase yet, so nothing"
    );

    // a: +300 ms over +10 calls; b: +100 ms over +10 calls: 400 / 20.
    let (a, b) = (latency_summary(1300.0, 110.0), latency_summary(150.0, 15.0));
    let (round, _) = aggregator.round(&[pod("a", &a), pod("b", &b)], at(60));
    assert_eq!(values(&round), vec![("awsAPILatency", 20.0)]);
    assert_eq!(round.datums[0].unit, Unit::Milliseconds);

    // No calls in the interval: the count increase is 0, so latency is not published.
    let (round, _) = aggregator.round(&[pod("a", &a), pod("b", &b)], at(120));
    assert!(round.datums.is_empty());

    // All 0.99 quantiles NaN (nothing observed in the summary's window): the mean is used.
    let with_nan_quantiles = format!(
        "{}awscni_aws_api_latency_ms{{api=\"DescribeNetworkInterfaces\",error=\"false\",status=\"200\",quantile=\"0.99\"}} NaN\n",
        latency_summary(1330.0, 112.0)
    );
    let (round, _) = aggregator.round(&[pod("a", &with_nan_quantiles), pod("b", &b)], at(180));
    assert_eq!(values(&round), vec![("awsAPILatency", 15.0)]);
}

#[test]
fn families_are_the_union_of_all_pods_and_nothing_is_invented() {
    let mut aggregator = aggregator();
    let a = gauge("awscni_eni_max", "3");
    let b = gauge("awscni_ip_max", "27");
    let c = "# TYPE go_goroutines gauge\ngo_goroutines 12\n";
    // Upstream publishes only the last pod's families; we publish both, and no zeros for the
    // 18 families nobody exposed.
    let (round, _) = aggregator.round(&[pod("a", &a), pod("b", &b), pod("c", c)], at(0));
    assert_eq!(
        values(&round),
        vec![("eniMaxAvailable", 3.0), ("maxIPAddresses", 27.0)]
    );
}

#[test]
fn non_finite_values_are_never_published() {
    let mut aggregator = aggregator();
    let body = format!(
        "{}{}{}",
        gauge("awscni_eni_max", "NaN"),
        "# TYPE awscni_ip_max gauge\nawscni_ip_max +Inf\nawscni_ip_max 4\n",
        add_requests("10")
    );
    let (round, _) = aggregator.round(&[pod("a", &body)], at(0));
    // eni_max had only a NaN: not exposed. ip_max's +Inf is skipped, its 4 counts.
    assert_eq!(
        values(&round),
        vec![("maxIPAddresses", 4.0), ("addReqCount", 0.0)]
    );

    // A counter that reports NaN once keeps its last good value: no reset, no spike.
    let nan = add_requests("NaN");
    let (round, _) = aggregator.round(&[pod("a", &nan)], at(60));
    assert!(round.datums.is_empty());
    let back = add_requests("13");
    let (round, _) = aggregator.round(&[pod("a", &back)], at(120));
    assert_eq!(values(&round), vec![("addReqCount", 3.0)]);

    // Negative counter values are not counter values either.
    let negative = add_requests("-5");
    let (round, _) = aggregator.round(&[pod("a", &negative)], at(180));
    assert!(round.datums.is_empty());

    // Finite values whose sum overflows are not published.
    let (a, b) = (
        gauge("awscni_eni_max", "1.7e308"),
        gauge("awscni_eni_max", "1.7e308"),
    );
    let (round, _) = aggregator.round(&[pod("a", &a), pod("b", &b)], at(240));
    assert!(round.datums.is_empty());
    assert!(
        round.datums.iter().all(|datum| datum.value.is_finite()),
        "never NaN or infinity"
    );
}

#[test]
fn per_az_capacity_datums() {
    let mut aggregator = Aggregator::new(AggregatorOptions {
        cluster_id: "c".to_owned(),
        per_az: true,
        max_series_per_pod: cni_metrics_publisher::aggregate::DEFAULT_MAX_SERIES_PER_POD,
        stale_rounds: cni_metrics_publisher::aggregate::DEFAULT_STALE_ROUNDS,
    });
    let node = |assigned: &str, total: &str, max: &str| {
        format!(
            "{}{}{}{}",
            gauge("awscni_assigned_ip_addresses", assigned),
            gauge("awscni_total_ip_addresses", total),
            gauge("awscni_ip_max", max),
            gauge("awscni_eni_max", "3"),
        )
    };
    let (a, b, c, d) = (
        node("1", "10", "27"),
        node("2", "10", "27"),
        node("4", "20", "54"),
        node("8", "40", "108"),
    );
    let pods = [
        in_zone("us-east-1b", pod("a", &a)),
        in_zone("us-east-1a", pod("b", &b)),
        in_zone("us-east-1b", pod("c", &c)),
        // No zone: only in the cluster totals.
        pod("d", &d),
    ];
    let (round, _) = aggregator.round(&pods, at(0));
    let described: Vec<_> = round
        .datums
        .iter()
        .map(|datum| {
            let zone = datum
                .dimensions
                .iter()
                .find(|dimension| dimension.name == AVAILABILITY_ZONE_DIMENSION)
                .map(|dimension| dimension.value.as_str());
            assert_eq!(datum.dimensions[0].name, "CLUSTER_ID");
            assert_eq!(datum.dimensions[0].value, "c");
            (datum.metric_name.as_str(), zone, datum.value)
        })
        .collect();
    assert_eq!(
        described,
        vec![
            ("assignIPAddresses", None, 15.0),
            ("assignIPAddresses", Some("us-east-1a"), 2.0),
            ("assignIPAddresses", Some("us-east-1b"), 5.0),
            ("totalIPAddresses", None, 80.0),
            ("totalIPAddresses", Some("us-east-1a"), 10.0),
            ("totalIPAddresses", Some("us-east-1b"), 30.0),
            ("eniMaxAvailable", None, 12.0),
            ("maxIPAddresses", None, 216.0),
            ("maxIPAddresses", Some("us-east-1a"), 27.0),
            ("maxIPAddresses", Some("us-east-1b"), 81.0),
        ]
    );

    // Without --per-az, zones are ignored.
    let mut without = Aggregator::new(AggregatorOptions {
        cluster_id: "c".to_owned(),
        per_az: false,
        max_series_per_pod: cni_metrics_publisher::aggregate::DEFAULT_MAX_SERIES_PER_POD,
        stale_rounds: cni_metrics_publisher::aggregate::DEFAULT_STALE_ROUNDS,
    });
    let (round, _) = without.round(&pods, at(0));
    assert!(round.datums.iter().all(|datum| datum.dimensions.len() == 1));
}

#[test]
fn every_datum_carries_the_round_timestamp_and_cluster() {
    let mut aggregator = aggregator();
    let (round, _) = aggregator.round(&[pod("a", FULL)], at(42));
    assert!(!round.datums.is_empty());
    for datum in &round.datums {
        assert_eq!(datum.timestamp, at(42));
        assert_eq!(datum.dimensions.len(), 1);
        assert_eq!(datum.dimensions[0].value, "c");
    }
}

#[test]
fn a_repeated_uid_in_one_round_counts_once() {
    let mut aggregator = aggregator();
    let (first, second) = (gauge("awscni_eni_max", "3"), gauge("awscni_eni_max", "100"));
    let (round, stats) = aggregator.round(&[pod("a", &first), pod("a", &second)], at(0));
    assert_eq!(values(&round), vec![("eniMaxAvailable", 3.0)]);
    assert_eq!(stats.pods_scraped, 1);
}

#[test]
fn upstream_cni_test1_adapted_to_our_semantics() {
    // Upstream's TestAPIServerMetric expects the cumulative counters of a fresh helper (a
    // spike): ec2ApiReqCount 21, awsAPIErr 14, addReqCount 100. Ours publishes 0 at first
    // sight, gauges as they are, and the GetMetadata p99 as the latency.
    let mut aggregator = aggregator();
    let (round, _) = aggregator.round(&[pod("node-1", CNI_TEST1_LIKE)], at(0));
    assert_eq!(
        values(&round),
        vec![
            ("assignIPAddresses", 1.0),
            ("totalIPAddresses", 10.0),
            ("eniAllocated", 2.0),
            ("eniMaxAvailable", 3.0),
            ("maxIPAddresses", 15.0),
            ("awsAPILatency", 1.0),
            ("awsAPIErr", 0.0),
            ("ipamdActionInProgress", 0.0),
            ("addReqCount", 0.0),
            ("delReqCount", 0.0),
            ("ec2ApiReqCount", 0.0),
        ]
    );
    // ec2ApiErrCount and totalIPv4Prefixes are not in the exposition: not published at all.
    assert_eq!(value_of(&round, "ec2ApiErrCount"), None);
    assert_eq!(value_of(&round, "totalIPv4Prefixes"), None);

    // The same node a minute later, with every ec2api series doubled (the generic replacement
    // doubles the six series at 1, each followed by another ec2api line): the increase is
    // the old sum, 21.
    let later = CNI_TEST1_LIKE
        .replace(
            "{fn=\"DescribeNetworkInterfaces\"} 13",
            "{fn=\"DescribeNetworkInterfaces\"} 26",
        )
        .replace(
            "{fn=\"ModifyNetworkInterfaceAttribute\"} 2",
            "{fn=\"ModifyNetworkInterfaceAttribute\"} 4",
        )
        .replace("} 1\nawscni_ec2api", "} 2\nawscni_ec2api")
        .replace("awscni_add_ip_req_count 100", "awscni_add_ip_req_count 114");
    let (round, _) = aggregator.round(&[pod("node-1", &later)], at(60));
    assert_eq!(value_of(&round, "ec2ApiReqCount"), Some(21.0));
    assert_eq!(value_of(&round, "addReqCount"), Some(14.0));
    assert_eq!(value_of(&round, "awsAPIErr"), Some(0.0));
}

#[test]
fn upstream_cni_test2_prefix_delegation_node() {
    // Upstream's TestAPIServerMetricwithPDenabled: assignIPAddresses 1, totalIPAddresses 16,
    // totalIPv4Prefixes 1, totalAssignedIPv4sPerCidr 1.
    let mut aggregator = aggregator();
    let (round, _) = aggregator.round(&[pod("pd-node", CNI_TEST2_LIKE)], at(0));
    assert_eq!(value_of(&round, "assignIPAddresses"), Some(1.0));
    assert_eq!(value_of(&round, "totalIPAddresses"), Some(16.0));
    assert_eq!(value_of(&round, "totalIPv4Prefixes"), Some(1.0));
    assert_eq!(value_of(&round, "totalAssignedIPv4sPerCidr"), Some(1.0));
    // Both nodes together: gauges add up across pods.
    let (round, _) = aggregator.round(
        &[
            pod("pd-node", CNI_TEST2_LIKE),
            pod("node-1", CNI_TEST1_LIKE),
        ],
        at(60),
    );
    assert_eq!(value_of(&round, "totalIPAddresses"), Some(26.0));
    assert_eq!(value_of(&round, "maxIPAddresses"), Some(125.0));
}

#[test]
fn realistic_exposition_publishes_every_family_it_has() {
    let mut aggregator = aggregator();
    let (round, _) = aggregator.round(&[pod("a", FULL)], at(0));
    let names: Vec<_> = round
        .datums
        .iter()
        .map(|datum| datum.metric_name.as_str())
        .collect();
    // Everything but the latency (no count increase yet) and the families ipamd did not
    // create a child for (awsUtilErr, ipamdErr, podENIErr).
    assert_eq!(
        names,
        vec![
            "assignIPAddresses",
            "totalIPAddresses",
            "totalIPv4Prefixes",
            "totalAssignedIPv4sPerCidr",
            "eniAllocated",
            "eniMaxAvailable",
            "maxIPAddresses",
            "awsAPIErr",
            "forceRemoveENI",
            "forceRemoveIPs",
            "ipamdActionInProgress",
            "reconcileCount",
            "addReqCount",
            "delReqCount",
            "ec2ApiReqCount",
            "ec2ApiErrCount",
        ]
    );
    assert_eq!(value_of(&round, "totalAssignedIPv4sPerCidr"), Some(2.0));
}

#[test]
fn state_stays_small_for_a_large_cluster() {
    let mut aggregator = aggregator();
    let uids: Vec<String> = (0..5000)
        .map(|index| format!("pod-uid-{index:05}"))
        .collect();
    let pods: Vec<_> = uids.iter().map(|uid| pod(uid, FULL)).collect();
    for round in 0..2 {
        let (_, stats) = aggregator.round(&pods, at(round * 60));
        assert_eq!(stats.pods_scraped, 5000);
    }
    assert_eq!(aggregator.tracked_pods(), 5000);
    // 22 counter series per ipamd pod (including the latency _sum and _count).
    assert_eq!(aggregator.tracked_series(), 5000 * 22);
    let bytes = aggregator.approximate_state_bytes();
    eprintln!("state for 5000 pods: about {bytes} bytes");
    assert!(bytes < 16 * 1024 * 1024, "state takes {bytes} bytes");
    // When the cluster scales down, the memory goes back.
    aggregator.round(&pods[..10], at(120));
    assert_eq!(aggregator.tracked_pods(), 10);
    let bytes = aggregator.approximate_state_bytes();
    assert!(bytes < 256 * 1024, "state still takes {bytes} bytes");
}

#[test]
fn label_churn_does_not_grow_memory_without_bound() {
    let mut aggregator = aggregator();
    let mut largest_after_warmup = 0;
    for round in 0..30_u64 {
        // Every round the one pod exposes 1,000 series with label sets never seen before.
        let mut body = String::from("# TYPE awscni_ipamd_error_count counter\n");
        for series in 0..1000 {
            body.push_str(&format!(
                "awscni_ipamd_error_count{{fn=\"f{round}_{series}\"}} 1\n"
            ));
        }
        aggregator.round(&[pod("a", &body)], at(round * 60));
        if round >= 10 {
            largest_after_warmup = largest_after_warmup.max(aggregator.approximate_state_bytes());
        }
    }
    assert_eq!(aggregator.tracked_series(), 1000);
    // 30,000 label sets were seen; compaction keeps the interner within a small multiple of
    // the live 1,000 (plus its floor).
    assert!(
        largest_after_warmup < 2 * 1024 * 1024,
        "state grew to {largest_after_warmup} bytes"
    );
}

fn fixture_dir(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(relative)
}

#[test]
fn offline_rounds_print_the_exact_json() {
    let rounds = aggregate_rounds(
        &[
            fixture_dir("rounds/round1"),
            fixture_dir("rounds/round2"),
            fixture_dir("rounds/round3"),
        ],
        "c",
        false,
        DEFAULT_STALE_ROUNDS,
    )
    .expect("the fixture rounds aggregate");
    let json = serde_json::to_string(&rounds).expect("rounds serialize");
    let dims = r#""Dimensions":[{"Name":"CLUSTER_ID","Value":"c"}]"#;
    let datum = |name: &str, value: &str, unit: &str| {
        format!(r#"{{"MetricName":"{name}","Value":{value},"Unit":"{unit}",{dims}}}"#)
    };
    // Round 1: a=3/20, b=4/50, c=5/30; first sight, no latency increase yet.
    // Round 2: b does not parse (one scrape error, counter state kept, its round-1 gauge 4
    // stands in: 3 + 4 + 2 = 13); a +5 and +30ms/+3 calls, c +5.
    // Round 3: c is gone; b is back: +10 over its round-1 value, +40ms/+2 calls.
    // Each round ends with the self-metrics, as a live round does.
    let expected = format!(
        r#"{{"rounds":[{{"datums":[{},{},{},{}]}},{{"datums":[{},{},{},{},{}]}},{{"datums":[{},{},{},{},{}]}}]}}"#,
        datum("assignIPAddresses", "12.0", "Count"),
        datum("addReqCount", "0.0", "Count"),
        datum("podsScraped", "3.0", "Count"),
        datum("scrapeErrors", "0.0", "Count"),
        datum("assignIPAddresses", "13.0", "Count"),
        datum("awsAPILatency", "10.0", "Milliseconds"),
        datum("addReqCount", "10.0", "Count"),
        datum("podsScraped", "2.0", "Count"),
        datum("scrapeErrors", "1.0", "Count"),
        datum("assignIPAddresses", "7.0", "Count"),
        datum("awsAPILatency", "20.0", "Milliseconds"),
        datum("addReqCount", "10.0", "Count"),
        datum("podsScraped", "2.0", "Count"),
        datum("scrapeErrors", "0.0", "Count"),
    );
    assert_eq!(json, expected);
}

#[test]
fn offline_zone_subdirectories_give_per_az_datums() {
    let rounds = aggregate_rounds(
        &[fixture_dir("rounds-az/round1")],
        "c",
        true,
        DEFAULT_STALE_ROUNDS,
    )
    .expect("the fixture round aggregates");
    let json = serde_json::to_string(&rounds).expect("rounds serialize");
    let cluster = r#"{"Name":"CLUSTER_ID","Value":"c"}"#;
    let datum = |name: &str, value: &str, zone: Option<&str>| {
        let zone = zone
            .map(|zone| format!(r#",{{"Name":"AvailabilityZone","Value":"{zone}"}}"#))
            .unwrap_or_default();
        format!(
            r#"{{"MetricName":"{name}","Value":{value},"Unit":"Count","Dimensions":[{cluster}{zone}]}}"#
        )
    };
    let expected = format!(
        r#"{{"rounds":[{{"datums":[{},{},{},{},{},{}]}}]}}"#,
        datum("assignIPAddresses", "12.0", None),
        datum("assignIPAddresses", "3.0", Some("us-east-1a")),
        datum("assignIPAddresses", "4.0", Some("us-east-1b")),
        datum("addReqCount", "0.0", None),
        datum("podsScraped", "3.0", None),
        datum("scrapeErrors", "0.0", None),
    );
    assert_eq!(json, expected);
}

#[test]
fn offline_missing_directory_is_an_error_naming_it() {
    let missing = fixture_dir("rounds/no-such-round");
    let error = aggregate_rounds(
        &[fixture_dir("rounds/round1"), missing.clone()],
        "c",
        false,
        DEFAULT_STALE_ROUNDS,
    )
    .expect_err("a missing round directory is an error");
    assert!(matches!(error, OfflineError::ReadRoundDirectory { .. }));
    let message = error.to_string();
    assert!(
        message.contains(&missing.display().to_string()),
        "the message names the directory: {message}"
    );
}

#[test]
fn offline_unreadable_and_non_utf8_files_are_failed_pods() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(directory.path().join("good"), gauge("awscni_eni_max", "3"))
        .expect("write a pod file");
    std::fs::write(directory.path().join("binary"), [0xff_u8, 0xfe, 0x00])
        .expect("write a pod file");
    std::fs::write(directory.path().join(".hidden"), "garbage{").expect("write a hidden file");
    let rounds = aggregate_rounds(
        &[directory.path().to_owned()],
        "c",
        false,
        DEFAULT_STALE_ROUNDS,
    )
    .expect("bad pod files are not errors of the command");
    assert_eq!(
        values(&rounds.rounds[0]),
        vec![
            ("eniMaxAvailable", 3.0),
            ("podsScraped", 1.0),
            ("scrapeErrors", 1.0)
        ]
    );
}

#[test]
fn offline_rounds_report_the_failed_pods() {
    let rounds = aggregate_rounds_with_stats(
        &[fixture_dir("rounds/round1"), fixture_dir("rounds/round2")],
        "c",
        false,
        DEFAULT_STALE_ROUNDS,
    )
    .expect("the fixture rounds aggregate");
    let stats: Vec<_> = rounds.iter().map(|(_, stats)| stats).collect();
    assert_eq!(stats[0].pods_scraped, 3);
    assert_eq!(stats[1].pods_scraped, 2);
    assert_eq!(stats[1].parse_errors, 1);
    assert_eq!(stats[1].parse_failures[0].pod, "aws-node-b");
    assert_eq!(
        stats[1].parse_failures[0].error.to_string(),
        "line 1: unterminated label value"
    );
}

#[test]
fn pods_folded_in_as_their_scrapes_complete_give_the_datums_of_target_order() {
    // Values whose sums depend on the order of addition in floating point: 0.1 + 0.2 + 0.3
    // is not 0.3 + 0.2 + 0.1. Latency sums, gauges and counters all take such values.
    let bodies: Vec<String> = [0.1, 0.2, 0.3, 1e16, 1.0, 0.7]
        .iter()
        .enumerate()
        .map(|(index, value)| {
            format!(
                "{}{}{}",
                gauge("awscni_total_ip_addresses", &value.to_string()),
                latency_summary(
                    value * 3.0 + 100.0 * index as f64,
                    10.0 * (index + 1) as f64
                ),
                add_requests(&(value * 10.0).to_string()),
            )
        })
        .collect();
    let uids: Vec<String> = (0..bodies.len())
        .map(|index| format!("pod-{index}"))
        .collect();
    let zones = ["us-west-2a", "us-west-2b"];
    let scrapes: Vec<PodScrape<'_>> = uids
        .iter()
        .zip(&bodies)
        .enumerate()
        .map(|(index, (uid, body))| in_zone(zones[index % 2], pod(uid, body)))
        .chain(std::iter::once(failed("pod-failed")))
        .collect();
    let options = AggregatorOptions {
        cluster_id: "c".to_owned(),
        per_az: true,
        max_series_per_pod: cni_metrics_publisher::aggregate::DEFAULT_MAX_SERIES_PER_POD,
        stale_rounds: cni_metrics_publisher::aggregate::DEFAULT_STALE_ROUNDS,
    };

    // The reference: one round in target order, then a second round so the counters have
    // increases.
    let mut in_order = Aggregator::new(options.clone());
    in_order.round(&scrapes, at(0));
    let (expected, expected_stats) = in_order.round(&scrapes, at(60));

    // The same rounds with the pods arriving in other orders, each with its target position.
    let arrival_orders: [&[usize]; 3] = [
        &[6, 5, 4, 3, 2, 1, 0],
        &[3, 0, 6, 1, 5, 2, 4],
        &[1, 3, 5, 0, 2, 4, 6],
    ];
    for arrival in arrival_orders {
        let mut streamed = Aggregator::new(options.clone());
        let mut round = streamed.begin_round();
        for &position in arrival {
            round.add(position, scrapes[position]);
        }
        round.finish(at(0));
        let mut round = streamed.begin_round();
        for &position in arrival.iter().rev() {
            round.add(position, scrapes[position]);
        }
        let (datums, stats) = round.finish(at(60));
        assert_eq!(datums, expected, "arrival order {arrival:?}");
        assert_eq!(stats.pods_scraped, expected_stats.pods_scraped);
        assert_eq!(stats.scrape_errors, expected_stats.scrape_errors);
    }
    // The values really do depend on the order of addition, or this test proves nothing.
    let forward: f64 = [0.1, 0.2, 0.3, 1e16, 1.0, 0.7].iter().sum();
    let backward: f64 = [0.7, 1.0, 1e16, 0.3, 0.2, 0.1].iter().sum();
    assert_ne!(forward, backward);
}

#[test]
fn an_unfinished_round_prunes_nothing_and_the_next_round_goes_on() {
    let mut aggregator = aggregator();
    let (a, b) = (add_requests("10"), add_requests("5"));
    aggregator.round(&[pod("a", &a), pod("b", &b)], at(0));
    // A round abandoned after one pod (shutdown, lost leadership): dropped unfinished.
    {
        let mut round = aggregator.begin_round();
        round.add(0, pod("a", &a));
    }
    assert_eq!(aggregator.tracked_pods(), 2);
    let (a, b) = (add_requests("12"), add_requests("9"));
    let (round, stats) = aggregator.round(&[pod("a", &a), pod("b", &b)], at(120));
    assert_eq!(stats.pods_scraped, 2);
    assert_eq!(value_of(&round, "addReqCount"), Some(2.0 + 4.0));
}

#[test]
fn values_cloudwatch_refuses_are_left_out_and_reported_not_silently_dropped() {
    let mut aggregator = aggregator();
    // Two finite gauges whose sum overflows to infinity, one beyond CloudWatch's range,
    // one too small, and one ordinary value.
    let a = format!(
        "{}{}{}{}",
        gauge("awscni_assigned_ip_addresses", "1.7e308"),
        gauge("awscni_total_ip_addresses", "1e200"),
        gauge("awscni_ip_max", "1e-200"),
        gauge("awscni_eni_max", "4"),
    );
    let b = gauge("awscni_assigned_ip_addresses", "1.7e308");
    let (round, _) = aggregator.round(&[pod("a", &a), pod("b", &b)], at(0));
    assert_eq!(values(&round), [("eniMaxAvailable", 4.0)]);
    let unpublishable: Vec<(&str, f64)> = round
        .unpublishable
        .iter()
        .map(|value| (value.metric_name.as_str(), value.value))
        .collect();
    assert_eq!(
        unpublishable,
        [
            ("assignIPAddresses", f64::INFINITY),
            ("totalIPAddresses", 1e200),
            ("maxIPAddresses", 1e-200),
        ]
    );
    assert!(
        round
            .unpublishable
            .iter()
            .all(|value| value.dimensions.len() == 1 && value.dimensions[0].name == "CLUSTER_ID")
    );
}

/// A body with `count` distinct series of a counter family, each at `value`.
fn many_series(count: usize, value: u64) -> String {
    let mut body = String::from("# TYPE awscni_ec2api_req_count counter\n");
    for index in 0..count {
        body.push_str(&format!(
            "awscni_ec2api_req_count{{fn=\"f{index}\"}} {value}\n"
        ));
    }
    body
}

#[test]
fn a_pod_over_the_series_limit_fails_the_round_and_keeps_its_previous_state() {
    let mut aggregator = Aggregator::new(AggregatorOptions {
        cluster_id: "c".to_owned(),
        per_az: false,
        max_series_per_pod: 100,
        stale_rounds: cni_metrics_publisher::aggregate::DEFAULT_STALE_ROUNDS,
    });
    let (at_limit, next) = (many_series(100, 1), many_series(100, 3));
    let (_, stats) = aggregator.round(&[pod("a", &at_limit)], at(0));
    assert_eq!(stats.pods_scraped, 1, "exactly the limit is allowed");
    assert_eq!(aggregator.tracked_series(), 100);

    let over = many_series(101, 2);
    let (round, stats) = aggregator.round(&[pod("a", &over)], at(60));
    assert_eq!(stats.pods_scraped, 0);
    assert_eq!(stats.series_limit_errors, 1);
    assert_eq!(stats.series_limit_pods, vec!["a".to_owned()]);
    assert_eq!(
        RoundCounts::from_stats(&stats).scrape_errors,
        1,
        "published in scrapeErrors"
    );
    assert!(values(&round).is_empty(), "{:?}", values(&round));
    assert_eq!(aggregator.tracked_pods(), 1, "the pod's state is kept");
    assert_eq!(aggregator.tracked_series(), 100, "and not grown");

    // Back under the limit: the increase covers the failed round too (3 - 1 per series).
    let (round, stats) = aggregator.round(&[pod("a", &next)], at(120));
    assert_eq!(stats.pods_scraped, 1);
    assert_eq!(values(&round), vec![("ec2ApiReqCount", 200.0)]);
}

// Pods that were not scraped: their last good gauge values stand in for them
// (README "Metric semantics", "Failures").

fn stale_options(per_az: bool, stale_rounds: u32) -> AggregatorOptions {
    AggregatorOptions {
        cluster_id: "c".to_owned(),
        per_az,
        // Low enough that `many_series(51, _)` fails on it, far above the nodes' 3 series.
        max_series_per_pod: 50,
        stale_rounds,
    }
}

/// A node exposing capacity gauges, one counter and a latency summary with a 0.99 quantile.
fn capacity_node(max: u32, total: u32, requests: u32, p99: &str) -> String {
    format!(
        "{}{}{}{}",
        gauge("awscni_ip_max", &max.to_string()),
        gauge("awscni_total_ip_addresses", &total.to_string()),
        add_requests(&requests.to_string()),
        latency_quantile("AssignPrivateIpAddresses", p99),
    )
}

fn zone_value(round: &Round, metric_name: &str, zone: &str) -> Option<f64> {
    round
        .datums
        .iter()
        .find(|datum| {
            datum.metric_name == metric_name
                && datum.dimensions.iter().any(|dimension| {
                    dimension.name == AVAILABILITY_ZONE_DIMENSION && dimension.value == zone
                })
        })
        .map(|datum| datum.value)
}

#[test]
fn a_pod_not_scraped_counts_with_its_last_gauges_for_stale_rounds_then_drops_out() {
    let mut aggregator = Aggregator::new(stale_options(true, 3));
    let healthy = |round: u32| capacity_node(10, 5 + round, 1 + round, "5");
    let b_last_good = capacity_node(30, 20, 100, "900");
    let a = healthy(0);
    let (round, _) = aggregator.round(
        &[
            in_zone("zone-a", pod("a", &a)),
            in_zone("zone-b", pod("b", &b_last_good)),
        ],
        at(0),
    );
    assert_eq!(value_of(&round, "maxIPAddresses"), Some(40.0));
    assert_eq!(value_of(&round, "awsAPILatency"), Some(900.0));

    // Three rounds in which b is not scraped, each for another reason. Its failed scrapes
    // carry no zone: the zone of its last good scrape is the one its values count in.
    let garbage = "awscni_ip_max{";
    let too_many_series = many_series(51, 1);
    for failing_round in 1..=3_u32 {
        let b = match failing_round {
            1 => failed("b"),
            2 => pod("b", garbage),
            _ => pod("b", &too_many_series),
        };
        let a = healthy(failing_round);
        let (round, stats) = aggregator.round(
            &[in_zone("zone-a", pod("a", &a)), b],
            at(60 * u64::from(failing_round)),
        );
        let what = format!("failing round {failing_round}");
        assert_eq!(value_of(&round, "maxIPAddresses"), Some(40.0), "{what}");
        assert_eq!(
            value_of(&round, "totalIPAddresses"),
            Some(f64::from(5 + failing_round + 20)),
            "{what}"
        );
        assert_eq!(zone_value(&round, "maxIPAddresses", "zone-b"), Some(30.0));
        assert_eq!(zone_value(&round, "totalIPAddresses", "zone-b"), Some(20.0));
        assert_eq!(zone_value(&round, "maxIPAddresses", "zone-a"), Some(10.0));
        // b's counters add nothing; a's grow by one a round.
        assert_eq!(value_of(&round, "addReqCount"), Some(1.0), "{what}");
        // b's old 900 ms peak is not carried over: only a's quantile counts.
        assert_eq!(value_of(&round, "awsAPILatency"), Some(5.0), "{what}");
        assert_eq!((stats.stale_pods, stats.stale_expired), (1, 0), "{what}");
        // Still a failed pod in the self-metrics.
        let counts = RoundCounts::from_stats(&stats);
        assert_eq!(
            (counts.pods_scraped, counts.scrape_errors),
            (1, 1),
            "{what}"
        );
    }

    // A fourth failing round is one too many: b's values are dropped, once.
    let a = healthy(4);
    let (round, stats) = aggregator.round(&[in_zone("zone-a", pod("a", &a)), failed("b")], at(240));
    assert_eq!(value_of(&round, "maxIPAddresses"), Some(10.0));
    assert_eq!(value_of(&round, "totalIPAddresses"), Some(9.0));
    assert_eq!(zone_value(&round, "maxIPAddresses", "zone-b"), None);
    assert_eq!((stats.stale_pods, stats.stale_expired), (0, 1));
    let a = healthy(5);
    let (round, stats) = aggregator.round(&[in_zone("zone-a", pod("a", &a)), failed("b")], at(300));
    assert_eq!(value_of(&round, "maxIPAddresses"), Some(10.0));
    assert_eq!((stats.stale_pods, stats.stale_expired), (0, 0));

    // b answers again: its gauges are current and its counter increase covers every round
    // since its last good scrape once (160 - 100), not 0 and not 160.
    let a = healthy(6);
    let b = capacity_node(30, 22, 160, "7");
    let (round, stats) = aggregator.round(
        &[
            in_zone("zone-a", pod("a", &a)),
            in_zone("zone-b", pod("b", &b)),
        ],
        at(360),
    );
    assert_eq!(value_of(&round, "maxIPAddresses"), Some(40.0));
    assert_eq!(value_of(&round, "totalIPAddresses"), Some(11.0 + 22.0));
    assert_eq!(value_of(&round, "addReqCount"), Some(1.0 + 60.0));
    assert_eq!((stats.stale_pods, stats.stale_expired), (0, 0));
}

#[test]
fn the_counters_of_a_pod_not_scraped_add_nothing_and_resume_exactly_once() {
    // Within --stale-rounds (1, 2, 3 failed rounds) and beyond it (4, 5): the counter state
    // is kept as long as the pod is in the list, whatever happens to its gauges.
    for failed_rounds in 1..=5_u64 {
        let mut aggregator = Aggregator::new(stale_options(false, 3));
        let other = add_requests("7");
        let (before, after) = (add_requests("100"), add_requests("130"));
        aggregator.round(&[pod("other", &other), pod("a", &before)], at(0));
        for failing_round in 1..=failed_rounds {
            let (round, _) =
                aggregator.round(&[pod("other", &other), failed("a")], at(60 * failing_round));
            assert_eq!(
                value_of(&round, "addReqCount"),
                Some(0.0),
                "a's counter adds nothing in failing round {failing_round}"
            );
        }
        let (round, _) = aggregator.round(
            &[pod("other", &other), pod("a", &after)],
            at(60 * (failed_rounds + 1)),
        );
        assert_eq!(
            value_of(&round, "addReqCount"),
            Some(30.0),
            "the increase over {failed_rounds} failed rounds is counted once"
        );
    }
}

#[test]
fn a_pod_never_scraped_successfully_contributes_nothing() {
    let mut aggregator = Aggregator::new(stale_options(true, 3));
    let a = capacity_node(10, 5, 1, "5");
    for round_number in 0..3 {
        let (round, stats) = aggregator.round(
            &[
                in_zone("zone-a", pod("a", &a)),
                in_zone("zone-b", failed("new")),
            ],
            at(60 * round_number),
        );
        assert_eq!(value_of(&round, "maxIPAddresses"), Some(10.0));
        assert_eq!(zone_value(&round, "maxIPAddresses", "zone-b"), None);
        assert_eq!((stats.stale_pods, stats.stale_expired), (0, 0));
        assert_eq!(stats.scrape_errors, 1);
    }
}

#[test]
fn stale_rounds_zero_lets_a_failed_pod_add_nothing() {
    let mut aggregator = Aggregator::new(stale_options(true, 0));
    let (a, b) = (
        capacity_node(10, 5, 1, "5"),
        capacity_node(30, 20, 100, "9"),
    );
    aggregator.round(
        &[
            in_zone("zone-a", pod("a", &a)),
            in_zone("zone-b", pod("b", &b)),
        ],
        at(0),
    );
    let (round, stats) = aggregator.round(
        &[
            in_zone("zone-a", pod("a", &a)),
            in_zone("zone-b", failed("b")),
        ],
        at(60),
    );
    assert_eq!(value_of(&round, "maxIPAddresses"), Some(10.0));
    assert_eq!(zone_value(&round, "maxIPAddresses", "zone-b"), None);
    assert_eq!((stats.stale_pods, stats.stale_expired), (0, 0));
    // The counters still resume exactly once.
    let b = capacity_node(30, 20, 125, "9");
    let (round, _) = aggregator.round(
        &[
            in_zone("zone-a", pod("a", &a)),
            in_zone("zone-b", pod("b", &b)),
        ],
        at(120),
    );
    assert_eq!(value_of(&round, "addReqCount"), Some(25.0));
}

#[test]
fn a_pod_removed_from_the_list_takes_its_stale_values_with_it() {
    let mut aggregator = Aggregator::new(stale_options(false, 3));
    let (a, b) = (
        capacity_node(10, 5, 1, "5"),
        capacity_node(30, 20, 100, "9"),
    );
    aggregator.round(&[pod("a", &a), pod("b", &b)], at(0));
    let (round, stats) = aggregator.round(&[pod("a", &a), failed("b")], at(60));
    assert_eq!(value_of(&round, "maxIPAddresses"), Some(40.0));
    assert_eq!(stats.stale_pods, 1);
    // b is gone from the pod list (deleted): its values go with it at once.
    let (round, stats) = aggregator.round(&[pod("a", &a)], at(120));
    assert_eq!(value_of(&round, "maxIPAddresses"), Some(10.0));
    assert_eq!((stats.stale_pods, stats.stale_expired), (0, 0));
    assert_eq!(aggregator.tracked_pods(), 1);
    // The same UID listed again but failing is a pod never scraped: nothing stands in.
    let (round, stats) = aggregator.round(&[pod("a", &a), failed("b")], at(180));
    assert_eq!(value_of(&round, "maxIPAddresses"), Some(10.0));
    assert_eq!(stats.stale_pods, 0);
}

#[test]
fn stale_values_are_summed_in_target_order_like_fresh_ones() {
    // Values whose sum depends on the order of addition (see the test above for fresh pods).
    let values = [0.1, 0.2, 0.3, 1e16, 1.0, 0.7];
    let bodies: Vec<String> = values
        .iter()
        .map(|value| gauge("awscni_total_ip_addresses", &value.to_string()))
        .collect();
    let uids: Vec<String> = (0..bodies.len())
        .map(|index| format!("pod-{index}"))
        .collect();
    let good: Vec<PodScrape<'_>> = uids
        .iter()
        .zip(&bodies)
        .enumerate()
        .map(|(index, (uid, body))| in_zone(["z1", "z2"][index % 2], pod(uid, body)))
        .collect();
    // The second round: pods 0, 3 and 5 are not scraped.
    let second: Vec<PodScrape<'_>> = good
        .iter()
        .enumerate()
        .map(|(index, scrape)| match index {
            0 | 3 | 5 => failed(scrape.uid),
            _ => *scrape,
        })
        .collect();
    let options = stale_options(true, 3);
    let mut in_order = Aggregator::new(options.clone());
    in_order.round(&good, at(0));
    let (expected, stats) = in_order.round(&second, at(60));
    assert_eq!(stats.stale_pods, 3);
    assert_eq!(
        value_of(&expected, "totalIPAddresses"),
        Some(values.iter().sum::<f64>())
    );
    for arrival in [[5, 4, 3, 2, 1, 0], [3, 0, 5, 1, 4, 2]] {
        let mut streamed = Aggregator::new(options.clone());
        streamed.round(&good, at(0));
        let mut round = streamed.begin_round();
        for position in arrival {
            round.add(position, second[position]);
        }
        let (datums, _) = round.finish(at(60));
        assert_eq!(datums, expected, "arrival order {arrival:?}");
    }
}

#[test]
fn offline_rounds_use_stale_values_like_run_unless_turned_off() {
    let rounds = [fixture_dir("rounds/round1"), fixture_dir("rounds/round2")];
    // aws-node-b does not parse in round 2; its round-1 gauge (4) stands in by default.
    let with = aggregate_rounds(&rounds, "c", false, DEFAULT_STALE_ROUNDS).expect("aggregates");
    assert_eq!(value_of(&with.rounds[1], "assignIPAddresses"), Some(13.0));
    let without = aggregate_rounds(&rounds, "c", false, 0).expect("aggregates");
    assert_eq!(value_of(&without.rounds[1], "assignIPAddresses"), Some(9.0));
}
