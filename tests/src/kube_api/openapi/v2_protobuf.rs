//! The `/openapi/v2` document in the protobuf form client-go asks for
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`): the JSON document
//! written as the `openapi.v2.Document` message of gnostic's `OpenAPIv2.proto`, the form
//! kube-apiserver serves. client-go's `OpenAPISchema()` accepts nothing else, and kubectl
//! reads it for client-side validation (before 1.27) and `explain --output
//! plaintext-openapiv2`.
//!
//! Only what the served document uses is written: the document's version, info, paths
//! (operations, parameters, responses) and definitions (schemas with references, types,
//! descriptions, formats, required fields, items, properties, additionalProperties, allOf
//! and `x-` extensions). Extension values travel as YAML text, as in gnostic's `Any`.

use serde_json::{Map, Value};

/// The field numbers of the gnostic messages written here.
mod field {
    pub mod document {
        pub const SWAGGER: u32 = 1;
        pub const INFO: u32 = 2;
        pub const PATHS: u32 = 8;
        pub const DEFINITIONS: u32 = 9;
    }
    pub mod info {
        pub const TITLE: u32 = 1;
        pub const VERSION: u32 = 2;
    }
    /// `Paths.path`, `Definitions.additional_properties`, `Properties.additional_properties`
    /// and `Responses.response_code` hold named entries; `Named*` messages are name = 1,
    /// value = 2.
    pub const PATHS_PATH: u32 = 2;
    pub const NAMED_LIST: u32 = 1;
    pub const NAME: u32 = 1;
    pub const VALUE: u32 = 2;
    pub mod path_item {
        pub const GET: u32 = 2;
        pub const PUT: u32 = 3;
        pub const POST: u32 = 4;
        pub const DELETE: u32 = 5;
        pub const PATCH: u32 = 8;
        pub const PARAMETERS: u32 = 9;
    }
    pub mod operation {
        pub const TAGS: u32 = 1;
        pub const DESCRIPTION: u32 = 3;
        pub const OPERATION_ID: u32 = 5;
        pub const PRODUCES: u32 = 6;
        pub const CONSUMES: u32 = 7;
        pub const PARAMETERS: u32 = 8;
        pub const RESPONSES: u32 = 9;
        pub const SCHEMES: u32 = 10;
        pub const VENDOR_EXTENSION: u32 = 13;
    }
    /// `ParametersItem.parameter`, then `Parameter.body_parameter` or
    /// `Parameter.non_body_parameter`, whose query and path sub-schemas are 3 and 4.
    pub mod parameter {
        pub const ITEM_PARAMETER: u32 = 1;
        pub const BODY: u32 = 1;
        pub const NON_BODY: u32 = 2;
        pub const QUERY: u32 = 3;
        pub const PATH: u32 = 4;
    }
    pub mod body_parameter {
        pub const DESCRIPTION: u32 = 1;
        pub const NAME: u32 = 2;
        pub const IN: u32 = 3;
        pub const REQUIRED: u32 = 4;
        pub const SCHEMA: u32 = 5;
    }
    /// Query and path sub-schemas share their first fields; `type` and `unique_items`
    /// differ (a query parameter has `allow_empty_value` at 5).
    pub mod sub_schema {
        pub const REQUIRED: u32 = 1;
        pub const IN: u32 = 2;
        pub const DESCRIPTION: u32 = 3;
        pub const NAME: u32 = 4;
        pub const QUERY_TYPE: u32 = 6;
        pub const QUERY_UNIQUE_ITEMS: u32 = 20;
        pub const PATH_TYPE: u32 = 5;
        pub const PATH_UNIQUE_ITEMS: u32 = 19;
    }
    pub mod response {
        pub const VALUE_RESPONSE: u32 = 1;
        pub const DESCRIPTION: u32 = 1;
        pub const SCHEMA: u32 = 2;
        pub const SCHEMA_ITEM_SCHEMA: u32 = 1;
    }
    pub mod schema {
        pub const REF: u32 = 1;
        pub const FORMAT: u32 = 2;
        pub const TITLE: u32 = 3;
        pub const DESCRIPTION: u32 = 4;
        pub const DEFAULT: u32 = 5;
        pub const REQUIRED: u32 = 19;
        pub const ENUM: u32 = 20;
        pub const ADDITIONAL_PROPERTIES: u32 = 21;
        pub const TYPE: u32 = 22;
        pub const ITEMS: u32 = 23;
        pub const ALL_OF: u32 = 24;
        pub const PROPERTIES: u32 = 25;
        pub const READ_ONLY: u32 = 27;
        pub const VENDOR_EXTENSION: u32 = 31;
        pub const ADDITIONAL_SCHEMA: u32 = 1;
        pub const ADDITIONAL_BOOLEAN: u32 = 2;
        pub const TYPE_VALUE: u32 = 1;
        pub const ITEMS_SCHEMA: u32 = 1;
    }
    /// `Any.yaml`.
    pub const ANY_YAML: u32 = 2;
}

