//! Model specifications: what the simulator pretends to have on disk.
//!
//! A model is given on the command line as `NAME[,key=value|flag]...`, for example
//! `llama3.2:3b,load=2s,tps=60,size=2GB,tools` or `nomic-embed-text,embed,load=300ms`.
//! The batching curve takes the numbers after it: `m,batch=1,1.7,2.4,3,tools`.
//! Everything the simulator reports about a model (its listing, its load time, its
//! token rate, its capabilities) comes from this one struct.

use std::time::Duration;

use thiserror::Error;

/// One model the simulator serves.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// The name as given, e.g. `llama3.2:3b`.
    pub name: String,
    /// How long loading the model into (simulated) GPU memory takes.
    pub load: Duration,
    /// Generated tokens per second; `f64::INFINITY` means no pacing at all.
    pub tps: f64,
    /// Size in bytes, reported as `size` and `size_vram`, and what the model takes
    /// of the VRAM budget. Without `size=`, see [`default_size`].
    pub size: u64,
    /// An embedding-only model: it embeds but cannot chat or generate.
    pub embed: bool,
    /// Embedding dimension.
    pub dim: usize,
    /// Context length reported by `/api/ps` and `/api/show`.
    pub ctx: u32,
    /// Model family, e.g. `llama`.
    pub family: String,
    /// Parameter size label, e.g. `3.2B`.
    pub parameter_size: String,
    /// Quantization label, e.g. `Q4_K_M`.
    pub quantization: String,
    /// Accepts `tools` and answers with tool calls.
    pub tools: bool,
    /// Thinks before answering (fills `thinking`), by default when `think` is absent.
    pub thinking: bool,
    /// Accepts images.
    pub vision: bool,

    // Generation speed beyond the single-stream token rate.
    /// Aggregate throughput with 1, 2, 3... streams of this model generating at once,
    /// as multiples of `tps` (`batch=1,1.7,2.4,3`); past the last point the last
    /// aggregate holds. Each stream gets `tps * batch[k-1] / k` tokens per second.
    pub batch: Vec<f64>,
    /// Prompt tokens evaluated per second; `None` means 20 times `tps`.
    pub prompt_tps: Option<f64>,
}

/// The default batching curve: aggregate 1x, 1.7x, 2.4x and 3x for 1 to 4 streams.
/// An assumption (see the simulator's README), not a measurement.
pub const DEFAULT_BATCH: [f64; 4] = [1.0, 1.7, 2.4, 3.0];

/// Prompt evaluation is this many times faster than generation unless `prompt_tps`
/// says otherwise.
pub const PROMPT_SPEEDUP: f64 = 20.0;

/// Why a model specification could not be read.
#[derive(Debug, Error, PartialEq)]
pub enum SpecError {
    #[error("model spec is empty")]
    Empty,
    #[error(
        "model spec {spec:?}: unknown option {option:?} (known: load, tps, prompt_tps, batch, size, dim, ctx, family, params, quant, embed, tools, thinking, vision)"
    )]
    UnknownOption { spec: String, option: String },
    #[error("model spec {spec:?}: bad value for {key}: {reason}")]
    BadValue {
        spec: String,
        key: String,
        reason: String,
    },
}

impl ModelSpec {
    /// A chat model with the simulator's defaults: 2 s load, 50 tokens/s, and the
    /// size [`default_size`] gives its name.
    pub fn chat(name: &str) -> ModelSpec {
        ModelSpec {
            name: name.to_string(),
            load: Duration::from_secs(2),
            tps: 50.0,
            size: default_size(name),
            embed: false,
            dim: 3072,
            ctx: 4096,
            family: family_from_name(name),
            parameter_size: parameter_size_from_name(name),
            quantization: "Q4_K_M".to_string(),
            tools: false,
            thinking: false,
            vision: false,
            batch: DEFAULT_BATCH.to_vec(),
            prompt_tps: None,
        }
    }

    /// An embedding model with the simulator's defaults: 300 ms load, 274 MB, 768 dimensions.
    pub fn embedding(name: &str) -> ModelSpec {
        ModelSpec {
            load: Duration::from_millis(300),
            size: 274_000_000,
            embed: true,
            dim: 768,
            ctx: 2048,
            family: "nomic-bert".to_string(),
            parameter_size: "137M".to_string(),
            quantization: "F16".to_string(),
            ..ModelSpec::chat(name)
        }
    }

