//! The generator and deployer behind `cargo xtask`: it renders the IAM policy, the trust
//! policy, region-correct Kubernetes manifests and a CloudWatch dashboard for the CNI
//! metrics helper, and (in later commands) applies them idempotently.
//!
//! `main.rs` only parses flags and maps results to exit codes; every command lives in the
//! module named after it.

pub mod aws;
pub mod bench;
pub mod cargo_tool;
pub mod catalog;
pub mod cluster_cmd;
pub mod demo_cmd;
pub mod deployer;
pub mod documents;
pub mod exit;
pub mod facts;
pub mod flags;
pub mod plan;
pub mod preflight;
pub mod render;
pub mod render_cmd;
pub mod sandbox_cmd;
pub mod settings;
pub mod status_cmd;
pub mod test_cmd;
pub mod upgrade_cmd;