/// A protobuf message being written.
#[derive(Default)]
struct Message {
    bytes: Vec<u8>,
}

const VARINT: u32 = 0;
const LENGTH_DELIMITED: u32 = 2;

impl Message {
    fn varint(&mut self, mut value: u64) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                self.bytes.push(byte);
                return;
            }
            self.bytes.push(byte | 0x80);
        }
    }

    fn key(&mut self, field: u32, wire_type: u32) {
        self.varint(u64::from((field << 3) | wire_type));
    }

    fn bytes_field(&mut self, field: u32, value: &[u8]) {
        self.key(field, LENGTH_DELIMITED);
        self.varint(value.len() as u64);
        self.bytes.extend_from_slice(value);
    }

    fn string(&mut self, field: u32, value: &str) {
        // proto3 leaves default (empty) values out.
        if !value.is_empty() {
            self.bytes_field(field, value.as_bytes());
        }
    }

    fn boolean(&mut self, field: u32, value: bool) {
        if value {
            self.key(field, VARINT);
            self.varint(1);
        }
    }

    fn message(&mut self, field: u32, message: Message) {
        self.bytes_field(field, &message.bytes);
    }

    fn strings(&mut self, field: u32, values: Option<&Value>) {
        for value in values.and_then(Value::as_array).into_iter().flatten() {
            if let Some(text) = value.as_str() {
                self.bytes_field(field, text.as_bytes());
            }
        }
    }
}

fn text<'a>(map: &'a Map<String, Value>, key: &str) -> &'a str {
    map.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// A value as gnostic's `Any`: its YAML text.
fn any(value: &Value) -> Message {
    let mut message = Message::default();
    let yaml = serde_yaml::to_string(value).unwrap_or_default();
    message.string(field::ANY_YAML, &yaml);
    message
}

/// The `x-` members of an object as repeated `NamedAny`.
fn vendor_extensions(message: &mut Message, field_number: u32, map: &Map<String, Value>) {
    for (key, value) in map.iter().filter(|(key, _)| key.starts_with("x-")) {
        let mut named = Message::default();
        named.string(field::NAME, key);
        named.message(field::VALUE, any(value));
        message.message(field_number, named);
    }
}

fn named(name: &str, value: Message) -> Message {
    let mut entry = Message::default();
    entry.string(field::NAME, name);
    entry.message(field::VALUE, value);
    entry
}

