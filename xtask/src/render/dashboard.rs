//! Structural checks of the CloudWatch dashboard body, so that a template edit that would be
//! refused by PutDashboard (or silently show an empty widget) fails at render time instead.
//! The rules are those of CloudWatch's "Dashboard body structure and syntax" reference: a
//! `widgets` array; each widget with a type, x/y on a 24-column grid, width 1-24, height
//! 1-1000 and a properties object; metric widgets with a region and a metrics array; alarm
//! widgets with the ARNs of the alarms they show.

use serde_json::Value;

/// Checks `body`; every metric must be in `namespace` and carry `CLUSTER_ID = cluster`.
pub fn check(body: &Value, namespace: &str, cluster: &str) -> Result<(), String> {
    let widgets = body
        .get("widgets")
        .and_then(Value::as_array)
        .filter(|widgets| !widgets.is_empty())
        .ok_or("the body has no widgets array")?;
    for (index, widget) in widgets.iter().enumerate() {
        check_widget(widget, namespace, cluster)
            .map_err(|problem| format!("widget {index}: {problem}"))?;
    }
    Ok(())
}

fn check_widget(widget: &Value, namespace: &str, cluster: &str) -> Result<(), String> {
    let number = |key: &str| {
        widget
            .get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("{key} must be a non-negative integer"))
    };
    number("y")?;
    let (x, width, height) = (number("x")?, number("width")?, number("height")?);
    if !(1..=24).contains(&width) || x + width > 24 {
        return Err(format!(
            "x {x} and width {width} do not fit the 24-column grid"
        ));
    }
    if !(1..=1000).contains(&height) {
        return Err(format!("height {height} is outside 1-1000"));
    }
    let properties = widget
        .get("properties")
        .and_then(Value::as_object)
        .ok_or("properties must be an object")?;
    match widget.get("type").and_then(Value::as_str) {
        Some("text") => properties
            .get("markdown")
            .and_then(Value::as_str)
            .map(|_| ())
            .ok_or_else(|| "a text widget needs markdown".to_owned()),
        Some("metric") => {
            properties
                .get("region")
                .and_then(Value::as_str)
                .filter(|region| !region.is_empty())
                .ok_or("a metric widget needs a region")?;
            let metrics = properties
                .get("metrics")
                .and_then(Value::as_array)
                .filter(|metrics| !metrics.is_empty())
                .ok_or("a metric widget needs a non-empty metrics array")?;
            metrics
                .iter()
                .try_for_each(|metric| check_metric(metric, namespace, cluster))
        }
        Some("alarm") => properties
            .get("alarms")
            .and_then(Value::as_array)
            .filter(|alarms| {
                !alarms.is_empty()
                    && alarms.iter().all(|alarm| {
                        alarm
                            .as_str()
                            .is_some_and(|arn| arn.starts_with("arn:") && arn.contains(":alarm:"))
                    })
            })
            .map(|_| ())
            .ok_or_else(|| "an alarm widget needs a non-empty array of alarm ARNs".to_owned()),
        other => Err(format!("unexpected widget type {other:?}")),
    }
}

/// A metric row is `[namespace, name, dimension, value, ..., {options}?]` or
/// `[{expression...}]`.
fn check_metric(metric: &Value, namespace: &str, cluster: &str) -> Result<(), String> {
    let row = metric.as_array().ok_or("each metric must be an array")?;
    let (fields, options) = match row.split_last() {
        Some((Value::Object(options), fields)) => (fields, Some(options)),
        _ => (row.as_slice(), None),
    };
    if fields.is_empty() {
        return match options.and_then(|options| options.get("expression")) {
            Some(Value::String(_)) => Ok(()),
            _ => Err("a metric row without fields must be an expression".to_owned()),
        };
    }
    let strings: Option<Vec<&str>> = fields.iter().map(Value::as_str).collect();
    match strings.as_deref() {
        Some([found_namespace, _name, "CLUSTER_ID", found_cluster])
            if *found_namespace == namespace && *found_cluster == cluster =>
        {
            Ok(())
        }
        _ => Err(format!(
            "metric {metric} is not [\"{namespace}\", <name>, \"CLUSTER_ID\", \"{cluster}\"]"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::check;
    use serde_json::json;

    fn widget(x: u64, width: u64, metrics: serde_json::Value) -> serde_json::Value {
        json!({ "widgets": [{ "type": "metric", "x": x, "y": 0, "width": width, "height": 6,
            "properties": { "region": "us-west-2", "metrics": metrics } }] })
    }

    #[test]
    fn accepts_a_well_formed_body() {
        let body = widget(
            0,
            24,
            json!([["Kubernetes", "maxIPAddresses", "CLUSTER_ID", "c"],
            [{ "expression": "m1", "id": "e1" }]]),
        );
        assert_eq!(check(&body, "Kubernetes", "c"), Ok(()));
    }

    #[test]
    fn refuses_what_cloudwatch_or_the_contract_would_not_take() {
        let off_grid = widget(12, 13, json!([["Kubernetes", "m", "CLUSTER_ID", "c"]]));
        assert!(check(&off_grid, "Kubernetes", "c").is_err());
        let other_cluster = widget(0, 6, json!([["Kubernetes", "m", "CLUSTER_ID", "other"]]));
        assert!(check(&other_cluster, "Kubernetes", "c").is_err());
        let other_namespace = widget(0, 6, json!([["AWS/EC2", "m", "CLUSTER_ID", "c"]]));
        assert!(check(&other_namespace, "Kubernetes", "c").is_err());
        assert!(check(&json!({ "widgets": [] }), "Kubernetes", "c").is_err());
    }
}
