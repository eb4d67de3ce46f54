//! Load keys: what a job needs loaded on a target, and the pins that stop drifting
//! clients from reloading a model.
//!
//! Ollama reloads a model's runner when a request's runner options differ from the
//! ones it was loaded with (`needsReload` in Ollama's `server/sched.go` compares
//! `api.Runner`: `num_ctx`, `num_batch`, `num_gpu`, `main_gpu`, `use_mmap`,
//! `num_thread`, and the draft model's `draft_num_predict`). Two requests for one model
//! with different `num_ctx` thus cost a load each when they alternate: a swap in all
//! but name. So the scheduler drains by *load key* (the model plus those options), not
//! by model alone.
//!
//! Only the native routes carry options: Ollama's OpenAI and Anthropic middleware
//! builds its chat request without them, so those jobs' key is the model alone.
//! An option that is not given is kept apart from one given with the target's default
//! value: foreman cannot know that default (`OLLAMA_CONTEXT_LENGTH`, the model's
//! parameters), so it never assumes two such jobs share a runner.
//!
//! A [`Pin`] (`FOREMAN_PIN_OPTIONS`) rewrites the listed options of every native
//! request for one model before it is queued, so that clients that send different
//! values all run on one runner.

use std::fmt;

use foreman_store::{JobKind, QueueHead};
use serde_json::{Map, Value};

use crate::model_name::model_key;

/// Runner options whose change makes Ollama reload the model.
pub const RELOAD_OPTIONS: [&str; 7] = [
    "num_ctx",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "use_mmap",
    "num_thread",
    "draft_num_predict",
];

/// A model and the runner options it must be loaded with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LoadKey {
    /// The model key (see [`model_key`]).
    pub model: String,
    /// Canonical `name=value` pairs sorted by name, comma-separated; empty for none.
    pub options: String,
}

impl LoadKey {
    pub fn new(model: impl Into<String>, options: impl Into<String>) -> LoadKey {
        LoadKey {
            model: model.into(),
            options: options.into(),
        }
    }

    /// The load key of a queue head.
    pub fn of_head(head: &QueueHead) -> LoadKey {
        LoadKey::new(head.model.clone(), head.load_options.clone())
    }

    /// Whether `head` queues jobs of this key.
    pub fn is_of(&self, head: &QueueHead) -> bool {
        self.model == head.model && self.options == head.load_options
    }
}

impl fmt::Display for LoadKey {
    /// `model`, or `model{num_ctx=8192}` when it has options.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.options.is_empty() {
            f.write_str(&self.model)
        } else {
            write!(f, "{}{{{}}}", self.model, self.options)
        }
    }
}

/// The canonical load options of a job of `kind` with this JSON body.
pub fn load_options(kind: JobKind, body: &Map<String, Value>) -> String {
    if !matches!(kind, JobKind::Chat | JobKind::Generate) {
        return String::new();
    }
    let Some(options) = body.get("options").and_then(Value::as_object) else {
        return String::new();
    };
    let mut pairs: Vec<String> = RELOAD_OPTIONS
        .iter()
        .filter_map(|name| {
            let value = options.get(*name)?;
            canonical_value(value).map(|text| format!("{name}={text}"))
        })
        .collect();
    pairs.sort();
    pairs.join(",")
}

/// An option's value as Ollama reads it: integers (a float is truncated, as Go does),
/// booleans; `null` counts as not given. A value of another type is kept as its JSON
/// text: the target refuses it, and it must not share a key with a valid one.
fn canonical_value(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => i.to_string(),
            None => n.as_f64().map_or(n.to_string(), |f| (f as i64).to_string()),
        }),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

/// Runner options forced on every native request for one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Pin {
    /// The model key the pin applies to.
    pub model: String,
    /// Option name and value, in the order given.
    pub options: Vec<(String, Value)>,
}

