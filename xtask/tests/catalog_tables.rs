//! Table tests: every row of every embedded data file, rendered or checked.

use k8s_openapi::api::apps::v1::Deployment;
use xtask::catalog::{RegionError, catalog};
use xtask::decide::decide;
use xtask::facts::Facts;
use xtask::render::{ManifestObject, render};
use xtask::settings::{DeployInput, IdentityMode, TargetInput, resolve};

fn deployment_image(region: &str) -> String {
    let catalog = catalog().expect("the embedded catalog parses");
    let input = TargetInput {
        region: Some(region.to_owned()),
        cluster: Some("prod".to_owned()),
        account: Some("111122223333".to_owned()),
        identity: Some(IdentityMode::PodIdentity),
        ..TargetInput::default()
    };
    let settings = resolve(&input, &DeployInput::default(), None, catalog)
        .unwrap_or_else(|error| panic!("{region}: {error}"));
    let facts = Facts::offline(&settings).unwrap_or_else(|error| panic!("{region}: {error}"));
    let target = decide(&settings, &facts).unwrap_or_else(|error| panic!("{region}: {error}"));
    let rendered = render(&target).unwrap_or_else(|error| panic!("{region}: {error}"));
    let deployment: &Deployment = rendered
        .objects
        .iter()
        .find_map(|object| match object {
            ManifestObject::Deployment(deployment) => Some(deployment.as_ref()),
            _ => None,
        })
        .expect("a Deployment is rendered");
    let pod = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .expect("a pod spec");
    pod.containers[0].image.clone().expect("an image")
}

#[test]
fn every_region_row_renders_its_own_registry_image() {
    let catalog = catalog().expect("the embedded catalog parses");
    for row in &catalog.registries {
        let partition = catalog.partition(&row.partition).expect("known partition");
        assert_eq!(row.domain, partition.dns_suffix, "{}", row.region);
        assert_eq!(
            deployment_image(&row.region),
            format!(
                "{}.dkr.ecr.{}.{}/cni-metrics-helper:v1.23.0",
                row.account, row.region, partition.dns_suffix
            ),
            "{}",
            row.region
        );
    }
}

/// Independent expectations, written out by hand from the EKS registry documentation, so a
/// wrong edit of the data file cannot pass by also changing the expected value.
#[test]
fn registry_rows_match_the_documented_accounts() {
    let expected = [
        ("us-west-2", "602401143452.dkr.ecr.us-west-2.amazonaws.com"),
        ("us-east-1", "602401143452.dkr.ecr.us-east-1.amazonaws.com"),
        (
            "af-south-1",
            "877085696533.dkr.ecr.af-south-1.amazonaws.com",
        ),
        ("ap-east-1", "800184023465.dkr.ecr.ap-east-1.amazonaws.com"),
        ("ap-east-2", "533267051163.dkr.ecr.ap-east-2.amazonaws.com"),
        (
            "ap-south-2",
            "900889452093.dkr.ecr.ap-south-2.amazonaws.com",
        ),
        (
            "ap-southeast-3",
            "296578399912.dkr.ecr.ap-southeast-3.amazonaws.com",
        ),
        (
            "ap-southeast-4",
            "491585149902.dkr.ecr.ap-southeast-4.amazonaws.com",
        ),
        (
            "ap-southeast-5",
            "151610086707.dkr.ecr.ap-southeast-5.amazonaws.com",
        ),
        (
            "ap-southeast-6",
            "333609536671.dkr.ecr.ap-southeast-6.amazonaws.com",
        ),
        (
            "ap-southeast-7",
            "121268973566.dkr.ecr.ap-southeast-7.amazonaws.com",
        ),
        ("ca-west-1", "761377655185.dkr.ecr.ca-west-1.amazonaws.com"),
        (
            "eu-central-2",
            "900612956339.dkr.ecr.eu-central-2.amazonaws.com",
        ),
        (
            "eu-south-1",
            "590381155156.dkr.ecr.eu-south-1.amazonaws.com",
        ),
        (
            "eu-south-2",
            "455263428931.dkr.ecr.eu-south-2.amazonaws.com",
        ),
        (
            "il-central-1",
            "066635153087.dkr.ecr.il-central-1.amazonaws.com",
        ),
        (
            "me-central-1",
            "759879836304.dkr.ecr.me-central-1.amazonaws.com",
        ),
        (
            "me-south-1",
            "558608220178.dkr.ecr.me-south-1.amazonaws.com",
        ),
        (
            "mx-central-1",
            "730335286997.dkr.ecr.mx-central-1.amazonaws.com",
        ),
        (
            "cn-north-1",
            "918309763551.dkr.ecr.cn-north-1.amazonaws.com.cn",
        ),
        (
            "cn-northwest-1",
            "961992271922.dkr.ecr.cn-northwest-1.amazonaws.com.cn",
        ),
        (
            "us-gov-east-1",
            "151742754352.dkr.ecr.us-gov-east-1.amazonaws.com",
        ),
        (
            "us-gov-west-1",
            "013241004608.dkr.ecr.us-gov-west-1.amazonaws.com",
        ),
        (
            "eusc-de-east-1",
            "877088126301.dkr.ecr.eusc-de-east-1.amazonaws.eu",
        ),
        (
            "us-iso-east-1",
            "725322719131.dkr.ecr.us-iso-east-1.c2s.ic.gov",
        ),
        (
            "us-isob-east-1",
            "187977181151.dkr.ecr.us-isob-east-1.sc2s.sgov.gov",
        ),
        (
            "eu-isoe-west-1",
            "249663109785.dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk",
        ),
        (
            "us-isof-south-1",
            "676585237158.dkr.ecr.us-isof-south-1.csp.hci.ic.gov",
        ),
    ];
    let catalog = catalog().expect("the embedded catalog parses");
    for (region, host) in expected {
        let resolved = catalog.resolve_region(region).expect("known region");
        assert_eq!(resolved.registry.expect("has a registry").host(), host);
    }
    // The 39 documented rows plus the 7 ISO rows.
    assert_eq!(catalog.registries.len(), 46);
}

