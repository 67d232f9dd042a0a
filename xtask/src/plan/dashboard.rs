//! The CloudWatch dashboard, compared as parsed JSON: CloudWatch stores the body as given,
//! but a body edited in the console comes back reformatted.

use aws_sdk_cloudwatch::Client;
use serde_json::Value;

use super::{Change, ResourceChange, Scope};
use super::{Convergence, settle};
use crate::aws::{AwsError, missing_as_none};
use crate::documents::diff;
use crate::ownership::{self, Ownership};

pub const KIND: &str = "CloudWatch dashboard";

/// Every failure here is a failed CloudWatch call.
pub type DashboardError = AwsError;

fn call_error<E: std::error::Error + Send + Sync + 'static>(
    operation: &'static str,
    name: &str,
) -> impl FnOnce(E) -> AwsError {
    AwsError::call("cloudwatch", operation, format!("dashboard {name}"))
}

/// The CloudWatch dashboard calls a plan makes.
#[derive(Debug, Clone)]
pub enum DashboardStep {
    PutDashboard { name: String, body: String },
    DeleteDashboard { name: String },
}

async fn live_body(client: &Client, name: &str) -> Result<Option<String>, DashboardError> {
    let result = client.get_dashboard().dashboard_name(name).send().await;
    missing_as_none(result, |error| error.is_dashboard_not_found_error())
        .map(|output| output.map(|output| output.dashboard_body.unwrap_or_default()))
        .map_err(call_error("GetDashboard", name))
}

/// The dashboard of our name, for `cluster` in `region`.
#[derive(Debug, Clone, Copy)]
pub struct DesiredDashboard<'a> {
    pub name: &'a str,
    pub body: &'a str,
    pub cluster: &'a str,
    pub region: &'a str,
}

pub async fn plan(
    client: &Client,
    desired: DesiredDashboard<'_>,
    adopt: bool,
) -> Result<ResourceChange, DashboardError> {
    let name = desired.name;
    let put = vec![DashboardStep::PutDashboard {
        name: name.to_owned(),
        body: desired.body.to_owned(),
    }];
    let Some(live) = live_body(client, name).await? else {
        return Ok(
            ResourceChange::new(Scope::Dashboard, KIND, name, Change::Create).with_steps(put),
        );
    };
    let ownership = ownership::of_dashboard(&live, desired.cluster, desired.region);
    let wanted: Value = serde_json::from_str(desired.body).unwrap_or(Value::Null);
    // A body that is not JSON at all is drift like any other; it shows as one replaced value.
    let live: Value = serde_json::from_str(&live).unwrap_or(Value::String(live));
    let lines = diff(&live, &wanted);
    let convergence = if lines.is_empty() {
        Convergence::default()
    } else {
        Convergence {
            diff: lines,
            steps: put,
        }
    };
    let (change, steps) = settle(ownership, adopt, convergence);
    Ok(ResourceChange::new(Scope::Dashboard, KIND, name, change).with_steps(steps))
}

/// Plans the deletion of the dashboard when it is ours, for this cluster and region.
pub async fn plan_destroy(
    client: &Client,
    name: &str,
    cluster: &str,
    region: &str,
) -> Result<Option<ResourceChange>, DashboardError> {
    Ok(live_body(client, name).await?.map(|live| {
        match ownership::of_dashboard(&live, cluster, region) {
            Ownership::Ours => ResourceChange::new(Scope::Dashboard, KIND, name, Change::Delete)
                .with_steps(vec![DashboardStep::DeleteDashboard {
                    name: name.to_owned(),
                }]),
            Ownership::NotOurs(reason) => {
                ResourceChange::kept_as_not_ours(Scope::Dashboard, KIND, name, &reason)
            }
        }
    }))
}

pub async fn apply(client: &Client, step: &DashboardStep) -> Result<(), DashboardError> {
    match step {
        DashboardStep::PutDashboard { name, body } => {
            client
                .put_dashboard()
                .dashboard_name(name)
                .dashboard_body(body)
                .send()
                .await
                .map_err(call_error("PutDashboard", name))?;
        }
        DashboardStep::DeleteDashboard { name } => {
            client
                .delete_dashboards()
                .dashboard_names(name)
                .send()
                .await
                .map_err(call_error("DeleteDashboards", name))?;
        }
    }
    Ok(())
}
