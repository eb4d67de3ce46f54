//! The benchmark's `--quick` suite, as CI runs it: it must complete and write a
//! well-formed report. No timing is asserted: the machine is shared and noisy.

use std::path::Path;

use serde_json::Value;

#[tokio::test]
async fn the_quick_suite_completes_with_a_well_formed_report() {
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
    for workload in ["overhead", "interleaved", "bursty", "stream", "memory"] {
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
    let workloads = results["workloads"].as_array().unwrap();
    assert_eq!(workloads.len(), 5);
    for workload in workloads {
        assert!(
            !workload["findings"].as_array().unwrap().is_empty(),
            "{}",
            workload["name"]
        );
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
    for chart in ["interleaved.svg", "bursty.svg"] {
        let svg = std::fs::read_to_string(out.path().join(chart)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{chart}"
        );
        assert!(svg.contains("<rect"), "{chart} shows residency");
    }
}
