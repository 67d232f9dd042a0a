//! `cni-metrics-publisher`: scrapes every aws-node pod's ipamd metrics, aggregates them per
//! cluster and publishes them to CloudWatch, as a drop-in for the upstream helper image.

pub mod aggregate;
pub mod cli;
pub mod cloudwatch;
pub mod config;
pub mod cycle;
pub mod datum;
pub mod discovery;
pub mod edge;
pub mod exposition;
pub mod ipamd_metrics;
pub mod leader;
pub mod offline;
pub mod scrape;
pub mod serve;

pub use config::CLOUDWATCH_NAMESPACE;
pub use datum::CLUSTER_DIMENSION;

/// This build's version: the image tag `cargo xtask image push` gives it and the tag
/// `deploy --publisher ours` looks up by default.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
