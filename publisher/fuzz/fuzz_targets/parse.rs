//! Fuzzes the exposition parser on arbitrary bytes (decoded as UTF-8, lossily, because the
//! scraper hands the parser text): it must never panic, and filtering families must not change
//! what the kept families yield.
//!
//! Two filters: one that depends only on the name's length, so that the fuzzer explores
//! skipping in general, and the publisher's own (the published ipamd families), whose fast
//! path must publish exactly what the full parse does: on a valid input, the same samples; on
//! an invalid one (the fast path does not validate what it skips), the same samples before the
//! full parse's error, and no error earlier than it.

#![no_main]

use cni_metrics_publisher::exposition::{ParseError, Sample, Samples};
use cni_metrics_publisher::ipamd_metrics::index_of_family;
use libfuzzer_sys::fuzz_target;

/// A filter that depends only on the family name, so that the fuzzer explores skipping.
fn keep(family: &str) -> bool {
    family.len() % 2 == 0 || family.starts_with("awscni_")
}

/// Touches every lazily decoded part of a sample.
fn decode_everything(sample: &Sample<'_>) {
    for label in sample.labels() {
        assert!(!label.name.is_empty(), "a decoded label has a name");
    }
    let _ = sample.label("quantile");
}

/// Whether two samples are the same, every field compared (NaN equal to NaN).
fn same_sample(left: &Sample<'_>, right: &Sample<'_>) -> bool {
    left.family == right.family
        && left.family_type == right.family_type
        && left.name == right.name
        && left.suffix == right.suffix
        && left.raw_labels == right.raw_labels
        && left.timestamp_ms == right.timestamp_ms
        && left.line == right.line
        && (left.value == right.value || (left.value.is_nan() && right.value.is_nan()))
        && left.labels().eq(right.labels())
}

/// The samples of `samples` up to the first error, and that error.
fn until_error<'a>(
    samples: impl Iterator<Item = Result<Sample<'a>, ParseError>>,
) -> (Vec<Sample<'a>>, Option<ParseError>) {
    let mut kept = Vec::new();
    for sample in samples {
        match sample {
            Ok(sample) => kept.push(sample),
            Err(error) => return (kept, Some(error)),
        }
    }
    (kept, None)
}

/// The publisher's fast path against the full parse, as described in the module docs.
fn check_fast_path(text: &str) {
    let (full, full_error) = until_error(Samples::new(text));
    let (fast, fast_error) = until_error(Samples::filtered(text, |family| {
        index_of_family(family).is_some()
    }));
    let published: Vec<_> = full
        .iter()
        .filter(|sample| index_of_family(sample.family).is_some())
        .collect();
    let fast: Vec<_> = match &full_error {
        None => {
            assert!(
                fast_error.is_none(),
                "the fast path failed on valid input: {fast_error:?}"
            );
            fast.iter().collect()
        }
        Some(full_error) => {
            if let Some(fast_error) = &fast_error {
                assert!(
                    fast_error.line >= full_error.line,
                    "the fast path failed ({fast_error}) before the full parse ({full_error})"
                );
            }
            fast.iter()
                .filter(|sample| sample.line < full_error.line)
                .collect()
        }
    };
    let same = fast.len() == published.len()
        && fast
            .iter()
            .zip(&published)
            .all(|(left, right)| same_sample(left, right));
    assert!(
        same,
        "the fast path and the full parse publish different samples"
    );
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let all: Result<Vec<Sample<'_>>, _> = Samples::new(&text).collect();
    if let Ok(samples) = &all {
        for sample in samples {
            decode_everything(sample);
        }
    }
    let mut kept = Vec::new();
    let mut filtered_error = None;
    for result in Samples::filtered(&text, keep) {
        match result {
            Ok(sample) => {
                decode_everything(&sample);
                kept.push(sample);
            }
            Err(error) => filtered_error = Some(error),
        }
    }
    // When the whole input is valid, skipping families only removes their samples.
    if let Ok(samples) = all {
        assert!(
            filtered_error.is_none(),
            "filtering turned valid input into an error"
        );
        let expected: Vec<_> = samples
            .into_iter()
            .filter(|sample| keep(sample.family))
            .collect();
        let same = expected.len() == kept.len()
            && expected.iter().zip(&kept).all(|(left, right)| {
                left.family == right.family
                    && left.name == right.name
                    && left.raw_labels == right.raw_labels
                    && left.line == right.line
                    && (left.value == right.value || (left.value.is_nan() && right.value.is_nan()))
            });
        assert!(same, "filtering changed the kept samples");
    }
    check_fast_path(&text);
});
