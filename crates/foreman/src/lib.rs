//! foreman: a durable, model-draining job queue in front of Ollama.
//!
//! Clients speak Ollama's API to foreman. Every generation request becomes a job in
//! a durable queue ([`foreman_store`]); the [`runner`]s, one per slot of every
//! [`targets`] entry (the Ollama servers), run them as the [`scheduler`] decides
//! (priority first, then draining what is loaded, by load key, with a bound on
//! waiting), and relay the answer back through the [`hub`]. Embeddings go
//! straight to a target that has the model; listings come from each target's polled
//! inventory. See ARCHITECTURE.md for the map.

pub mod aggregate;
pub mod api;
pub mod artifacts;
pub mod backoff;
pub mod batch;
pub mod caller;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db_cli;
pub mod hub;
pub mod janitor;
pub mod keys;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod model_name;
pub mod output_relay;
pub mod ownership;
pub mod runner;
pub mod scheduler;
pub mod signals;
pub mod status_cli;
pub mod targets;
pub mod upstream;
pub mod webhook;

use std::sync::Arc;

use foreman_store::Store;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::api::AppState;
use crate::config::Config;
use crate::hub::Hub;
use crate::runner::{Dispatcher, RunnerSettings, Runners, RunningJobs};
use crate::targets::Targets;

