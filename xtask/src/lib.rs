//! The generator and deployer behind `cargo xtask`: it renders the IAM policy, the trust
//! policy, region-correct Kubernetes manifests and a CloudWatch dashboard for the CNI
//! metrics helper, and applies them idempotently.
//!
//! The flow, one module a step: [`settings`] (inputs validated once) -> [`facts`] (what is
//! live) -> [`decide`] (the target) -> [`render`] -> [`preflight`], run in that order by
//! [`prepare`]; then [`plan`] (live state diffed into a typed plan) -> [`apply`].
//! `main.rs` only parses flags and maps results to exit codes; every command lives in the
//! module named after it (`*_cmd`), and [`terminal`] holds what they share at the terminal.

pub mod alarms;
pub mod apply;
pub mod arn;
pub mod aws;
pub mod bench;
pub mod cargo_tool;
pub mod catalog;
pub mod decide;
pub mod demo_cmd;
pub mod deploy_cmd;
pub mod destroy_cmd;
pub mod documents;
pub mod exit;
pub mod facts;
pub mod flags;
pub mod fleet;
pub mod image;
pub mod image_push_cmd;
pub mod ownership;
pub mod plan;
pub mod plan_cmd;
pub mod pod;
pub mod preflight;
pub mod preflight_cmd;
pub mod prepare;
pub mod registry;
pub mod render;
pub mod render_cmd;
pub mod sandbox_cmd;
pub mod settings;
pub mod status_cmd;
pub mod terminal;
pub mod test_cmd;
pub mod upgrade_cmd;
pub mod widgets;
