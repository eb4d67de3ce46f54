//! Every setting of `foreman serve`, from `FOREMAN_*` environment variables or the
//! same-named flags, validated once at start into typed values.
//!
//! `--help` lists each setting with its default. Clap parses durations (humantime:
//! `30s`, `5m`, `24h`) and checks numeric ranges; the checks that need more than one
//! value, or more than a parser, run in [`ServeArgs::validate`]. A bad value fails at start with one line that names the
//! flag and the variable: [`ConfigError`], also made from clap's own parse errors by
//! [`ConfigError::from_clap`].

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use thiserror::Error;

use crate::targets::spec::{TargetSpec, parse_target};

/// The flags of `foreman serve`; each also reads its `FOREMAN_*` variable.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address foreman listens on.
    #[arg(long, env = "FOREMAN_ADDR", default_value = "127.0.0.1:11435")]
    pub addr: String,
    /// Base URL of the one Ollama server foreman schedules work for; ignored when
    /// --target (FOREMAN_TARGETS) gives any target.
    #[arg(
        long,
        env = "FOREMAN_OLLAMA_URL",
        default_value = "http://127.0.0.1:11434"
    )]
    pub ollama_url: String,
    /// An Ollama server to schedule for, 'URL[,name=NAME][,slots=N][,places=M]': slots is
    /// its OLLAMA_NUM_PARALLEL (default 1), places its OLLAMA_MAX_LOADED_MODELS (default 1),
    /// name defaults to the URL's host:port. Repeat the flag for several; the variable
    /// holds the specs separated by spaces. The URL `sim` starts a simulator (with
    /// --simulate). When any is given, --ollama-url is ignored.
    #[arg(
        long = "target",
        env = "FOREMAN_TARGETS",
        value_delimiter = ' ',
        value_name = "SPEC"
    )]
    pub targets: Vec<String>,
    /// Run the built-in Ollama simulator as the upstream (no Ollama needed): one
    /// simulated target without --target, else one per target whose URL is `sim`. The
    /// variable, like every on/off setting, takes 1/0, true/false, yes/no, on/off.
    #[arg(long, env = "FOREMAN_SIMULATE", value_parser = boolean)]
    pub simulate: bool,
    /// Where the queue's files live (see [`StorageArgs`]).
    #[command(flatten)]
    pub storage: StorageArgs,
    /// OpenAI's Files and Batch API (see [`BatchArgs`]).
    #[command(flatten)]
    pub batch: BatchArgs,
    /// Bearer token required on every route but /healthz and /readyz; unset means no
    /// auth. Printable ASCII with no whitespace around it.
    #[arg(long, env = "FOREMAN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the token (a trailing newline is dropped), instead of --token;
    /// without either, `$CREDENTIALS_DIRECTORY/foreman-token` (a systemd credential) is
    /// read if it exists.
    #[arg(long, env = "FOREMAN_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<std::path::PathBuf>,
    /// Serve GET /metrics without the token (for a Prometheus that scrapes without
    /// credentials); every other route still needs it.
    #[arg(
        long,
        env = "FOREMAN_METRICS_PUBLIC",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = boolean
    )]
    pub metrics_public: bool,
    /// Attempts per job before it fails (retryable errors only: connection, timeout, 429, 502, 503, 504).
    #[arg(long, env = "FOREMAN_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// How long finished jobs are kept before the janitor prunes them.
    #[arg(long, env = "FOREMAN_JOB_TTL", default_value = "24h", value_parser = positive_duration)]
    pub job_ttl: Duration,
    /// How often each target's model inventory (/api/tags, /api/ps) is polled; a
    /// target that does not answer is polled every second at most until it does.
    #[arg(long, env = "FOREMAN_POLL_INTERVAL", default_value = "5s", value_parser = positive_duration)]
    pub poll_interval: Duration,
    /// Longest a queued job may wait because the runners drain other models.
    #[arg(long, env = "FOREMAN_MAX_WAIT", default_value = "60s", value_parser = duration)]
    pub max_wait: Duration,
    /// Share each load key's turn between callers (API keys) by weight, so that one
    /// caller's backlog does not hold another's requests behind it; false runs each
    /// model's jobs by priority, then age.
    #[arg(
        long,
        env = "FOREMAN_FAIR_SHARE",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = boolean
    )]
    pub fair_share: bool,
    /// How long a model used by work of some priority is kept from being unloaded to
    /// load a model for lower work (a batch): live traffic finds its model loaded.
    /// 0 protects nothing.
    #[arg(long, env = "FOREMAN_PROTECT_WINDOW", default_value = "60s", value_parser = duration)]
    pub protect_window: Duration,
    /// Queued jobs before new requests get 503.
    #[arg(long, env = "FOREMAN_MAX_QUEUE", default_value_t = 10_000, value_parser = at_least_one)]
    pub max_queue: u64,
    /// Largest request body accepted, in bytes (images travel inside JSON).
    #[arg(long, env = "FOREMAN_MAX_BODY", default_value_t = 64 * 1024 * 1024, value_parser = body_limit)]
    pub max_body: usize,
    /// First retry delay; each further retry doubles it (with jitter), up to 60s.
    #[arg(long, env = "FOREMAN_RETRY_BASE", default_value = "1s", value_parser = duration)]
    pub retry_base: Duration,
    /// How long a running job may finish after SIGTERM before it is requeued.
    #[arg(long, env = "FOREMAN_SHUTDOWN_GRACE", default_value = "30s", value_parser = duration)]
    pub shutdown_grace: Duration,
    /// Longest silence from the target while a job runs (model loads count) before it is retried.
    #[arg(long, env = "FOREMAN_UPSTREAM_TIMEOUT", default_value = "10m", value_parser = positive_duration)]
    pub upstream_timeout: Duration,
    /// How long a synchronous caller waits for a job whose every possible target is
    /// down before it gets 503 (and its job is cancelled); async jobs keep waiting.
    #[arg(long, env = "FOREMAN_TARGET_DOWN_TIMEOUT", default_value = "5m", value_parser = positive_duration)]
    pub target_down_timeout: Duration,
    /// Options pinned per model so drifting clients stop reloading it, e.g.
    /// 'llama3.2:3b:num_ctx=8192' (see the README's section on load keys).
    #[arg(long, env = "FOREMAN_PIN_OPTIONS", default_value = "")]
    pub pin_options: String,
    /// Lowest priority a client may ask for with X-Foreman-Priority.
    #[arg(
        long,
        env = "FOREMAN_PRIORITY_MIN",
        default_value_t = -20,
        allow_negative_numbers = true
    )]
    pub priority_min: i32,
    /// Highest priority a client may ask for with X-Foreman-Priority (higher runs first).
    #[arg(
        long,
        env = "FOREMAN_PRIORITY_MAX",
        default_value_t = 20,
        allow_negative_numbers = true
    )]
    pub priority_max: i32,
    /// Webhook signing secret, `whsec_` + base64 of 16-64 random bytes (Standard Webhooks);
    /// jobs may ask for a webhook only when it is set.
    #[arg(long, env = "FOREMAN_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Private networks webhooks may reach anyway (CIDRs, comma-separated, e.g.
    /// 192.168.1.0/24); loopback, private, link-local and other internal addresses are
    /// refused unless listed here.
    #[arg(long, env = "FOREMAN_WEBHOOK_ALLOW_PRIVATE_NETS", default_value = "")]
    pub webhook_allow_private_nets: String,
    /// First webhook retry delay; each further retry doubles it (with jitter), up to
    /// --webhook-retry-max.
    #[arg(long, env = "FOREMAN_WEBHOOK_RETRY_BASE", default_value = "30s", value_parser = duration)]
    pub webhook_retry_base: Duration,
    /// Longest pause between two attempts at one webhook delivery.
    #[arg(long, env = "FOREMAN_WEBHOOK_RETRY_MAX", default_value = "4h", value_parser = duration)]
    pub webhook_retry_max: Duration,
    /// How long a webhook receiver has to answer an attempt.
    #[arg(long, env = "FOREMAN_WEBHOOK_TIMEOUT", default_value = "15s", value_parser = positive_duration)]
    pub webhook_timeout: Duration,
    /// Attempts per webhook delivery before it is marked failed.
    #[arg(long, env = "FOREMAN_WEBHOOK_MAX_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub webhook_max_attempts: u32,
    /// Pass model management (/api/pull, /api/push, /api/create, /api/copy, /api/delete)
    /// through to the target; false answers 403.
    #[arg(
        long,
        env = "FOREMAN_ALLOW_MODEL_MANAGEMENT",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = boolean
    )]
    pub allow_model_management: bool,
    /// Results larger than this many bytes are stored as files (artifacts), not in the row.
    #[arg(long, env = "FOREMAN_ARTIFACT_THRESHOLD", default_value_t = 1024 * 1024)]
    pub artifact_threshold: usize,
    /// How long a running job's lease lasts without a heartbeat (sent every third of
    /// it); a job whose lease lapses is requeued by the janitor.
    #[arg(long, env = "FOREMAN_LEASE", default_value = "30s", value_parser = positive_duration)]
    pub lease: Duration,
    /// This instance's name in the leases of the jobs it runs (`INSTANCE/TARGET/SLOT`);
    /// default host-pid-random. At start foreman requeues the running jobs its own
    /// previous run left, by this name, on a PostgreSQL database (a SQLite file has one
    /// instance: all of them); give each instance a stable, unique id so that its restart
    /// takes back its jobs at once, instead of after their leases lapse.
    #[arg(long, env = "FOREMAN_INSTANCE_ID", value_name = "ID")]
    pub instance_id: Option<String>,
    /// How long this instance's hold on a target (and on the janitor's work) lasts
    /// without renewal, on a PostgreSQL database shared by several instances; it is
    /// renewed every third of it. When an instance dies, another takes its targets
    /// within this time. A SQLite file has one instance, which holds them all.
    #[arg(long, env = "FOREMAN_LEASE_TTL", default_value = "10s", value_parser = positive_duration)]
    pub lease_ttl: Duration,
    /// How often the janitor prunes finished jobs and requeues jobs whose lease lapsed.
    #[arg(long, env = "FOREMAN_JANITOR_INTERVAL", default_value = "60s", value_parser = positive_duration)]
    pub janitor_interval: Duration,
    /// How instances on one PostgreSQL database hear each other's changes (new work,
    /// ends, cancel requests): `notify` (LISTEN/NOTIFY, at each commit) or `poll`
    /// (reading the rows every --signal-poll-interval; for a transaction-pooling
    /// PgBouncer). Unused on SQLite.
    #[arg(long, env = "FOREMAN_SIGNALS", default_value = "notify", value_enum)]
    pub signals: crate::signals::SignalMode,
    /// How often `poll` signals read the rows again (and `notify` while its session is down).
    #[arg(long, env = "FOREMAN_SIGNAL_POLL_INTERVAL", default_value = "1s", value_parser = positive_duration)]
    pub signal_poll_interval: Duration,
    /// How long a client has to send a request's line and headers, counted from the
    /// connection's start or the end of its previous answer; the connection is
    /// closed past it (an idle keep-alive connection too).
    #[arg(long, env = "FOREMAN_HEADER_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    pub header_timeout: Duration,
    /// Longest silence while a request's body is read: past it the request gets 408
    /// and its connection is closed.
    #[arg(long, env = "FOREMAN_BODY_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    pub body_timeout: Duration,
    /// Client connections held open at once; at the limit, the connection idle the
    /// longest (no request under way) is closed for a new one. Lowered at start to
    /// fit the process's open-file limit.
    #[arg(long, env = "FOREMAN_MAX_CONNECTIONS", default_value_t = 2048, value_parser = at_least_one)]
    pub max_connections: u64,
    /// Origins whose web pages may call foreman, comma-separated, `*` as a wildcard (as
    /// OLLAMA_ORIGINS), on top of Ollama's defaults: localhost, 127.0.0.1 and 0.0.0.0
    /// on any port over http(s), app://, file://, tauri://, vscode-webview://,
    /// vscode-file://. Other origins get 403.
    #[arg(long, env = "FOREMAN_ORIGINS", default_value = "")]
    pub origins: String,
    /// Log filter, e.g. info or foreman=debug.
    #[arg(long, env = "FOREMAN_LOG", default_value = "info")]
    pub log: String,
    /// Log lines as text for people (no colour unless stderr is a terminal and
    /// NO_COLOR is unset) or as one JSON object per line.
    #[arg(long, env = "FOREMAN_LOG_FORMAT", default_value = "text", value_enum)]
    pub log_format: crate::logging::LogFormat,
}