fn schema(value: &Value) -> Message {
    use field::schema as f;
    let mut message = Message::default();
    let Value::Object(map) = value else {
        return message;
    };
    message.string(f::REF, text(map, "$ref"));
    message.string(f::FORMAT, text(map, "format"));
    message.string(f::TITLE, text(map, "title"));
    message.string(f::DESCRIPTION, text(map, "description"));
    if let Some(default) = map.get("default") {
        message.message(f::DEFAULT, any(default));
    }
    message.strings(f::REQUIRED, map.get("required"));
    for value in map
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        message.message(f::ENUM, any(value));
    }
    match map.get("additionalProperties") {
        Some(Value::Bool(allowed)) => {
            let mut item = Message::default();
            // A false boolean is proto3's default; write it explicitly all the same so
            // that the oneof is set.
            item.key(f::ADDITIONAL_BOOLEAN, VARINT);
            item.varint(u64::from(*allowed));
            message.message(f::ADDITIONAL_PROPERTIES, item);
        }
        Some(other @ Value::Object(_)) => {
            let mut item = Message::default();
            item.message(f::ADDITIONAL_SCHEMA, schema(other));
            message.message(f::ADDITIONAL_PROPERTIES, item);
        }
        Some(_) | None => {}
    }
    match map.get("type") {
        Some(Value::String(kind)) => {
            let mut item = Message::default();
            item.string(f::TYPE_VALUE, kind);
            message.message(f::TYPE, item);
        }
        Some(kinds @ Value::Array(_)) => {
            let mut item = Message::default();
            item.strings(f::TYPE_VALUE, Some(kinds));
            message.message(f::TYPE, item);
        }
        Some(_) | None => {}
    }
    if let Some(items) = map.get("items") {
        let mut item = Message::default();
        item.message(f::ITEMS_SCHEMA, schema(items));
        message.message(f::ITEMS, item);
    }
    for part in map
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        message.message(f::ALL_OF, schema(part));
    }
    if let Some(Value::Object(properties)) = map.get("properties") {
        let mut list = Message::default();
        for (name, property) in properties {
            list.message(field::NAMED_LIST, named(name, schema(property)));
        }
        message.message(f::PROPERTIES, list);
    }
    message.boolean(
        f::READ_ONLY,
        map.get("readOnly") == Some(&Value::Bool(true)),
    );
    vendor_extensions(&mut message, f::VENDOR_EXTENSION, map);
    message
}

fn parameter(value: &Value) -> Message {
    use field::parameter as p;
    let mut parameter = Message::default();
    let Value::Object(map) = value else {
        return parameter;
    };
    let location = text(map, "in");
    let required = map.get("required") == Some(&Value::Bool(true));
    let unique = map.get("uniqueItems") == Some(&Value::Bool(true));
    match location {
        "body" => {
            use field::body_parameter as b;
            let mut body = Message::default();
            body.string(b::DESCRIPTION, text(map, "description"));
            body.string(b::NAME, text(map, "name"));
            body.string(b::IN, location);
            body.boolean(b::REQUIRED, required);
            if let Some(body_schema) = map.get("schema") {
                body.message(b::SCHEMA, schema(body_schema));
            }
            parameter.message(p::BODY, body);
        }
        _ => {
            use field::sub_schema as s;
            let mut sub = Message::default();
            sub.boolean(s::REQUIRED, required);
            sub.string(s::IN, location);
            sub.string(s::DESCRIPTION, text(map, "description"));
            sub.string(s::NAME, text(map, "name"));
            let (kind_field, unique_field, which) = if location == "path" {
                (s::PATH_TYPE, s::PATH_UNIQUE_ITEMS, p::PATH)
            } else {
                (s::QUERY_TYPE, s::QUERY_UNIQUE_ITEMS, p::QUERY)
            };
            sub.string(kind_field, text(map, "type"));
            sub.boolean(unique_field, unique);
            let mut non_body = Message::default();
            non_body.message(which, sub);
            parameter.message(p::NON_BODY, non_body);
        }
    }
    let mut item = Message::default();
    item.message(p::ITEM_PARAMETER, parameter);
    item
}

