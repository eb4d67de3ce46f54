//! The benchmark's `--quick` suite, as CI runs it: it must complete, judge its
//! scale-independent targets (no errors, every job committed, foreman swapping less
//! than the direct pass, loading less in `targets` and `drift`, `/healthz` answering
//! through `stalled`) and meet them,
//! and write a well-formed report. No timing is asserted here: scale-dependent
//! targets (the throughput and makespan ratios among them) are informational in a
//! quick run.

use std::path::Path;

use serde_json::Value;

/// Every workload, in the order the suite runs them.
const NAMES: [&str; 15] = [
    "overhead",
    "interleaved",
    "bursty",
    "stream",
    "memory",
    "parallel",
    "places",
    "parallel-places",
    "targets",
    "drift",
    "pollers",
    "stalled",
    "tenants",
    "batch",
    "embed-batch",
];

#[tokio::test]
async fn the_quick_suite_meets_its_scale_independent_targets() {
    let bench = Path::new(env!("CARGO_BIN_EXE_foreman-bench"));
    let bin_dir = bench.parent().unwrap();
    for binary in ["foreman", "ollama-sim"] {
        assert!(
            bin_dir.join(binary).exists(),
            "{binary} must be built next to foreman-bench (cargo build --bins, or test the whole workspace)"
        );
    }
    let out = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(bench)
        .args(["--quick", "--out"])
        .arg(out.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "foreman-bench failed:\n{stdout}\n{stderr}"
    );

    let report = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    let targets_at = report.find("### Targets").expect("the targets table");
    assert!(
        targets_at < report.find("### overhead").unwrap(),
        "the targets come first"
    );
    assert!(report.contains("| workload | target | threshold | measured | verdict |"));
    assert!(!report.contains("MISSED"), "{report}");
    for workload in NAMES {
        assert!(
            report.contains(&format!("### {workload}")),
            "{workload} in the report"
        );
    }
    assert!(report.contains("| pass | requests | errors |"));
    assert!(report.contains("| foreman / direct |"));

    let results: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("results.json")).unwrap()).unwrap();
    assert_eq!(results["quick"], true);
    assert_eq!(results["all_met"], true);
    let workloads = results["workloads"].as_array().unwrap();
    assert_eq!(workloads.len(), NAMES.len());
    for workload in workloads {
        let name = workload["name"].as_str().unwrap();
        assert!(
            !workload["findings"].as_array().unwrap().is_empty(),
            "{name}"
        );
        let targets = workload["targets"].as_array().unwrap();
        let judged = |prefix: &str| {
            targets
                .iter()
                .any(|t| t["name"].as_str().unwrap().starts_with(prefix) && t["verdict"] == "met")
        };
        assert!(judged("no request failed"), "{name}: {targets:?}");
        assert!(
            judged("every job durably committed") || judged("every submitted job durably queued"),
            "{name}: {targets:?}"
        );
        if matches!(name, "interleaved" | "bursty") {
            assert!(
                judged("foreman swaps less than direct"),
                "{name}: {targets:?}"
            );
        }
        if matches!(name, "targets" | "drift") {
            assert!(
                judged("foreman loads less than direct"),
                "{name}: {targets:?}"
            );
        }
        if matches!(name, "parallel" | "places" | "parallel-places") {
            let ratio = targets
                .iter()
                .find(|t| t["name"] == "foreman's throughput over direct's")
                .expect("the throughput target");
            assert_eq!(ratio["verdict"], "informational", "{name}: {ratio}");
        }
        if name == "stalled" {
            assert!(
                judged("/healthz answered throughout"),
                "{name}: {targets:?}"
            );
        }
        if matches!(name, "pollers" | "stalled") {
            // Throughput and memory are not judged at this scale.
            let full_only = targets
                .iter()
                .filter(|t| t["verdict"] == "informational")
                .count();
            assert!(full_only >= 1, "{name}: {targets:?}");
        }
        for target in targets {
            assert_ne!(target["verdict"], "missed", "{name}: {target}");
            if target["verdict"] == "met" {
                assert!(target["measured"].is_number(), "{target}");
            }
        }
        for row in workload["rows"].as_array().unwrap() {
            assert!(row["requests"].as_u64().unwrap() > 0, "{row}");
            assert_eq!(row["errors"], 0, "{}: {row}", workload["name"]);
        }
    }
    let memory = workloads.iter().find(|w| w["name"] == "memory").unwrap();
    assert!(
        memory["raw"]["rss_bytes"].as_u64().unwrap() > 0,
        "foreman's memory was read"
    );
    assert!(
        memory["raw"]["rss_samples"].as_u64().unwrap() > 1,
        "foreman's memory was sampled during the run"
    );
    let pollers = workloads.iter().find(|w| w["name"] == "pollers").unwrap();
    let windows = pollers["raw"]["windows"].as_array().unwrap();
    assert_eq!(
        windows.len(),
        5,
        "without and with the long-polls, alternating"
    );
    for window in windows {
        assert!(window["completed"].as_u64().unwrap() > 0, "{window}");
        assert!(
            window["cpu_s"].as_f64().unwrap() > 0.0,
            "foreman's CPU time was read: {window}"
        );
    }
    for parked in pollers["raw"]["parked_windows"].as_array().unwrap() {
        assert_eq!(
            parked[0], 100,
            "every poller's long-poll was under way when its window began: {parked}"
        );
    }
    let stalled = workloads.iter().find(|w| w["name"] == "stalled").unwrap();
    assert_eq!(
        stalled["raw"]["stalls"]["failed"], 0,
        "{}",
        stalled["raw"]["stalls"]
    );
    assert!(stalled["raw"]["rss_baseline_bytes"].as_u64().unwrap() > 0);
    for chart in [
        "interleaved.svg",
        "bursty.svg",
        "parallel.svg",
        "places.svg",
        "parallel-places.svg",
        "targets.svg",
        "drift.svg",
    ] {
        let svg = std::fs::read_to_string(out.path().join(chart)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{chart}"
        );
        assert!(svg.contains("<rect"), "{chart} shows residency");
    }
    let spread = workloads.iter().find(|w| w["name"] == "targets").unwrap();
    let direct_stats = spread["raw"]["direct"]["sim_stats"].as_array().unwrap();
    assert_eq!(direct_stats.len(), 3, "three simulators straight");
    for stats in direct_stats {
        assert!(
            stats["requests_total"].as_u64().unwrap() > 0,
            "each client calls its own target straight: {stats}"
        );
    }
    let svg = std::fs::read_to_string(out.path().join("targets.svg")).unwrap();
    for lane in ["sim0", "sim1", "sim2"] {
        assert!(svg.contains(lane), "one residency lane per target");
    }
}

