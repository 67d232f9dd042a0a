//! Just enough of the Kubernetes protobuf encoding to read what kubectl sends that way.
//! kubectl's typed clients post as `application/vnd.kubernetes.protobuf`: the access
//! reviews of `kubectl auth can-i`, and the objects of the `kubectl create` generators
//! (`create namespace`, `serviceaccount`, `configmap`, `clusterrole`, `role`,
//! `clusterrolebinding`, `rolebinding`), and client-go does not fall back to JSON when a
//! server refuses protobuf. Answers stay JSON, which client-go decodes by the response's
//! content type. Other kinds are refused with 415 and a message saying so.
//!
//! The envelope is the 4-byte magic `k8s\0` followed by a `runtime.Unknown` message
//! (field 1 TypeMeta, field 2 the raw object); objects are decoded by the field numbers
//! of the `generated.proto` files of `k8s.io/api` and `k8s.io/apimachinery`.

use serde_json::{Value, json};

use super::errors::ApiError;

pub(crate) const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

/// One field of a protobuf message: a varint (integers, booleans), a length-delimited
/// value (strings, bytes, nested messages), or a fixed-width value, which no kind read
/// here uses and which is skipped.
#[derive(Debug)]
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn malformed(what: &str) -> ApiError {
    ApiError::bad_request(format!(
        "the protobuf request body could not be decoded: {what}"
    ))
}

fn read_varint(bytes: &[u8], position: &mut usize) -> Result<u64, ApiError> {
    let mut value = 0_u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes
            .get(*position)
            .ok_or_else(|| malformed("a varint runs past the end"))?;
        *position += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(malformed("a varint is longer than 10 bytes"))
}

/// The fields of one message, in order.
fn fields(bytes: &[u8]) -> Result<Vec<(u64, Field<'_>)>, ApiError> {
    let mut position = 0;
    let mut found = Vec::new();
    while position < bytes.len() {
        let key = read_varint(bytes, &mut position)?;
        let number = key >> 3;
        match key & 7 {
            0 => found.push((number, Field::Varint(read_varint(bytes, &mut position)?))),
            2 => {
                let length = usize::try_from(read_varint(bytes, &mut position)?)
                    .map_err(|_| malformed("a length does not fit in memory"))?;
                let end = position
                    .checked_add(length)
                    .filter(|end| *end <= bytes.len())
                    .ok_or_else(|| malformed("a field runs past the end"))?;
                found.push((number, Field::Bytes(&bytes[position..end])));
                position = end;
            }
            // Fixed-width fields appear in no message read here; they are skipped.
            1 => {
                position += 8;
                found.push((number, Field::Fixed));
            }
            5 => {
                position += 4;
                found.push((number, Field::Fixed));
            }
            other => return Err(malformed(&format!("unsupported wire type {other}"))),
        }
    }
    Ok(found)
}

fn message<'a>(fields: &[(u64, Field<'a>)], number: u64) -> Option<&'a [u8]> {
    fields.iter().find_map(|(n, field)| match field {
        Field::Bytes(bytes) if *n == number => Some(*bytes),
        Field::Bytes(_) | Field::Varint(_) | Field::Fixed => None,
    })
}

fn string(fields: &[(u64, Field<'_>)], number: u64) -> String {
    message(fields, number)
        .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
        .unwrap_or_default()
}

/// Every length-delimited value of a repeated field, in order.
fn repeated<'a>(fields: &[(u64, Field<'a>)], number: u64) -> Vec<&'a [u8]> {
    fields
        .iter()
        .filter_map(|(n, field)| match field {
            Field::Bytes(bytes) if *n == number => Some(*bytes),
            Field::Bytes(_) | Field::Varint(_) | Field::Fixed => None,
        })
        .collect()
}

