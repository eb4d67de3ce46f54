//! Keeping a model loaded while more work for it waits.
//!
//! A client that sends `"keep_alive": 0` (some do, to free VRAM) makes Ollama unload
//! the model as soon as its answer is done. Run one after another, twenty such jobs
//! of one model would cost twenty loads. So while more queued work wants the same
//! load key, foreman sends the job without that `keep_alive` (the target's default
//! applies, `OLLAMA_KEEP_ALIVE`, five minutes unless set); the last job of the batch
//! goes as the client sent it, so the model is unloaded as the client asked, once
//! nothing else wants it.

use bytes::Bytes;
use serde_json::Value;

/// The body to send instead of `body` when more work of its load key is queued: the
/// same request without a `keep_alive` that unloads the model at once (zero, or a
/// duration of zero such as `"0"`, `"0s"`, `"0m"`). `None` when the body has no such
/// `keep_alive` (the common case: nothing is parsed beyond a quick look).
pub fn hold_loaded(body: &[u8]) -> Option<Bytes> {
    // Most bodies carry no keep_alive at all.
    if !contains(body, b"keep_alive") {
        return None;
    }
    let mut value: Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object_mut()?;
    if !object.get("keep_alive").is_some_and(unloads_at_once) {
        return None;
    }
    object.remove("keep_alive");
    serde_json::to_vec(&value).ok().map(Bytes::from)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Whether a `keep_alive` value tells Ollama to unload right after the answer: a
/// number of seconds that is zero, or a duration text whose every amount is zero.
/// Other negative values mean "forever" to Ollama and are left alone.
fn unloads_at_once(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(text) => {
            let text = text.trim();
            // A sign does not matter: `-0s` is zero too, not "forever".
            !text.is_empty()
                && text.chars().any(|c| c.is_ascii_digit())
                && text
                    .chars()
                    .filter(|c| c.is_ascii_digit() || *c == '.')
                    .all(|c| c == '0' || c == '.')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn zero_keep_alive_is_dropped_and_everything_else_kept() {
        for zero in [
            json!(0),
            json!(0.0),
            json!("0"),
            json!("0s"),
            json!("0m0s"),
            json!(" 0h "),
        ] {
            let body = json!({"model": "m", "keep_alive": zero, "options": {"num_ctx": 1}});
            let held = hold_loaded(body.to_string().as_bytes()).expect("rewritten");
            let held: Value = serde_json::from_slice(&held).unwrap();
            assert_eq!(
                held,
                json!({"model": "m", "options": {"num_ctx": 1}}),
                "{zero}"
            );
        }
        for kept in [
            json!(-1),
            json!("-1m"),
            json!(300),
            json!("5m"),
            json!("10s"),
            json!(""),
            json!(null),
        ] {
            let body = json!({"model": "m", "keep_alive": kept});
            assert!(hold_loaded(body.to_string().as_bytes()).is_none(), "{kept}");
        }
        assert!(hold_loaded(br#"{"model":"m"}"#).is_none());
        assert!(hold_loaded(b"keep_alive, not json").is_none());
    }
}

/// Properties over arbitrary bodies: [`hold_loaded`] never panics, and what it sends
/// instead is the same JSON object without a `keep_alive` that unloads at once,
/// exactly when Ollama would read that `keep_alive` as zero.
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::model_name::strategies;
    use proptest::prelude::*;
    use serde_json::Map;

    /// A Go duration (`time.ParseDuration`) and whether it is zero.
    fn go_duration() -> impl Strategy<Value = (String, bool)> {
        let unit = prop::sample::select(vec!["ns", "us", "µs", "ms", "s", "m", "h"]);
        let amount = prop_oneof![
            Just("0".to_string()),
            Just("0.0".to_string()),
            Just("00".to_string()),
            "[0-9]{1,3}(\\.[0-9]{1,2})?"
        ];
        (
            prop::sample::select(vec!["", "-", "+"]),
            prop::collection::vec((amount, unit), 1..4),
        )
            .prop_map(|(sign, parts)| {
                let zero = parts
                    .iter()
                    .all(|(n, _)| n.chars().all(|c| c == '0' || c == '.'));
                let text: String = parts.iter().map(|(n, u)| format!("{n}{u}")).collect();
                (format!("{sign}{text}"), zero)
            })
    }

    fn keep_alive_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            go_duration().prop_map(|(text, _)| Value::String(text)),
            strategies::number(),
            strategies::json(),
        ]
    }

    /// Found by the fuzz: `-0s` is zero to Go, not the "forever" of a negative value.
    #[test]
    fn a_negative_zero_duration_is_held() {
        for zero in ["-0s", "-0", "-0m0.0s"] {
            let body = serde_json::json!({"model": "m", "keep_alive": zero});
            assert!(hold_loaded(body.to_string().as_bytes()).is_some(), "{zero}");
        }
    }

    proptest! {
        #[test]
        fn any_bytes_are_held_or_left(bytes in prop::collection::vec(any::<u8>(), 0..128), keep_alive in any::<bool>()) {
            let mut bytes = bytes;
            if keep_alive {
                bytes.extend_from_slice(b"keep_alive");
            }
            if let Some(held) = hold_loaded(&bytes) {
                prop_assert!(serde_json::from_slice::<Value>(&held).is_ok());
            }
        }

        #[test]
        fn a_held_body_is_the_same_object_without_a_zero_keep_alive(
            mut body in strategies::object(),
            keep_alive in prop::option::of(keep_alive_value()),
        ) {
            if let Some(value) = keep_alive {
                body.insert("keep_alive".into(), value);
            }
            let text = Value::Object(body).to_string();
            // Compared with the body as serde_json reads it back (floats may move by
            // one unit in the last place).
            let mut body: Map<String, Value> = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            match hold_loaded(text.as_bytes()) {
                Some(held) => {
                    let held: Map<String, Value> = serde_json::from_slice(&held).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let dropped = body.remove("keep_alive");
                    prop_assert!(dropped.as_ref().is_some_and(unloads_at_once), "{:?}", dropped);
                    prop_assert!(!held.contains_key("keep_alive"));
                    let expected: Map<String, Value> = serde_json::from_str(&Value::Object(body).to_string()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(held, expected);
                }
                None => prop_assert!(!body.get("keep_alive").is_some_and(unloads_at_once)),
            }
        }

        #[test]
        fn a_duration_is_held_exactly_when_ollama_reads_it_as_zero((text, zero) in go_duration()) {
            let body = serde_json::json!({"model": "m", "keep_alive": text});
            prop_assert_eq!(hold_loaded(body.to_string().as_bytes()).is_some(), zero, "{}", text);
        }

        #[test]
        fn seconds_are_held_exactly_when_zero(seconds in strategies::number()) {
            let zero = seconds.as_f64() == Some(0.0);
            let body = serde_json::json!({"model": "m", "keep_alive": seconds});
            prop_assert_eq!(hold_loaded(body.to_string().as_bytes()).is_some(), zero, "{}", seconds);
        }
    }
}
