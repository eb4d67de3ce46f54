//! The options a runner is started with, and whether a request's differ.
//!
//! Ollama keeps the runner options (`api.Runner`: `num_ctx`, `num_batch`, `num_gpu`,
//! `main_gpu`, `use_mmap`, `num_thread`, `draft_num_predict`) and the context-shift
//! setting of each loaded runner. A request whose own values differ cannot use that
//! runner: the scheduler unloads it and loads the model again (`server/sched.go`
//! `needsReload`). Sampling options (`temperature`, `num_predict`...) never do.
//!
//! [`LoadOptions`] is what a request asked for; [`RunnerOptions`] is what a runner
//! resolved from it (defaults filled in, `num_ctx` clamped to the model's context),
//! and [`RunnerOptions::needs_reload`] is Ollama's comparison.

use serde_json::{Map, Value};
use thiserror::Error;

use crate::spec::ModelSpec;

/// Ollama's `num_batch` default (`api/types.go` `DefaultOptions`).
pub const DEFAULT_NUM_BATCH: i64 = 512;

/// The runner options a request gave; `None` where it gave none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadOptions {
    pub num_ctx: Option<i64>,
    pub num_batch: Option<i64>,
    pub num_gpu: Option<i64>,
    pub main_gpu: Option<i64>,
    pub use_mmap: Option<bool>,
    pub num_thread: Option<i64>,
    pub draft_num_predict: Option<i64>,
    /// The request's top-level `shift` (context shift), not an option.
    pub shift: Option<bool>,
}

/// A runner option of the wrong JSON type; Ollama answers 500 with this message
/// (`api/types.go` `Options.FromMap`, through `handleScheduleError`).
#[derive(Debug, Clone, Error, PartialEq)]
#[error("option {name:?} must be of type {kind}")]
pub struct OptionTypeError {
    pub name: &'static str,
    pub kind: &'static str,
}

impl LoadOptions {
    /// Reads the runner options from a request's `options` object (other keys are
    /// ignored here) and its top-level `shift`.
    pub fn from_request(
        options: Option<&Map<String, Value>>,
        shift: Option<bool>,
    ) -> Result<LoadOptions, OptionTypeError> {
        let empty = Map::new();
        let options = options.unwrap_or(&empty);
        let integer = |name: &'static str| -> Result<Option<i64>, OptionTypeError> {
            match options.get(name) {
                None | Some(Value::Null) => Ok(None),
                // Go truncates a float to an integer here.
                Some(Value::Number(n)) => Ok(n.as_i64().or(n.as_f64().map(|f| f as i64))),
                Some(_) => Err(OptionTypeError {
                    name,
                    kind: "integer",
                }),
            }
        };
        let use_mmap = match options.get("use_mmap") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                return Err(OptionTypeError {
                    name: "use_mmap",
                    kind: "boolean",
                });
            }
        };
        Ok(LoadOptions {
            num_ctx: integer("num_ctx")?,
            num_batch: integer("num_batch")?,
            num_gpu: integer("num_gpu")?,
            main_gpu: integer("main_gpu")?,
            use_mmap,
            num_thread: integer("num_thread")?,
            draft_num_predict: integer("draft_num_predict")?,
            shift,
        })
    }
}

/// The options a runner was started with, defaults resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerOptions {
    /// The effective per-slot context: `num_ctx` (or the server default) clamped to
    /// the model's own context; `/api/ps` shows it as `context_length`.
    pub context_length: i64,
    /// `None` when automatic (not given): two automatic values never differ.
    pub num_batch: Option<i64>,
    /// -1 lets Ollama decide; a request with a negative value never reloads on it.
    pub num_gpu: i64,
    pub main_gpu: Option<i64>,
    pub use_mmap: Option<bool>,
    pub num_thread: i64,
    pub draft_num_predict: i64,
    pub context_shift: bool,
}