/// Reads `FOREMAN_PIN_OPTIONS`: pins separated by spaces, each
/// `MODEL:option=value[,option=value]`, e.g. `llama3.2:3b:num_ctx=8192`. The model
/// name may hold colons itself; the options start after the last colon before the
/// first `=`.
pub fn parse_pins(text: &str) -> Result<Vec<Pin>, String> {
    let mut pins: Vec<Pin> = Vec::new();
    for spec in text.split_whitespace() {
        let pin = parse_pin(spec)?;
        if pins.iter().any(|other| other.model == pin.model) {
            return Err(format!("{} is pinned twice", pin.model));
        }
        pins.push(pin);
    }
    Ok(pins)
}

fn parse_pin(spec: &str) -> Result<Pin, String> {
    let first_equals = spec
        .find('=')
        .ok_or_else(|| format!("{spec:?} is not MODEL:option=value"))?;
    let split = spec[..first_equals]
        .rfind(':')
        .ok_or_else(|| format!("{spec:?} names no model (MODEL:option=value)"))?;
    let (model, list) = (&spec[..split], &spec[split + 1..]);
    if model.is_empty() {
        return Err(format!("{spec:?} names no model"));
    }
    let mut options = Vec::new();
    for pair in list.split(',') {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} in {spec:?} is not option=value"))?;
        if !RELOAD_OPTIONS.contains(&name) {
            return Err(format!(
                "{name:?} is not an option that makes Ollama reload; pin one of {}",
                RELOAD_OPTIONS.join(", ")
            ));
        }
        let value = match (name, value) {
            ("use_mmap", "true") => Value::Bool(true),
            ("use_mmap", "false") => Value::Bool(false),
            ("use_mmap", _) => return Err(format!("use_mmap must be true or false in {spec:?}")),
            (_, text) => Value::from(
                text.parse::<i64>()
                    .map_err(|_| format!("{name} must be an integer in {spec:?}"))?,
            ),
        };
        if options.iter().any(|(seen, _)| seen == name) {
            return Err(format!("{name} is given twice in {spec:?}"));
        }
        options.push((name.to_string(), value));
    }
    Ok(Pin {
        model: model_key(model),
        options,
    })
}

/// Applies the pin for `model`, if any, to a native request's body: each pinned option
/// replaces the client's. Returns the rewritten body, or `None` when nothing applies
/// (another kind of job, no pin, or every pinned value already as pinned).
pub fn apply_pins(
    pins: &[Pin],
    kind: JobKind,
    model: &str,
    body: &Map<String, Value>,
) -> Option<Map<String, Value>> {
    if pins.is_empty() || !matches!(kind, JobKind::Chat | JobKind::Generate) {
        return None;
    }
    let key = model_key(model);
    let pin = pins.iter().find(|pin| pin.model == key)?;
    let mut body = body.clone();
    let options = body
        .entry("options")
        .or_insert_with(|| Value::Object(Map::new()));
    if options.is_null() {
        // `null` is "not given" to Ollama: the pin still applies.
        *options = Value::Object(Map::new());
    }
    if !options.is_object() {
        // Not an object: the target refuses the request; leave it for it to say so.
        return None;
    }
    let options = options.as_object_mut()?;
    let mut changed = false;
    for (name, value) in &pin.options {
        if options.get(name) != Some(value) {
            options.insert(name.clone(), value.clone());
            changed = true;
        }
    }
    changed.then_some(body)
}

