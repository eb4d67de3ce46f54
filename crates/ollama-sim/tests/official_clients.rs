//! The official `ollama` Python client, unmodified, against the simulator.

#[path = "../../../tests/support/pytest.rs"]
mod pytest;

use ollama_sim::{ModelSpec, SimConfig};

#[tokio::test]
async fn the_official_python_client_works_against_the_simulator() {
    let config = SimConfig {
        models: vec![
            ModelSpec::parse("llama3.2:3b,load=20ms,tps=4000").unwrap(),
            ModelSpec::parse("qwen2.5:0.5b,load=20ms,tps=4000").unwrap(),
            ModelSpec::parse("nomic-embed-text,embed,load=10ms").unwrap(),
        ],
        max_loaded: 3,
        ..SimConfig::default()
    };
    let sim = ollama_sim::spawn("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    pytest::run_python_suite(
        env!("CARGO_MANIFEST_DIR"),
        &sim.url(),
        ["llama3.2:3b", "qwen2.5:0.5b", "nomic-embed-text"],
        None,
    )
    .await;
    assert!(
        sim.stats().requests_total > 10,
        "the suite exercised the simulator"
    );
    sim.shutdown().await;
}
