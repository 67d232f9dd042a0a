//! The CloudWatch dashboard, compared as parsed JSON: CloudWatch stores the body as given,
//! but a body edited in the console comes back reformatted.

use aws_sdk_cloudwatch::Client;
use serde_json::Value;

use super::{Change, ResourceChange, Scope, Step};
use crate::aws::{describe, missing_as_none};
use crate::documents::diff;
use crate::render::dashboard_marker;

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("cloudwatch:{operation} on dashboard {name} failed: {message}")]
    Call {
        operation: &'static str,
        name: String,
        message: String,
    },
    #[error(
        "a CloudWatch dashboard named {name} already exists and was not made by this tool; \
         choose another --dashboard-name, or re-run with --force-conflicts to replace it"
    )]
    NotOurs { name: String },
}

/// Our dashboards say so in their header; a dashboard without the marker is someone else's.
fn is_ours(body: &str) -> bool {
    body.contains(&dashboard_marker())
}

async fn live_body(client: &Client, name: &str) -> Result<Option<String>, DashboardError> {
    let result = client.get_dashboard().dashboard_name(name).send().await;
    missing_as_none(result, |error| error.is_dashboard_not_found_error())
        .map(|output| output.map(|output| output.dashboard_body.unwrap_or_default()))
        .map_err(|error| DashboardError::Call {
            operation: "GetDashboard",
            name: name.to_owned(),
            message: describe(&error),
        })
}

pub async fn plan(
    client: &Client,
    name: &str,
    body: &str,
    force_conflicts: bool,
) -> Result<ResourceChange, DashboardError> {
    let kind = "CloudWatch dashboard";
    let put = vec![Step::PutDashboard {
        name: name.to_owned(),
        body: body.to_owned(),
    }];
    let Some(live) = live_body(client, name).await? else {
        return Ok(
            ResourceChange::new(Scope::Dashboard, kind, name, Change::Create).with_steps(put),
        );
    };
    if !is_ours(&live) && !force_conflicts {
        return Err(DashboardError::NotOurs {
            name: name.to_owned(),
        });
    }
    let desired: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    // A body that is not JSON at all is drift like any other; it shows as one replaced value.
    let live: Value = serde_json::from_str(&live).unwrap_or(Value::String(live));
    let lines = diff(&live, &desired);
    if lines.is_empty() {
        Ok(ResourceChange::new(
            Scope::Dashboard,
            kind,
            name,
            Change::NoOp,
        ))
    } else {
        Ok(
            ResourceChange::new(Scope::Dashboard, kind, name, Change::Update { diff: lines })
                .with_steps(put),
        )
    }
}

pub async fn plan_destroy(
    client: &Client,
    name: &str,
) -> Result<Option<ResourceChange>, DashboardError> {
    let kind = "CloudWatch dashboard";
    Ok(live_body(client, name).await?.map(|live| {
        if is_ours(&live) {
            ResourceChange::new(Scope::Dashboard, kind, name, Change::Delete).with_steps(vec![
                Step::DeleteDashboard {
                    name: name.to_owned(),
                },
            ])
        } else {
            ResourceChange::new(Scope::Dashboard, kind, name, Change::NoOp)
                .with_note("kept: not made by this tool")
        }
    }))
}

pub async fn apply(client: &Client, step: &Step) -> Result<(), DashboardError> {
    match step {
        Step::PutDashboard { name, body } => {
            client
                .put_dashboard()
                .dashboard_name(name)
                .dashboard_body(body)
                .send()
                .await
                .map_err(|error| DashboardError::Call {
                    operation: "PutDashboard",
                    name: name.clone(),
                    message: describe(&error),
                })?;
        }
        Step::DeleteDashboard { name } => {
            client
                .delete_dashboards()
                .dashboard_names(name)
                .send()
                .await
                .map_err(|error| DashboardError::Call {
                    operation: "DeleteDashboards",
                    name: name.clone(),
                    message: describe(&error),
                })?;
        }
        _ => {}
    }
    Ok(())
}
