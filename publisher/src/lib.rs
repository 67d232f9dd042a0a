//! `cni-metrics-publisher`: scrapes every aws-node pod's ipamd metrics, aggregates them per
//! cluster and publishes them to CloudWatch, as a drop-in for the upstream helper image.
//!
//! Not implemented yet: the scraper, parser, aggregator and CloudWatch publisher are the
//! subject of their own issue. What is fixed already is the contract with existing
//! dashboards and alarms, below.

/// The CloudWatch namespace upstream publishes to.
pub const CLOUDWATCH_NAMESPACE: &str = "Kubernetes";
/// The one dimension upstream puts on every datum.
pub const CLUSTER_DIMENSION: &str = "CLUSTER_ID";