/// Where the queue's files are: shared by `foreman serve` and `foreman db`.
///
/// The data directory holds the database (`foreman.db` with its `-wal` and `-shm`)
/// and the artifacts. Unset, it is the platform's place for a program's data:
/// `$STATE_DIRECTORY` when systemd sets it (`StateDirectory=foreman` gives
/// `/var/lib/foreman`), else `$XDG_DATA_HOME/foreman`, else
/// `~/.local/share/foreman`; never the directory foreman happens to start in.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// The job queue: a SQLite file path (or sqlite://PATH), or a PostgreSQL URL
    /// (postgres://USER:PASSWORD@HOST:PORT/DATABASE); default foreman.db in the data
    /// directory.
    #[arg(long, env = "FOREMAN_DATABASE", value_name = "PATH|URL")]
    pub database: Option<String>,
    /// Folder for the database (unless --database says otherwise) and large job
    /// results; default $STATE_DIRECTORY, else $XDG_DATA_HOME/foreman, else
    /// ~/.local/share/foreman.
    #[arg(long, env = "FOREMAN_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,
}

/// The database file's name in the data directory.
pub const DATABASE_FILE: &str = "foreman.db";

/// What foreman reads from its environment besides its own `FOREMAN_*` settings: the
/// platform's places for data and secrets. Injected, so tests and
/// [`Config::for_upstream`] do not depend on the shell.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Platform {
    /// `$STATE_DIRECTORY`, set by systemd for `StateDirectory=` (the first, if several).
    pub state_directory: Option<std::path::PathBuf>,
    /// `$XDG_DATA_HOME`, used only when absolute (as the XDG spec says).
    pub xdg_data_home: Option<std::path::PathBuf>,
    pub home: Option<std::path::PathBuf>,
    /// `$CREDENTIALS_DIRECTORY`, set by systemd for `LoadCredential=`.
    pub credentials_directory: Option<std::path::PathBuf>,
}