    /// Parses `NAME[,option]...`; see the module documentation.
    pub fn parse(text: &str) -> Result<ModelSpec, SpecError> {
        let parts = split_options(text);
        let mut parts = parts.iter().map(String::as_str);
        let name = parts
            .next()
            .filter(|n| !n.is_empty())
            .ok_or(SpecError::Empty)?;
        let options: Vec<&str> = parts.filter(|p| !p.is_empty()).collect();
        let mut spec = if options.contains(&"embed") {
            ModelSpec::embedding(name)
        } else {
            ModelSpec::chat(name)
        };
        let bad = |key: &str, reason: String| SpecError::BadValue {
            spec: text.to_string(),
            key: key.to_string(),
            reason,
        };
        for option in options {
            let (key, value) = match option.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (option, None),
            };
            match (key, value) {
                ("embed", None) => spec.embed = true,
                ("tools", None) => spec.tools = true,
                ("thinking", None) => spec.thinking = true,
                ("vision", None) => spec.vision = true,
                ("load", Some(v)) => {
                    spec.load = humantime::parse_duration(v).map_err(|e| bad(key, e.to_string()))?
                }
                ("tps", Some(v)) => {
                    spec.tps = match v {
                        "inf" | "max" => f64::INFINITY,
                        _ => v.parse::<f64>().ok().filter(|t| *t > 0.0).ok_or_else(|| {
                            bad(key, "expected a positive number or `inf`".into())
                        })?,
                    }
                }
                ("size", Some(v)) => spec.size = parse_size(v).map_err(|r| bad(key, r))?,
                ("dim", Some(v)) => {
                    spec.dim = v
                        .parse()
                        .ok()
                        .filter(|d| *d > 0)
                        .ok_or_else(|| bad(key, "expected a positive integer".into()))?
                }
                ("ctx", Some(v)) => {
                    spec.ctx = v
                        .parse()
                        .ok()
                        .filter(|c| *c > 0)
                        .ok_or_else(|| bad(key, "expected a positive integer".into()))?
                }
                ("prompt_tps", Some(v)) => {
                    spec.prompt_tps = Some(match v {
                        "inf" | "max" => f64::INFINITY,
                        _ => v.parse::<f64>().ok().filter(|t| *t > 0.0).ok_or_else(|| {
                            bad(key, "expected a positive number or `inf`".into())
                        })?,
                    })
                }
                ("batch", Some(v)) => spec.batch = parse_batch(v).map_err(|r| bad(key, r))?,
                ("family", Some(v)) => spec.family = v.to_string(),
                ("params", Some(v)) => spec.parameter_size = v.to_string(),
                ("quant", Some(v)) => spec.quantization = v.to_string(),
                _ => {
                    return Err(SpecError::UnknownOption {
                        spec: text.to_string(),
                        option: option.to_string(),
                    });
                }
            }
        }
        Ok(spec)
    }

    /// Tokens per second of one stream while `streams` streams of this model generate.
    pub fn stream_tps(&self, streams: usize) -> f64 {
        let streams = streams.max(1);
        let aggregate = self
            .batch
            .get(streams - 1)
            .or(self.batch.last())
            .copied()
            .unwrap_or(1.0);
        self.tps * aggregate / streams as f64
    }

    /// Prompt tokens evaluated per second.
    pub fn prompt_rate(&self) -> f64 {
        self.prompt_tps.unwrap_or(self.tps * PROMPT_SPEEDUP)
    }

    /// The name as Ollama lists it: with an explicit tag (`:latest` when none was given).
    pub fn display_name(&self) -> String {
        canonical_name(&self.name)
    }

    /// Ollama's capability list for `/api/show` and `/api/tags`.
    pub fn capabilities(&self) -> Vec<&'static str> {
        if self.embed {
            return vec!["embedding"];
        }
        let mut caps = vec!["completion"];
        if self.tools {
            caps.push("tools");
        }
        if self.thinking {
            caps.push("thinking");
        }
        if self.vision {
            caps.push("vision");
        }
        caps
    }
}

