//! `keep_alive` values in Ollama's forms.
//!
//! Ollama accepts a JSON number (seconds, fractions allowed) or a Go duration string
//! (`"5m"`, `"1h30m"`, `"300ms"`); anything negative means "keep loaded forever" and
//! zero means "unload as soon as idle". The same grammar serves the `--keep-alive` flag.

use std::time::Duration;

use serde_json::Value;

/// How long a model stays resident after its last request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Never expires.
    Forever,
    /// Expires this long after the model goes idle; zero unloads at once.
    For(Duration),
}

impl KeepAlive {
    /// Reads the JSON value of a request's `keep_alive` field. `null` means "not given".
    /// Errors carry Ollama's own messages.
    pub fn from_json(value: &Value) -> Result<Option<KeepAlive>, String> {
        match value {
            Value::Null => Ok(None),
            Value::Number(n) => {
                let seconds = n.as_f64().unwrap_or(0.0);
                Ok(Some(KeepAlive::from_seconds(seconds)))
            }
            Value::String(s) => parse_go_duration(s).map(Some),
            Value::Bool(_) => Err("Unsupported type: 'bool'".to_string()),
            Value::Array(_) => Err("Unsupported type: '[]interface {}'".to_string()),
            Value::Object(_) => Err("Unsupported type: 'map[string]interface {}'".to_string()),
        }
    }

    /// Reads a command-line value: a Go duration or a plain number of seconds.
    pub fn parse_flag(text: &str) -> Result<KeepAlive, String> {
        match text.trim().parse::<f64>() {
            Ok(seconds) => Ok(KeepAlive::from_seconds(seconds)),
            Err(_) => parse_go_duration(text.trim()),
        }
    }

    fn from_seconds(seconds: f64) -> KeepAlive {
        if seconds < 0.0 {
            KeepAlive::Forever
        } else {
            // At most Go's longest duration (about 292 years): a longer one put the
            // expiry past year 9999, which `/api/ps` cannot print.
            KeepAlive::For(Duration::from_secs_f64(seconds.min(i64::MAX as f64 / 1e9)))
        }
    }

    /// True for a zero duration: the model unloads as soon as it is idle.
    pub fn is_zero(&self) -> bool {
        matches!(self, KeepAlive::For(d) if d.is_zero())
    }
}

/// Parses a Go `time.ParseDuration` string: an optional sign, then one or more
/// `<number><unit>` pairs with units ns, us, µs, ms, s, m, h. A bare `0` is allowed.
pub fn parse_go_duration(text: &str) -> Result<KeepAlive, String> {
    let invalid = || format!("time: invalid duration {text:?}");
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(KeepAlive::For(Duration::ZERO));
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total_ns: f64 = 0.0;
    let mut remaining = rest;
    while !remaining.is_empty() {
        let number_len = remaining
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(remaining.len());
        if number_len == 0 {
            return Err(invalid());
        }
        let number: f64 = remaining[..number_len].parse().map_err(|_| invalid())?;
        remaining = &remaining[number_len..];
        let unit_len = remaining
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(remaining.len());
        let unit = &remaining[..unit_len];
        remaining = &remaining[unit_len..];
        let unit_ns = match unit {
            "" => return Err(format!("time: missing unit in duration {text:?}")),
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            other => return Err(format!("time: unknown unit {other:?} in duration {text:?}")),
        };
        total_ns += number * unit_ns;
    }
    if negative && total_ns > 0.0 {
        return Ok(KeepAlive::Forever);
    }
    Ok(KeepAlive::For(Duration::from_nanos(total_ns as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secs(s: u64) -> Option<KeepAlive> {
        Some(KeepAlive::For(Duration::from_secs(s)))
    }

    #[test]
    fn json_numbers_are_seconds() {
        assert_eq!(KeepAlive::from_json(&json!(300)).unwrap(), secs(300));
        assert_eq!(KeepAlive::from_json(&json!(0)).unwrap(), secs(0));
        assert_eq!(
            KeepAlive::from_json(&json!(1.5)).unwrap(),
            Some(KeepAlive::For(Duration::from_millis(1500)))
        );
        assert_eq!(
            KeepAlive::from_json(&json!(-1)).unwrap(),
            Some(KeepAlive::Forever)
        );
        assert_eq!(KeepAlive::from_json(&json!(null)).unwrap(), None);
    }

    #[test]
    fn json_strings_are_go_durations() {
        assert_eq!(KeepAlive::from_json(&json!("5m")).unwrap(), secs(300));
        assert_eq!(KeepAlive::from_json(&json!("1h30m")).unwrap(), secs(5400));
        assert_eq!(
            KeepAlive::from_json(&json!("300ms")).unwrap(),
            Some(KeepAlive::For(Duration::from_millis(300)))
        );
        assert_eq!(
            KeepAlive::from_json(&json!("-1m")).unwrap(),
            Some(KeepAlive::Forever)
        );
        assert_eq!(KeepAlive::from_json(&json!("0")).unwrap(), secs(0));
        assert_eq!(
            KeepAlive::from_json(&json!("300")).unwrap_err(),
            "time: missing unit in duration \"300\""
        );
        assert!(KeepAlive::from_json(&json!("soon")).is_err());
        assert_eq!(
            KeepAlive::from_json(&json!(true)).unwrap_err(),
            "Unsupported type: 'bool'"
        );
    }

    #[test]
    fn flags_accept_both_forms() {
        assert_eq!(
            KeepAlive::parse_flag("5m").unwrap(),
            KeepAlive::For(Duration::from_secs(300))
        );
        assert_eq!(
            KeepAlive::parse_flag("30").unwrap(),
            KeepAlive::For(Duration::from_secs(30))
        );
        assert_eq!(KeepAlive::parse_flag("-1").unwrap(), KeepAlive::Forever);
        assert!(KeepAlive::parse_flag("0").unwrap().is_zero());
    }
}
