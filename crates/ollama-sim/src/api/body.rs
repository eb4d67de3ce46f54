//! Request bodies read the way Ollama reads them.
//!
//! Ollama decodes JSON whatever the `Content-Type`, ignores unknown fields, answers an
//! empty body with `missing request body` and a malformed one with Go's decoder text
//! (gin's `ShouldBindJSON` runs one `json.Decoder.Decode`, so anything after the first
//! JSON value is ignored).
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
        let first = serde_json::Deserializer::from_slice(bytes)
            .into_iter::<Value>()
            .next();
        let value = match first {
            Some(Ok(value)) => value,
            Some(Err(e)) => return Err(ApiError::bad_request(go_syntax_error(bytes, &e))),
            None => return Err(ApiError::bad_request("missing request body")),
        };
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
        self.option_int("num_predict")
    }

    /// An integer option (`options.<name>`), if given as a number.
    pub fn option_int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get("options") {
            None => Ok(None),
            Some(Value::Object(options)) => match options.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(value) => value.as_f64().map(|n| Some(n as i64)).ok_or_else(|| {
                    ApiError::new(
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        format!(
                            "option \"{name}\" must be of type integer, got {}",
                            go_type_name(value)
                        ),
                    )
                }),
            },
            Some(other) => Err(self.type_error("options", other, "map[string]interface {}")),
        }
    }

    /// An integer field; absent or null gives `None`.
    pub fn int(&self, field: &str) -> Result<Option<i64>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
            Some(other) => Err(self.type_error(field, other, "int")),
        }
    }
}

/// Go's `encoding/json` text for a body that is not valid JSON, e.g.
/// `invalid character 'x' looking for beginning of value` (its scanner's
/// `SyntaxError`s), or `unexpected EOF` for a body that ends too early.
fn go_syntax_error(bytes: &[u8], error: &serde_json::Error) -> String {
    if error.is_eof() {
        return "unexpected EOF".to_string();
    }
    let at = offending_byte(bytes, error.line(), error.column());
    let found = bytes.get(at).copied().unwrap_or(b' ');
    let message = error.to_string();
    let context = if message.starts_with("key must be a string") {
        "looking for beginning of object key string".to_string()
    } else if message.starts_with("expected `:`") {
        "after object key".to_string()
    } else if message.starts_with("expected `,` or `}`") {
        "after object key:value pair".to_string()
    } else if message.starts_with("expected `,` or `]`") {
        "after array element".to_string()
    } else if message.starts_with("trailing comma") {
        if found == b'}' {
            "looking for beginning of object key string".to_string()
        } else {
            "looking for beginning of value".to_string()
        }
    } else if message.starts_with("control character") {
        "in string literal".to_string()
    } else if message.starts_with("invalid escape") {
        "in string escape code".to_string()
    } else if message.starts_with("invalid number") || message.starts_with("number out of range") {
        "in numeric literal".to_string()
    } else if message.starts_with("expected ident") {
        literal_context(bytes, at)
    } else {
        "looking for beginning of value".to_string()
    };
    format!("invalid character {} {context}", go_quote_char(found))
}

/// The index of the byte serde_json stopped at (`line` and `column` are 1-based).
fn offending_byte(bytes: &[u8], line: usize, column: usize) -> usize {
    let line_start = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(line.saturating_sub(2))
        .map_or(0, |(i, _)| i + 1);
    let line_start = if line <= 1 { 0 } else { line_start };
    line_start + column.saturating_sub(1)
}

/// `in literal true (expecting 'r')` for a misspelt `true`, `false` or `null`.
fn literal_context(bytes: &[u8], at: usize) -> String {
    let start = (0..at)
        .rev()
        .find(|i| matches!(bytes[*i], b't' | b'f' | b'n'))
        .unwrap_or(at);
    let literal = match bytes.get(start) {
        Some(b't') => "true",
        Some(b'f') => "false",
        _ => "null",
    };
    let expecting = literal.as_bytes().get(at - start).copied().unwrap_or(b' ');
    format!(
        "in literal {literal} (expecting {})",
        go_quote_char(expecting)
    )
}

/// Go's `quoteChar`: the byte in single quotes, escaped as `strconv.Quote` does.
fn go_quote_char(byte: u8) -> String {
    match byte {
        b'\'' => "'\\''".to_string(),
        b'"' => "'\"'".to_string(),
        b'\n' => "'\\n'".to_string(),
        b'\r' => "'\\r'".to_string(),
        b'\t' => "'\\t'".to_string(),
        b'\\' => "'\\\\'".to_string(),
        0x20..=0x7e => format!("'{}'", byte as char),
        other => format!("'\\x{other:02x}'"),
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
        assert!(RequestBody::parse(b"[1]", "ChatRequest").is_err());
    }

    #[test]
    fn malformed_bodies_get_go_decoder_texts() {
        // Go's encoding/json scanner (gin ShouldBindJSON in server/routes.go handlers).
        let message = |body: &[u8]| {
            RequestBody::parse(body, "ChatRequest")
                .err()
                .unwrap()
                .message
        };
        let cases: [(&[u8], &str); 9] = [
            (b"x", "invalid character 'x' looking for beginning of value"),
            (
                b"{nope}",
                "invalid character 'n' looking for beginning of object key string",
            ),
            (b"{\"a\" 1}", "invalid character '1' after object key"),
            (
                b"{\"a\":1 \"b\":2}",
                "invalid character '\"' after object key:value pair",
            ),
            (
                b"{\"a\":[1 2]}",
                "invalid character '2' after array element",
            ),
            (
                b"{\"a\":[1,]}",
                "invalid character ']' looking for beginning of value",
            ),
            (
                b"{\"a\":1,}",
                "invalid character '}' looking for beginning of object key string",
            ),
            (
                b"{\"a\":tru}",
                "invalid character '}' in literal true (expecting 'e')",
            ),
            (
                b"\n\n {\"a\":\n  x}",
                "invalid character 'x' looking for beginning of value",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(message(body), expected, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn anything_after_the_first_value_is_ignored() {
        let body = RequestBody::parse(br#"{"model":"m"} trailing {"#, "ChatRequest").unwrap();
        assert_eq!(body.string("model").unwrap(), "m");
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