fn operation(value: &Value) -> Message {
    use field::operation as o;
    let mut message = Message::default();
    let Value::Object(map) = value else {
        return message;
    };
    message.strings(o::TAGS, map.get("tags"));
    message.string(o::DESCRIPTION, text(map, "description"));
    message.string(o::OPERATION_ID, text(map, "operationId"));
    message.strings(o::PRODUCES, map.get("produces"));
    message.strings(o::CONSUMES, map.get("consumes"));
    for item in map
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        message.message(o::PARAMETERS, parameter(item));
    }
    if let Some(Value::Object(responses)) = map.get("responses") {
        use field::response as r;
        let mut list = Message::default();
        for (code, answer) in responses {
            let mut response = Message::default();
            response.string(
                r::DESCRIPTION,
                answer
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            );
            if let Some(answer_schema) = answer.get("schema") {
                let mut item = Message::default();
                item.message(r::SCHEMA_ITEM_SCHEMA, schema(answer_schema));
                response.message(r::SCHEMA, item);
            }
            let mut response_value = Message::default();
            response_value.message(r::VALUE_RESPONSE, response);
            list.message(field::NAMED_LIST, named(code, response_value));
        }
        message.message(o::RESPONSES, list);
    }
    message.strings(o::SCHEMES, map.get("schemes"));
    vendor_extensions(&mut message, o::VENDOR_EXTENSION, map);
    message
}

fn path_item(value: &Value) -> Message {
    use field::path_item as f;
    let mut message = Message::default();
    let Value::Object(map) = value else {
        return message;
    };
    for (method, number) in [
        ("get", f::GET),
        ("put", f::PUT),
        ("post", f::POST),
        ("delete", f::DELETE),
        ("patch", f::PATCH),
    ] {
        if let Some(found) = map.get(method) {
            message.message(number, operation(found));
        }
    }
    for item in map
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        message.message(f::PARAMETERS, parameter(item));
    }
    message
}

/// The JSON v2 document as an `openapi.v2.Document` message.
pub(crate) fn encode(document: &Value) -> Vec<u8> {
    use field::document as d;
    let mut message = Message::default();
    let Value::Object(map) = document else {
        return message.bytes;
    };
    message.string(d::SWAGGER, text(map, "swagger"));
    if let Some(Value::Object(info)) = map.get("info") {
        let mut encoded = Message::default();
        encoded.string(field::info::TITLE, text(info, "title"));
        encoded.string(field::info::VERSION, text(info, "version"));
        message.message(d::INFO, encoded);
    }
    if let Some(Value::Object(paths)) = map.get("paths") {
        let mut list = Message::default();
        for (path, item) in paths {
            list.message(field::PATHS_PATH, named(path, path_item(item)));
        }
        message.message(d::PATHS, list);
    }
    if let Some(Value::Object(definitions)) = map.get("definitions") {
        let mut list = Message::default();
        for (name, definition) in definitions {
            list.message(field::NAMED_LIST, named(name, schema(definition)));
        }
        message.message(d::DEFINITIONS, list);
    }
    message.bytes
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn varints_and_strings_are_written_as_protobuf_does() {
        let mut message = Message::default();
        message.varint(300);
        assert_eq!(message.bytes, [0xac, 0x02]);
        let mut message = Message::default();
        message.string(1, "2.0");
        assert_eq!(message.bytes, [0x0a, 0x03, b'2', b'.', b'0']);
        let mut empty = Message::default();
        empty.string(1, "");
        empty.boolean(2, false);
        assert!(empty.bytes.is_empty(), "proto3 defaults are left out");
    }

    #[test]
    fn a_schema_carries_its_extensions_as_yaml() {
        let encoded = schema(&json!({
            "type": "object",
            "x-kubernetes-group-version-kind": [{"group": "", "kind": "Pod", "version": "v1"}]
        }))
        .bytes;
        // TypeItem{value: "object"} at field 22, then the NamedAny at field 31.
        assert_eq!(&encoded[..2], [0xb2, 0x01]);
        let text = String::from_utf8_lossy(&encoded);
        assert!(text.contains("x-kubernetes-group-version-kind"), "{text}");
        assert!(text.contains("kind: Pod"), "{text}");
    }
}
