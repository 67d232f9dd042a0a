//! What the bench prints: human lines and one JSON object, filled side by side by the
//! scenarios, and the summary statistics they report.

use serde_json::{Map, Value, json};

use crate::flags::OutputFormat;

/// The median, minimum and maximum of some runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Summary {
    /// `None` for no values. The median of an even count is the mean of the middle two.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let median = if sorted.len().is_multiple_of(2) {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        } else {
            sorted[middle]
        };
        Some(Summary {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            runs: sorted.len(),
        })
    }

    pub(super) fn text(&self, unit: &str) -> String {
        format!(
            "{} {unit} (min {}, max {}, n={})",
            round3(self.median),
            round3(self.min),
            round3(self.max),
            self.runs
        )
    }

    pub(super) fn json(&self) -> Value {
        json!({ "median": self.median, "min": self.min, "max": self.max, "runs": self.runs })
    }
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// The human lines, the JSON object and the targets with their verdicts.
#[derive(Default)]
pub(super) struct Report {
    lines: Vec<String>,
    json: Map<String, Value>,
    targets: Vec<(String, bool, String)>,
}

impl Report {
    pub(super) fn line(&mut self, text: impl Into<String>) {
        let text = text.into();
        // Progress goes to stderr as it happens; stdout gets the table at the end.
        eprintln!("  {text}");
        self.lines.push(text);
    }

    pub(super) fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.json.insert(key.to_owned(), value.into());
    }

    pub(super) fn target(&mut self, name: &str, met: bool, measured: String) {
        self.targets.push((name.to_owned(), met, measured));
    }

    /// The value set for `key`, for the scenarios' tests.
    #[cfg(test)]
    pub(super) fn get(&self, key: &str) -> Option<&Value> {
        self.json.get(key)
    }

    /// The human lines so far, for the scenarios' tests.
    #[cfg(test)]
    pub(super) fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Prints the report on stdout: one JSON object with every key and `targets_met`, or
    /// the human lines followed by the targets.
    pub(super) fn print(mut self, output: OutputFormat, quick: bool) {
        let targets: Map<String, Value> = self
            .targets
            .iter()
            .map(|(name, met, _)| (name.clone(), Value::Bool(*met)))
            .collect();
        self.set("targets_met", Value::Object(targets));
        match output {
            OutputFormat::Json => println!("{}", Value::Object(self.json)),
            OutputFormat::Human => {
                println!("cargo xtask bench{}", if quick { " --quick" } else { "" });
                for line in &self.lines {
                    println!("  {line}");
                }
                println!("Targets:");
                for (name, met, measured) in &self.targets {
                    let verdict = if *met { "met   " } else { "MISSED" };
                    println!("  {verdict} {name}: {measured}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_take_the_middle_and_ignore_non_finite_values() {
        let odd = Summary::of(&[3.0, 1.0, 2.0]).expect("values");
        assert_eq!((odd.median, odd.min, odd.max, odd.runs), (2.0, 1.0, 3.0, 3));
        let even = Summary::of(&[4.0, 1.0, f64::NAN, 2.0, 3.0]).expect("values");
        assert_eq!((even.median, even.runs), (2.5, 4));
        assert_eq!(Summary::of(&[]), None);
    }
}
