//! Just enough of the Kubernetes protobuf encoding to read the access reviews kubectl
//! sends: `kubectl auth can-i` posts SelfSubjectAccessReviews and
//! SelfSubjectRulesReviews as `application/vnd.kubernetes.protobuf`, and (unlike for
//! CBOR) client-go does not fall back to JSON when a server refuses it. Answers stay
//! JSON, which client-go decodes by the response's content type.
//!
//! The envelope is the 4-byte magic `k8s\0` followed by a `runtime.Unknown` message
//! (field 1 TypeMeta, field 2 the raw object); the objects are decoded by the field
//! numbers of `k8s.io/api/authorization/v1/generated.proto`.

use serde_json::{Value, json};

use super::errors::ApiError;

pub(crate) const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

/// One field of a protobuf message. Only length-delimited values (strings and nested
/// messages) are read; the reviews' numbers and booleans do not matter to the answer.
#[derive(Debug)]
enum Field<'a> {
    Scalar,
    Bytes(&'a [u8]),
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
            0 => {
                read_varint(bytes, &mut position)?;
                found.push((number, Field::Scalar));
            }
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
                found.push((number, Field::Scalar));
            }
            5 => {
                position += 4;
                found.push((number, Field::Scalar));
            }
            other => return Err(malformed(&format!("unsupported wire type {other}"))),
        }
    }
    Ok(found)
}

fn message<'a>(fields: &[(u64, Field<'a>)], number: u64) -> Option<&'a [u8]> {
    fields.iter().find_map(|(n, field)| match field {
        Field::Bytes(bytes) if *n == number => Some(*bytes),
        Field::Bytes(_) | Field::Scalar => None,
    })
}

fn string(fields: &[(u64, Field<'_>)], number: u64) -> String {
    message(fields, number)
        .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
        .unwrap_or_default()
}

/// Decodes a SelfSubjectAccessReview or SelfSubjectRulesReview into the JSON the
/// review handlers read (`spec` only; metadata is not needed to answer).
pub(crate) fn decode_review(body: &[u8]) -> Result<Value, ApiError> {
    let unknown = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| malformed("the body does not start with the k8s magic"))?;
    let envelope = fields(unknown)?;
    let type_meta = fields(message(&envelope, 1).unwrap_or_default())?;
    let kind = string(&type_meta, 2);
    let raw = message(&envelope, 2).ok_or_else(|| malformed("no object in the envelope"))?;
    let object = fields(raw)?;
    let spec = fields(message(&object, 2).unwrap_or_default())?;
    let spec_json = match kind.as_str() {
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
        other => {
            return Err(ApiError::bad_request(format!(
                "the sandbox reads protobuf only for access reviews, not {other:?}"
            )));
        }
    };
    Ok(json!({
        "apiVersion": string(&type_meta, 1),
        "kind": kind,
        "metadata": {},
        "spec": spec_json,
    }))
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
        let decoded = decode_review(&body).expect("decodes");
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
        assert!(decode_review(b"{}").is_err());
        assert!(decode_review(&[b'k', b'8', b's', 0, 0x0a, 0x7f]).is_err());
    }
}