/// The systemd credential foreman reads its token from when no token is set.
pub const TOKEN_CREDENTIAL: &str = "foreman-token";

impl Platform {
    /// The places of this process's environment.
    pub fn current() -> Platform {
        let path = |name: &str| {
            std::env::var_os(name)
                .filter(|value| !value.is_empty())
                .map(std::path::PathBuf::from)
        };
        Platform {
            state_directory: std::env::var_os("STATE_DIRECTORY").and_then(|value| {
                std::env::split_paths(&value).find(|p| !p.as_os_str().is_empty())
            }),
            xdg_data_home: path("XDG_DATA_HOME"),
            home: path("HOME"),
            credentials_directory: path("CREDENTIALS_DIRECTORY"),
        }
    }

    /// The default data directory (see [`StorageArgs`]); `None` when the environment
    /// names no place at all.
    pub fn data_dir(&self) -> Option<std::path::PathBuf> {
        if let Some(dir) = &self.state_directory {
            return Some(dir.clone());
        }
        if let Some(dir) = self.xdg_data_home.as_ref().filter(|dir| dir.is_absolute()) {
            return Some(dir.join("foreman"));
        }
        self.home
            .as_ref()
            .map(|home| home.join(".local").join("share").join("foreman"))
    }
}

impl StorageArgs {
    /// The database URL and the data directory these settings name on `platform`.
    pub fn resolve(
        &self,
        platform: &Platform,
    ) -> Result<(String, std::path::PathBuf), ConfigError> {
        let data_dir = match &self.data_dir {
            Some(dir) if dir.as_os_str().is_empty() => {
                return Err(invalid("data-dir", "DATA_DIR", "must not be empty when set"));
            }
            Some(dir) => dir.clone(),
            None => platform.data_dir().ok_or_else(|| {
                invalid(
                    "data-dir",
                    "DATA_DIR",
                    "no default place for foreman's files: HOME, XDG_DATA_HOME and STATE_DIRECTORY are all unset; set this",
                )
            })?,
        };
        let database = match &self.database {
            Some(database) => {
                ensure(!database.trim().is_empty(), "database", "DATABASE", || {
                    "must not be empty".into()
                })?;
                database.clone()
            }
            None => data_dir.join(DATABASE_FILE).to_string_lossy().into_owned(),
        };
        Ok((database, data_dir))
    }

    /// A `foreman.db` in the working directory that these settings no longer open:
    /// where foreman kept its queue before it had a data directory.
    pub fn stray_database(&self, opened: &str) -> Option<std::path::PathBuf> {
        if self.database.is_some() {
            return None;
        }
        let here = std::path::absolute(DATABASE_FILE).ok()?;
        let opened = std::path::absolute(opened).ok()?;
        (here.is_file() && here != opened).then_some(here)
    }
}

/// An instance id goes into lease owners `INSTANCE/TARGET/SLOT` and is matched as their
/// prefix at start: one path segment of printable characters.
fn check_instance_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err("must have 1 to 128 characters".to_owned());
    }
    if id.contains('/') || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{id:?} must not contain '/', spaces or control characters"
        ));
    }
    Ok(())
}

/// `host-pid-random`: unique among instances that run at the same time, different at
/// every start.
fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|name| name.trim().replace(['/', ' '], "-"))
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let random = ulid::Ulid::generate().random() & 0xff_ffff;
    format!("{host}-{}-{random:06x}", std::process::id())
}

/// The one parser of every on/off setting: `true`/`false`, `1`/`0`, `yes`/`no`,
/// `on`/`off`, in any case, as services and shells write them.
pub fn boolean(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "{text:?} is not on or off: use true/false, 1/0, yes/no or on/off"
        )),
    }
}

/// Priority of a queued request that sends no X-Foreman-Priority header; the
/// configured priority range must contain it.
pub const SYNC_PRIORITY: i32 = 10;

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    /// The Ollama servers, never empty: `--target`s, else the one `--ollama-url`
    /// (or, with `--simulate`, one simulated target). A target whose URL is `sim`
    /// waits for `main` to start its simulator and put the simulator's URL there.
    pub targets: Vec<TargetSpec>,
    pub simulate: bool,
    pub database: String,
    pub token: Option<String>,
    /// `/metrics` answers without the token.
    pub metrics_public: bool,
    pub max_attempts: u32,
    pub job_ttl: Duration,
    pub poll_interval: Duration,
    pub max_wait: Duration,
    /// Callers take turns by weight within a load key (see `scheduler::fair_share`).
    pub fair_share: bool,
    /// Keeps models used by higher work from loads for lower work (see `scheduler::policy`).
    pub protect_window: Duration,
    pub max_queue: u64,
    pub max_body: usize,
    pub retry_base: Duration,
    pub shutdown_grace: Duration,
    pub upstream_timeout: Duration,
    /// How long a synchronous caller waits while every target that could run its job
    /// is down.
    pub target_down_timeout: Duration,
    /// Runner options rewritten per model (`FOREMAN_PIN_OPTIONS`), checked.
    pub pins: Vec<crate::scheduler::load_key::Pin>,
    /// The range a client's X-Foreman-Priority must fall in (inclusive); it holds
    /// [`SYNC_PRIORITY`].
    pub priority_min: i32,
    pub priority_max: i32,
    /// The decoded webhook signing key; `None` means webhooks are off.
    pub webhook_key: Option<Vec<u8>>,
    pub webhook_allow_private_nets: Vec<crate::webhook::Cidr>,
    pub webhook_retry_base: Duration,
    pub webhook_retry_max: Duration,
    pub webhook_timeout: Duration,
    pub webhook_max_attempts: u32,
    /// Answers webhook host names: the system's resolver; tests inject their own.
    pub webhook_resolver: crate::webhook::Resolver,
    pub allow_model_management: bool,
    /// The folder of the database (by default) and the artifacts.
    pub data_dir: std::path::PathBuf,
    pub artifact_threshold: usize,
    pub lease: Duration,
    /// Names this instance in lease owners (`FOREMAN_INSTANCE_ID`, else host-pid-random).
    pub instance_id: String,
    /// How long a target's or the janitor's lease lasts unrenewed (`FOREMAN_LEASE_TTL`).
    pub lease_ttl: Duration,
    pub janitor_interval: Duration,
    /// How other instances' signals are heard (`FOREMAN_SIGNALS`).
    pub signals: crate::signals::SignalMode,
    /// The period of `poll` signals (`FOREMAN_SIGNAL_POLL_INTERVAL`).
    pub signal_poll_interval: Duration,
    /// Time to send a request's line and headers (`FOREMAN_HEADER_TIMEOUT`).
    pub header_timeout: Duration,
    /// Longest silence within a request body (`FOREMAN_BODY_TIMEOUT`).
    pub body_timeout: Duration,
    /// Client connections held at once (`FOREMAN_MAX_CONNECTIONS`), before the
    /// open-file limit lowers it.
    pub max_connections: usize,
    /// Origins allowed besides Ollama's defaults (`FOREMAN_ORIGINS`, checked).
    pub origins: Vec<String>,
    pub log: String,
    pub log_format: crate::logging::LogFormat,
    /// OpenAI's Files and Batch API (`FOREMAN_FILES_*`, `FOREMAN_BATCH_*`).
    pub batch: BatchSettings,
}

