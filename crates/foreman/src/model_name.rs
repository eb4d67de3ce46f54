//! Model names compared the way Ollama compares them.
//!
//! Clients may say `Llama3.2`, `llama3.2` or `llama3.2:latest` for one model. The
//! queue groups jobs by this key and the inventory looks models up by it, while the
//! client's own spelling stays untouched in the payload sent upstream.

/// Lower-case, with `:latest` added when the name has no tag.
pub fn model_key(name: &str) -> String {
    let key = name.trim().to_ascii_lowercase();
    let last_segment = key.rsplit('/').next().unwrap_or(&key);
    match last_segment.contains(':') {
        true => key,
        false => key + ":latest",
    }
}

#[cfg(test)]
mod tests {
    use super::model_key;

    #[test]
    fn keys_ignore_case_and_default_the_tag() {
        assert_eq!(model_key("Llama3.2"), "llama3.2:latest");
        assert_eq!(model_key("llama3.2:3b"), "llama3.2:3b");
        assert_eq!(model_key("registry:5000/me/m"), "registry:5000/me/m:latest");
        assert_eq!(model_key("me/m:q4"), "me/m:q4");
    }
}
