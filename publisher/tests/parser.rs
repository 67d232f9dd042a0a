//! The exposition parser: every case of issue 5 item 3, on small inputs and on a realistic
//! aws-node exposition.

use std::borrow::Cow;

use cni_metrics_publisher::exposition::{
    MetricType, ParseError, ParseErrorKind, Sample, Samples, Suffix, validate,
};

const FULL: &str = include_str!("fixtures/exposition/ipamd-full.prom");
const CNI_TEST1_LIKE: &str = include_str!("fixtures/exposition/cni-test1-like.prom");

fn parse_all(input: &str) -> Vec<Sample<'_>> {
    Samples::new(input)
        .collect::<Result<Vec<_>, _>>()
        .expect("the exposition should parse")
}

fn only_sample(input: &str) -> Sample<'_> {
    let samples = parse_all(input);
    assert_eq!(samples.len(), 1, "expected exactly one sample in {input:?}");
    samples[0]
}

fn first_error(input: &str) -> ParseError {
    Samples::new(input)
        .find_map(Result::err)
        .unwrap_or_else(|| panic!("expected a parse error in {input:?}"))
}

fn labels_of<'a>(sample: &Sample<'a>) -> Vec<(&'a str, Cow<'a, str>)> {
    sample
        .labels()
        .map(|label| (label.name, label.value))
        .collect()
}

fn points_into(input: &str, text: &str) -> bool {
    let range = input.as_bytes().as_ptr_range();
    text.is_empty() || range.contains(&text.as_ptr())
}

#[test]
fn realistic_exposition_parses_completely() {
    let samples = parse_all(FULL);
    assert_eq!(validate(FULL), Ok(samples.len()));
    assert!(
        FULL.len() > 15_000,
        "the fixture should be realistic in size"
    );
    assert_eq!(samples.len(), 119);
    // Every borrowed piece comes from the input: nothing was copied.
    for sample in &samples {
        assert!(points_into(FULL, sample.family));
        assert!(points_into(FULL, sample.name));
        assert!(points_into(FULL, sample.raw_labels));
    }
    let go_info = samples
        .iter()
        .find(|sample| sample.name == "go_info")
        .expect("go_info is in the fixture");
    assert_eq!(go_info.family_type, MetricType::Gauge);
    assert_eq!(go_info.label("version").as_deref(), Some("go1.24.9"));
}

#[test]
fn counter_named_count_is_its_own_family() {
    let sample = parse_all(FULL)
        .into_iter()
        .find(|sample| sample.name == "awscni_add_ip_req_count")
        .expect("awscni_add_ip_req_count is in the fixture");
    assert_eq!(sample.family, "awscni_add_ip_req_count");
    assert_eq!(sample.family_type, MetricType::Counter);
    assert_eq!(sample.suffix, Suffix::None);
    assert_eq!(sample.value, 42.0);
}

#[test]
fn summary_count_and_sum_belong_to_the_summary() {
    let samples = parse_all(FULL);
    let latency: Vec<_> = samples
        .iter()
        .filter(|sample| sample.name.starts_with("awscni_aws_api_latency_ms"))
        .collect();
    assert_eq!(latency.len(), 8);
    for sample in &latency {
        assert_eq!(sample.family, "awscni_aws_api_latency_ms");
        assert_eq!(sample.family_type, MetricType::Summary);
    }
    let count = latency
        .iter()
        .find(|sample| sample.name == "awscni_aws_api_latency_ms_count")
        .expect("a _count sample");
    assert_eq!(count.suffix, Suffix::Count);
    assert_eq!(
        count.label("api").as_deref(),
        Some("AssignPrivateIpAddresses")
    );
    let sum = latency
        .iter()
        .find(|sample| sample.name == "awscni_aws_api_latency_ms_sum")
        .expect("a _sum sample");
    assert_eq!(sum.suffix, Suffix::Sum);
    assert_eq!(sum.value, 510.0);
}