/// A setting that cannot be used, named by flag and variable.
#[derive(Debug, Error, PartialEq)]
#[error("invalid --{flag} (FOREMAN_{env}): {reason}")]
pub struct ConfigError {
    /// The flag without its dashes, e.g. `job-ttl`.
    pub flag: String,
    /// The variable without `FOREMAN_`, e.g. `JOB_TTL`.
    pub env: String,
    pub reason: String,
}

fn invalid(flag: &str, env: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        flag: flag.to_string(),
        env: env.to_string(),
        reason: reason.into(),
    }
}

/// Fails with `reason` unless `ok`.
fn ensure(
    ok: bool,
    flag: &str,
    env: &str,
    reason: impl FnOnce() -> String,
) -> Result<(), ConfigError> {
    match ok {
        true => Ok(()),
        false => Err(invalid(flag, env, reason())),
    }
}

/// A humantime duration (`30s`, `5m`, `24h`); clap's parser for duration settings.
pub fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration like 30s or 24h ({e})"))
}

/// A duration that must not be zero.
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    match duration(text)? {
        value if value.is_zero() => Err("must be greater than zero".into()),
        value => Ok(value),
    }
}

/// A whole number, at least 1.
fn at_least_one(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(count) => Ok(count),
        Err(e) => Err(format!("{text:?} is not a whole number ({e})")),
    }
}

/// A body size in bytes, at least 1024.
fn body_limit(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(bytes) if bytes < 1024 => Err("must be at least 1024 bytes".into()),
        Ok(bytes) => Ok(bytes),
        Err(e) => Err(format!("{text:?} is not a number of bytes ({e})")),
    }
}

/// A token a client can present as it is: not empty, no whitespace around it (which
/// would make it unusable, as header values lose theirs), and only printable ASCII,
/// the characters an HTTP header carries as text.
fn check_token(token: &str) -> Result<(), String> {
    if token.trim().is_empty() {
        return Err("must not be empty when set".into());
    }
    if token.trim() != token {
        return Err(
            "has whitespace at its start or end (a stray newline or space?), which no client can send; remove it".into(),
        );
    }
    if !token.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
        return Err("must be printable ASCII, which is all an HTTP header carries".into());
    }
    Ok(())
}

impl ConfigError {
    /// The one-line form of a value clap could not parse (a duration, a number),
    /// naming the flag and its variable; `None` for other clap errors (`--help`, an
    /// unknown flag), which clap reports itself.
    pub fn from_clap(error: &clap::Error) -> Option<ConfigError> {
        use clap::error::{ContextKind, ErrorKind};
        if !matches!(
            error.kind(),
            ErrorKind::ValueValidation | ErrorKind::InvalidValue
        ) {
            return None;
        }
        let arg = error.get(ContextKind::InvalidArg)?.to_string();
        let flag = arg
            .strip_prefix("--")?
            .split([' ', '='])
            .next()?
            .to_string();
        let command = ServeArgs::augment_args(clap::Command::new("foreman"));
        let env = command
            .get_arguments()
            .find(|candidate| candidate.get_long() == Some(flag.as_str()))?
            .get_env()?
            .to_string_lossy()
            .trim_start_matches("FOREMAN_")
            .to_string();
        let reason = match std::error::Error::source(error) {
            Some(source) => source.to_string(),
            None => {
                let value = error.get(ContextKind::InvalidValue).map(|v| v.to_string());
                format!("{:?} is not a valid value", value.unwrap_or_default())
            }
        };
        Some(invalid(&flag, &env, reason))
    }
}

impl ServeArgs {
    /// Checks every setting and converts it to its typed form, with this process's
    /// [`Platform`].
    pub fn validate(&self) -> Result<Config, ConfigError> {
        self.validate_on(&Platform::current())
    }

