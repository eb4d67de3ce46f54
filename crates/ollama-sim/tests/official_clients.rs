//! The official `ollama` Python client, unmodified, against the simulator: runs the
//! pytest suite in `tests/python` (installed by `scripts/setup-python.sh`) against a
//! simulator started in-process, and fails with pytest's output unless every test passes.

#[path = "../../../tests/support/pytest.rs"]
mod pytest;

use ollama_sim::{ModelSpec, SimConfig};

const CHAT: &str = "llama3.2:3b";
const CHAT2: &str = "qwen2.5:0.5b";
const EMBED: &str = "nomic-embed-text";

#[tokio::test]
async fn the_official_python_client_works_against_the_simulator() {
    let models = vec![
        ModelSpec::parse(&format!("{CHAT},load=50ms,tps=2000,tools")).unwrap(),
        ModelSpec::parse(&format!("{CHAT2},load=50ms,tps=2000")).unwrap(),
        ModelSpec::parse(&format!("{EMBED},embed,load=20ms")).unwrap(),
    ];
    let names: Vec<String> = models.iter().map(ModelSpec::display_name).collect();
    let config = SimConfig {
        models,
        max_loaded: 3,
        ..SimConfig::default()
    };
    let sim = ollama_sim::spawn("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();

    pytest::run_python_suite(
        env!("CARGO_MANIFEST_DIR"),
        &sim.url(),
        [CHAT, CHAT2, EMBED],
        None,
        &[],
    )
    .await;

    // The suite talked to this simulator, and to each of its models.
    let stats = sim.stats();
    for name in &names {
        let requests = stats.models.get(name).map_or(0, |m| m.requests);
        assert!(
            requests > 0,
            "the suite sent no request for {name}: {stats:?}"
        );
    }
    sim.shutdown().await;
}

#[path = "../../../tests/support/nodejs.rs"]
mod nodejs;

/// The official `ollama` JavaScript client on Node, unmodified, against the simulator.
#[tokio::test]
async fn the_official_javascript_client_works_against_the_simulator() {
    let config = SimConfig {
        models: vec![ModelSpec::parse(&format!("{CHAT},load=20ms,tps=4000")).unwrap()],
        ..SimConfig::default()
    };
    let sim = ollama_sim::spawn("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    nodejs::run_js_suite(env!("CARGO_MANIFEST_DIR"), &sim.url(), CHAT).await;
    assert!(
        sim.stats().requests_total >= 4,
        "the suite talked to this simulator"
    );
    sim.shutdown().await;
}