#[test]
fn summary_quantiles_have_no_suffix() {
    let samples = parse_all(CNI_TEST1_LIKE);
    let quantiles: Vec<_> = samples
        .iter()
        .filter(|sample| {
            sample.family == "awscni_aws_api_latency_ms" && sample.suffix == Suffix::None
        })
        .collect();
    assert_eq!(quantiles.len(), 9);
    assert!(
        quantiles
            .iter()
            .all(|sample| sample.label("quantile").is_some())
    );
    let get_metadata_p99 = quantiles
        .iter()
        .find(|sample| {
            sample.label("api").as_deref() == Some("GetMetadata")
                && sample.label("quantile").as_deref() == Some("0.99")
        })
        .expect("GetMetadata p99");
    assert_eq!(get_metadata_p99.value, 1.0);
}

#[test]
fn histogram_samples_and_inf_bucket() {
    let samples = parse_all(FULL);
    let buckets: Vec<_> = samples
        .iter()
        .filter(|sample| sample.family == "awscni_ipamd_startup_duration_seconds")
        .collect();
    assert_eq!(buckets.len(), 14);
    assert!(
        buckets
            .iter()
            .all(|sample| sample.family_type == MetricType::Histogram)
    );
    assert_eq!(
        buckets
            .iter()
            .filter(|sample| sample.suffix == Suffix::Bucket)
            .count(),
        12
    );
    let infinity_bucket = buckets
        .iter()
        .find(|sample| sample.label("le").as_deref() == Some("+Inf"))
        .expect("the +Inf bucket");
    assert_eq!(infinity_bucket.value, 1.0);
    // The empty label value failure_reason="" is a label with an empty value.
    assert_eq!(infinity_bucket.label("failure_reason").as_deref(), Some(""));
}

#[test]
fn total_suffixed_counters_are_their_own_families() {
    let samples = parse_all(FULL);
    let reconcile: Vec<_> = samples
        .iter()
        .filter(|sample| sample.name == "awscni_connmark_reconcile_total")
        .collect();
    assert_eq!(reconcile.len(), 2);
    assert!(reconcile.iter().all(|sample| {
        sample.family == "awscni_connmark_reconcile_total"
            && sample.family_type == MetricType::Counter
    }));
    let cpu =
        only_sample("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 12.5\n");
    assert_eq!(cpu.family, "process_cpu_seconds_total");
    assert_eq!(cpu.family_type, MetricType::Counter);
}

#[test]
fn escaped_label_values_are_decoded_and_plain_ones_borrowed() {
    let input = concat!(
        "# TYPE x gauge\n",
        r#"x{path="C:\\dir",quote="say \"hi\"",lines="one\ntwo",plain="v",empty=""} 1"#,
        "\n"
    );
    let sample = only_sample(input);
    let labels = labels_of(&sample);
    assert_eq!(
        labels,
        vec![
            ("path", Cow::Borrowed("C:\\dir")),
            ("quote", Cow::Borrowed("say \"hi\"")),
            ("lines", Cow::Borrowed("one\ntwo")),
            ("plain", Cow::Borrowed("v")),
            ("empty", Cow::Borrowed("")),
        ]
    );
    assert!(
        matches!(labels[0].1, Cow::Owned(_)),
        "escaped values are decoded"
    );
    assert!(
        matches!(labels[3].1, Cow::Borrowed(_)),
        "plain values are borrowed"
    );
    assert!(matches!(labels[4].1, Cow::Borrowed(_)));
    // A brace or comma inside a quoted value does not end the label block.
    let tricky = only_sample("x{a=\"}\",b=\",{\"} 2\n");
    assert_eq!(
        labels_of(&tricky),
        vec![("a", Cow::Borrowed("}")), ("b", Cow::Borrowed(",{"))]
    );
    assert_eq!(tricky.value, 2.0);
    // Non-ASCII text in a label value is fine.
    let unicode = only_sample("x{zone=\"ñ-1a\"} 3\n");
    assert_eq!(unicode.label("zone").as_deref(), Some("ñ-1a"));
}