    /// The token: `--token`, else the file `--token-file` names, else the systemd
    /// credential; both of the first two set is refused rather than one chosen.
    fn token(&self, platform: &Platform) -> Result<Option<String>, ConfigError> {
        let from_file = |path: &std::path::Path, what: &str| {
            let text = std::fs::read_to_string(path).map_err(|error| {
                invalid(
                    "token-file",
                    "TOKEN_FILE",
                    format!("cannot read {what} {}: {error}", path.display()),
                )
            })?;
            let token = text.trim_end_matches(['\n', '\r']).to_string();
            check_token(&token).map_err(|reason| {
                invalid(
                    "token-file",
                    "TOKEN_FILE",
                    format!("the token in {what} {} {reason}", path.display()),
                )
            })?;
            Ok(Some(token))
        };
        match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => Err(invalid(
                "token-file",
                "TOKEN_FILE",
                "--token (FOREMAN_TOKEN) is set too; set only one of them",
            )),
            (Some(token), None) => {
                check_token(token).map_err(|reason| invalid("token", "TOKEN", reason))?;
                Ok(Some(token.clone()))
            }
            (None, Some(path)) => from_file(path, "the file"),
            (None, None) => match &platform.credentials_directory {
                Some(dir) if dir.join(TOKEN_CREDENTIAL).is_file() => {
                    from_file(&dir.join(TOKEN_CREDENTIAL), "the systemd credential")
                }
                _ => Ok(None),
            },
        }
    }

    /// [`ServeArgs::validate`] on the given platform.
    pub fn validate_on(&self, platform: &Platform) -> Result<Config, ConfigError> {
        let addr = self
            .addr
            .parse()
            .map_err(|_| invalid("addr", "ADDR", format!("{:?} is not HOST:PORT", self.addr)))?;
        let targets = self.target_specs()?;
        let (database, data_dir) = self.storage.resolve(platform)?;
        let token = self.token(platform)?;
        ensure(
            self.priority_min <= self.priority_max,
            "priority-min",
            "PRIORITY_MIN",
            || {
                format!(
                    "{} is above --priority-max (FOREMAN_PRIORITY_MAX), {}",
                    self.priority_min, self.priority_max
                )
            },
        )?;
        let holds_sync = |bound: &str| {
            format!(
                "must be {bound} {SYNC_PRIORITY}, the priority of requests without X-Foreman-Priority"
            )
        };
        ensure(
            self.priority_min <= SYNC_PRIORITY,
            "priority-min",
            "PRIORITY_MIN",
            || holds_sync("at most"),
        )?;
        ensure(
            self.priority_max >= SYNC_PRIORITY,
            "priority-max",
            "PRIORITY_MAX",
            || holds_sync("at least"),
        )?;
        tracing_subscriber::EnvFilter::try_new(&self.log)
            .map_err(|e| invalid("log", "LOG", e.to_string()))?;
        let webhook_key = match &self.webhook_secret {
            Some(secret) => Some(
                crate::webhook::decode_secret(secret)
                    .map_err(|reason| invalid("webhook-secret", "WEBHOOK_SECRET", reason))?,
            ),
            None => None,
        };
        Ok(Config {
            addr,
            targets,
            simulate: self.simulate,
            database,
            token,
            metrics_public: self.metrics_public,
            max_attempts: self.max_attempts,
            job_ttl: self.job_ttl,
            poll_interval: self.poll_interval,
            max_wait: self.max_wait,
            fair_share: self.fair_share,
            protect_window: self.protect_window,
            max_queue: self.max_queue,
            max_body: self.max_body,
            retry_base: self.retry_base,
            shutdown_grace: self.shutdown_grace,
            upstream_timeout: self.upstream_timeout,
            target_down_timeout: self.target_down_timeout,
            pins: crate::scheduler::load_key::parse_pins(&self.pin_options)
                .map_err(|reason| invalid("pin-options", "PIN_OPTIONS", reason))?,
            priority_min: self.priority_min,
            priority_max: self.priority_max,
            webhook_key,
            webhook_allow_private_nets: crate::webhook::parse_cidrs(
                &self.webhook_allow_private_nets,
            )
            .map_err(|reason| {
                invalid(
                    "webhook-allow-private-nets",
                    "WEBHOOK_ALLOW_PRIVATE_NETS",
                    reason,
                )
            })?,
            webhook_retry_base: self.webhook_retry_base,
            webhook_retry_max: self.webhook_retry_max,
            webhook_timeout: self.webhook_timeout,
            webhook_max_attempts: self.webhook_max_attempts,
            webhook_resolver: crate::webhook::Resolver::default(),
            allow_model_management: self.allow_model_management,
            data_dir,
            artifact_threshold: self.artifact_threshold,
            lease: self.lease,
            instance_id: match &self.instance_id {
                Some(id) => {
                    check_instance_id(id)
                        .map_err(|reason| invalid("instance-id", "INSTANCE_ID", reason))?;
                    id.clone()
                }
                None => default_instance_id(),
            },
            lease_ttl: self.lease_ttl,
            janitor_interval: self.janitor_interval,
            signals: self.signals,
            signal_poll_interval: self.signal_poll_interval,
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            origins: crate::api::origin_guard::parse_origins(&self.origins)
                .map_err(|reason| invalid("origins", "ORIGINS", reason))?,
            log: self.log.clone(),
            log_format: self.log_format,
            batch: self.batch.validate()?,
        })
    }

    /// The targets: each `--target` (empty entries, from extra spaces in
    /// `FOREMAN_TARGETS`, skipped), else `--ollama-url`, else (with `--simulate`) one
    /// simulated target. Names are unique; unnamed `sim` targets are `sim`, or `sim1`,
    /// `sim2`... when there are several.
    fn target_specs(&self) -> Result<Vec<TargetSpec>, ConfigError> {
        let bad = |reason: String| invalid("target", "TARGETS", reason);
        let mut specs = self
            .targets
            .iter()
            .filter(|text| !text.trim().is_empty())
            .map(|text| parse_target(text).map_err(bad))
            .collect::<Result<Vec<_>, _>>()?;
        if specs.is_empty() {
            let spec = match self.simulate {
                true => parse_target(crate::targets::spec::SIM_URL).map_err(bad)?,
                false => TargetSpec::single(&self.ollama_url)
                    .map_err(|reason| invalid("ollama-url", "OLLAMA_URL", reason))?,
            };
            specs.push(spec);
        }
        let unnamed_sims = specs.iter().filter(|spec| spec.name.is_empty()).count();
        let mut number = 0;
        for spec in specs.iter_mut().filter(|spec| spec.name.is_empty()) {
            number += 1;
            spec.name = match unnamed_sims {
                1 => "sim".to_string(),
                _ => format!("sim{number}"),
            };
        }
        for (index, spec) in specs.iter().enumerate() {
            ensure(
                !spec.is_simulated() || self.simulate,
                "target",
                "TARGETS",
                || {
                    format!(
                        "the URL `sim` of target {:?} needs --simulate (FOREMAN_SIMULATE)",
                        spec.name
                    )
                },
            )?;
            ensure(
                specs[..index].iter().all(|other| other.name != spec.name),
                "target",
                "TARGETS",
                || format!("two targets are named {:?}; give each a name=", spec.name),
            )?;
        }
        Ok(specs)
    }
}

impl Config {
    /// Settings for tests and embedding: the defaults, with one target at
    /// `ollama_url` (1 slot, 1 place) and the given database. `FOREMAN_*` variables are not read, so a caller's environment changes
    /// nothing.
    /// The data directory is the database's folder.
    pub fn for_upstream(ollama_url: &str, database: &str) -> Config {
        let mut args = ServeArgs::defaults();
        let folder = std::path::Path::new(database)
            .parent()
            .filter(|folder| !folder.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        args.storage.database = Some(database.to_string());
        args.storage.data_dir = Some(folder.to_owned());
        let mut config = args
            .validate_on(&Platform::default())
            .expect("the defaults are valid");
        config.targets = vec![TargetSpec::single(ollama_url).expect("an http(s) URL")];
        config
    }
}

impl ServeArgs {
    /// The default of every setting, as `foreman serve` has them with no flags and no
    /// `FOREMAN_*` variables: the environment is not read.
    pub fn defaults() -> ServeArgs {
        ServeArgs::from_flags(&[]).expect("the defaults parse")
    }

