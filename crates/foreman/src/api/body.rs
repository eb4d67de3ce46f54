//! Request bodies read as Ollama reads them: whatever the `Content-Type`, one JSON
//! object, unknown fields ignored. An empty body, malformed JSON or a field of the
//! wrong type is a 400 in Ollama's words; a body over the limit is a 413.

use axum::extract::rejection::BytesRejection;
use bytes::Bytes;
use serde_json::{Map, Value};

use super::error::ApiError;

/// A parsed request: the raw bytes (forwarded untouched) and the object.
pub struct JsonBody {
    pub raw: Bytes,
    pub fields: Map<String, Value>,
    /// Go's struct name for type errors, e.g. `ChatRequest`.
    struct_name: &'static str,
}

impl JsonBody {
    pub fn parse(
        body: Result<Bytes, BytesRejection>,
        limit: usize,
        struct_name: &'static str,
    ) -> Result<JsonBody, ApiError> {
        let raw = body.map_err(|rejection| ApiError::from_body(rejection, limit))?;
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::BadRequest("missing request body".into()));
        }
        let fields = match serde_json::from_slice::<Value>(&raw) {
            Ok(Value::Object(fields)) => fields,
            Ok(other) => {
                return Err(ApiError::BadRequest(format!(
                    "json: cannot unmarshal {} into Go value of type api.{struct_name}",
                    kind(&other)
                )));
            }
            Err(error) if error.is_eof() => {
                return Err(ApiError::BadRequest("unexpected EOF".into()));
            }
            Err(error) => return Err(ApiError::BadRequest(format!("invalid JSON: {error}"))),
        };
        Ok(JsonBody {
            raw,
            fields,
            struct_name,
        })
    }

    pub fn type_error(&self, field: &str, value: &Value, go_type: &str) -> ApiError {
        ApiError::BadRequest(format!(
            "json: cannot unmarshal {} into Go struct field {}.{field} of type {go_type}",
            kind(value),
            self.struct_name
        ))
    }

    fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field).filter(|v| !v.is_null())
    }

    /// A string field; absent or null is `""`.
    pub fn string(&self, field: &str) -> Result<&str, ApiError> {
        match self.get(field) {
            None => Ok(""),
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(self.type_error(field, other, "string")),
        }
    }

    /// A boolean field; absent or null is `None`.
    pub fn bool(&self, field: &str) -> Result<Option<bool>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.type_error(field, other, "bool")),
        }
    }

    /// Checks an array field's type; absent or null is fine.
    pub fn expect_array(&self, field: &str, go_type: &str) -> Result<(), ApiError> {
        match self.get(field) {
            None | Some(Value::Array(_)) => Ok(()),
            Some(other) => Err(self.type_error(field, other, go_type)),
        }
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Properties of [`JsonBody`] over arbitrary bytes and JSON: it never panics, refuses
/// with a 400 whatever is not one JSON object, and keeps what it accepts as it came.
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::model_name::strategies;
    use proptest::prelude::*;

    const LIMIT: usize = 1 << 20;

    fn parsed(bytes: &[u8]) -> Result<JsonBody, ApiError> {
        JsonBody::parse(Ok(Bytes::copy_from_slice(bytes)), LIMIT, "ChatRequest")
    }

    fn status(error: &ApiError) -> u16 {
        error.status().as_u16()
    }

    proptest! {
        #[test]
        fn any_bytes_are_an_object_or_a_400(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            match parsed(&bytes) {
                Ok(body) => {
                    let reference = serde_json::from_slice::<Value>(&bytes);
                    prop_assert!(matches!(reference, Ok(Value::Object(_))));
                    prop_assert_eq!(&body.raw[..], &bytes[..]);
                }
                Err(error) => prop_assert_eq!(status(&error), 400),
            }
        }

        #[test]
        fn any_json_is_an_object_or_a_400_naming_its_kind(value in strategies::json()) {
            let text = value.to_string();
            match (parsed(text.as_bytes()), &value) {
                (Ok(body), Value::Object(_)) => {
                    // serde_json may read a float back one unit in the last place off.
                    let reference: Value = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(Value::Object(body.fields), reference);
                }
                (Err(error), Value::Object(_)) => prop_assert!(false, "refused an object: {}", error),
                (Ok(_), _) => prop_assert!(false, "accepted a non-object: {}", text),
                (Err(error), _) => {
                    prop_assert_eq!(status(&error), 400);
                    prop_assert!(error.to_string().contains("Go value of type api.ChatRequest"), "{}", error);
                }
            }
        }

        #[test]
        fn a_truncated_object_is_an_unexpected_eof(fields in strategies::object(), cut in any::<prop::sample::Index>()) {
            let text = Value::Object(fields).to_string();
            // Any proper prefix that is not blank: the object's `}` is its last byte.
            let at = 1 + cut.index(text.len() - 1);
            let error = parsed(&text.as_bytes()[..at]).err().expect("a prefix is refused");
            prop_assert_eq!(status(&error), 400);
            prop_assert_eq!(error.to_string(), "unexpected EOF");
        }

        #[test]
        fn field_readers_accept_their_type_and_refuse_the_rest(fields in strategies::object(), field in strategies::key()) {
            let body = JsonBody { raw: Bytes::new(), fields, struct_name: "ChatRequest" };
            let value = body.fields.get(&field).filter(|v| !v.is_null());
            prop_assert_eq!(body.string(&field).is_ok(), value.is_none_or(Value::is_string));
            prop_assert_eq!(body.bool(&field).is_ok(), value.is_none_or(Value::is_boolean));
            prop_assert_eq!(body.expect_array(&field, "[]api.Message").is_ok(), value.is_none_or(Value::is_array));
            for refused in [body.string(&field).err(), body.bool(&field).err()].into_iter().flatten() {
                prop_assert_eq!(status(&refused), 400);
            }
        }

        #[test]
        fn deep_nesting_is_a_400(depth in 1usize..20_000, open in prop::sample::select(vec!["[", "{\"a\":"])) {
            let text = format!("{{\"model\":{}", open.repeat(depth));
            let error = parsed(text.as_bytes()).err().expect("unclosed nesting is refused");
            prop_assert_eq!(status(&error), 400);
        }
    }

    #[test]
    fn blank_and_oversized_bodies_are_refused() {
        for blank in [&b""[..], b"  \n\t"] {
            let error = parsed(blank).err().expect("refused");
            assert_eq!(error.to_string(), "missing request body");
        }
        let closed = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        let error = parsed(closed.as_bytes()).err().expect("too deep to read");
        assert_eq!(status(&error), 400);
    }
}