#[test]
fn every_partition_is_present_with_its_dns_suffix() {
    let catalog = catalog().expect("the embedded catalog parses");
    let expected = [
        ("aws", "amazonaws.com"),
        ("aws-cn", "amazonaws.com.cn"),
        ("aws-us-gov", "amazonaws.com"),
        ("aws-eusc", "amazonaws.eu"),
        ("aws-iso", "c2s.ic.gov"),
        ("aws-iso-b", "sc2s.sgov.gov"),
        ("aws-iso-e", "cloud.adc-e.uk"),
        ("aws-iso-f", "csp.hci.ic.gov"),
    ];
    let found: Vec<(&str, &str)> = catalog
        .partitions
        .iter()
        .map(|partition| (partition.id.as_str(), partition.dns_suffix.as_str()))
        .collect();
    assert_eq!(found, expected);
    for (id, _) in expected {
        assert!(
            catalog.registries.iter().any(|row| row.partition == id),
            "partition {id} has at least one region row"
        );
    }
}

#[test]
fn every_region_matches_exactly_one_partition_pattern() {
    let catalog = catalog().expect("the embedded catalog parses");
    for row in &catalog.registries {
        let matching: Vec<&str> = catalog
            .partitions
            .iter()
            .filter(|partition| partition.matches_region(&row.region))
            .map(|partition| partition.id.as_str())
            .collect();
        assert_eq!(matching, [row.partition.as_str()], "{}", row.region);
    }
}

#[test]
fn regions_outside_the_table_resolve_by_pattern_or_are_refused() {
    let catalog = catalog().expect("the embedded catalog parses");
    for (region, partition) in [
        ("ap-southeast-9", "aws"),
        ("cn-south-1", "aws-cn"),
        ("us-gov-central-1", "aws-us-gov"),
        ("eusc-de-west-1", "aws-eusc"),
        ("us-isob-west-2", "aws-iso-b"),
    ] {
        let resolved = catalog.resolve_region(region).expect("matches a pattern");
        assert_eq!(resolved.partition.id, partition, "{region}");
        assert!(resolved.registry.is_none(), "{region} has no registry row");
        assert!(matches!(
            resolved.upstream_registry_host(catalog),
            Err(RegionError::NoRegistry { .. })
        ));
    }
    for region in [
        "mars-east-1",
        "us-west",
        "US-WEST-2",
        "",
        "eusc-fr-east-1",
        "us-west-2 ",
    ] {
        match catalog.resolve_region(region) {
            Err(RegionError::Unknown { nearest, .. }) => assert_eq!(nearest.len(), 3, "{region}"),
            other => panic!("{region:?} must be refused, got {other:?}"),
        }
    }
}