    /// The settings from these flags alone (`FOREMAN_*` variables are not read), for
    /// tests and embedding; [`ConfigError::from_clap`] words a bad value's error.
    pub fn from_flags(flags: &[&str]) -> Result<ServeArgs, clap::Error> {
        use clap::FromArgMatches as _;
        let command = ServeArgs::augment_args(clap::Command::new("foreman"))
            .mut_args(|arg| arg.env(None::<&str>));
        let matches = command
            .try_get_matches_from(std::iter::once("foreman").chain(flags.iter().copied()))?;
        ServeArgs::from_arg_matches(&matches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = Config::for_upstream("http://127.0.0.1:1/", "x.db");
        assert_eq!(
            config.targets,
            vec![TargetSpec {
                url: "http://127.0.0.1:1".into(),
                name: "127.0.0.1:1".into(),
                slots: 1,
                places: 1
            }]
        );
        assert_eq!(config.target_down_timeout, Duration::from_secs(300));
        assert!(config.pins.is_empty());
        assert_eq!(config.max_attempts, 3);
        assert_eq!(config.job_ttl, Duration::from_secs(24 * 3600));
        assert_eq!(config.poll_interval, Duration::from_secs(5));
        assert_eq!(config.lease, Duration::from_secs(30));
        assert_eq!(config.janitor_interval, Duration::from_secs(60));
        assert_eq!((config.priority_min, config.priority_max), (-20, 20));
    }

    /// Set in the environment of the child process that runs
    /// [`defaults_in_a_polluted_environment`].
    const CHILD: &str = "FOREMAN_TEST_POLLUTED_CHILD";

    #[test]
    fn stray_variables_do_not_change_the_defaults() {
        // Setting variables in this (multi-threaded) process would race other tests,
        // so a child process runs the check with stray variables of its own.
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "config::tests::defaults_in_a_polluted_environment",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .env("FOREMAN_TOKEN", "stray")
            .env("FOREMAN_MAX_WAIT", "1s")
            .env("FOREMAN_LEASE", "1s")
            .env("FOREMAN_ADDR", "nowhere")
            .env("FOREMAN_TOKEN_FILE", "/nonexistent/token")
            .env("STATE_DIRECTORY", "/nonexistent/state")
            .env("CREDENTIALS_DIRECTORY", "/nonexistent/credentials")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stdout}\n{stderr}");
        assert!(
            stdout.contains("1 passed"),
            "the child ran the check: {stdout}"
        );
    }

    /// The child's half of [`stray_variables_do_not_change_the_defaults`]; outside that
    /// child (no stray variables to ignore) it has nothing to check.
    #[test]
    fn defaults_in_a_polluted_environment() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        assert_eq!(std::env::var("FOREMAN_TOKEN").as_deref(), Ok("stray"));
        let config = Config::for_upstream("http://127.0.0.1:1", "x.db");
        assert_eq!(config.token, None);
        assert_eq!(config.max_wait, Duration::from_secs(60));
        assert_eq!(config.protect_window, Duration::from_secs(60));
        assert_eq!(config.lease, Duration::from_secs(30));
        assert_eq!(config.addr, "127.0.0.1:11435".parse().unwrap());
        assert_eq!(config.database, "x.db");
        assert_eq!(config.data_dir, std::path::Path::new("."));
    }

    #[test]
    fn the_priority_range_is_ordered_and_holds_the_sync_default() {
        let check = |min: i32, max: i32| {
            let mut args = ServeArgs::defaults();
            args.priority_min = min;
            args.priority_max = max;
            args.validate()
                .map(|config| (config.priority_min, config.priority_max))
        };
        assert_eq!(check(-5, 50), Ok((-5, 50)));
        assert_eq!(check(SYNC_PRIORITY, SYNC_PRIORITY), Ok((10, 10)));
        let error = check(5, 3).unwrap_err();
        assert_eq!(error.flag, "priority-min");
        assert!(
            error
                .to_string()
                .starts_with("invalid --priority-min (FOREMAN_PRIORITY_MIN): 5 is above"),
            "{error}"
        );
        assert_eq!(check(11, 30).unwrap_err().flag, "priority-min");
        let error = check(-20, 9).unwrap_err();
        assert_eq!(error.env, "PRIORITY_MAX");
        assert!(error.to_string().contains("at least 10"), "{error}");
    }

