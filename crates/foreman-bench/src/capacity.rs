//! The workloads about using a target's whole capacity: several slots per model
//! (`parallel`), several models resident at once (`places`, `parallel-places`),
//! several targets (`targets`) and requests whose options would make Ollama reload
//! the model (`drift`).
//!
//! Each runs the same requests straight to fresh simulators and through foreman in
//! front of fresh ones with the same flags, and tells foreman each simulator's
//! capacity with `FOREMAN_TARGETS`. The first three are graded on foreman keeping up
//! with direct (it must not throw slots or places away); `targets` and `drift` on
//! foreman loading far less than direct and finishing sooner.

use anyhow::Result;
use serde_json::{Value, json};

use crate::chart::{self, PassTimeline};
use crate::driver::Planned;
use crate::metrics::{model_peak_in_flight, peaks_text};
use crate::targets::{Comparison, Scale, Targets};
use crate::workloads::{
    Bench, ForemanSetup, Pass, Plan, SimSetup, WorkloadReport, args, chat, committed, raw, round2,
    target_name,
};

/// Tokens in every reply (`--reply-tokens`), so a request's run is this over `tps`.
const REPLY_TOKENS: usize = 20;

/// foreman keeps up with direct when its throughput is at least this share of it.
const KEEP_UP: f64 = 0.95;

/// The scale of a capacity workload: closed-loop clients, each sending
/// `per_client` chats in turn, to models that load in `load_ms` and generate `tps`
/// tokens per second.
struct ChatScale {
    clients: usize,
    per_client: usize,
    load_ms: u64,
    tps: u64,
}

impl ChatScale {
    fn requests(&self) -> usize {
        self.clients * self.per_client
    }

    fn model_spec(&self, model: &str) -> String {
        format!("{model},load={}ms,tps={}", self.load_ms, self.tps)
    }
}

/// Simulator flags: slots, places, the reply length and each model at this scale.
fn sim_args(slots: usize, places: usize, models: &[&str], scale: &ChatScale) -> Vec<String> {
    let mut list = args(&[
        "--num-parallel",
        &slots.to_string(),
        "--max-loaded",
        &places.to_string(),
        "--reply-tokens",
        &REPLY_TOKENS.to_string(),
    ]);
    for model in models {
        list.push("--model".into());
        list.push(scale.model_spec(model));
    }
    list
}

/// Client `c`'s `k`th request is for `models[(c + k) % models.len()]`, so clients
/// cycle through the models and, at any moment, ask for different ones.
fn interleaved_plan(models: &[&str], scale: &ChatScale) -> Vec<Vec<Planned>> {
    (0..scale.clients)
        .map(|client| {
            (0..scale.per_client)
                .map(|turn| {
                    chat(
                        models[(client + turn) % models.len()],
                        format!("client {client} turn {turn}"),
                        false,
                    )
                })
                .collect()
        })
        .collect()
}

fn timeline(name: &str, direct: &Pass, through: &Pass) -> String {
    chart::render(
        name,
        &[
            PassTimeline {
                label: "straight to the target",
                records: &direct.records,
                events: &direct.events,
            },
            PassTimeline {
                label: "through foreman",
                records: &through.records,
                events: &through.events,
            },
        ],
    )
}

/// A counter summed over a pass's simulators.
fn counter(pass: &Pass, key: &str) -> u64 {
    pass.sim_stats
        .iter()
        .filter_map(|stats| stats[key].as_u64())
        .sum()
}

/// Most requests in flight at once, both passes, or that the simulator does not say.
fn peaks_finding(direct: &Pass, through: &Pass) -> String {
    let (straight, via) = (
        peaks_text(&direct.summary.peak_in_flight),
        peaks_text(&through.summary.peak_in_flight),
    );
    if straight == "-" && via == "-" {
        "most requests in flight at once: not known (this simulator's /sim/stats has no peak_in_flight)".into()
    } else {
        format!("most requests in flight at once: {straight} straight, {via} through foreman")
    }
}