/// The realistic set served when no `--model` is given: two chat models that take
/// seconds to load and one embedding model.
pub fn default_models() -> Vec<ModelSpec> {
    vec![
        ModelSpec {
            load: Duration::from_secs(3),
            tps: 60.0,
            size: 2_019_393_189,
            tools: true,
            ..ModelSpec::chat("llama3.2:3b")
        },
        ModelSpec {
            load: Duration::from_secs(5),
            tps: 35.0,
            size: 4_683_087_332,
            tools: true,
            ..ModelSpec::chat("qwen2.5:7b")
        },
        ModelSpec::embedding("nomic-embed-text"),
    ]
}

/// Lower-cases a model name and adds `:latest` when it has no tag, so that
/// `Llama3.2` and `llama3.2:latest` name the same model, as in Ollama.
pub fn canonical_name(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    let base_start = lower.rfind('/').map_or(0, |i| i + 1);
    if lower[base_start..].contains(':') {
        lower
    } else {
        format!("{lower}:latest")
    }
}

fn family_from_name(name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    let base = base.split(':').next().unwrap_or(base);
    let family: String = base
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    if family.is_empty() {
        "llama".to_string()
    } else {
        family.to_ascii_lowercase()
    }
}

fn parameter_size_from_name(name: &str) -> String {
    match name.rsplit_once(':') {
        Some((_, tag))
            if tag.ends_with(['b', 'B']) && tag[..tag.len() - 1].parse::<f64>().is_ok() =>
        {
            tag.to_ascii_uppercase()
        }
        _ => "3.2B".to_string(),
    }
}

/// Splits a spec at commas, except the commas between the numbers of `batch=`, so
/// `m,batch=1,1.7,2.4,tools` keeps the curve in one option.
fn split_options(text: &str) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    for part in text.split(',').map(str::trim) {
        let continues_curve = parts.last().is_some_and(|last| last.starts_with("batch="))
            && !part.is_empty()
            && part.parse::<f64>().is_ok();
        match parts.last_mut() {
            Some(last) if continues_curve => {
                last.push(',');
                last.push_str(part);
            }
            _ => parts.push(part.to_string()),
        }
    }
    parts
}

/// Parses a batching curve: positive aggregates, the first one 1.
fn parse_batch(text: &str) -> Result<Vec<f64>, String> {
    let curve: Vec<f64> = text
        .split(',')
        .map(|p| p.trim().parse::<f64>().ok().filter(|x| *x > 0.0))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("{text:?} is not a list of positive numbers like 1,1.7,2.4,3"))?;
    if curve.first() != Some(&1.0) {
        return Err("the curve starts at 1 (one stream runs at `tps`)".into());
    }
    Ok(curve)
}

// Residency: model sizes.

/// Bits per weight of Ollama's usual Q4_K_M quantization, on average.
const Q4_K_M_BITS_PER_WEIGHT: f64 = 4.85;

/// The size of a chat model given without `size=`: its parameter count from the
/// name's tag (`:7b`, `:0.5b`, `:270m`) at Q4_K_M, so `qwen2.5:7b` is 4.2 GB
/// (Ollama's file is 4.7 GB); 2 GB when the tag names no count.
pub fn default_size(name: &str) -> u64 {
    match parameters_from_name(name) {
        Some(parameters) => (parameters * Q4_K_M_BITS_PER_WEIGHT / 8.0).round() as u64,
        None => 2_000_000_000,
    }
}

/// The parameter count a tag like `7b`, `0.5b` or `270m` names.
fn parameters_from_name(name: &str) -> Option<f64> {
    let (_, tag) = name.rsplit_once(':')?;
    let tag = tag.to_ascii_lowercase();
    let (number, scale) = match tag.as_bytes().last()? {
        b'b' => (&tag[..tag.len() - 1], 1e9),
        b'm' => (&tag[..tag.len() - 1], 1e6),
        _ => return None,
    };
    number
        .parse::<f64>()
        .ok()
        .filter(|n| *n > 0.0)
        .map(|n| n * scale)
}