fn strings(fields: &[(u64, Field<'_>)], number: u64) -> Value {
    json!(
        repeated(fields, number)
            .into_iter()
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
            .collect::<Vec<_>>()
    )
}

fn boolean(fields: &[(u64, Field<'_>)], number: u64) -> Option<bool> {
    fields.iter().find_map(|(n, field)| match field {
        Field::Varint(value) if *n == number => Some(*value != 0),
        Field::Varint(_) | Field::Bytes(_) | Field::Fixed => None,
    })
}

/// A `map<string, string>`: repeated entries with the key in field 1 and the value in 2.
fn string_map(fields: &[(u64, Field<'_>)], number: u64) -> Result<Option<Value>, ApiError> {
    let entries = repeated(fields, number);
    if entries.is_empty() {
        return Ok(None);
    }
    let mut map = serde_json::Map::new();
    for entry in entries {
        let entry = self::fields(entry)?;
        map.insert(string(&entry, 1), json!(string(&entry, 2)));
    }
    Ok(Some(Value::Object(map)))
}

/// The ObjectMeta fields a client sets on create: name, generateName, namespace, labels,
/// annotations and finalizers (the rest are the server's to fill).
fn object_meta(bytes: &[u8]) -> Result<Value, ApiError> {
    let meta = fields(bytes)?;
    let mut out = json!({});
    for (number, name) in [(1, "name"), (2, "generateName"), (3, "namespace")] {
        let value = string(&meta, number);
        if !value.is_empty() {
            out[name] = json!(value);
        }
    }
    for (number, name) in [(11, "labels"), (12, "annotations")] {
        if let Some(map) = string_map(&meta, number)? {
            out[name] = map;
        }
    }
    if !repeated(&meta, 14).is_empty() {
        out["finalizers"] = strings(&meta, 14);
    }
    Ok(out)
}

fn policy_rules(object: &[(u64, Field<'_>)]) -> Result<Value, ApiError> {
    let mut rules = Vec::new();
    for rule in repeated(object, 2) {
        let rule = fields(rule)?;
        let mut out = json!({"verbs": strings(&rule, 1)});
        for (number, name) in [
            (2, "apiGroups"),
            (3, "resources"),
            (4, "resourceNames"),
            (5, "nonResourceURLs"),
        ] {
            if !repeated(&rule, number).is_empty() {
                out[name] = strings(&rule, number);
            }
        }
        rules.push(out);
    }
    Ok(json!(rules))
}

fn binding(object: &[(u64, Field<'_>)], out: &mut Value) -> Result<(), ApiError> {
    let mut subjects = Vec::new();
    for subject in repeated(object, 2) {
        let subject = fields(subject)?;
        let mut entry = json!({"kind": string(&subject, 1), "name": string(&subject, 3)});
        for (number, name) in [(2, "apiGroup"), (4, "namespace")] {
            let value = string(&subject, number);
            if !value.is_empty() {
                entry[name] = json!(value);
            }
        }
        subjects.push(entry);
    }
    if !subjects.is_empty() {
        out["subjects"] = json!(subjects);
    }
    if let Some(role_ref) = message(object, 3) {
        let role_ref = fields(role_ref)?;
        out["roleRef"] = json!({
            "apiGroup": string(&role_ref, 1),
            "kind": string(&role_ref, 2),
            "name": string(&role_ref, 3),
        });
    }
    Ok(())
}

/// Decodes a protobuf request body into the JSON object the handlers read.
pub(crate) fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let unknown = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| malformed("the body does not start with the k8s magic"))?;
    let envelope = fields(unknown)?;
    let type_meta = fields(message(&envelope, 1).unwrap_or_default())?;
    let api_version = string(&type_meta, 1);
    let kind = string(&type_meta, 2);
    let raw = message(&envelope, 2).ok_or_else(|| malformed("no object in the envelope"))?;
    let object = fields(raw)?;
    let mut out = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": object_meta(message(&object, 1).unwrap_or_default())?,
    });
    match kind.as_str() {
        "SelfSubjectAccessReview" | "SelfSubjectRulesReview" => {
            out["spec"] = review_spec(&kind, &object)?;
        }
        // A Namespace's spec and status are the server's to fill.
        "Namespace" => {}
        "ServiceAccount" => {
            if let Some(automount) = boolean(&object, 4) {
                out["automountServiceAccountToken"] = json!(automount);
            }
        }
        "ConfigMap" => {
            if let Some(data) = string_map(&object, 2)? {
                out["data"] = data;
            }
            if !repeated(&object, 3).is_empty() {
                return Err(unsupported("ConfigMap binaryData"));
            }
            if let Some(immutable) = boolean(&object, 4) {
                out["immutable"] = json!(immutable);
            }
        }
        "Role" | "ClusterRole" => {
            out["rules"] = policy_rules(&object)?;
            if message(&object, 3).is_some() {
                return Err(unsupported("ClusterRole aggregationRule"));
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => binding(&object, &mut out)?,
        other => return Err(unsupported(other)),
    }
    Ok(out)
}

/// The answer to a protobuf body the sandbox cannot read: 415, as a server that does not
/// speak protobuf answers, with the reason.
fn unsupported(what: &str) -> ApiError {
    ApiError::new(
        415,
        "UnsupportedMediaType",
        format!(
            "the sandbox API server reads protobuf only for access reviews and the kinds of \
             the kubectl create generators, not {what}; send JSON instead"
        ),
    )
}

/// The spec of a SelfSubjectAccessReview or SelfSubjectRulesReview.
fn review_spec(kind: &str, object: &[(u64, Field<'_>)]) -> Result<Value, ApiError> {
    let spec = fields(message(object, 2).unwrap_or_default())?;
    let spec_json = match kind {
        "SelfSubjectAccessReview" => {
            let mut spec_json = json!({});
            if let Some(attributes) = message(&spec, 1) {
                let attributes = fields(attributes)?;
                let names = [
                    "namespace",
                    "verb",
                    "group",
                    "version",
                    "resource",
                    "subresource",
                    "name",
                ];
                let mut resource = json!({});
                for (number, name) in (1_u64..).zip(names) {
                    resource[name] = json!(string(&attributes, number));
                }
                spec_json["resourceAttributes"] = resource;
            }
            if let Some(attributes) = message(&spec, 2) {
                let attributes = fields(attributes)?;
                spec_json["nonResourceAttributes"] =
                    json!({"path": string(&attributes, 1), "verb": string(&attributes, 2)});
            }
            spec_json
        }
        "SelfSubjectRulesReview" => json!({"namespace": string(&spec, 1)}),
        other => return Err(unsupported(other)),
    };
    Ok(spec_json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3) | 2, u8::try_from(bytes.len()).expect("short")];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn decodes_an_access_review() {
        let attributes = [
            field(1, b"kube-system"),
            field(2, b"get"),
            field(5, b"pods"),
            field(6, b"proxy"),
        ]
        .concat();
        let spec = field(1, &attributes);
        let object = [field(1, b""), field(2, &spec)].concat();
        let type_meta = [
            field(1, b"authorization.k8s.io/v1"),
            field(2, b"SelfSubjectAccessReview"),
        ]
        .concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &object)].concat();
        let decoded = decode(&body).expect("decodes");
        assert_eq!(decoded["kind"], "SelfSubjectAccessReview");
        let resource = &decoded["spec"]["resourceAttributes"];
        assert_eq!(
            (
                &resource["namespace"],
                &resource["verb"],
                &resource["resource"],
                &resource["subresource"],
                &resource["group"]
            ),
            (
                &json!("kube-system"),
                &json!("get"),
                &json!("pods"),
                &json!("proxy"),
                &json!("")
            )
        );
    }

    #[test]
    fn refuses_other_bodies() {
        assert!(decode(b"{}").is_err());
        assert!(decode(&[b'k', b'8', b's', 0, 0x0a, 0x7f]).is_err());
    }
}
