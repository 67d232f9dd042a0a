//! Fuzzes the exposition parser on arbitrary bytes (decoded as UTF-8, lossily, because the
//! scraper hands the parser text): it must never panic, and filtering families must not change
//! what the kept families yield.

#![no_main]

use cni_metrics_publisher::exposition::{Sample, Samples};
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
});
