//! The xtask integration tests, linked into one binary (see `autotests = false`).

mod support;
mod upgrade;
mod widgets;
mod world;

mod alarms;
mod catalog_tables;
mod demo;
mod deploy;
mod fleet;
mod iam_lint;
mod identity;
mod image;
mod kubernetes_schemas;
mod ownership;
mod registry;
mod render_cli;
mod sandbox_up;
mod snapshots;