#[test]
fn versions_cover_every_release_from_v1_11_0_oldest_first() {
    let catalog = catalog().expect("the embedded catalog parses");
    let versions: Vec<String> = catalog.versions().map(|v| v.to_string()).collect();
    assert_eq!(versions.first().map(String::as_str), Some("v1.11.0"));
    assert_eq!(
        catalog.latest_version().map(|v| v.to_string()).as_deref(),
        Some("v1.23.0")
    );
    assert_eq!(versions.len(), 54);
    for known in ["v1.12.6", "v1.17.1", "v1.19.4", "v1.22.4"] {
        assert!(catalog.known_version(known).is_ok(), "{known}");
    }
    assert!(versions.windows(2).all(|pair| {
        let (a, b) = (&pair[0], &pair[1]);
        a.parse::<xtask::catalog::Version>().expect("v") < b.parse().expect("v")
    }));
}

fn version(text: &str) -> xtask::catalog::Version {
    text.parse().expect("a well-formed version")
}

/// Every row's pod_identity against the rule written out by hand: upstream's images before
/// v1.15.5 are built with an AWS SDK older than aws-sdk-go v1.47.11, which does not know
/// the Pod Identity agent; from v1.15.5 on they are built with newer ones.
#[test]
fn every_release_row_says_whether_its_helper_can_use_pod_identity() {
    let catalog = catalog().expect("the embedded catalog parses");
    let (mut yes, mut no) = (0, 0);
    for release in &catalog.releases {
        let v = release.version;
        let expected = (v.major, v.minor, v.patch) >= (1, 15, 5);
        assert_eq!(release.pod_identity, expected, "{v}");
        if expected { yes += 1 } else { no += 1 }
    }
    // v1.11.0 .. v1.15.4 are 20 rows; the other 34 can.
    assert_eq!((no, yes), (20, 34));
    assert_eq!(
        catalog
            .pod_identity_since()
            .map(|v| v.to_string())
            .as_deref(),
        Some("v1.15.5")
    );
}

#[test]
fn upgrade_paths_step_through_the_newest_patch_of_each_minor() {
    let catalog = catalog().expect("the embedded catalog parses");
    let path = |from: &str, to: &str| -> Vec<String> {
        catalog
            .upgrade_path(version(from), version(to))
            .expect("a path")
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(path("v1.19.0", "v1.21.1"), ["v1.20.5", "v1.21.1"]);
    assert_eq!(
        path("v1.22.0", "v1.22.4"),
        ["v1.22.4"],
        "patch jumps are one step"
    );
    assert_eq!(
        path("v1.10.3", "v1.12.6"),
        ["v1.11.5", "v1.12.6"],
        "an unlisted live version works"
    );
    assert!(path("v1.23.0", "v1.23.0").is_empty());
    assert!(
        catalog
            .upgrade_path(version("v1.23.0"), version("v1.22.4"))
            .is_err()
    );
    assert!(
        catalog
            .upgrade_path(version("v1.9.0"), version("v1.12.6"))
            .is_err(),
        "no v1.10 release is known"
    );
}

#[test]
fn a_change_that_skips_a_minor_or_goes_back_is_refused_with_the_path() {
    let catalog = catalog().expect("the embedded catalog parses");
    assert!(
        catalog
            .check_step(version("v1.21.0"), version("v1.22.4"), false)
            .is_ok()
    );
    assert!(
        catalog
            .check_step(version("v1.21.0"), version("v1.21.2"), false)
            .is_ok()
    );
    let error = catalog
        .check_step(version("v1.20.0"), version("v1.23.0"), false)
        .expect_err("a skip");
    assert_eq!(
        error.to_string(),
        "v1.20.0 -> v1.23.0 skips a minor version; the helper is upgraded one minor at a time, as AWS advises: \
         run `cargo xtask upgrade --to v1.23.0`, which goes v1.20.0 -> v1.21.2 -> v1.22.4 -> v1.23.0"
    );
    assert!(
        catalog
            .check_step(version("v1.22.4"), version("v1.21.0"), false)
            .is_err()
    );
    assert!(
        catalog
            .check_step(version("v1.22.4"), version("v1.21.0"), true)
            .is_ok()
    );
}
