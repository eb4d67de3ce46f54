//! Every setting of `foreman serve`, from `FOREMAN_*` environment variables or the
//! same-named flags, validated once at start into typed values.
//!
//! `--help` lists each setting with its default. A bad value fails at start with one
//! line that names the flag and the variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use thiserror::Error;

/// The flags of `foreman serve`; each also reads its `FOREMAN_*` variable.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address foreman listens on.
    #[arg(long, env = "FOREMAN_ADDR", default_value = "127.0.0.1:11435")]
    pub addr: String,
    /// Base URL of the Ollama server foreman schedules work for.
    #[arg(
        long,
        env = "FOREMAN_OLLAMA_URL",
        default_value = "http://127.0.0.1:11434"
    )]
    pub ollama_url: String,
    /// Run the built-in Ollama simulator as the upstream (no Ollama needed); overrides --ollama-url.
    #[arg(long, env = "FOREMAN_SIMULATE")]
    pub simulate: bool,
    /// The job queue: a SQLite file path (or sqlite://PATH).
    #[arg(long, env = "FOREMAN_DATABASE", default_value = "foreman.db")]
    pub database: String,
    /// Bearer token required on every route but /healthz; unset means no auth.
    #[arg(long, env = "FOREMAN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Attempts per job before it fails (retryable errors only: connection, timeout, 429, 502, 503, 504).
    #[arg(long, env = "FOREMAN_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,
    /// How long finished jobs are kept before the janitor prunes them.
    #[arg(long, env = "FOREMAN_JOB_TTL", default_value = "24h")]
    pub job_ttl: String,
    /// How often the model inventory (/api/tags, /api/ps) is polled.
    #[arg(long, env = "FOREMAN_POLL_INTERVAL", default_value = "5s")]
    pub poll_interval: String,
    /// Longest a queued job may wait because the worker drains another model.
    #[arg(long, env = "FOREMAN_MAX_WAIT", default_value = "60s")]
    pub max_wait: String,
    /// Queued jobs before new requests get 503.
    #[arg(long, env = "FOREMAN_MAX_QUEUE", default_value_t = 10_000)]
    pub max_queue: u64,
    /// Largest request body accepted, in bytes (images travel inside JSON).
    #[arg(long, env = "FOREMAN_MAX_BODY", default_value_t = 64 * 1024 * 1024)]
    pub max_body: usize,
    /// First retry delay; each further retry doubles it (with jitter), up to 60s.
    #[arg(long, env = "FOREMAN_RETRY_BASE", default_value = "1s")]
    pub retry_base: String,
    /// How long a running job may finish after SIGTERM before it is requeued.
    #[arg(long, env = "FOREMAN_SHUTDOWN_GRACE", default_value = "30s")]
    pub shutdown_grace: String,
    /// Longest silence from the target while a job runs (model loads count) before it is retried.
    #[arg(long, env = "FOREMAN_UPSTREAM_TIMEOUT", default_value = "10m")]
    pub upstream_timeout: String,
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
    #[arg(long, env = "FOREMAN_WEBHOOK_RETRY_BASE", default_value = "30s")]
    pub webhook_retry_base: String,
    /// Longest pause between two attempts at one webhook delivery.
    #[arg(long, env = "FOREMAN_WEBHOOK_RETRY_MAX", default_value = "4h")]
    pub webhook_retry_max: String,
    /// How long a webhook receiver has to answer an attempt.
    #[arg(long, env = "FOREMAN_WEBHOOK_TIMEOUT", default_value = "15s")]
    pub webhook_timeout: String,
    /// Attempts per webhook delivery before it is marked failed.
    #[arg(long, env = "FOREMAN_WEBHOOK_MAX_ATTEMPTS", default_value_t = 10)]
    pub webhook_max_attempts: u32,
    /// Pass model management (/api/pull, /api/push, /api/create, /api/copy, /api/delete)
    /// through to the target; false answers 403.
    #[arg(
        long,
        env = "FOREMAN_ALLOW_MODEL_MANAGEMENT",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub allow_model_management: bool,
    /// Folder for files foreman keeps beside the database (large job results).
    #[arg(long, env = "FOREMAN_DATA_DIR", default_value = "foreman-data")]
    pub data_dir: std::path::PathBuf,
    /// Results larger than this many bytes are stored as files (artifacts), not in the row.
    #[arg(long, env = "FOREMAN_ARTIFACT_THRESHOLD", default_value_t = 1024 * 1024)]
    pub artifact_threshold: usize,
    /// How long a running job's lease lasts without a heartbeat (sent every third of
    /// it); a job whose lease lapses is requeued by the janitor.
    #[arg(long, env = "FOREMAN_LEASE", default_value = "30s")]
    pub lease: String,
    /// How often the janitor prunes finished jobs and requeues jobs whose lease lapsed.
    #[arg(long, env = "FOREMAN_JANITOR_INTERVAL", default_value = "60s")]
    pub janitor_interval: String,
    /// Origins whose web pages may call foreman, comma-separated, `*` as a wildcard (as
    /// OLLAMA_ORIGINS), on top of Ollama's defaults: localhost, 127.0.0.1 and 0.0.0.0
    /// on any port over http(s), app://, file://, tauri://, vscode-webview://,
    /// vscode-file://. Other origins get 403.
    #[arg(long, env = "FOREMAN_ORIGINS", default_value = "")]
    pub origins: String,
    /// Log filter, e.g. info or foreman=debug.
    #[arg(long, env = "FOREMAN_LOG", default_value = "info")]
    pub log: String,
}

