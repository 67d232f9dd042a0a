//! The 20 ipamd metric families the publisher reads, and the CloudWatch metric name each one
//! is published under. The names are upstream's (`cmd/cni-metrics-helper/metrics/cni_metrics.go`),
//! so existing dashboards find their series; counter values and `awsAPILatency` differ from
//! upstream's on purpose (docs/metrics.md). The order of [`IPAMD_METRICS`] is the order
//! datums are published in.

/// How a family's samples are folded into one cluster value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    /// By the type of the family in each scrape: a gauge is summed over all series and pods; a
    /// counter contributes the per-pod, per-series increase since the previous round.
    /// Published with unit `Count`.
    Value,
    /// ipamd's AWS API latency summary: the largest finite 0.99 quantile, or else the mean
    /// latency over the interval from the `_sum` and `_count` increases. Published with unit
    /// `Milliseconds`.
    Latency,
}

/// One ipamd family and how it is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpamdMetric {
    /// The family name in ipamd's exposition.
    pub family: &'static str,
    /// The CloudWatch `MetricName`.
    pub metric_name: &'static str,
    pub aggregation: Aggregation,
    /// Whether this is an IP capacity metric, which `--per-az` also publishes per availability
    /// zone (IP exhaustion happens per subnet, so per zone).
    pub capacity: bool,
}

const fn value(family: &'static str, metric_name: &'static str) -> IpamdMetric {
    IpamdMetric {
        family,
        metric_name,
        aggregation: Aggregation::Value,
        capacity: false,
    }
}

const fn capacity(family: &'static str, metric_name: &'static str) -> IpamdMetric {
    IpamdMetric {
        family,
        metric_name,
        aggregation: Aggregation::Value,
        capacity: true,
    }
}

/// The number of metrics in [`IPAMD_METRICS`].
pub const IPAMD_METRIC_COUNT: usize = 20;

/// Every family the publisher reads, in publishing order (upstream's order).
pub const IPAMD_METRICS: [IpamdMetric; IPAMD_METRIC_COUNT] = [
    capacity("awscni_assigned_ip_addresses", "assignIPAddresses"),
    capacity("awscni_total_ip_addresses", "totalIPAddresses"),
    value("awscni_total_ipv4_prefixes", "totalIPv4Prefixes"),
    value("awscni_assigned_ip_per_cidr", "totalAssignedIPv4sPerCidr"),
    value("awscni_eni_allocated", "eniAllocated"),
    value("awscni_eni_max", "eniMaxAvailable"),
    capacity("awscni_ip_max", "maxIPAddresses"),
    IpamdMetric {
        family: "awscni_aws_api_latency_ms",
        metric_name: "awsAPILatency",
        aggregation: Aggregation::Latency,
        capacity: false,
    },
    value("awscni_aws_api_error_count", "awsAPIErr"),
    value("awscni_aws_utils_error_count", "awsUtilErr"),
    value("awscni_ipamd_error_count", "ipamdErr"),
    value("awscni_force_removed_enis", "forceRemoveENI"),
    value("awscni_force_removed_ips", "forceRemoveIPs"),
    value("awscni_ipamd_action_inprogress", "ipamdActionInProgress"),
    value("awscni_reconcile_count", "reconcileCount"),
    value("awscni_add_ip_req_count", "addReqCount"),
    value("awscni_del_ip_req_count", "delReqCount"),
    value("awscni_pod_eni_error_count", "podENIErr"),
    value("awscni_ec2api_req_count", "ec2ApiReqCount"),
    value("awscni_ec2api_error_count", "ec2ApiErrCount"),
];

/// The position in [`IPAMD_METRICS`] of the metric read from the ipamd family `family`.
pub fn index_of_family(family: &str) -> Option<usize> {
    // Every family shares this prefix, so anything else (the go_* and process_* families of a
    // real endpoint) is rejected with one comparison.
    if !family.starts_with("awscni_") {
        return None;
    }
    IPAMD_METRICS
        .iter()
        .position(|metric| metric.family == family)
}

/// The metric published as CloudWatch `MetricName` `metric_name`.
pub fn by_metric_name(metric_name: &str) -> Option<&'static IpamdMetric> {
    IPAMD_METRICS
        .iter()
        .find(|metric| metric.metric_name == metric_name)
}

/// The capacity metrics, which `--per-az` also publishes per availability zone.
pub fn capacity_metrics() -> impl Iterator<Item = &'static IpamdMetric> {
    IPAMD_METRICS.iter().filter(|metric| metric.capacity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_families_are_ipamd_families() {
        for (index, metric) in IPAMD_METRICS.iter().enumerate() {
            assert_eq!(index_of_family(metric.family), Some(index));
            assert_eq!(by_metric_name(metric.metric_name), Some(metric));
            assert!(metric.family.starts_with("awscni_"));
        }
    }

    #[test]
    fn capacity_metrics_are_the_three_ip_capacity_metrics() {
        let names: Vec<_> = capacity_metrics()
            .map(|metric| metric.metric_name)
            .collect();
        assert_eq!(
            names,
            ["assignIPAddresses", "totalIPAddresses", "maxIPAddresses"]
        );
    }

    #[test]
    fn only_the_latency_summary_uses_latency_aggregation() {
        let latency: Vec<_> = IPAMD_METRICS
            .iter()
            .filter(|metric| metric.aggregation == Aggregation::Latency)
            .map(|metric| metric.family)
            .collect();
        assert_eq!(latency, ["awscni_aws_api_latency_ms"]);
        assert_eq!(index_of_family("go_goroutines"), None);
        assert_eq!(index_of_family("awscni_no_available_ip_addresses"), None);
    }
}