impl RunnerOptions {
    /// Resolves a request's options against the model and the server's default
    /// context (`OLLAMA_CONTEXT_LENGTH`).
    pub fn resolve(wanted: &LoadOptions, spec: &ModelSpec, default_num_ctx: u32) -> RunnerOptions {
        // sched.go getRunner: at least 4 tokens, and 2048 for vision models.
        let mut num_ctx = wanted.num_ctx.unwrap_or(i64::from(default_num_ctx)).max(4);
        if spec.vision {
            num_ctx = num_ctx.max(2048);
        }
        // sched.go effectiveContext: clamp to the model's training context.
        let context_length = num_ctx.min(i64::from(spec.ctx));
        RunnerOptions {
            context_length,
            num_batch: wanted.num_batch,
            num_gpu: wanted.num_gpu.unwrap_or(-1),
            main_gpu: wanted.main_gpu,
            use_mmap: wanted.use_mmap,
            num_thread: wanted.num_thread.unwrap_or(0),
            // Without a draft model Ollama zeroes an unset draft_num_predict.
            draft_num_predict: wanted.draft_num_predict.unwrap_or(0),
            // sched.go resolveContextShift: on unless the request turns it off
            // (deepseek2 models default to off).
            context_shift: wanted.shift.unwrap_or(spec.family != "deepseek2"),
        }
    }

    /// Ollama's `needsReload` for runner options: would a runner started with `self`
    /// have to be reloaded for a request that resolved to `wanted`?
    pub fn needs_reload(&self, wanted: &RunnerOptions) -> bool {
        let num_batch_differs = match (self.num_batch, wanted.num_batch) {
            (None, None) => false,
            (existing, new) => {
                existing.unwrap_or(DEFAULT_NUM_BATCH) != new.unwrap_or(DEFAULT_NUM_BATCH)
            }
        };
        let num_gpu_differs = wanted.num_gpu >= 0 && wanted.num_gpu != self.num_gpu;
        self.context_length != wanted.context_length
            || num_batch_differs
            || num_gpu_differs
            || self.main_gpu != wanted.main_gpu
            || self.use_mmap != wanted.use_mmap
            || self.num_thread != wanted.num_thread
            || self.draft_num_predict != wanted.draft_num_predict
            || self.context_shift != wanted.context_shift
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resolve(options: Value) -> RunnerOptions {
        let spec = ModelSpec::parse("m:3b,ctx=8192").unwrap();
        let load = LoadOptions::from_request(options.as_object(), None).unwrap();
        RunnerOptions::resolve(&load, &spec, 4096)
    }

    #[test]
    fn num_ctx_defaults_and_is_clamped_to_the_model() {
        assert_eq!(resolve(json!({})).context_length, 4096);
        assert_eq!(resolve(json!({"num_ctx": 6000})).context_length, 6000);
        assert_eq!(resolve(json!({"num_ctx": 100000})).context_length, 8192);
        assert_eq!(resolve(json!({"num_ctx": 1})).context_length, 4);
    }

    #[test]
    fn which_differences_reload() {
        let base = resolve(json!({}));
        for (options, reload) in [
            (json!({"temperature": 0.1, "num_predict": 3}), false),
            (json!({"num_ctx": 4096}), false),
            (json!({"num_ctx": 8192}), true),
            (json!({"num_batch": 512}), false),
            (json!({"num_batch": 256}), true),
            (json!({"num_gpu": -1}), false),
            (json!({"num_gpu": 20}), true),
            (json!({"main_gpu": 0}), true),
            (json!({"use_mmap": false}), true),
            (json!({"num_thread": 4}), true),
        ] {
            assert_eq!(
                base.needs_reload(&resolve(options.clone())),
                reload,
                "{options}"
            );
        }
        // Both clamp to the model's 8192.
        let big = resolve(json!({"num_ctx": 100000}));
        assert!(!big.needs_reload(&resolve(json!({"num_ctx": 9000}))));
        let gpu = resolve(json!({"num_gpu": 20}));
        assert!(!gpu.needs_reload(&resolve(json!({}))), "-1 never reloads");
        let shift = LoadOptions {
            shift: Some(false),
            ..LoadOptions::default()
        };
        let spec = ModelSpec::chat("m");
        assert!(base.needs_reload(&RunnerOptions::resolve(&shift, &spec, 4096)));
    }

    #[test]
    fn wrong_types_are_named() {
        let err = LoadOptions::from_request(json!({"num_ctx": "big"}).as_object(), None);
        assert_eq!(
            err.unwrap_err().to_string(),
            "option \"num_ctx\" must be of type integer"
        );
        let err = LoadOptions::from_request(json!({"use_mmap": 1}).as_object(), None);
        assert_eq!(
            err.unwrap_err().to_string(),
            "option \"use_mmap\" must be of type boolean"
        );
    }
}
