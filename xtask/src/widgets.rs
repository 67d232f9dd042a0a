//! `cargo xtask status --widgets DIR`: each metric widget of the cluster's dashboard as the
//! PNG CloudWatch's console draws, fetched with GetMetricWidgetImage, so a look replaces
//! reading numbers.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Map, Value};

use crate::aws::AwsError;

/// Pixel size of each image: wide enough for the legends of the dashboard's graphs.
pub const WIDTH: u64 = 600;
pub const HEIGHT: u64 = 300;
/// The time range drawn: the last three hours, enough to see a trend after a deploy.
pub const START: &str = "-PT3H";

/// The `properties` members a MetricWidget for GetMetricWidgetImage takes from a dashboard
/// widget (CloudWatch's "GetMetricWidgetImage: Metric Widget Structure and Syntax").
const COPIED_PROPERTIES: &[&str] = &[
    "metrics",
    "view",
    "stacked",
    "stat",
    "period",
    "region",
    "title",
    "yAxis",
    "annotations",
];

/// One metric widget of a dashboard, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct WidgetRequest {
    /// Position among the dashboard's metric widgets, from 1.
    pub index: usize,
    pub title: String,
    /// The MetricWidget JSON.
    pub widget: Value,
}

impl WidgetRequest {
    /// `NN-title-slug.png`: the index keeps the dashboard's order and two widgets of one
    /// title apart.
    pub fn file_name(&self) -> String {
        format!("{:02}-{}.png", self.index, slug(&self.title))
    }
}

/// Lowercase ASCII letters and digits, runs of anything else as one `-`.
pub fn slug(title: &str) -> String {
    let mut slug = String::new();
    for character in title.chars() {
        if character.is_ascii_alphanumeric() {
            slug.push(character.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        "widget".to_owned()
    } else {
        slug.to_owned()
    }
}

/// The MetricWidget of every `"type": "metric"` widget of a dashboard body, in order.
pub fn metric_widgets(dashboard: &str, body: &str) -> anyhow::Result<Vec<WidgetRequest>> {
    let body: Value = serde_json::from_str(body).with_context(|| {
        format!(
            "the body of dashboard {dashboard} is not JSON; run `cargo xtask deploy` to rewrite it"
        )
    })?;
    let widgets = body
        .get("widgets")
        .and_then(Value::as_array)
        .with_context(|| {
            format!("dashboard {dashboard} has no `widgets` array; run `cargo xtask deploy` to rewrite it")
        })?;
    let mut requests = Vec::new();
    for (position, widget) in widgets.iter().enumerate() {
        if widget.get("type").and_then(Value::as_str) != Some("metric") {
            continue;
        }
        let properties = widget
            .get("properties")
            .and_then(Value::as_object)
            .with_context(|| {
                format!("widget {position} of dashboard {dashboard} is a metric widget without `properties`; run `cargo xtask deploy` to rewrite it")
            })?;
        let mut metric_widget = Map::new();
        for &name in COPIED_PROPERTIES {
            if let Some(value) = properties.get(name) {
                metric_widget.insert(name.to_owned(), value.clone());
            }
        }
        // GetMetricWidgetImage draws timeSeries, bar and pie only; a single value is
        // drawn as its time series, which also shows how it got there.
        if metric_widget.get("view").and_then(Value::as_str) == Some("singleValue") {
            metric_widget.insert("view".to_owned(), Value::from("timeSeries"));
        }
        metric_widget.insert("width".to_owned(), Value::from(WIDTH));
        metric_widget.insert("height".to_owned(), Value::from(HEIGHT));
        metric_widget.insert("start".to_owned(), Value::from(START));
        let index = requests.len() + 1;
        let title = properties
            .get("title")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("widget {index}"));
        requests.push(WidgetRequest {
            index,
            title,
            widget: Value::Object(metric_widget),
        });
    }
    Ok(requests)
}

/// Fetches each metric widget of the dashboard `name` as a PNG into `dir`; the paths, in
/// the dashboard's order.
pub async fn save(
    client: &aws_sdk_cloudwatch::Client,
    name: &str,
    dir: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let dashboard = client
        .get_dashboard()
        .dashboard_name(name)
        .send()
        .await
        .map_err(AwsError::call("cloudwatch", "GetDashboard", name))
        .with_context(|| {
            format!("reading dashboard {name} for its widgets (run `cargo xtask deploy` if it does not exist)")
        })?;
    let requests = metric_widgets(name, dashboard.dashboard_body().unwrap_or_default())?;
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "creating {} for the widget images; pass a --widgets directory you can write to",
            dir.display()
        )
    })?;
    let mut paths = Vec::with_capacity(requests.len());
    for request in &requests {
        let resource = format!(
            "widget {} \"{}\" of dashboard {name}",
            request.index, request.title
        );
        let output = client
            .get_metric_widget_image()
            .metric_widget(request.widget.to_string())
            .output_format("png")
            .send()
            .await
            .map_err(AwsError::call(
                "cloudwatch",
                "GetMetricWidgetImage",
                resource.clone(),
            ))?;
        let image = output.metric_widget_image().with_context(|| {
            format!("CloudWatch answered GetMetricWidgetImage for {resource} without an image; try again")
        })?;
        let path = dir.join(request.file_name());
        std::fs::write(&path, image.as_ref()).with_context(|| {
            format!(
                "writing the image of {resource} to {}; check that the directory is writable",
                path.display()
            )
        })?;
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_keep_letters_and_digits_and_join_the_rest_with_one_dash() {
        assert_eq!(slug("IP utilisation (%)"), "ip-utilisation");
        assert_eq!(
            slug("IP capacity: max, allocated, assigned"),
            "ip-capacity-max-allocated-assigned"
        );
        assert_eq!(slug("%%"), "widget");
    }

    #[test]
    fn metric_widgets_take_the_properties_size_and_range_and_skip_text() {
        let body = r#"{"widgets": [
            {"type": "text", "properties": {"markdown": "hi"}},
            {"type": "metric", "properties": {"title": "Max IPs", "view": "singleValue", "stat": "Maximum",
             "period": 60, "region": "eu-west-1", "metrics": [["K", "maxIPAddresses"]], "sparkline": true}},
            {"type": "metric", "properties": {"title": "Max IPs", "view": "timeSeries", "metrics": [["K", "m"]],
             "yAxis": {"left": {"min": 0}}}}
        ]}"#;
        let requests = metric_widgets("d", body).expect("a dashboard body");
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].file_name(), "01-max-ips.png");
        assert_eq!(requests[1].file_name(), "02-max-ips.png");
        assert_eq!(
            requests[0].widget,
            serde_json::json!({"title": "Max IPs", "view": "timeSeries", "stat": "Maximum", "period": 60,
                "region": "eu-west-1", "metrics": [["K", "maxIPAddresses"]], "width": 600, "height": 300,
                "start": "-PT3H"})
        );
        assert_eq!(
            requests[1].widget["yAxis"],
            serde_json::json!({"left": {"min": 0}})
        );
    }

    #[test]
    fn a_body_that_is_not_a_dashboard_says_what_to_do() {
        let error = metric_widgets("d", "[]")
            .expect_err("an array is no dashboard")
            .to_string();
        assert!(
            error.contains("dashboard d has no `widgets` array; run `cargo xtask deploy`"),
            "{error}"
        );
    }
}
