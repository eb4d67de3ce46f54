//! Request bodies read the way Ollama reads them.
//!
//! Ollama decodes JSON whatever the `Content-Type`, ignores unknown fields, answers an
//! empty body with `missing request body` and a malformed one with Go's decoder text.
//! The helpers here take fields by name from the parsed object and report a field of
//! the wrong type with Go's `cannot unmarshal` message, all as 400s.

use serde_json::{Map, Value};

use super::wire::ApiError;

/// A request body as a JSON object.
pub struct RequestBody {
    /// Go's struct name, used in type errors, e.g. `ChatRequest`.
    struct_name: &'static str,
    pub fields: Map<String, Value>,
}

impl RequestBody {
    /// Parses `bytes` as a JSON object.
    pub fn parse(bytes: &[u8], struct_name: &'static str) -> Result<RequestBody, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request("missing request body"));
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            let message = if e.is_eof() {
                "unexpected EOF".to_string()
            } else {
                format!("invalid character in JSON: {e}")
            };
            ApiError::bad_request(message)
        })?;
        match value {
            Value::Object(fields) => Ok(RequestBody {
                struct_name,
                fields,
            }),
            other => Err(ApiError::bad_request(format!(
                "json: cannot unmarshal {} into Go value of type api.{struct_name}",
                go_type_name(&other)
            ))),
        }
    }

    fn type_error(&self, field: &str, value: &Value, go_type: &str) -> ApiError {
        ApiError::bad_request(format!(
            "json: cannot unmarshal {} into Go struct field {}.{field} of type {go_type}",
            go_type_name(value),
            self.struct_name
        ))
    }

    /// The raw value, `None` when absent or null.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field).filter(|v| !v.is_null())
    }

    /// A string field; absent or null gives `""`.
    pub fn string(&self, field: &str) -> Result<&str, ApiError> {
        match self.get(field) {
            None => Ok(""),
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(self.type_error(field, other, "string")),
        }
    }

    /// A boolean field; absent or null gives `None`.
    pub fn bool(&self, field: &str) -> Result<Option<bool>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.type_error(field, other, "bool")),
        }
    }

    /// An array field; absent or null gives an empty slice.
    pub fn array(&self, field: &str, go_type: &str) -> Result<&[Value], ApiError> {
        match self.get(field) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(other) => Err(self.type_error(field, other, go_type)),
        }
    }

    /// `options.num_predict`, if given as a number.
    pub fn num_predict(&self) -> Result<Option<i64>, ApiError> {
        match self.get("options") {
            None => Ok(None),
            Some(Value::Object(options)) => match options.get("num_predict") {
                None | Some(Value::Null) => Ok(None),
                Some(value) => value.as_f64().map(|n| Some(n as i64)).ok_or_else(|| {
                    ApiError::new(
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        format!(
                            "option \"num_predict\" must be of type integer, got {}",
                            go_type_name(value)
                        ),
                    )
                }),
            },
            Some(other) => Err(self.type_error("options", other, "map[string]interface {}")),
        }
    }
}

/// The name Go's decoder uses for a JSON value's kind.
pub fn go_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_malformed_bodies_are_400s() {
        assert_eq!(
            RequestBody::parse(b"", "ChatRequest")
                .err()
                .unwrap()
                .message,
            "missing request body"
        );
        assert_eq!(
            RequestBody::parse(b"{\"model\":", "ChatRequest")
                .err()
                .unwrap()
                .message,
            "unexpected EOF"
        );
        assert!(RequestBody::parse(b"{nope}", "ChatRequest").is_err());
        assert!(RequestBody::parse(b"[1]", "ChatRequest").is_err());
    }

    #[test]
    fn wrong_field_types_name_the_field() {
        let body = RequestBody::parse(br#"{"model":3,"stream":"yes"}"#, "ChatRequest").unwrap();
        assert_eq!(
            body.string("model").unwrap_err().message,
            "json: cannot unmarshal number into Go struct field ChatRequest.model of type string"
        );
        assert!(body.bool("stream").is_err());
        assert_eq!(body.string("prompt").unwrap(), "");
    }
}
