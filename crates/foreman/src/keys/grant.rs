//! What a key may do: its scopes, the models it may name, and its limits.
//!
//! The grant is written as JSON into the store's opaque `grant_json` column when a key
//! is created and read back by every instance; unknown fields are refused, so a grant
//! written by a newer foreman is not silently half-understood.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A family of routes a key may call (see `access.rs` for which route needs which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Chat and generation: `/api/chat`, `/api/generate`, `/v1/chat/completions`,
    /// `/v1/completions`, `/v1/responses`, `/v1/messages`.
    Chat,
    /// Embeddings: `/api/embed`, `/api/embeddings`, `/v1/embeddings`.
    Embed,
    /// The async jobs API, `/jobs`.
    Jobs,
    /// OpenAI's files and batches, `/v1/files`, `/v1/batches`.
    Batch,
    /// Model management: pull, push, create, copy, delete.
    Models,
    /// The operator's views: `/metrics`, `/foreman/status`, `/foreman/targets`.
    Metrics,
    /// Everything, the keys API included.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::Chat,
        Scope::Embed,
        Scope::Jobs,
        Scope::Batch,
        Scope::Models,
        Scope::Metrics,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Chat => "chat",
            Scope::Embed => "embed",
            Scope::Jobs => "jobs",
            Scope::Batch => "batch",
            Scope::Models => "models",
            Scope::Metrics => "metrics",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == text.trim())
            .ok_or_else(|| {
                let known: Vec<&str> = Scope::ALL.map(Scope::as_str).to_vec();
                format!("unknown scope {text:?}; scopes are {}", known.join(", "))
            })
    }
}

/// A key's scopes and limits. `None` limits are unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub scopes: BTreeSet<Scope>,
    /// Patterns of the models the key may name (`*` any run of characters, `?` one);
    /// empty means every model.
    #[serde(default)]
    pub models: Vec<String>,
    /// The highest priority its requests run at; higher asks are lowered to it.
    #[serde(default)]
    pub max_priority: Option<i32>,
    /// Jobs of the key not yet finished (queued or running) at once.
    #[serde(default)]
    pub max_queued: Option<u32>,
    /// Requests in any 60 seconds.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Prompt plus completion tokens per UTC day, as the targets report them.
    #[serde(default)]
    pub tokens_per_day: Option<u64>,
    /// Requests in flight at once (a streamed answer counts until its end).
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Its share of a target against other keys of equal priority (at least 1).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

impl Grant {
    /// Everything, unlimited: the grant of `FOREMAN_TOKEN`.
    pub fn admin() -> Grant {
        Grant {
            scopes: BTreeSet::from([Scope::Admin]),
            models: Vec::new(),
            max_priority: None,
            max_queued: None,
            requests_per_minute: None,
            tokens_per_day: None,
            concurrency: None,
            weight: 1,
        }
    }

    /// Whether the key holds `scope` (`admin` holds every scope).
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }

    /// Whether the key may name `model`: a pattern matches the name as sent or in
    /// Ollama's form (lower case, `:latest` added), so `llama3.2:*` covers `llama3.2`.
    pub fn allows_model(&self, model: &str) -> bool {
        if self.models.is_empty() {
            return true;
        }
        let key = crate::model_name::model_key(model);
        self.models
            .iter()
            .any(|pattern| glob_match(pattern, model) || glob_match(pattern, &key))
    }

    /// Refuses grants that cannot work: no scope, a zero limit, a zero weight, an
    /// empty model pattern.
    pub fn check(&self) -> Result<(), String> {
        if self.scopes.is_empty() {
            return Err("a key needs at least one scope".into());
        }
        if self.models.iter().any(|pattern| pattern.trim().is_empty()) {
            return Err("a model pattern cannot be empty".into());
        }
        if self.weight == 0 {
            return Err("weight must be at least 1".into());
        }
        let zero = [
            ("max-queued", self.max_queued.map(u64::from)),
            (
                "requests-per-minute",
                self.requests_per_minute.map(u64::from),
            ),
            ("tokens-per-day", self.tokens_per_day),
            ("concurrency", self.concurrency.map(u64::from)),
        ]
        .into_iter()
        .find(|(_, limit)| *limit == Some(0));
        if let Some((name, _)) = zero {
            return Err(format!(
                "{name} must be at least 1 (leave it out for no limit)"
            ));
        }
        Ok(())
    }
}

/// `*` matches any run of characters (`/` and `:` included), `?` one character,
/// anything else itself, case-insensitively (Ollama's names are).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.trim().to_lowercase().chars().collect();
    let text: Vec<char> = text.to_lowercase().chars().collect();
    // Iterative matching with one backtrack point: linear-ish, no recursion blow-up.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_model_names() {
        for (pattern, text, matches) in [
            ("llama3.2:*", "llama3.2:latest", true),
            ("llama3.2:*", "llama3.2:1b", true),
            ("llama3.2:*", "llama3.1:8b", false),
            ("*", "anything/at:all", true),
            ("qwen?:*", "qwen3:4b", true),
            ("qwen?:*", "qwen:4b", false),
            ("me/*:q4", "me/model:q4", true),
            ("me/*:q4", "me/model:q5", false),
            ("Llama*", "llama3", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("", "", true),
        ] {
            assert_eq!(glob_match(pattern, text), matches, "{pattern} vs {text}");
        }
    }

    #[test]
    fn a_tagless_name_matches_as_latest() {
        let grant = Grant {
            models: vec!["llama3.2:*".into()],
            ..Grant::admin()
        };
        assert!(grant.allows_model("llama3.2"));
        assert!(grant.allows_model("Llama3.2:1b"));
        assert!(!grant.allows_model("qwen3"));
        assert!(Grant::admin().allows_model("qwen3"));
    }

    #[test]
    fn admin_holds_every_scope_and_grants_round_trip() {
        let admin = Grant::admin();
        assert!(Scope::ALL.into_iter().all(|scope| admin.allows(scope)));
        let grant = Grant {
            scopes: BTreeSet::from([Scope::Chat, Scope::Jobs]),
            max_priority: Some(5),
            requests_per_minute: Some(3),
            weight: 2,
            ..Grant::admin()
        };
        assert!(grant.allows(Scope::Chat) && !grant.allows(Scope::Embed));
        let json = serde_json::to_string(&grant).unwrap();
        assert_eq!(serde_json::from_str::<Grant>(&json).unwrap(), grant);
        assert!(serde_json::from_str::<Grant>(r#"{"scopes":["chat"],"surprise":1}"#).is_err());
        assert_eq!("embed".parse::<Scope>(), Ok(Scope::Embed));
        assert!("everything".parse::<Scope>().is_err());
        assert!(
            Grant {
                concurrency: Some(0),
                ..grant
            }
            .check()
            .is_err()
        );
    }
}