/// Priority of a queued request that sends no X-Foreman-Priority header; the
/// configured priority range must contain it.
pub const SYNC_PRIORITY: i32 = 10;

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    /// Upstream base URL without a trailing slash (replaced by the simulator's with
    /// `--simulate`).
    pub ollama_url: String,
    pub simulate: bool,
    pub database: String,
    pub token: Option<String>,
    pub max_attempts: u32,
    pub job_ttl: Duration,
    pub poll_interval: Duration,
    pub max_wait: Duration,
    pub max_queue: u64,
    pub max_body: usize,
    pub retry_base: Duration,
    pub shutdown_grace: Duration,
    pub upstream_timeout: Duration,
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
    pub data_dir: std::path::PathBuf,
    pub artifact_threshold: usize,
    pub lease: Duration,
    pub janitor_interval: Duration,
    /// Origins allowed besides Ollama's defaults (`FOREMAN_ORIGINS`, checked).
    pub origins: Vec<String>,
    pub log: String,
}

/// A setting that cannot be used, named by flag and variable.
#[derive(Debug, Error, PartialEq)]
#[error("invalid --{flag} (FOREMAN_{env}): {reason}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub env: &'static str,
    pub reason: String,
}

fn invalid(flag: &'static str, env: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        env,
        reason: reason.into(),
    }
}

fn duration(
    text: &str,
    flag: &'static str,
    env: &'static str,
    allow_zero: bool,
) -> Result<Duration, ConfigError> {
    let value = humantime::parse_duration(text.trim()).map_err(|e| {
        invalid(
            flag,
            env,
            format!("{text:?} is not a duration like 30s or 24h ({e})"),
        )
    })?;
    if value.is_zero() && !allow_zero {
        return Err(invalid(flag, env, "must be greater than zero"));
    }
    Ok(value)
}