/// The PostgreSQL run with two instances, scaled down: `overhead` with its clients
/// spread over both instances (every answered job found committed in the database),
/// and the two workloads about instances. Takeover and first-chunk times are
/// informational here, as every timing is in a quick run.
#[tokio::test]
async fn the_quick_postgres_run_with_two_instances_commits_every_job() {
    let bench = Path::new(env!("CARGO_BIN_EXE_foreman-bench"));
    let out = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(bench)
        .args([
            "--quick",
            "--database",
            "postgres",
            "--instances",
            "2",
            "--workload",
            "overhead",
            "--workload",
            "relay",
            "--workload",
            "takeover",
            "--out",
        ])
        .arg(out.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "foreman-bench failed:\n{stdout}\n{stderr}"
    );
    let report = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(
        report.contains("PostgreSQL (a database per pass")
            && report.contains("2 foreman instance(s)"),
        "{report}"
    );
    let results: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("results.json")).unwrap()).unwrap();
    let workloads = results["workloads"].as_array().unwrap();
    let names: Vec<&str> = workloads
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["overhead", "relay", "takeover"]);
    for workload in workloads {
        let name = workload["name"].as_str().unwrap();
        let targets = workload["targets"].as_array().unwrap();
        let met = |prefix: &str| {
            targets
                .iter()
                .any(|t| t["name"].as_str().unwrap().starts_with(prefix) && t["verdict"] == "met")
        };
        assert!(met("no request failed"), "{name}: {targets:?}");
        if name == "overhead" {
            assert!(met("every job durably committed"), "{targets:?}");
        }
    }
    let takeover = &workloads[2]["raw"];
    assert_eq!(
        takeover["kill_to_first_start_ms"].as_array().unwrap().len(),
        2,
        "two kills, each followed by a job the survivor started: {takeover}"
    );
    let relay = &workloads[1]["raw"]["first_chunk_ms"];
    assert_eq!(relay["other"].as_array().unwrap().len(), 20, "{relay}");
}