/// A JSON object's fields, for the tests.
#[cfg(test)]
fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn native_options_make_a_canonical_key() {
        let body = fields(json!({"model": "m", "options": {
            "temperature": 0.2, "num_ctx": 8192.0, "use_mmap": false, "num_batch": null
        }}));
        assert_eq!(
            load_options(JobKind::Chat, &body),
            "num_ctx=8192,use_mmap=false"
        );
        assert_eq!(
            load_options(JobKind::Generate, &fields(json!({"model": "m"}))),
            ""
        );
        assert_eq!(
            load_options(
                JobKind::Chat,
                &fields(json!({"options": {"num_ctx": "big"}}))
            ),
            "num_ctx=\"big\""
        );
        // OpenAI and Anthropic bodies carry no runner options.
        assert_eq!(load_options(JobKind::OpenAiChat, &body), "");
        let key = LoadKey::new("m:latest", "num_ctx=8192");
        assert_eq!(key.to_string(), "m:latest{num_ctx=8192}");
        assert_eq!(LoadKey::new("m:latest", "").to_string(), "m:latest");
    }

    #[test]
    fn pins_parse_with_colons_in_model_names() {
        let pins =
            parse_pins(" llama3.2:3b:num_ctx=8192,use_mmap=false  Qwen:num_batch=256 ").unwrap();
        assert_eq!(pins.len(), 2);
        assert_eq!(pins[0].model, "llama3.2:3b");
        assert_eq!(
            pins[0].options,
            vec![
                ("num_ctx".to_string(), json!(8192)),
                ("use_mmap".to_string(), json!(false))
            ]
        );
        assert_eq!(pins[1].model, "qwen:latest");
        assert!(parse_pins("").unwrap().is_empty());
        for bad in [
            "llama3.2",
            "num_ctx=1",
            "m:temperature=1",
            "m:num_ctx=big",
            "m:use_mmap=1",
            "m:num_ctx=1,num_ctx=2",
            "m:num_ctx=1 M:num_ctx=2",
            "m:num_ctx",
        ] {
            assert!(parse_pins(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pins_rewrite_native_bodies_of_their_model_only() {
        let pins = parse_pins("llama3.2:3b:num_ctx=8192").unwrap();
        let body = fields(json!({"model": "Llama3.2:3b", "options": {"num_ctx": 2048, "seed": 1}}));
        let pinned = apply_pins(&pins, JobKind::Chat, "Llama3.2:3b", &body).unwrap();
        assert_eq!(pinned["options"], json!({"num_ctx": 8192, "seed": 1}));
        assert_eq!(load_options(JobKind::Chat, &pinned), "num_ctx=8192");
        let bare = fields(json!({"model": "llama3.2:3b", "prompt": "hi"}));
        let pinned = apply_pins(&pins, JobKind::Generate, "llama3.2:3b", &bare).unwrap();
        assert_eq!(pinned["options"], json!({"num_ctx": 8192}));
        assert_eq!(pinned["prompt"], "hi");
        // Already as pinned, another model, another kind: nothing to do.
        assert!(apply_pins(&pins, JobKind::Chat, "llama3.2:3b", &pinned).is_none());
        assert!(apply_pins(&pins, JobKind::Chat, "other", &body).is_none());
        assert!(apply_pins(&pins, JobKind::OpenAiChat, "llama3.2:3b", &body).is_none());
    }
}

/// Properties over arbitrary pin lists and bodies: parsing never panics and reads
/// back what a formatted pin says; load options depend on values, not on order; a
/// pinned body's load key carries the pinned values.
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::model_name::strategies;
    use proptest::prelude::*;

    /// Distinct reload options with values of their type.
    fn pinned_options() -> impl Strategy<Value = Vec<(String, Value)>> {
        prop::sample::subsequence(RELOAD_OPTIONS.to_vec(), 1..=RELOAD_OPTIONS.len())
            .prop_shuffle()
            .prop_flat_map(|names| {
                names
                    .into_iter()
                    .map(|name| {
                        let value = if name == "use_mmap" {
                            any::<bool>().prop_map(Value::Bool).boxed()
                        } else {
                            any::<i64>().prop_map(Value::from).boxed()
                        };
                        (Just(name.to_string()), value)
                    })
                    .collect::<Vec<_>>()
            })
    }

    fn formatted(model: &str, options: &[(String, Value)]) -> String {
        let list: Vec<String> = options
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        format!("{model}:{}", list.join(","))
    }

    /// A model as an operator writes it: no spaces, no `=`, colons allowed.
    fn pin_model() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._/-][A-Za-z0-9._/:-]{0,20}"
    }

    /// Option maps: reload options and others, with any values.
    fn options_entries() -> impl Strategy<Value = Vec<(String, Value)>> {
        let name = prop_oneof![
            prop::sample::select(RELOAD_OPTIONS.to_vec()).prop_map(String::from),
            strategies::key(),
        ];
        prop::collection::btree_map(name, strategies::json(), 0..10)
            .prop_map(|map| map.into_iter().collect())
    }

    /// Found by the fuzz: `"options": null` is "not given", so the pin applies.
    #[test]
    fn a_null_options_is_pinned() {
        let pins = parse_pins("m:num_ctx=8192").unwrap();
        let body = fields(serde_json::json!({"model": "m", "options": null}));
        let pinned = apply_pins(&pins, JobKind::Chat, "m", &body).expect("pinned");
        assert_eq!(load_options(JobKind::Chat, &pinned), "num_ctx=8192");
    }

    proptest! {
        #[test]
        fn pin_lists_never_panic(text in any::<String>(), pinnish in "[a-z0-9:=,._ \t-]{0,40}") {
            let _ = parse_pins(&text);
            let _ = parse_pins(&pinnish);
        }

        #[test]
        fn formatted_pins_parse_back(
            pins in prop::collection::vec((pin_model(), pinned_options()), 0..4),
            separator in "[ \t\n]{1,3}",
        ) {
            let mut seen = std::collections::HashSet::new();
            let pins: Vec<_> = pins.into_iter().filter(|(model, _)| seen.insert(model_key(model))).collect();
            let text = pins.iter().map(|(model, options)| formatted(model, options)).collect::<Vec<_>>().join(&separator);
            let parsed = parse_pins(&text).map_err(TestCaseError::fail)?;
            let expected: Vec<Pin> = pins
                .into_iter()
                .map(|(model, options)| Pin { model: model_key(&model), options })
                .collect();
            prop_assert_eq!(parsed, expected);
        }

        #[test]
        fn load_options_ignore_the_order_of_keys(
            entries in options_entries().prop_shuffle(),
            kind in prop::sample::select(JobKind::ALL.to_vec()),
        ) {
            let body = |entries: Vec<(String, Value)>| {
                let mut body = Map::new();
                body.insert("options".into(), Value::Object(entries.into_iter().collect()));
                body
            };
            let plain = entries.iter().all(|(_, v)| !(v.is_array() || v.is_object() || v.is_string()));
            let mut reversed = entries.clone();
            reversed.reverse();
            let options = load_options(kind, &body(entries));
            prop_assert_eq!(&options, &load_options(kind, &body(reversed)));
            if !matches!(kind, JobKind::Chat | JobKind::Generate) {
                prop_assert_eq!(options.as_str(), "");
            }
            // Values other than numbers and booleans are kept as JSON text, which may
            // hold commas; the target refuses those anyway.
            if plain {
                let names: Vec<&str> = options.split(',').filter(|p| !p.is_empty()).map(|p| p.split('=').next().unwrap_or("")).collect();
                prop_assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted, once each: {}", options);
                prop_assert!(names.iter().all(|n| RELOAD_OPTIONS.contains(n)), "{}", options);
            }
        }

        #[test]
        fn any_body_has_load_options(body in strategies::object(), kind in prop::sample::select(JobKind::ALL.to_vec())) {
            let _ = load_options(kind, &body);
        }

        #[test]
        fn a_pinned_body_loads_with_the_pinned_values(
            model in pin_model(),
            options in pinned_options(),
            mut body in strategies::object(),
            client_options in prop::option::of(options_entries()),
            native in any::<bool>(),
        ) {
            let kind = if native { JobKind::Chat } else { JobKind::Generate };
            if let Some(entries) = client_options {
                body.insert("options".into(), Value::Object(entries.into_iter().collect()));
            }
            let pins = vec![Pin { model: model_key(&model), options: options.clone() }];
            let pinned = apply_pins(&pins, kind, &model.to_uppercase(), &body);
            let applies = body.get("options").is_none_or(|o| o.is_object() || o.is_null());
            let after = pinned.clone().unwrap_or_else(|| body.clone());
            if applies {
                let key = load_options(kind, &after);
                for (name, value) in &options {
                    let pair = format!("{name}={value}");
                    prop_assert!(key.split(',').any(|p| p == pair), "{} lacks {}", key, pair);
                }
                // Pinning twice changes nothing more.
                prop_assert!(apply_pins(&pins, kind, &model, &after).is_none());
            } else {
                prop_assert!(pinned.is_none());
            }
            for (name, value) in &after {
                if name != "options" {
                    prop_assert_eq!(Some(value), body.get(name), "only options change");
                }
            }
        }
    }
}