impl ServeArgs {
    /// Checks every setting and converts it to its typed form.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let addr = self
            .addr
            .parse()
            .map_err(|_| invalid("addr", "ADDR", format!("{:?} is not HOST:PORT", self.addr)))?;
        let ollama_url = self.ollama_url.trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&ollama_url).map_err(|e| {
            invalid(
                "ollama-url",
                "OLLAMA_URL",
                format!("{:?}: {e}", self.ollama_url),
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid(
                "ollama-url",
                "OLLAMA_URL",
                "the scheme must be http or https",
            ));
        }
        if self.database.trim().is_empty() {
            return Err(invalid("database", "DATABASE", "must not be empty"));
        }
        if let Some(token) = &self.token
            && token.trim().is_empty()
        {
            return Err(invalid("token", "TOKEN", "must not be empty when set"));
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(invalid(
                "max-attempts",
                "MAX_ATTEMPTS",
                "must be between 1 and 100",
            ));
        }
        if self.max_queue == 0 {
            return Err(invalid("max-queue", "MAX_QUEUE", "must be at least 1"));
        }
        if self.max_body < 1024 {
            return Err(invalid(
                "max-body",
                "MAX_BODY",
                "must be at least 1024 bytes",
            ));
        }
        if self.priority_min > self.priority_max {
            return Err(invalid(
                "priority-min",
                "PRIORITY_MIN",
                format!(
                    "{} is above --priority-max (FOREMAN_PRIORITY_MAX), {}",
                    self.priority_min, self.priority_max
                ),
            ));
        }
        if self.priority_min > SYNC_PRIORITY {
            return Err(invalid(
                "priority-min",
                "PRIORITY_MIN",
                format!(
                    "must be at most {SYNC_PRIORITY}, the priority of requests without X-Foreman-Priority"
                ),
            ));
        }
        if self.priority_max < SYNC_PRIORITY {
            return Err(invalid(
                "priority-max",
                "PRIORITY_MAX",
                format!(
                    "must be at least {SYNC_PRIORITY}, the priority of requests without X-Foreman-Priority"
                ),
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log)
            .map_err(|e| invalid("log", "LOG", e.to_string()))?;
        Ok(Config {
            addr,
            ollama_url,
            simulate: self.simulate,
            database: self.database.clone(),
            token: self.token.clone(),
            max_attempts: self.max_attempts,
            job_ttl: duration(&self.job_ttl, "job-ttl", "JOB_TTL", false)?,
            poll_interval: duration(&self.poll_interval, "poll-interval", "POLL_INTERVAL", false)?,
            max_wait: duration(&self.max_wait, "max-wait", "MAX_WAIT", true)?,
            max_queue: self.max_queue,
            max_body: self.max_body,
            retry_base: duration(&self.retry_base, "retry-base", "RETRY_BASE", true)?,
            shutdown_grace: duration(
                &self.shutdown_grace,
                "shutdown-grace",
                "SHUTDOWN_GRACE",
                true,
            )?,
            upstream_timeout: duration(
                &self.upstream_timeout,
                "upstream-timeout",
                "UPSTREAM_TIMEOUT",
                false,
            )?,
            priority_min: self.priority_min,
            priority_max: self.priority_max,
            webhook_key: self
                .webhook_secret
                .as_deref()
                .map(|secret| {
                    crate::webhook::decode_secret(secret)
                        .map_err(|reason| invalid("webhook-secret", "WEBHOOK_SECRET", reason))
                })
                .transpose()?,
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
            webhook_retry_base: duration(
                &self.webhook_retry_base,
                "webhook-retry-base",
                "WEBHOOK_RETRY_BASE",
                true,
            )?,
            webhook_retry_max: duration(
                &self.webhook_retry_max,
                "webhook-retry-max",
                "WEBHOOK_RETRY_MAX",
                true,
            )?,
            webhook_timeout: duration(
                &self.webhook_timeout,
                "webhook-timeout",
                "WEBHOOK_TIMEOUT",
                false,
            )?,
            webhook_max_attempts: match self.webhook_max_attempts {
                1..=100 => self.webhook_max_attempts,
                _ => {
                    return Err(invalid(
                        "webhook-max-attempts",
                        "WEBHOOK_MAX_ATTEMPTS",
                        "must be between 1 and 100",
                    ));
                }
            },
            webhook_resolver: crate::webhook::Resolver::default(),
            allow_model_management: self.allow_model_management,
            data_dir: self.data_dir.clone(),
            artifact_threshold: self.artifact_threshold,
            lease: duration(&self.lease, "lease", "LEASE", false)?,
            janitor_interval: duration(
                &self.janitor_interval,
                "janitor-interval",
                "JANITOR_INTERVAL",
                false,
            )?,
            origins: crate::api::origin_guard::parse_origins(&self.origins)
                .map_err(|reason| invalid("origins", "ORIGINS", reason))?,
            log: self.log.clone(),
        })
    }
}

impl Config {
    /// Settings for tests and embedding: the defaults, with the given upstream and
    /// database. `FOREMAN_*` variables are not read, so a caller's environment changes
    /// nothing.
    pub fn for_upstream(ollama_url: &str, database: &str) -> Config {
        let mut config = ServeArgs::defaults()
            .validate()
            .expect("the defaults are valid");
        config.ollama_url = ollama_url.trim_end_matches('/').to_string();
        config.database = database.to_string();
        config
    }
}

impl ServeArgs {
    /// The default of every setting, as `foreman serve` has them with no flags and no
    /// `FOREMAN_*` variables: the environment is not read.
    pub fn defaults() -> ServeArgs {
        use clap::{Args as _, FromArgMatches as _};
        let command = ServeArgs::augment_args(clap::Command::new("foreman"))
            .mut_args(|arg| arg.env(None::<&str>));
        let matches = command
            .try_get_matches_from(["foreman"])
            .expect("defaults parse");
        ServeArgs::from_arg_matches(&matches).expect("defaults parse")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = Config::for_upstream("http://127.0.0.1:1/", "x.db");
        assert_eq!(config.ollama_url, "http://127.0.0.1:1");
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
        assert_eq!(config.lease, Duration::from_secs(30));
        assert_eq!(config.addr, "127.0.0.1:11435".parse().unwrap());
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

    #[test]
    fn bad_values_name_the_setting() {
        let mut args = ServeArgs::defaults();
        args.job_ttl = "soon".into();
        let error = args.validate().unwrap_err();
        assert_eq!(error.flag, "job-ttl");
        assert!(
            error
                .to_string()
                .starts_with("invalid --job-ttl (FOREMAN_JOB_TTL): ")
        );
        let mut args = ServeArgs::defaults();
        args.ollama_url = "ftp://x".into();
        assert_eq!(args.validate().unwrap_err().flag, "ollama-url");
        let mut args = ServeArgs::defaults();
        args.addr = "nowhere".into();
        assert_eq!(args.validate().unwrap_err().flag, "addr");
        let mut args = ServeArgs::defaults();
        args.max_attempts = 0;
        assert_eq!(args.validate().unwrap_err().flag, "max-attempts");
        let mut args = ServeArgs::defaults();
        args.lease = "0s".into();
        assert_eq!(args.validate().unwrap_err().flag, "lease");
        let mut args = ServeArgs::defaults();
        args.janitor_interval = "often".into();
        assert_eq!(args.validate().unwrap_err().flag, "janitor-interval");
        let mut args = ServeArgs::defaults();
        args.origins = "app.example".into();
        assert_eq!(args.validate().unwrap_err().flag, "origins");
    }
}
