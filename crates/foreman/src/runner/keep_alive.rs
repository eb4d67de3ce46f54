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
/// Negative values mean "forever" to Ollama and are left alone.
fn unloads_at_once(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(text) => {
            let text = text.trim();
            !text.is_empty()
                && !text.starts_with('-')
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
