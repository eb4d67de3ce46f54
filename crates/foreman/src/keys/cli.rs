//! `foreman keys ...`: create, list, revoke API keys and read their usage, on the
//! database itself (like `foreman db`): it works with the daemon running or stopped,
//! needs no key to make the first one, and finds the database with the same settings
//! as `foreman serve`. A running daemon sees a new or revoked key within a second.
//! (The same operations are `/foreman/keys` on the HTTP API, for remote admins.)
//!
//! Exit codes: 0 done, 1 the operation failed, 2 bad settings or arguments.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use foreman_store::Store;
use serde_json::{Value, json};

use super::grant::{Grant, Scope};
use super::manage::{self, ManageError};
use crate::config::{Platform, StorageArgs};

/// `foreman keys <command>`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// What every `foreman keys` command takes.
#[derive(Debug, Args)]
pub struct Common {
    /// Which database: the same settings as `foreman serve`.
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Print the outcome as JSON (errors too, as {"error": "..."}).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret (shown this once).
    Create(CreateArgs),
    /// List the keys (never their secrets).
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Revoke a key: its secret is refused from now on.
    Revoke {
        /// The key's name.
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// Show what keys used (requests, tokens, GPU seconds, loads), per hour.
    Usage {
        /// One key; all keys without.
        name: Option<String>,
        /// Hours back from now.
        #[arg(long, default_value_t = 24)]
        hours: u32,
        #[command(flatten)]
        common: Common,
    },
}

impl KeysCommand {
    fn common(&self) -> &Common {
        match self {
            KeysCommand::Create(create) => &create.common,
            KeysCommand::List { common }
            | KeysCommand::Revoke { common, .. }
            | KeysCommand::Usage { common, .. } => common,
        }
    }
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The key's name (letters, digits, '.', '_', '-'); it labels its usage and metrics.
    #[arg(long)]
    pub name: String,
    /// Comma-separated: chat, embed, jobs, batch, models, metrics, admin.
    #[arg(long, value_delimiter = ',', required = true)]
    pub scopes: Vec<Scope>,
    /// Comma-separated model patterns it may use (`*` any characters, `?` one); all
    /// models without.
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    /// The highest priority its requests run at (higher asks are lowered to it).
    #[arg(long, allow_negative_numbers = true)]
    pub max_priority: Option<i32>,
    /// Its unfinished (queued or running) jobs at once.
    #[arg(long)]
    pub max_queued: Option<u32>,
    /// Requests in any 60 seconds.
    #[arg(long)]
    pub requests_per_minute: Option<u32>,
    /// Prompt plus completion tokens per UTC day.
    #[arg(long)]
    pub tokens_per_day: Option<u64>,
    /// Requests in flight at once.
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Its share of a target against other keys of equal priority.
    #[arg(long, default_value_t = 1)]
    pub weight: u32,
    #[command(flatten)]
    pub common: Common,
}

impl CreateArgs {
    fn grant(&self) -> Grant {
        Grant {
            scopes: self.scopes.iter().copied().collect(),
            models: self.models.clone(),
            max_priority: self.max_priority,
            max_queued: self.max_queued,
            requests_per_minute: self.requests_per_minute,
            tokens_per_day: self.tokens_per_day,
            concurrency: self.concurrency,
            weight: self.weight,
        }
    }
}

/// Runs a `foreman keys` command; the exit code follows the module doc.
pub async fn run(args: KeysArgs) -> ExitCode {
    let common = args.command.common();
    let json = common.json;
    let (database, _) = match common.storage.resolve(&Platform::current()) {
        Ok(location) => location,
        Err(error) => return fail(json, &error.to_string(), 2),
    };
    let store = match Store::open(&database).await {
        Ok(store) => store,
        Err(error) => return fail(json, &error.to_string(), 1),
    };
    let outcome = execute(&store, &args.command).await;
    store.close().await;
    match outcome {
        Ok((value, text)) => {
            if json {
                println!("{value}");
            } else {
                print!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            let code = if matches!(error, ManageError::Invalid(_)) {
                2
            } else {
                1
            };
            fail(json, &error.to_string(), code)
        }
    }
}

async fn execute(store: &Store, command: &KeysCommand) -> Result<(Value, String), ManageError> {
    let now = crate::clock::now_ms();
    match command {
        KeysCommand::Create(create) => {
            let created = manage::create(store, &create.name, &create.grant(), now).await?;
            let text = format!(
                "created key {} ({}); its secret, shown only now:\n{}\n",
                created.key.name, created.key.prefix, created.secret
            );
            Ok((manage::created_view(&created), text))
        }
        KeysCommand::List { .. } => {
            let keys = store.api_keys().await?;
            let mut text = String::from("name\tprefix\tscopes\tstate\n");
            for key in &keys {
                let view = manage::key_view(key);
                let scopes = view["grant"]["scopes"]
                    .as_array()
                    .map(|s| {
                        s.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                let state = match (&view["revoked_at"], &view["last_used_at"]) {
                    (Value::String(at), _) => format!("revoked {at}"),
                    (_, Value::String(at)) => format!("last used {at}"),
                    _ => "never used".into(),
                };
                text.push_str(&format!(
                    "{}\t{}\t{}\t{}\n",
                    key.name, key.prefix, scopes, state
                ));
            }
            let views: Vec<Value> = keys.iter().map(manage::key_view).collect();
            Ok((json!({ "keys": views }), text))
        }
        KeysCommand::Revoke { name, .. } => {
            manage::revoke(store, name, now).await?;
            Ok((json!({ "revoked": name }), format!("revoked key {name}\n")))
        }
        KeysCommand::Usage { name, hours, .. } => {
            let hours = i64::from((*hours).max(1));
            let since = now - (hours - 1) * foreman_store::USAGE_HOUR_MS;
            let usage = manage::usage(store, name.as_deref(), since).await?;
            let mut text = String::from(
                "key\trequests\tprompt_tokens\tcompletion_tokens\tgpu_seconds\tloads\n",
            );
            for key in usage["keys"].as_array().into_iter().flatten() {
                text.push_str(&format!(
                    "{}\t{}\t{}\t{}\t{}\t{}\n",
                    key["name"].as_str().unwrap_or(""),
                    key["requests"],
                    key["prompt_tokens"],
                    key["completion_tokens"],
                    key["gpu_seconds"],
                    key["loads"]
                ));
            }
            Ok((usage, text))
        }
    }
}

fn fail(json: bool, message: &str, code: u8) -> ExitCode {
    if json {
        println!("{}", json!({ "error": message }));
    } else {
        eprintln!("foreman keys: {message}");
    }
    ExitCode::from(code)
}