/// Why foreman could not run.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error("cannot open the job store: {0}")]
    Store(#[from] foreman_store::Error),
    #[error("the HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs foreman on `listener` until `shutdown` is cancelled, then drains: no new
/// requests, the running job gets its grace period, queued jobs stay in the store.
pub async fn serve(
    listener: TcpListener,
    mut config: Config,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("FOREMAN_DATA_DIR {}: {error}", config.data_dir.display()),
        )
    })?;
    // Every job this instance accepts records it (`accepted_by`).
    let store = Store::open(&config.database)
        .await?
        .with_instance(&config.instance_id);
    // Synchronous callers' connections died with the last process: their jobs would
    // run for nobody, and a caller told to retry would pay twice. On a shared database
    // only this instance's: other instances' callers are alive (the janitor's holder
    // abandons those of instances that are gone).
    let abandoned = if store.is_shared() {
        store
            .abandon_sync_jobs_of(&config.instance_id, clock::now_ms())
            .await?
    } else {
        store.abandon_sync_jobs(clock::now_ms()).await?
    };
    // On a shared (PostgreSQL) database, only this instance's own previous jobs: those
    // of other instances are theirs, or rescued when their leases lapse.
    let requeued = if store.is_shared() {
        let own = format!("{}/", config.instance_id);
        store.recover_running_owned(&own, clock::now_ms()).await?
    } else {
        store.recover_running(clock::now_ms()).await?
    };
    let database = store.location();
    let schema_version = store.schema_version().await?;
    let queued = store.queue_depth().await?;
    // One line that says which queue this is and what the last run left in it.
    tracing::info!(
        database,
        schema_version,
        instance = config.instance_id,
        requeued_running = requeued,
        queued,
        abandoned_sync = abandoned,
        "opened the job queue"
    );
    let targets = Targets::new(
        &config.targets,
        config.upstream_timeout,
        config.poll_interval,
    );
    targets.poll_all().await;
    // Which targets this instance schedules (and whether it runs the janitor): taken
    // once before the runners start, then renewed until they have stopped.
    let janitor_lease = Arc::new(ownership::Ownership::default());
    let keeper = ownership::LeaseKeeper {
        store: store.clone(),
        targets: targets.clone(),
        janitor: janitor_lease.clone(),
        instance: config.instance_id.clone(),
        ttl: config.lease_ttl,
    };
    keeper.start().await;
    let leases_done = CancellationToken::new();
    let keeper = tokio::spawn(keeper.run(leases_done.clone()));
    let hub = Arc::new(Hub::default());
    let running = Arc::new(RunningJobs::default());
    let wake = Arc::new(Notify::new());
    let finished = Arc::new(Notify::new());
    let metrics = Arc::new(metrics::Metrics::default());
    // Feeds read here and run elsewhere: filled by the signal relay, cut by the runners.
    let relayed_output = Arc::new(output_relay::Pull::default());
    let mut tasks = tokio::task::JoinSet::new();
    for target in targets.all() {
        tasks.spawn(target.inventory.clone().run(shutdown.clone()));
    }
    tasks.spawn(janitor::run(
        store.clone(),
        janitor_lease,
        config.job_ttl,
        config.data_dir.clone(),
        config.janitor_interval,
        // Two lease TTLs: an instance's first lease write may fail and be tried again.
        config.lease_ttl * 2,
        shutdown.clone(),
    ));
    tasks.spawn(
        signals::Relay {
            store: store.clone(),
            hub: hub.clone(),
            running: running.clone(),
            wake: wake.clone(),
            finished: finished.clone(),
            mode: config.signals,
            poll_interval: config.signal_poll_interval,
            output: relayed_output.clone(),
        }
        .run(shutdown.clone()),
    );
    let settings = RunnerSettings::from_config(&config);
    let job_dispatcher = Arc::new(Dispatcher::new(
        store.clone(),
        targets.clone(),
        running.clone(),
        &settings,
        wake.clone(),
        metrics.clone(),
    ));
    let runners = Runners {
        store: store.clone(),
        targets: targets.clone(),
        hub: hub.clone(),
        running: running.clone(),
        wake: wake.clone(),
        finished: finished.clone(),
        metrics: metrics.clone(),
        settings,
        dispatcher: job_dispatcher.clone(),
        relayed_output,
    };
    tasks.spawn(runners.run(shutdown.clone()));
    if let Some(key) = config.webhook_key.clone() {
        let dispatcher = webhook::Dispatcher {
            store: store.clone(),
            key,
            policy: webhook::AddressPolicy::from_config(&config),
            retry_base: config.webhook_retry_base,
            retry_max: config.webhook_retry_max,
            max_attempts: config.webhook_max_attempts,
            timeout: config.webhook_timeout,
            wake: finished.clone(),
            metrics: metrics.clone(),
        };
        tasks.spawn(dispatcher.run(shutdown.clone()));
    }
    let keys = Arc::new(keys::KeyRing::new(store.clone(), config.token.as_deref()));
    if let Err(error) = keys.reload().await {
        tracing::warn!(%error, "could not read the API keys; will try again at the next request");
    }
    let batch_kick = Arc::new(Notify::new());
    tasks.spawn(
        batch::Driver {
            store: store.clone(),
            config: Arc::new(config.clone()),
            targets: targets.clone(),
            running: running.clone(),
            hub: hub.clone(),
            metrics: metrics.clone(),
            wake: wake.clone(),
            kick: batch_kick.clone(),
            finished: finished.clone(),
            keys: keys.clone(),
        }
        .run(shutdown.clone()),
    );
    // The origin guard checks Host only on a loopback listener, as Ollama decides from
    // the address it actually bound, not from the setting.
    config.addr = listener.local_addr()?;
    tasks.spawn(keys::ledger::flush_until(
        metrics.clone(),
        store.clone(),
        shutdown.clone(),
    ));
    let state = AppState {
        config: Arc::new(config),
        keys,
        store: store.clone(),
        hub,
        targets,
        running,
        wake,
        dispatcher: job_dispatcher,
        show_cache: Arc::default(),
        metrics,
        shutdown: shutdown.clone(),
        batch_kick,
    };
    logging::log_start(&state.config, &database);
    tokio::spawn(log_shutdown(
        shutdown.clone(),
        state.running.clone(),
        store.clone(),
        state.config.shutdown_grace,
    ));
    let connections = listener::ConnectionSettings::from_config(&state.config);
    listener::serve(listener, api::router(state), connections, shutdown.clone()).await;
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    // The runners have ended: the leases go, so another instance takes over at once.
    leases_done.cancel();
    let _ = keeper.await;
    store.close().await;
    tracing::info!("foreman stopped");
    Ok(())
}

/// Says, once shutdown begins, what it waits for and for how long.
async fn log_shutdown(
    shutdown: CancellationToken,
    running: Arc<RunningJobs>,
    store: Store,
    grace: std::time::Duration,
) {
    shutdown.cancelled().await;
    let queued = store.queue_depth().await.unwrap_or(0);
    let grace = humantime::format_duration(grace);
    match running.len() {
        0 => tracing::info!(
            queued,
            "shutting down: no job is running; queued jobs stay in the queue"
        ),
        jobs => tracing::info!(
            running = jobs,
            queued,
            "shutting down: waiting up to {grace} for {jobs} running job{}, then they are requeued; queued jobs stay in the queue",
            if jobs == 1 { "" } else { "s" }
        ),
    }
}