#[test]
fn label_block_forms() {
    let empty_braces = only_sample("x{} 1\n");
    assert_eq!(empty_braces.raw_labels, "");
    assert_eq!(empty_braces.labels().count(), 0);
    let trailing_comma = only_sample("x{a=\"1\",} 1\n");
    assert_eq!(labels_of(&trailing_comma), vec![("a", Cow::Borrowed("1"))]);
    let spaced = only_sample("x{ a = \"1\" , b=\"2\" } 1\n");
    assert_eq!(
        labels_of(&spaced),
        vec![("a", Cow::Borrowed("1")), ("b", Cow::Borrowed("2"))]
    );
    let no_blank_before_value = only_sample("x{a=\"1\"}7\n");
    assert_eq!(no_blank_before_value.value, 7.0);
    assert_eq!(only_sample("x 1\n").label("a"), None);
}

#[test]
fn special_values() {
    let samples = parse_all("a NaN\nb +Inf\nc -Inf\nd Inf\ne -0.5e-3\nf 1.5E+10\n")
        .into_iter()
        .map(|sample| sample.value)
        .collect::<Vec<_>>();
    assert!(samples[0].is_nan());
    assert_eq!(samples[1], f64::INFINITY);
    assert_eq!(samples[2], f64::NEG_INFINITY);
    assert_eq!(samples[3], f64::INFINITY);
    assert_eq!(samples[4], -0.0005);
    assert_eq!(samples[5], 1.5e10);
    assert_eq!(
        only_sample("a 9007199254740993\n").value,
        9_007_199_254_740_992.0
    );
}

#[test]
fn optional_timestamps() {
    let with = only_sample("x 1 1700000000123\n");
    assert_eq!(with.timestamp_ms, Some(1_700_000_000_123));
    let negative = only_sample("x{a=\"b\"} 1 -5\n");
    assert_eq!(negative.timestamp_ms, Some(-5));
    let without = only_sample("x 1\n");
    assert_eq!(without.timestamp_ms, None);
    let trailing_blanks = only_sample("x 1 2 \t \n");
    assert_eq!(trailing_blanks.timestamp_ms, Some(2));
    assert_eq!(
        first_error("x 1 1.5\n").kind,
        ParseErrorKind::InvalidTimestamp("1.5".to_owned())
    );
}

#[test]
fn comments_help_and_type_lines() {
    let input = "\
# just a comment
#
#no space either
# HELP x Some help with \\\\ a backslash and a \\n newline.
# TYPE x gauge
x 1
#TYPE y counter
y 2
# TYPE z untyped
z 3
# HELP only_help A family with help but no type.
only_help 4
";
    let samples = parse_all(input);
    let types: Vec<_> = samples
        .iter()
        .map(|sample| (sample.family, sample.family_type))
        .collect();
    assert_eq!(
        types,
        vec![
            ("x", MetricType::Gauge),
            ("y", MetricType::Counter),
            ("z", MetricType::Untyped),
            ("only_help", MetricType::Untyped),
        ]
    );
    // TYPE before HELP keeps the type.
    let type_first = only_sample("# TYPE a counter\n# HELP a help\na 1\n");
    assert_eq!(type_first.family_type, MetricType::Counter);
}