    #[test]
    fn negative_priorities_parse_from_flags() {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: ServeArgs,
        }
        let wrapper = <Wrapper as clap::Parser>::try_parse_from([
            "foreman",
            "--priority-min",
            "-3",
            "--priority-max",
            "12",
        ])
        .unwrap();
        let config = wrapper.args.validate().unwrap();
        assert_eq!((config.priority_min, config.priority_max), (-3, 12));
    }

    fn error_of(flags: &[&str]) -> ConfigError {
        let args = ServeArgs::from_flags(flags);
        args.map_err(|error| ConfigError::from_clap(&error).expect("a bad value"))
            .and_then(|args| args.validate())
            .unwrap_err()
    }

    #[test]
    fn bad_values_name_the_setting() {
        let error = error_of(&["--job-ttl", "soon"]);
        assert_eq!(error.flag, "job-ttl");
        assert!(
            error
                .to_string()
                .starts_with("invalid --job-ttl (FOREMAN_JOB_TTL): \"soon\" is not a duration"),
            "{error}"
        );
        assert_eq!(error_of(&["--ollama-url", "ftp://x"]).flag, "ollama-url");
        assert_eq!(error_of(&["--addr", "nowhere"]).flag, "addr");
        assert_eq!(error_of(&["--max-attempts", "0"]).flag, "max-attempts");
        let error = error_of(&["--max-attempts", "many"]);
        assert_eq!(
            (error.flag.as_str(), error.env.as_str()),
            ("max-attempts", "MAX_ATTEMPTS")
        );
        let error = error_of(&["--lease", "0s"]);
        assert_eq!(
            error.to_string(),
            "invalid --lease (FOREMAN_LEASE): must be greater than zero"
        );
        assert_eq!(
            error_of(&["--janitor-interval", "often"]).flag,
            "janitor-interval"
        );
        assert_eq!(
            error_of(&["--target-down-timeout=later"]).env,
            "TARGET_DOWN_TIMEOUT"
        );
        assert_eq!(error_of(&["--origins", "app.example"]).flag, "origins");
        assert_eq!(
            error_of(&["--webhook-max-attempts", "0"]).flag,
            "webhook-max-attempts"
        );
    }

    #[test]
    fn durations_are_typed_and_zero_only_where_it_means_something() {
        let args = ServeArgs::from_flags(&["--max-wait", "0s", "--job-ttl", "90m"]).unwrap();
        let config = args.validate().unwrap();
        assert_eq!(config.max_wait, Duration::ZERO);
        assert_eq!(config.job_ttl, Duration::from_secs(90 * 60));
        assert_eq!(error_of(&["--poll-interval", "0s"]).flag, "poll-interval");
    }

    fn targets_of(flags: &[&str]) -> Result<Vec<(String, String, usize, usize)>, String> {
        ServeArgs::from_flags(flags)
            .map_err(|error| ConfigError::from_clap(&error).expect("a bad value"))
            .and_then(|args| args.validate())
            .map(|config| {
                config
                    .targets
                    .into_iter()
                    .map(|t| (t.name, t.url, t.slots, t.places))
                    .collect()
            })
            .map_err(|error| error.to_string())
    }

    #[test]
    fn targets_win_over_the_ollama_url_and_simulate_fills_in_sim() {
        let target = |name: &str, url: &str, slots, places| {
            (name.to_string(), url.to_string(), slots, places)
        };
        assert_eq!(
            targets_of(&["--ollama-url", "http://gpu:8080/"]),
            Ok(vec![target("gpu:8080", "http://gpu:8080", 1, 1)])
        );
        assert_eq!(
            targets_of(&[
                "--ollama-url",
                "http://ignored:1",
                "--target",
                "http://a:1,slots=4,places=2",
                "--target",
                "http://b:2,name=second"
            ]),
            Ok(vec![
                target("a:1", "http://a:1", 4, 2),
                target("second", "http://b:2", 1, 1)
            ])
        );
        // The variable's form: specs separated by spaces (extra spaces are harmless).
        assert_eq!(
            targets_of(&["--target", "http://a:1  http://b:2,slots=2 "]).map(|t| t.len()),
            Ok(2)
        );
        assert_eq!(
            targets_of(&["--simulate"]),
            Ok(vec![target("sim", "sim", 1, 1)])
        );
        assert_eq!(
            targets_of(&[
                "--simulate",
                "--target",
                "sim,slots=4",
                "--target",
                "sim",
                "--target",
                "sim,name=x"
            ]),
            Ok(vec![
                target("sim1", "sim", 4, 1),
                target("sim2", "sim", 1, 1),
                target("x", "sim", 1, 1)
            ])
        );
    }

    #[test]
    fn bad_targets_name_the_setting() {
        let error = targets_of(&["--target", "sim,name=gpu0"]).unwrap_err();
        assert_eq!(
            error,
            "invalid --target (FOREMAN_TARGETS): the URL `sim` of target \"gpu0\" needs --simulate (FOREMAN_SIMULATE)"
        );
        let error =
            targets_of(&["--target", "http://a:1", "--target", "http://a:1,slots=2"]).unwrap_err();
        assert!(error.contains("two targets are named \"a:1\""), "{error}");
        let error = targets_of(&["--target", "http://a:1,slots=0"]).unwrap_err();
        assert!(
            error.starts_with("invalid --target (FOREMAN_TARGETS): "),
            "{error}"
        );
        let error = targets_of(&["--target", "a:1"]).unwrap_err();
        assert!(error.contains("http or https"), "{error}");
    }

    /// Every on/off setting goes through [`boolean`]: each takes `1`, `yes`, `OFF`...
    /// and refuses anything else, so a new flag that forgets the parser fails here.
    #[test]
    fn every_on_off_setting_takes_what_services_write() {
        let command = ServeArgs::augment_args(clap::Command::new("foreman"));
        let mut checked = Vec::new();
        for arg in command.get_arguments() {
            if arg.get_value_parser().type_id() != std::any::TypeId::of::<bool>() {
                continue;
            }
            let long = arg.get_long().unwrap_or_default().to_string();
            // The same argument, given a value on the command line as its variable
            // gives one (a switch like --simulate takes none there).
            let parse = |value: &str| {
                clap::Command::new("x")
                    .arg(arg.clone().action(clap::ArgAction::Set).env(None::<&str>))
                    .try_get_matches_from(["x", &format!("--{long}={value}")])
                    .map(|matches| *matches.get_one::<bool>(arg.get_id().as_str()).unwrap())
            };
            for (value, expected) in [
                ("1", true),
                ("0", false),
                ("yes", true),
                ("No", false),
                ("ON", true),
                ("off", false),
                ("true", true),
                ("FALSE", false),
            ] {
                assert_eq!(parse(value).ok(), Some(expected), "--{long}={value}");
            }
            assert!(parse("maybe").is_err(), "--{long} takes maybe");
            checked.push(long);
        }
        assert_eq!(
            checked,
            [
                "simulate",
                "metrics-public",
                "fair-share",
                "allow-model-management"
            ]
        );
        assert_eq!(boolean(" Yes "), Ok(true));
        assert_eq!(boolean("off"), Ok(false));
        assert!(boolean("2").is_err());
    }

    #[test]
    fn the_data_directory_follows_the_platform() {
        let path = |p: &str| Some(std::path::PathBuf::from(p));
        let mut platform = Platform {
            state_directory: path("/var/lib/foreman"),
            xdg_data_home: path("/home/u/.data"),
            home: path("/home/u"),
            credentials_directory: None,
        };
        assert_eq!(platform.data_dir(), path("/var/lib/foreman"));
        platform.state_directory = None;
        assert_eq!(platform.data_dir(), path("/home/u/.data/foreman"));
        platform.xdg_data_home = path("relative");
        assert_eq!(
            platform.data_dir(),
            path("/home/u/.local/share/foreman"),
            "a relative XDG_DATA_HOME is ignored, as the spec says"
        );
        platform.home = None;
        assert_eq!(platform.data_dir(), None);

        let storage = |database: Option<&str>, data_dir: Option<&str>| StorageArgs {
            database: database.map(str::to_string),
            data_dir: data_dir.map(std::path::PathBuf::from),
        };
        let home = Platform {
            home: path("/home/u"),
            ..Platform::default()
        };
        assert_eq!(
            storage(None, None).resolve(&home).unwrap(),
            (
                "/home/u/.local/share/foreman/foreman.db".to_string(),
                "/home/u/.local/share/foreman".into()
            )
        );
        assert_eq!(
            storage(None, Some("/srv/q")).resolve(&home).unwrap(),
            ("/srv/q/foreman.db".to_string(), "/srv/q".into())
        );
        assert_eq!(
            storage(Some("sqlite:///x/jobs.db"), Some("/srv/q"))
                .resolve(&home)
                .unwrap(),
            ("sqlite:///x/jobs.db".to_string(), "/srv/q".into()),
            "an explicit database stays where it is"
        );
        let error = storage(None, None)
            .resolve(&Platform::default())
            .unwrap_err();
        assert_eq!(error.flag, "data-dir");
    }

    #[test]
    fn the_token_comes_from_one_place() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let token_of =
            |token: Option<&str>, file: Option<&std::path::Path>, platform: &Platform| {
                let mut args = ServeArgs::defaults();
                args.storage.data_dir = Some(dir.path().to_owned());
                args.token = token.map(str::to_string);
                args.token_file = file.map(std::path::Path::to_owned);
                args.validate_on(platform).map(|config| config.token)
            };
        let none = Platform::default();
        std::fs::write(&file, "abc\n").unwrap();
        assert_eq!(token_of(None, Some(&file), &none), Ok(Some("abc".into())));
        std::fs::write(&file, " abc\n").unwrap();
        let error = token_of(None, Some(&file), &none).unwrap_err();
        assert!(error.reason.contains("whitespace"), "{error}");
        std::fs::write(&file, "\n").unwrap();
        assert!(token_of(None, Some(&file), &none).is_err(), "an empty file");
        let missing = dir.path().join("missing");
        let error = token_of(None, Some(&missing), &none).unwrap_err();
        assert!(error.reason.starts_with("cannot read the file"), "{error}");
        let error = token_of(Some("abc"), Some(&file), &none).unwrap_err();
        assert_eq!(error.flag, "token-file");

        let credentials = tempfile::tempdir().unwrap();
        std::fs::write(credentials.path().join(TOKEN_CREDENTIAL), "cred\n").unwrap();
        let systemd = Platform {
            credentials_directory: Some(credentials.path().to_owned()),
            ..Platform::default()
        };
        assert_eq!(token_of(None, None, &systemd), Ok(Some("cred".into())));
        assert_eq!(
            token_of(Some("given"), None, &systemd),
            Ok(Some("given".into())),
            "a token set wins over the credential"
        );
        assert_eq!(token_of(None, None, &none), Ok(None));
    }

    #[test]
    fn help_lists_every_setting_with_its_default() {
        let mut command = ServeArgs::augment_args(clap::Command::new("foreman"));
        let help = command.render_long_help().to_string();
        for arg in ServeArgs::augment_args(clap::Command::new("foreman")).get_arguments() {
            let Some(env) = arg.get_env() else { continue };
            assert!(help.contains(env.to_str().unwrap()), "{env:?} in --help");
            let optional = [
                "FOREMAN_TOKEN",
                "FOREMAN_TOKEN_FILE",
                "FOREMAN_DATABASE",
                "FOREMAN_DATA_DIR",
                "FOREMAN_WEBHOOK_SECRET",
                "FOREMAN_TARGETS",
                "FOREMAN_SIMULATE",
                "FOREMAN_INSTANCE_ID",
            ];
            if !optional.contains(&env.to_str().unwrap()) {
                assert!(
                    !arg.get_default_values().is_empty(),
                    "{env:?} has a default"
                );
            }
        }
        assert!(help.contains("[default: 5m]"), "{help}");
    }
}

