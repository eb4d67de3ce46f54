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