#[test]
fn untyped_families() {
    let samples = parse_all("plain 1\nplain{a=\"b\"} 2\nother 3\n");
    assert!(
        samples
            .iter()
            .all(|sample| sample.family_type == MetricType::Untyped)
    );
    assert_eq!(samples[0].family, "plain");
    assert_eq!(samples[1].family, "plain");
    assert_eq!(samples[2].family, "other");
    // Without a TYPE line, _sum and _count are families of their own.
    let samples = parse_all("lat_sum 5\nlat_count 2\n");
    assert_eq!(samples[0].family, "lat_sum");
    assert_eq!(samples[0].suffix, Suffix::None);
    assert_eq!(samples[1].family, "lat_count");
    // Only summaries and histograms have suffixed samples: foo_count after gauge foo is new.
    let samples = parse_all("# TYPE foo gauge\nfoo 1\nfoo_count 2\n");
    assert_eq!(samples[1].family, "foo_count");
    assert_eq!(samples[1].family_type, MetricType::Untyped);
    // A TYPE line's family ends where another name starts.
    let samples = parse_all("# TYPE a summary\na_sum 1\nb 2\n");
    assert_eq!((samples[0].family, samples[0].suffix), ("a", Suffix::Sum));
    assert_eq!(
        (samples[1].family, samples[1].family_type),
        ("b", MetricType::Untyped)
    );
}

#[test]
fn crlf_blank_lines_and_whitespace() {
    let input = "\r\n# TYPE x gauge\r\n\r\n   \t\r\nx{a=\"1\"} 5\r\n\t x 6 100\r\nx\t7\r\ny 8";
    let samples = parse_all(input);
    let values: Vec<_> = samples.iter().map(|sample| sample.value).collect();
    assert_eq!(values, vec![5.0, 6.0, 7.0, 8.0]);
    assert_eq!(samples[0].line, 5);
    assert_eq!(samples[1].timestamp_ms, Some(100));
    assert_eq!(samples[1].family_type, MetricType::Gauge);
    assert_eq!(samples[3].family, "y");
    assert_eq!(samples[3].line, 8);
    assert!(parse_all("").is_empty());
    assert!(parse_all("\n\n\r\n").is_empty());
}

#[test]
fn malformed_lines_name_the_line_and_reason() {
    let cases: &[(&str, usize, ParseErrorKind)] = &[
        ("ok 1\n1bad 2\n", 2, ParseErrorKind::InvalidMetricName),
        ("x-y 1\n", 1, ParseErrorKind::InvalidMetricName),
        ("x\n", 1, ParseErrorKind::MissingValue),
        ("x{a=\"b\"}\n", 1, ParseErrorKind::MissingValue),
        ("x one\n", 1, ParseErrorKind::InvalidValue("one".to_owned())),
        ("x 1 2 3\n", 1, ParseErrorKind::TrailingText),
        ("x{a=\"b\" 1\n", 1, ParseErrorKind::ExpectedCommaOrBrace),
        ("x{a=\"b\n", 1, ParseErrorKind::UnterminatedLabelValue),
        ("x{a=\"b\\", 1, ParseErrorKind::UnterminatedLabelValue),
        ("x{a=\"\\t\"} 1\n", 1, ParseErrorKind::InvalidLabelEscape),
        ("x{a} 1\n", 1, ParseErrorKind::ExpectedEquals),
        ("x{a=b} 1\n", 1, ParseErrorKind::ExpectedQuote),
        ("x{1a=\"b\"} 1\n", 1, ParseErrorKind::InvalidLabelName),
        ("x{,} 1\n", 1, ParseErrorKind::InvalidLabelName),
        ("x{a=\"b\"\n", 1, ParseErrorKind::ExpectedCommaOrBrace),
        (
            "# TYPE\n",
            1,
            ParseErrorKind::MissingCommentMetricName("TYPE"),
        ),
        (
            "# HELP\n",
            1,
            ParseErrorKind::MissingCommentMetricName("HELP"),
        ),
        ("# TYPE x\n", 1, ParseErrorKind::MissingType),
        (
            "# TYPE x info\n",
            1,
            ParseErrorKind::UnknownType("info".to_owned()),
        ),
        (
            "# TYPE x gauge extra\n",
            1,
            ParseErrorKind::TrailingTextAfterType,
        ),
        ("# TYPE 0x gauge\n", 1, ParseErrorKind::InvalidMetricName),
        (
            "# HELP x bad \\escape\n",
            1,
            ParseErrorKind::InvalidHelpEscape,
        ),
        (
            "a 1\r\nb 2\r\n\r\n{} 3\r\n",
            4,
            ParseErrorKind::InvalidMetricName,
        ),
    ];
    for (input, line, kind) in cases {
        let error = first_error(input);
        assert_eq!(
            (error.line, &error.kind),
            (*line, kind),
            "input {input:?} gave {error}"
        );
    }
    let message = first_error("ok 1\nok oops\n").to_string();
    assert_eq!(message, "line 2: invalid sample value \"oops\"");
}