/// Parses `2GB`, `500MB`, `2GiB`, `1.5G` or a plain byte count (model sizes, `--vram`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let upper = text.trim().to_ascii_uppercase();
    let split = upper
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(upper.len());
    let (number, unit) = upper.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 2GB or 500MB"))?;
    let factor: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "K" | "KB" => 1e3,
        "M" | "MB" => 1e6,
        "G" | "GB" => 1e9,
        "T" | "TB" => 1e12,
        "KIB" => 1024.0,
        "MIB" => 1024.0 * 1024.0,
        "GIB" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown size unit {other:?}")),
    };
    Ok((number * factor).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options_and_flags() {
        let spec = ModelSpec::parse("llama3.2:3b,load=2s,tps=60,size=2GB,tools").unwrap();
        assert_eq!(spec.name, "llama3.2:3b");
        assert_eq!(spec.load, Duration::from_secs(2));
        assert_eq!(spec.tps, 60.0);
        assert_eq!(spec.size, 2_000_000_000);
        assert!(spec.tools && !spec.embed);
        assert_eq!(spec.parameter_size, "3B");
        assert_eq!(spec.family, "llama");
        assert_eq!(spec.capabilities(), vec!["completion", "tools"]);
    }

    #[test]
    fn embed_flag_switches_defaults() {
        let spec = ModelSpec::parse("nomic-embed-text,embed,load=300ms").unwrap();
        assert!(spec.embed);
        assert_eq!(spec.dim, 768);
        assert_eq!(spec.load, Duration::from_millis(300));
        assert_eq!(spec.display_name(), "nomic-embed-text:latest");
        assert_eq!(spec.capabilities(), vec!["embedding"]);
    }

    #[test]
    fn rejects_unknown_options_and_bad_values() {
        assert!(matches!(
            ModelSpec::parse("m,speed=3"),
            Err(SpecError::UnknownOption { .. })
        ));
        assert!(matches!(
            ModelSpec::parse("m,load=fast"),
            Err(SpecError::BadValue { .. })
        ));
        assert!(matches!(
            ModelSpec::parse("m,tps=0"),
            Err(SpecError::BadValue { .. })
        ));
        assert!(matches!(
            ModelSpec::parse("m,size=3XB"),
            Err(SpecError::BadValue { .. })
        ));
        assert_eq!(ModelSpec::parse(""), Err(SpecError::Empty));
    }

    #[test]
    fn batching_curve_and_prompt_speed_parse() {
        let spec = ModelSpec::parse("m,tps=50,batch=1,1.5,2,tools,prompt_tps=800").unwrap();
        assert_eq!(spec.batch, vec![1.0, 1.5, 2.0]);
        assert!(spec.tools);
        assert_eq!(spec.prompt_rate(), 800.0);
        assert_eq!(spec.stream_tps(1), 50.0);
        assert_eq!(spec.stream_tps(2), 37.5);
        assert_eq!(
            spec.stream_tps(4),
            25.0,
            "past the curve the last aggregate holds"
        );
        let default = ModelSpec::parse("m,tps=50").unwrap();
        assert_eq!(default.batch, DEFAULT_BATCH.to_vec());
        assert_eq!(default.prompt_rate(), 1000.0);
        assert!(matches!(
            ModelSpec::parse("m,batch=2,3"),
            Err(SpecError::BadValue { .. })
        ));
        assert!(matches!(
            ModelSpec::parse("m,batch=1,x"),
            Err(SpecError::UnknownOption { .. })
        ));
    }

    #[test]
    fn sizes_default_from_the_parameter_count() {
        assert_eq!(ModelSpec::parse("qwen2.5:7b").unwrap().size, 4_243_750_000);
        assert_eq!(ModelSpec::parse("m:270M").unwrap().size, 163_687_500);
        assert_eq!(ModelSpec::parse("llama3.2").unwrap().size, 2_000_000_000);
        assert_eq!(
            ModelSpec::parse("m:7b,size=1GB").unwrap().size,
            1_000_000_000
        );
        assert_eq!(ModelSpec::parse("e,embed").unwrap().size, 274_000_000);
    }

    #[test]
    fn canonical_names_match_like_ollama() {
        assert_eq!(canonical_name("Llama3.2"), "llama3.2:latest");
        assert_eq!(canonical_name("llama3.2:3b"), "llama3.2:3b");
        assert_eq!(
            canonical_name("host:5000/user/m"),
            "host:5000/user/m:latest"
        );
        assert_eq!(parse_size("2GiB").unwrap(), 2 * 1024 * 1024 * 1024);
        assert_eq!(parse_size("1.5G").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("123").unwrap(), 123);
    }
}
