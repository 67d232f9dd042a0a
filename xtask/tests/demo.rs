//! `cargo xtask demo`, the README's first command, end to end.

use crate::support::{stderr, stdout, xtask};

#[test]
fn the_demo_deploys_publishes_and_reads_the_metrics_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keep = dir.path().join("demo");
    let keep_arg = keep.to_string_lossy().into_owned();
    let output = xtask(
        dir.path(),
        &["demo", "--nodes", "3", "--rounds", "1", "--dir", &keep_arg],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("Plan: 12 to create"), "{text}");
    // Our publisher's image, pushed to the sandbox's ECR, deployed by digest and run from
    // the registry (`cargo xtask test` installs docker-registry and podman).
    assert!(
        text.contains("$ podman run --network host 127.0.0.1:")
            && text.contains("/cni-metrics-publisher@sha256:"),
        "{text}"
    );
    let row = |name: &str| -> Vec<String> {
        text.lines()
            .find(|line| line.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row in {text}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(row("podsScraped")[1], "3", "{text}");
    // The alarms deploy made, evaluated over what was just published: a publisher that
    // published is not silent.
    assert!(text.contains("The alarms deploy made"), "{text}");
    assert!(
        text.contains("OK                CNI-Metrics-demo-us-west-2-publisher-silent"),
        "{text}"
    );
    assert_eq!(row("scrapeErrors")[1], "0", "{text}");
    let assigned = row("assignIPAddresses");
    assert_ne!(
        assigned[1], "-",
        "CloudWatch holds the capacity metrics: {text}"
    );
    let body =
        std::fs::read_to_string(keep.join("dashboard.json")).expect("the dashboard body is kept");
    assert!(body.contains("assignIPAddresses"));
    // The dashboard's metric widgets as pictures, listed after this heading.
    let images: Vec<&str> = text
        .split("The dashboard's metric widgets as CloudWatch draws them:")
        .nth(1)
        .unwrap_or_else(|| panic!("the demo lists the widget images: {text}"))
        .lines()
        .skip(1) // The rest of the heading's line.
        .map(str::trim)
        .take_while(|line| line.ends_with(".png"))
        .collect();
    assert!(images.len() > 1, "{text}");
    for image in images {
        let bytes = std::fs::read(image).unwrap_or_else(|error| panic!("{image}: {error}"));
        assert!(sandbox::png::dimensions(&bytes).is_ok(), "{image} is a PNG");
    }
}
