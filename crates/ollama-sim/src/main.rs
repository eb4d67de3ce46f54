//! The `ollama-sim` binary: parses flags into a [`SimConfig`] and serves until
//! SIGINT or SIGTERM.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use ollama_sim::{Faults, KeepAlive, ModelSpec, SimConfig, default_models};

/// A deterministic Ollama server simulator with model residency, load times, faults
/// and counters.
#[derive(Debug, Parser)]
#[command(name = "ollama-sim", version)]
struct Args {
    /// Address to listen on (Ollama's default is 127.0.0.1:11434).
    #[arg(long, env = "OLLAMA_SIM_ADDR", default_value = "127.0.0.1:11434")]
    addr: SocketAddr,
    /// A second address serving only /sim/* that never refuses connections.
    #[arg(long, env = "OLLAMA_SIM_CONTROL_ADDR")]
    control_addr: Option<SocketAddr>,
    /// A model: NAME[,load=2s][,tps=60][,prompt_tps=1200][,batch=1,1.7,2.4,3][,size=2GB][,dim=768][,ctx=4096][,embed][,tools][,thinking][,vision].
    /// Repeat for several. Without any: llama3.2:3b, qwen2.5:7b and nomic-embed-text.
    #[arg(long = "model", value_parser = parse_model)]
    models: Vec<ModelSpec>,
    /// Models resident at once (OLLAMA_MAX_LOADED_MODELS; 0 is Ollama's automatic 3).
    /// Default: 1, or 3 (Ollama's default for one GPU) when --vram is given.
    #[arg(long)]
    max_loaded: Option<usize>,
    /// Concurrent requests per loaded model.
    #[arg(long, default_value_t = 1)]
    num_parallel: usize,
    /// Requests waiting for a model load before answering 503 "server busy"
    /// (requests for a loaded model wait for a slot without limit).
    #[arg(long, default_value_t = 512)]
    max_queue: usize,
    /// GPU memory for models (24GB, 8GiB...): models load side by side while they fit.
    /// Without it memory is unlimited and only --max-loaded counts.
    #[arg(long, value_parser = parse_vram)]
    vram: Option<u64>,
    /// num_ctx of requests that give none (OLLAMA_CONTEXT_LENGTH).
    #[arg(long, default_value_t = 4096)]
    context_length: u32,
    /// Default keep-alive: a Go duration (5m, 300ms) or seconds; 0 unloads at once, negative keeps forever.
    #[arg(long, default_value = "5m", value_parser = KeepAlive::parse_flag, allow_hyphen_values = true)]
    keep_alive: KeepAlive,
    /// Reply length in tokens when options.num_predict does not cap it.
    #[arg(long, default_value_t = 24)]
    reply_tokens: usize,
    /// Fraction of inference requests failing with 500 before any output.
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Fraction of inference responses cut off halfway (connection closed).
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// Fraction of inference requests that never get a response.
    #[arg(long = "stall-rate", alias = "stall", default_value_t = 0.0)]
    stall_rate: f64,
    /// Fraction of inference requests answered 503 "server busy".
    #[arg(long, default_value_t = 0.0)]
    busy_rate: f64,
    /// Fraction of inference requests answered with --error-status before any output.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// The status of --error-rate answers (429, 502, 504...).
    #[arg(long, default_value_t = 502)]
    error_status: u16,
    /// Seed for the fault draws.
    #[arg(long, default_value_t = 0x5eed)]
    seed: u64,
    /// Version reported by /api/version.
    #[arg(long, default_value = "0.33.0")]
    ollama_version: String,
    /// Origins allowed to call the simulator from a web page, comma-separated, `*` as a
    /// wildcard, on top of Ollama's defaults (localhost, 127.0.0.1, 0.0.0.0 on any port,
    /// app://, file://, tauri://, vscode-webview://, vscode-file://).
    #[arg(long, env = "OLLAMA_ORIGINS", default_value = "")]
    origins: String,
    /// Log filter (e.g. info, debug).
    #[arg(long, env = "OLLAMA_SIM_LOG", default_value = "info")]
    log: String,
}

fn parse_vram(text: &str) -> Result<u64, String> {
    ollama_sim::spec::parse_size(text)
}

fn parse_model(text: &str) -> Result<ModelSpec, String> {
    ModelSpec::parse(text).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log).context("--log")?)
        .with_writer(std::io::stderr)
        .init();
    let faults = Faults {
        fail_rate: args.fail_rate,
        drop_rate: args.drop_rate,
        stall_rate: args.stall_rate,
        busy_rate: args.busy_rate,
        error_rate: args.error_rate,
        error_status: args.error_status,
        hold: false,
        refuse_connections: false,
    };
    faults.validate().map_err(anyhow::Error::msg)?;
    let origins = ollama_sim::split_origins(&args.origins);
    ollama_sim::check_origins(&origins)
        .map_err(anyhow::Error::msg)
        .context("--origins (OLLAMA_ORIGINS)")?;
    let config = SimConfig {
        models: if args.models.is_empty() {
            default_models()
        } else {
            args.models
        },
        max_loaded: args.max_loaded.unwrap_or(match args.vram {
            Some(_) => ollama_sim::residency::DEFAULT_MODELS_PER_GPU,
            None => 1,
        }),
        num_parallel: args.num_parallel,
        max_queue: args.max_queue,
        vram: args.vram,
        context_length: args.context_length,
        keep_alive: args.keep_alive,
        reply_tokens: args.reply_tokens,
        faults,
        seed: args.seed,
        version: args.ollama_version,
        origins,
    };
    let names: Vec<String> = config.models.iter().map(|m| m.display_name()).collect();
    let handle = ollama_sim::server::spawn_with_control(args.addr, args.control_addr, config)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    tracing::info!(addr = %handle.addr(), control = ?handle.control_addr(), models = ?names, "ollama-sim listening");
    println!(
        "ollama-sim listening on {} with models {}",
        handle.url(),
        names.join(", ")
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