#[test]
fn iteration_stops_after_an_error() {
    let results: Vec<_> = Samples::new("a 1\nb x\nc 3\n").collect();
    assert_eq!(results.len(), 2);
    assert!(results[0].is_ok());
    assert!(results[1].is_err());
}

#[test]
fn long_bad_tokens_are_shortened_in_errors() {
    let input = format!("x {}\n", "9".repeat(10_000) + "z");
    let ParseErrorKind::InvalidValue(quoted) = first_error(&input).kind else {
        panic!("expected an invalid value");
    };
    assert!(quoted.len() < 100);
}

#[test]
fn filter_skips_families_and_is_asked_once_per_family() {
    let mut asked = Vec::new();
    let samples: Vec<_> = Samples::filtered(FULL, |family| {
        asked.push(family.to_owned());
        family.starts_with("awscni_")
    })
    .collect::<Result<_, _>>()
    .expect("the fixture parses");
    assert!(
        samples
            .iter()
            .all(|sample| sample.family.starts_with("awscni_"))
    );
    assert_eq!(
        samples.len(),
        parse_all(FULL)
            .iter()
            .filter(|sample| sample.family.starts_with("awscni_"))
            .count()
    );
    // One question per family, though each family has a HELP and a TYPE line.
    let mut unique = asked.clone();
    unique.dedup();
    assert_eq!(asked, unique);
    assert!(
        asked
            .iter()
            .any(|family| family == "go_gc_duration_seconds")
    );
    assert_eq!(
        asked
            .iter()
            .filter(|family| family.as_str() == "go_gc_duration_seconds")
            .count(),
        1
    );
}

#[test]
fn skipped_families_are_not_validated_beyond_their_names() {
    let input = "\
# TYPE go_thing summary
go_thing{quantile=\"0.5\" broken
go_thing_sum not-a-number
# TYPE wanted gauge
wanted 1
";
    let samples: Vec<_> = Samples::filtered(input, |family| family == "wanted")
        .collect::<Result<_, _>>()
        .expect("rejected families are skipped");
    assert_eq!(samples.len(), 1);
    assert_eq!(samples[0].family, "wanted");
    // The same input fully validated is an error on line 2.
    assert_eq!(first_error(input).line, 2);
    // A line whose name is itself invalid is still an error.
    let error = Samples::filtered("-x 1\n", |_| false)
        .find_map(Result::err)
        .expect("an invalid name is an error even when skipping");
    assert_eq!(error.kind, ParseErrorKind::InvalidMetricName);
}

#[test]
fn odd_inputs_never_panic() {
    let inputs = [
        "{",
        "}",
        "x{",
        "x{a",
        "x{a=",
        "x{a=\"",
        "x{a=\"\\",
        "x{a=\"\\\"",
        "#",
        "# HELP x \\",
        "# TYPE x summary\nx_sum",
        "x\u{0} 1",
        "x 1\u{a0}",
        "é 1",
        "x{é=\"1\"} 1",
        "x 1 99999999999999999999",
        "\r",
        "\r\r\n",
        "x{a=\"1\"}} 1",
        "x{a=\"1\",,} 1",
    ];
    for input in inputs {
        // The result does not matter; getting one without a panic does.
        let _ = Samples::new(input).count();
        for sample in Samples::new(input).flatten() {
            let _ = sample.labels().count();
        }
    }
}
