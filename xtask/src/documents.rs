//! Comparing JSON documents the way the services mean them, and showing the difference.
//!
//! IAM returns policy documents percent-encoded (RFC 3986) and in whatever shape they were
//! written: `"Action": "x"` and `"Action": ["x"]` are the same policy. Comparing text would
//! report drift forever, so documents are decoded, parsed and normalised first.

use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DocumentError {
    #[error("the document is not valid percent-encoding: {0}")]
    PercentEncoding(String),
    #[error("the document is not valid JSON: {0}")]
    Json(String),
}

/// Parses a policy document as IAM returns it: percent-encoded (real IAM, and moto for
/// roles) or raw JSON (moto for policy versions).
pub fn parse_iam_document(text: &str) -> Result<Value, DocumentError> {
    let decoded = if text.trim_start().starts_with('{') {
        text.to_owned()
    } else {
        percent_decode(text)?
    };
    serde_json::from_str(&decoded).map_err(|error| DocumentError::Json(error.to_string()))
}

fn percent_decode(text: &str) -> Result<String, DocumentError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = bytes
                .get(index + 1..index + 3)
                .and_then(|pair| std::str::from_utf8(pair).ok())
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| {
                    DocumentError::PercentEncoding(format!("bad escape at byte {index}"))
                })?;
            out.push(hex);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).map_err(|error| DocumentError::PercentEncoding(error.to_string()))
}

/// The canonical form of an IAM policy: a statement list, and every place where IAM
/// accepts "a string or a list of strings" turned into a sorted, de-duplicated list.
pub fn normalize_policy(document: &Value) -> Value {
    let mut document = document.clone();
    if let Some(map) = document.as_object_mut()
        && let Some(statement) = map.get_mut("Statement")
    {
        if statement.is_object() {
            *statement = Value::Array(vec![statement.take()]);
        }
        if let Some(statements) = statement.as_array_mut() {
            for statement in statements.iter_mut().filter_map(Value::as_object_mut) {
                normalize_statement(statement);
            }
        }
    }
    document
}

fn normalize_statement(statement: &mut Map<String, Value>) {
    for key in ["Action", "NotAction", "Resource", "NotResource"] {
        if let Some(value) = statement.get_mut(key) {
            string_set(value);
        }
    }
    for key in ["Principal", "NotPrincipal"] {
        if let Some(Value::Object(principals)) = statement.get_mut(key) {
            principals.values_mut().for_each(string_set);
        }
    }
    if let Some(Value::Object(operators)) = statement.get_mut("Condition") {
        for keys in operators.values_mut().filter_map(Value::as_object_mut) {
            keys.values_mut().for_each(string_set);
        }
    }
}

/// `"x"` -> `["x"]`; a list of strings is sorted and de-duplicated.
fn string_set(value: &mut Value) {
    match value {
        Value::String(text) => *value = Value::Array(vec![Value::String(std::mem::take(text))]),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            items.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            items.dedup();
        }
        // Anything else (a list with objects in it, a number) is compared as it is.
        Value::Array(_) | Value::Null | Value::Bool(_) | Value::Number(_) | Value::Object(_) => {}
    }
}

/// The differences from `live` to `desired`, one readable line each:
/// `~ path: old -> new`, `+ path: new`, `- path: old`.
pub fn diff(live: &Value, desired: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    diff_at(live, desired, String::new(), &mut lines);
    lines
}

fn diff_at(live: &Value, desired: &Value, path: String, lines: &mut Vec<String>) {
    match (live, desired) {
        (Value::Object(live), Value::Object(desired)) => {
            for (key, desired_value) in desired {
                let child = format!("{path}.{key}");
                match live.get(key) {
                    Some(live_value) => diff_at(live_value, desired_value, child, lines),
                    None => lines.push(format!("+ {child}: {}", compact(desired_value))),
                }
            }
            for (key, live_value) in live {
                if !desired.contains_key(key) {
                    lines.push(format!("- {path}.{key}: {}", compact(live_value)));
                }
            }
        }
        (Value::Array(live_items), Value::Array(desired_items))
            if live_items.len() == desired_items.len() =>
        {
            for (index, (live_item, desired_item)) in
                live_items.iter().zip(desired_items).enumerate()
            {
                diff_at(live_item, desired_item, format!("{path}[{index}]"), lines);
            }
        }
        _ if live == desired => {}
        _ => {
            let shown = if path.is_empty() { "." } else { &path };
            lines.push(format!(
                "~ {shown}: {} -> {}",
                compact(live),
                compact(desired)
            ));
        }
    }
}

/// A value on one line, shortened: a diff line should be readable in a terminal.
fn compact(value: &Value) -> String {
    let text = value.to_string();
    const LIMIT: usize = 160;
    if text.chars().count() <= LIMIT {
        return text;
    }
    let cut: String = text.chars().take(LIMIT).collect();
    format!("{cut}...")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn percent_encoded_and_raw_documents_parse_to_the_same_value() {
        let raw = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole"}]}"#;
        let encoded = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22sts%3AAssumeRole%22%7D%5D%7D";
        assert_eq!(parse_iam_document(raw), parse_iam_document(encoded));
        assert!(parse_iam_document("%ZZ").is_err());
        assert!(parse_iam_document("%7Bnot json").is_err());
    }

    #[test]
    fn equivalent_policies_normalise_equal() {
        let a = json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "a:B",
            "Resource": "*", "Principal": {"Service": "x"},
            "Condition": {"StringEquals": {"k": "v"}}}});
        let b = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["a:B", "a:B"],
            "Resource": ["*"], "Principal": {"Service": ["x"]},
            "Condition": {"StringEquals": {"k": ["v"]}}}]});
        assert_eq!(normalize_policy(&a), normalize_policy(&b));
        let c = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["a:B", "a:C"]}]});
        assert_ne!(normalize_policy(&a), normalize_policy(&c));
    }

    #[test]
    fn diff_names_each_changed_path() {
        let live = json!({"a": 1, "b": {"c": [1, 2]}, "gone": true});
        let desired = json!({"a": 2, "b": {"c": [1, 3]}, "new": "x"});
        assert_eq!(
            diff(&live, &desired),
            [
                "~ .a: 1 -> 2",
                "~ .b.c[1]: 2 -> 3",
                "+ .new: \"x\"",
                "- .gone: true"
            ]
        );
        assert!(diff(&live, &live).is_empty());
    }
}
