//! Label and field selectors as the `labelSelector` and `fieldSelector` query parameters
//! carry them.
//!
//! Label selectors support the equality-based operators (`k=v`, `k==v`, `k!=v`), the
//! existence tests (`k`, `!k`) and the set-based `k in (a,b)` / `k notin (a,b)`; a comma
//! means AND. Field selectors support `=`, `==` and `!=` on any dotted field path of the
//! object (`metadata.name`, `status.phase`, `spec.nodeName`, `involvedObject.uid`, ...),
//! where a missing field compares as the empty string, as in the real server.

use serde_json::Value;

use super::errors::ApiError;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for term in split_top_level(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_label_term(term)?);
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether the selector selects everything (none was given).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object (a full JSON object with `metadata.labels`) matches.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.requirements
            .iter()
            .all(|requirement| match requirement {
                LabelRequirement::Equals(k, v) => label(k) == Some(v.as_str()),
                LabelRequirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
                LabelRequirement::Exists(k) => label(k).is_some(),
                LabelRequirement::NotExists(k) => label(k).is_none(),
                LabelRequirement::In(k, values) => {
                    label(k).is_some_and(|l| values.iter().any(|v| v == l))
                }
                LabelRequirement::NotIn(k, values) => {
                    !label(k).is_some_and(|l| values.iter().any(|v| v == l))
                }
            })
    }
}

/// Splits on commas that are not inside the parentheses of a set-based requirement.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0_usize;
    let mut start = 0;
    for (index, character) in text.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_label_term(term: &str) -> Result<LabelRequirement, ApiError> {
    let invalid = || {
        ApiError::bad_request(format!(
            "unable to parse requirement: invalid label selector term {term:?}"
        ))
    };
    if let Some((key, value)) = term.split_once("!=") {
        return Ok(LabelRequirement::NotEquals(
            valid_key(key, term)?,
            value.trim().to_owned(),
        ));
    }
    if let Some((key, value)) = term.split_once("==") {
        return Ok(LabelRequirement::Equals(
            valid_key(key, term)?,
            value.trim().to_owned(),
        ));
    }
    if let Some((key, value)) = term.split_once('=') {
        return Ok(LabelRequirement::Equals(
            valid_key(key, term)?,
            value.trim().to_owned(),
        ));
    }
    if let Some(open) = term.find('(') {
        let close = term.rfind(')').ok_or_else(invalid)?;
        let values: Vec<String> = term[open + 1..close]
            .split(',')
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect();
        let head: Vec<&str> = term[..open].split_whitespace().collect();
        return match head.as_slice() {
            [key, "in"] => Ok(LabelRequirement::In(valid_key(key, term)?, values)),
            [key, "notin"] => Ok(LabelRequirement::NotIn(valid_key(key, term)?, values)),
            _ => Err(invalid()),
        };
    }
    if let Some(key) = term.strip_prefix('!') {
        return Ok(LabelRequirement::NotExists(valid_key(key, term)?));
    }
    Ok(LabelRequirement::Exists(valid_key(term, term)?))
}

/// Rejects keys with characters no label key can contain, so typos give a 400 instead of
/// silently matching nothing.
fn valid_key(key: &str, term: &str) -> Result<String, ApiError> {
    let key = key.trim();
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/');
    if key.is_empty() || !key.chars().all(allowed) {
        return Err(ApiError::bad_request(format!(
            "unable to parse requirement: invalid label key {key:?} in {term:?}"
        )));
    }
    Ok(key.to_owned())
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldSelector {
    /// (dotted field path, expected value, whether the value must be equal).
    requirements: Vec<(String, String, bool)>,
}

impl FieldSelector {
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, true)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                )));
            };
            requirements.push((field.trim().to_owned(), value.trim().to_owned(), equal));
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether the selector selects everything (none was given).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|(field, expected, equal)| {
            let actual = field_value(object, field);
            (actual == *expected) == *equal
        })
    }
}

/// The string form of a dotted field path; missing fields read as empty.
fn field_value(object: &Value, field: &str) -> String {
    let mut current = object;
    for part in field.split('.') {
        match current.get(part) {
            Some(next) => current = next,
            None => return String::new(),
        }
    }
    match current {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "labels": labels}, "status": {"phase": "Running"}})
    }

    #[test]
    fn label_operators() {
        let object = pod(json!({"app": "a", "tier": "x"}));
        for (selector, expected) in [
            ("app=a", true),
            ("app==a", true),
            ("app!=a", false),
            ("app!=b", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app=a,tier=y", false),
            ("app in (a,b),tier notin (y)", true),
            ("app notin (a)", false),
            ("", true),
        ] {
            let parsed = LabelSelector::parse(selector).expect("selector parses");
            assert_eq!(parsed.matches(&object), expected, "{selector}");
        }
    }

    #[test]
    fn bad_label_selector_is_rejected() {
        assert!(LabelSelector::parse("a b=c").is_err());
    }

    #[test]
    fn field_selectors() {
        let object = pod(json!({}));
        for (selector, expected) in [
            ("metadata.name=p", true),
            ("metadata.namespace==other", false),
            ("status.phase!=Failed,status.phase!=Succeeded", true),
            ("spec.nodeName=", true),
        ] {
            let parsed = FieldSelector::parse(selector).expect("selector parses");
            assert_eq!(parsed.matches(&object), expected, "{selector}");
        }
    }
}