/// The settings of OpenAI's Files and Batch API (`/v1/files`, `/v1/batches`).
#[derive(Debug, Clone, Args)]
pub struct BatchArgs {
    /// Largest file accepted by POST /v1/files, in bytes (OpenAI's limit: 200 MB).
    #[arg(long, env = "FOREMAN_FILES_MAX_BYTES", default_value_t = 200 * 1024 * 1024, value_parser = body_limit)]
    pub files_max_bytes: usize,
    /// Most lines in a batch's input file (OpenAI's limit: 50,000).
    #[arg(long, env = "FOREMAN_BATCH_MAX_LINES", default_value_t = 50_000, value_parser = at_least_one)]
    pub batch_max_lines: u64,
    /// Priority of a batch's lines: below async jobs (0) and interactive requests (10),
    /// so live work always runs first; FOREMAN_MAX_WAIT still bounds a model's wait.
    #[arg(
        long,
        env = "FOREMAN_BATCH_PRIORITY",
        default_value_t = -10,
        allow_negative_numbers = true
    )]
    pub batch_priority: i32,
    /// What the completion window `24h` lasts. Only tests should shorten it (to see a
    /// batch expire); OpenAI's clients always ask for 24h.
    #[arg(long, env = "FOREMAN_BATCH_WINDOW", default_value = "24h", value_parser = positive_duration)]
    pub batch_window: Duration,
    /// Lines of one batch queued at once: more are enqueued as these finish, so a batch
    /// never fills the queue (FOREMAN_MAX_QUEUE) that live requests need.
    #[arg(long, env = "FOREMAN_BATCH_QUEUED", default_value_t = 500, value_parser = at_least_one)]
    pub batch_queued: u64,
    /// How long batch files live: an uploaded input (purpose `batch`) and a batch's
    /// output and error files expire this long after they are written (their
    /// `expires_at`), as OpenAI's do after 30 days, and the janitor removes them.
    #[arg(long, env = "FOREMAN_BATCH_FILES_TTL", default_value = "30d", value_parser = positive_duration)]
    pub batch_files_ttl: Duration,
    /// Most lines of an embeddings batch (/v1/embeddings, /api/embed) sent to the target
    /// as one call: consecutive lines equal but for their text `input` are grouped, and
    /// the answer is split back per line (usage apportioned by characters). 1 sends each
    /// line alone, with the target's own token count.
    #[arg(long, env = "FOREMAN_BATCH_EMBED_GROUP", default_value_t = 32, value_parser = at_least_one)]
    pub batch_embed_group: u64,
}

/// [`BatchArgs`], checked.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchSettings {
    pub files_max_bytes: usize,
    pub max_lines: u64,
    pub priority: i32,
    pub window: Duration,
    pub queued: u64,
    pub files_ttl: Duration,
    pub embed_group: u64,
}

impl BatchArgs {
    fn validate(&self) -> Result<BatchSettings, ConfigError> {
        ensure(
            self.batch_priority < crate::api::ASYNC_PRIORITY,
            "batch-priority",
            "BATCH_PRIORITY",
            || {
                format!(
                    "must be below {}, the priority of async jobs (and so of interactive requests)",
                    crate::api::ASYNC_PRIORITY
                )
            },
        )?;
        Ok(BatchSettings {
            files_max_bytes: self.files_max_bytes,
            max_lines: self.batch_max_lines,
            priority: self.batch_priority,
            window: self.batch_window,
            queued: self.batch_queued,
            files_ttl: self.batch_files_ttl,
            embed_group: self.batch_embed_group,
        })
    }
}

#[cfg(test)]
mod batch_settings_tests {
    use super::*;

    #[test]
    fn batch_defaults_are_openai_limits_and_a_priority_below_async_jobs() {
        let config = ServeArgs::defaults()
            .validate_on(&Platform {
                home: Some("/home/u".into()),
                ..Platform::default()
            })
            .expect("valid");
        assert_eq!(config.batch.files_max_bytes, 200 * 1024 * 1024);
        assert_eq!(config.batch.max_lines, 50_000);
        assert_eq!(config.batch.priority, -10);
        assert_eq!(config.batch.window, Duration::from_secs(24 * 3600));
        assert_eq!(config.batch.files_ttl, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(config.batch.embed_group, 32);
    }

    #[test]
    fn a_batch_priority_at_or_above_async_jobs_is_refused() {
        let mut args = ServeArgs::from_flags(&["--batch-priority", "0"]).expect("parses");
        args.storage.data_dir = Some("/tmp".into());
        let error = args.validate_on(&Platform::default()).expect_err("refused");
        assert_eq!(error.env, "BATCH_PRIORITY");
        let error = ServeArgs::from_flags(&["--batch-window", "0s"])
            .map_err(|error| ConfigError::from_clap(&error).expect("a bad value"))
            .expect_err("refused");
        assert_eq!(error.env, "BATCH_WINDOW");
    }
}
