//! `status --widgets DIR`: every metric widget of the deployed dashboard saved as the PNG
//! GetMetricWidgetImage draws (the sandbox draws it from the emulator's datapoints).

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
use serde_json::Value;

use crate::world::{DASHBOARD, World, stderr};

#[tokio::test(flavor = "multi_thread")]
async fn status_saves_each_metric_widget_as_a_png_of_the_requested_size() {
    let world = World::start().await;
    world.deploy(&[]).await;
    let cloudwatch = world.cloudwatch();
    let now = DateTime::from(std::time::SystemTime::now()).secs();
    let datums = [
        ("maxIPAddresses", 100.0),
        ("totalIPAddresses", 40.0),
        ("assignIPAddresses", 25.0),
    ]
    .iter()
    .flat_map(|&(name, value)| {
        (1..=5).map(move |ago| {
            MetricDatum::builder()
                .metric_name(name)
                .dimensions(
                    Dimension::builder()
                        .name("CLUSTER_ID")
                        .value("sandbox")
                        .build(),
                )
                .timestamp(DateTime::from_secs(now - ago * 60))
                .value(value + ago as f64)
                .build()
        })
    })
    .collect::<Vec<_>>();
    cloudwatch
        .put_metric_data()
        .namespace("Kubernetes")
        .set_metric_data(Some(datums))
        .send()
        .await
        .expect("PutMetricData is accepted");
    let body = cloudwatch
        .get_dashboard()
        .dashboard_name(DASHBOARD)
        .send()
        .await
        .expect("deploy wrote the dashboard")
        .dashboard_body
        .expect("the dashboard has a body");
    let body: Value = serde_json::from_str(&body).expect("the body is JSON");
    let metric_widgets = body["widgets"]
        .as_array()
        .expect("widgets")
        .iter()
        .filter(|widget| widget["type"] == "metric")
        .count();
    assert!(metric_widgets > 1, "{body}");

    let dir = tempfile::tempdir().expect("temp dir");
    let images = dir.path().join("images");
    let images_arg = images.to_string_lossy().into_owned();
    let (output, status) = world.json("status", &["--widgets", &images_arg]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let paths: Vec<&str> = status["widget_images"]
        .as_array()
        .unwrap_or_else(|| panic!("status names the images: {status}"))
        .iter()
        .map(|path| path.as_str().expect("paths are strings"))
        .collect();
    assert_eq!(
        paths.len(),
        metric_widgets,
        "one image per metric widget: {paths:?}"
    );
    assert!(
        paths
            .iter()
            .any(|path| path.ends_with("/06-ip-utilisation.png")),
        "files are named after index and title: {paths:?}"
    );
    for path in &paths {
        let bytes = std::fs::read(path).unwrap_or_else(|error| panic!("{path}: {error}"));
        assert_eq!(sandbox::png::dimensions(&bytes), Ok((600, 300)), "{path}");
    }

    let human = world
        .xtask(&["status", "--cluster", "sandbox", "--widgets", &images_arg])
        .await;
    assert_eq!(human.status.code(), Some(0), "{}", stderr(&human));
    let text = String::from_utf8_lossy(&human.stdout);
    for path in &paths {
        assert!(text.contains(path), "{path} printed in {text}");
    }
    world.sandbox.shutdown().await;
}