/// Per-model peaks in flight on each target, where the simulator reports them.
fn model_peaks(pass: &Pass, models: &[&str]) -> Option<String> {
    let mut parts = Vec::new();
    for (index, stats) in pass.sim_stats.iter().enumerate() {
        for model in models {
            if let Some(peak) = model_peak_in_flight(stats, model) {
                if pass.sim_stats.len() > 1 {
                    parts.push(format!("{} {model} {peak}", target_name(index)));
                } else {
                    parts.push(format!("{model} {peak}"));
                }
            }
        }
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn makespan_ratio(direct: &Pass, through: &Pass) -> f64 {
    direct.summary.makespan_s / through.summary.makespan_s.max(1e-9)
}

fn makespan_detail(direct: &Pass, through: &Pass) -> String {
    format!(
        "{:.2} s straight / {:.2} s through foreman",
        direct.summary.makespan_s, through.summary.makespan_s
    )
}

/// The two load targets of `targets` and `drift`: fewer loads than direct at any
/// scale, and at least `times` fewer (with a makespan `times_shorter` shorter) at
/// full scale.
fn load_targets(
    targets: &mut Targets,
    direct: &Pass,
    through: &Pass,
    times: f64,
    times_shorter: f64,
) {
    let (straight, via) = (direct.summary.loads, through.summary.loads);
    targets.check(
        "foreman loads less than direct",
        via as f64,
        Comparison::Below,
        straight as f64,
        "loads",
        Scale::Independent,
        format!(
            "{via} through foreman, {straight} straight (reloads: {} through foreman, {} straight)",
            through.summary.reloads, direct.summary.reloads
        ),
    );
    targets.check(
        "times fewer loads than direct",
        round2(straight as f64 / via.max(1) as f64),
        Comparison::AtLeast,
        times,
        "x",
        Scale::Full,
        format!("{straight} straight / {via} through foreman"),
    );
    targets.check(
        "times shorter makespan than direct",
        round2(makespan_ratio(direct, through)),
        Comparison::AtLeast,
        times_shorter,
        "x",
        Scale::Full,
        makespan_detail(direct, through),
    );
}

impl Bench {
    fn chat_scale(&self) -> ChatScale {
        if self.quick {
            ChatScale {
                clients: 8,
                per_client: 2,
                load_ms: 50,
                tps: 1000,
            }
        } else {
            ChatScale {
                clients: 16,
                per_client: 3,
                load_ms: 300,
                tps: 100,
            }
        }
    }

    /// One model, four slots: foreman must run four requests at once, as direct does.
    pub(crate) async fn parallel(&self) -> Result<WorkloadReport> {
        self.keep_up(
            "parallel",
            &["solo:3b"],
            4,
            1,
            "one model, 4 slots (--num-parallel 4): closed-loop clients",
        )
        .await
    }

    /// Two models resident at once, one slot each.
    pub(crate) async fn places(&self) -> Result<WorkloadReport> {
        self.keep_up(
            "places",
            &["alpha:3b", "beta:3b"],
            1,
            2,
            "two models resident at once (--max-loaded 2), one slot each: closed-loop clients alternating between them",
        )
        .await
    }

    /// Two models resident at once, four slots each.
    pub(crate) async fn parallel_places(&self) -> Result<WorkloadReport> {
        self.keep_up(
            "parallel-places",
            &["alpha:3b", "beta:3b"],
            4,
            2,
            "two models resident at once with 4 slots each (--max-loaded 2 --num-parallel 4): closed-loop clients alternating between them",
        )
        .await
    }

    /// Work direct serves without a swap: foreman must keep up with it, which it can
    /// only do by filling every slot of every resident model.
    async fn keep_up(
        &self,
        name: &str,
        models: &[&str],
        slots: usize,
        places: usize,
        description: &str,
    ) -> Result<WorkloadReport> {
        let scale = self.chat_scale();
        let sims = [SimSetup {
            args: sim_args(slots, places, models, &scale),
            slots,
            places,
        }];
        let foreman = ForemanSetup {
            env: Vec::new(),
            announce_targets: true,
            sample_eta: false,
        };
        let plan = Plan::Closed(interleaved_plan(models, &scale));
        let (direct, through) = self.both_on(name, &sims, &foreman, &[], plan).await?;
        let ratio = makespan_ratio(&direct, &through);
        let mut targets = Targets::new(name, self.quick);
        targets.check(
            "foreman's throughput over direct's",
            round2(ratio),
            Comparison::AtLeast,
            KEEP_UP,
            "x",
            Scale::Full,
            makespan_detail(&direct, &through),
        );
        targets.no_errors(&[direct.errors(), through.errors()]);
        committed(&mut targets, &through);
        let mut findings = vec![
            format!(
                "makespan: {:.2} s straight, {:.2} s through foreman: foreman's throughput is {ratio:.2}x direct's",
                direct.summary.makespan_s, through.summary.makespan_s
            ),
            format!(
                "{} (the target has {slots} slot(s) per model and {places} place(s))",
                peaks_finding(&direct, &through)
            ),
        ];
        if let (Some(straight), Some(via)) =
            (model_peaks(&direct, models), model_peaks(&through, models))
        {
            findings.push(format!(
                "most in flight per model: {straight} straight; {via} through foreman"
            ));
        }
        findings.push(format!(
            "loads: {} straight, {} through foreman; swaps: {} straight, {} through foreman",
            direct.summary.loads,
            through.summary.loads,
            direct.summary.swaps,
            through.summary.swaps
        ));
        Ok(WorkloadReport {
            name: name.into(),
            description: description.into(),
            parameters: json!({
                "models": models.iter().map(|m| scale.model_spec(m)).collect::<Vec<_>>(),
                "num_parallel": slots,
                "max_loaded": places,
                "clients": scale.clients,
                "requests": scale.requests(),
                "reply_tokens": REPLY_TOKENS,
                "FOREMAN_TARGETS": format!("<sim>,slots={slots},places={places}"),
            }),
            rows: vec![direct.summary.clone(), through.summary.clone()],
            targets: targets.into_vec(),
            findings,
            svg: Some(timeline(name, &direct, &through)),
            raw: raw(&direct, &through),
        })
    }

    /// Three targets with 2 slots and 1, 2 and 2 places, five models on each.
    ///
    /// Straight to the targets, each client calls one fixed target (client `i`
    /// calls target `i % 3`), as users without foreman would each be given a
    /// server; with five models and at most two places, every target swaps all
    /// the time. foreman, told of all three, can keep all five models resident
    /// (1 + 2 + 2 places) and send each request where its model is.
    pub(crate) async fn targets(&self) -> Result<WorkloadReport> {
        const PLACES: [usize; 3] = [1, 2, 2];
        const SLOTS: usize = 2;
        let models = ["alpha:7b", "beta:7b", "gamma:7b", "delta:7b", "epsilon:7b"];
        let scale = if self.quick {
            ChatScale {
                clients: 9,
                per_client: 2,
                load_ms: 100,
                tps: 1000,
            }
        } else {
            ChatScale {
                clients: 15,
                per_client: 4,
                load_ms: 500,
                tps: 100,
            }
        };
        let sims: Vec<SimSetup> = PLACES
            .iter()
            .map(|&places| SimSetup {
                args: sim_args(SLOTS, places, &models, &scale),
                slots: SLOTS,
                places,
            })
            .collect();
        let foreman = ForemanSetup {
            env: Vec::new(),
            announce_targets: true,
            sample_eta: false,
        };
        let plan = Plan::Closed(interleaved_plan(&models, &scale));
        let (direct, through) = self.both_on("targets", &sims, &foreman, &[], plan).await?;
        let mut targets = Targets::new("targets", self.quick);
        load_targets(&mut targets, &direct, &through, 4.0, 2.0);
        targets.no_errors(&[direct.errors(), through.errors()]);
        committed(&mut targets, &through);

        let per_target = |pass: &Pass, key: &str| -> String {
            pass.sim_stats
                .iter()
                .enumerate()
                .map(|(index, stats)| {
                    format!(
                        "{} {}",
                        target_name(index),
                        stats[key].as_u64().unwrap_or(0)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let findings = vec![
            format!(
                "loads summed over the three targets: {} straight, {} through foreman ({:.1}x fewer)",
                direct.summary.loads,
                through.summary.loads,
                direct.summary.loads as f64 / through.summary.loads.max(1) as f64
            ),
            format!(
                "makespan: {:.2} s straight, {:.2} s through foreman ({:.2}x shorter)",
                direct.summary.makespan_s,
                through.summary.makespan_s,
                makespan_ratio(&direct, &through)
            ),
            format!(
                "requests per target: {} straight; {} through foreman",
                per_target(&direct, "requests_total"),
                per_target(&through, "requests_total")
            ),
            format!(
                "loads per target (places {PLACES:?}): {} straight; {} through foreman",
                per_target(&direct, "loads_total"),
                per_target(&through, "loads_total")
            ),
            format!(
                "{} (each target has {SLOTS} slots per model)",
                peaks_finding(&direct, &through)
            ),
        ];
        let specs: Vec<Value> = PLACES
            .iter()
            .enumerate()
            .map(|(index, places)| {
                json!(format!(
                    "<{}>,name={},slots={SLOTS},places={places}",
                    target_name(index),
                    target_name(index)
                ))
            })
            .collect();
        Ok(WorkloadReport {
            name: "targets".into(),
            description: format!(
                "three targets ({SLOTS} slots; 1, 2 and 2 places), five models on each, closed-loop clients cycling through the models; straight, client i calls target i % 3; through foreman, one foreman in front of all three"
            ),
            parameters: json!({
                "models": models.iter().map(|m| scale.model_spec(m)).collect::<Vec<_>>(),
                "num_parallel": SLOTS,
                "max_loaded": PLACES,
                "clients": scale.clients,
                "requests": scale.requests(),
                "reply_tokens": REPLY_TOKENS,
                "FOREMAN_TARGETS": specs,
            }),
            rows: vec![direct.summary.clone(), through.summary.clone()],
            targets: targets.into_vec(),
            findings,
            svg: Some(timeline("targets", &direct, &through)),
            raw: raw(&direct, &through),
        })
    }

    /// One model, one slot, clients whose options drift.
    ///
    /// Clients alternate `num_ctx` 2048 and 8192, which makes Ollama reload the
    /// model whenever the next request differs from the loaded runner, and every
    /// twelfth client sends `"keep_alive": 0`, which unloads the model once it has
    /// nothing in flight. foreman pins `num_ctx` to 8192 for the model
    /// (`FOREMAN_PIN_OPTIONS`), so every request has one load key.
    ///
    /// Replies are short next to a load, so straight to the target almost every
    /// request pays a reload: few requests of the loaded runner's options are
    /// waiting when it loads. Only one client in twelve unloads, so that a foreman
    /// which passes `keep_alive` on (one load after each of those requests) can
    /// still load four times less than direct.
    pub(crate) async fn drift(&self) -> Result<WorkloadReport> {
        const CONTEXTS: [u64; 2] = [2048, 8192];
        let model = "llama3.2:3b";
        let pin = format!("{model}:num_ctx=8192");
        let scale = if self.quick {
            ChatScale {
                clients: 12,
                per_client: 2,
                load_ms: 50,
                tps: 1000,
            }
        } else {
            ChatScale {
                clients: 24,
                per_client: 2,
                load_ms: 400,
                tps: 400,
            }
        };
        // The model's own context is 8192, so neither value is clamped.
        let mut sim = sim_args(1, 1, &[], &scale);
        sim.push("--model".into());
        sim.push(format!("{},ctx=8192", scale.model_spec(model)));
        let sims = [SimSetup {
            args: sim,
            slots: 1,
            places: 1,
        }];
        let foreman = ForemanSetup {
            env: vec![("FOREMAN_PIN_OPTIONS".into(), pin.clone())],
            announce_targets: true,
            sample_eta: false,
        };
        let unloads_after = |client: usize| client % 12 == 11;
        let plan: Vec<Vec<Planned>> = (0..scale.clients)
            .map(|client| {
                (0..scale.per_client)
                    .map(|turn| Planned {
                        options: Some(json!({"num_ctx": CONTEXTS[(client + turn) % 2]})),
                        keep_alive: unloads_after(client).then(|| json!(0)),
                        ..chat(model, format!("client {client} turn {turn}"), false)
                    })
                    .collect()
            })
            .collect();
        let keep_alive_zero =
            (0..scale.clients).filter(|c| unloads_after(*c)).count() * scale.per_client;
        let (direct, through) = self
            .both_on("drift", &sims, &foreman, &[], Plan::Closed(plan))
            .await?;
        let mut targets = Targets::new("drift", self.quick);
        load_targets(&mut targets, &direct, &through, 4.0, 2.0);
        targets.no_errors(&[direct.errors(), through.errors()]);
        committed(&mut targets, &through);
        let findings = vec![
            format!(
                "loads: {} straight ({} of them reloads for other options, {} unloads), {} through foreman ({} reloads, {} unloads)",
                direct.summary.loads,
                direct.summary.reloads,
                counter(&direct, "unloads_total"),
                through.summary.loads,
                through.summary.reloads,
                counter(&through, "unloads_total"),
            ),
            format!(
                "makespan: {:.2} s straight, {:.2} s through foreman ({:.2}x shorter)",
                direct.summary.makespan_s,
                through.summary.makespan_s,
                makespan_ratio(&direct, &through)
            ),
            format!(
                "{keep_alive_zero} of {} requests sent \"keep_alive\": 0, which unloads the model once nothing else is in flight on it (unless foreman overrides it)",
                scale.requests()
            ),
        ];
        Ok(WorkloadReport {
            name: "drift".into(),
            description: "one model, one slot; clients alternate options.num_ctx 2048 and 8192 and every twelfth sends \"keep_alive\": 0; foreman pins num_ctx".into(),
            parameters: json!({
                "model": format!("{},ctx=8192", scale.model_spec(model)),
                "num_ctx": CONTEXTS,
                "clients": scale.clients,
                "requests": scale.requests(),
                "keep_alive_zero_requests": keep_alive_zero,
                "reply_tokens": REPLY_TOKENS,
                "FOREMAN_TARGETS": "<sim>,slots=1,places=1",
                "FOREMAN_PIN_OPTIONS": pin,
            }),
            rows: vec![direct.summary.clone(), through.summary.clone()],
            targets: targets.into_vec(),
            findings,
            svg: Some(timeline("drift", &direct, &through)),
            raw: raw(&direct, &through),
        })
    }
}
