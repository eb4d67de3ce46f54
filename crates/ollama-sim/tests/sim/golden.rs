//! The simulator against recorded answers of a real Ollama (`tests/golden/`): the
//! same keys, JSON types, stream order, status and content type.

#[path = "../golden/check.rs"]
mod check;

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::common::*;

#[tokio::test]
async fn simulator_answers_have_the_recorded_shapes() {
    let sim = start(check::sim_config()).await;
    let errors = check::check_all(&client(), &sim.url()).await;
    assert!(errors.is_empty(), "differences:\n{}", errors.join("\n"));
}

/// Compares without exceptions; returns the differences.
fn differences(golden: &Value, actual: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check::compare(golden, actual, "", &[], &mut errors, &mut BTreeSet::new());
    errors
}

#[test]
fn every_recording_matches_itself() {
    for case in check::cases() {
        let mut errors = Vec::new();
        if case.stream {
            let golden = check::ndjson(case.golden).unwrap();
            check::compare_stream(&golden, &golden, &[], &mut errors, &mut BTreeSet::new());
        } else {
            let golden: Value = serde_json::from_str(case.golden).unwrap();
            errors = differences(&golden, &golden);
        }
        assert!(errors.is_empty(), "{}: {errors:?}", case.name);
    }
}

#[test]
fn the_comparison_sees_keys_types_states_and_times() {
    let golden = json!({"model": "m", "created_at": "2023-08-04T19:22:45.499127Z",
                        "done": true, "eval_duration": 4232710000_u64, "context": [1, 2]});
    let missing = json!({"model": "m", "created_at": "2023-08-04T19:22:45.499127Z",
                         "done": true, "context": [1, 2]});
    assert_eq!(
        differences(&golden, &missing),
        ["eval_duration: recorded, missing"]
    );
    let mut extra = golden.clone();
    extra["images"] = json!(null);
    assert_eq!(
        differences(&golden, &extra),
        ["images: answered, not in the recording"]
    );
    let mut seconds = golden.clone();
    seconds["eval_duration"] = json!(4.23);
    assert_eq!(
        differences(&golden, &seconds).len(),
        1,
        "a float is not an integer"
    );
    let mut not_done = golden.clone();
    not_done["done"] = json!(false);
    assert_eq!(differences(&golden, &not_done).len(), 1);
    let mut floats = golden.clone();
    floats["context"] = json!([1, 2.5]);
    assert_eq!(
        differences(&golden, &floats),
        ["context[]: integer recorded, float answered (2.5)"]
    );
    for bad in [
        "2023-08-04 19:22:45Z",
        "2023-08-04T19:22:45.4991270Z",
        "2023-08-04T19:22:45.1234567891Z",
        "1691177065",
    ] {
        let mut time = golden.clone();
        time["created_at"] = json!(bad);
        assert!(!differences(&golden, &time).is_empty(), "{bad} passed");
    }
    for good in [
        "2023-08-04T19:22:45Z",
        "2023-08-04T08:52:19.385406455-07:00",
    ] {
        assert!(check::is_go_time(good), "{good}");
    }
}

#[test]
fn the_stream_comparison_sees_order_and_the_last_event() {
    let golden = check::ndjson(include_str!("../golden/chat-stream-tools.ndjson")).unwrap();
    let (tool, last) = (golden[0].clone(), golden[1].clone());
    let compare = |actual: &[Value]| {
        let mut errors = Vec::new();
        check::compare_stream(&golden, actual, &[], &mut errors, &mut BTreeSet::new());
        errors
    };
    assert!(compare(&[tool.clone(), tool.clone(), last.clone()]).is_empty());
    assert!(
        !compare(std::slice::from_ref(&last)).is_empty(),
        "the tool call event is missing"
    );
    assert!(
        !compare(&[tool.clone(), last.clone(), last.clone()]).is_empty(),
        "done twice"
    );
    assert!(
        !compare(&[last.clone(), tool.clone()]).is_empty(),
        "ends without done"
    );
    assert!(!compare(&[]).is_empty());

    let golden = check::ndjson(check::STREAM_ERROR).unwrap();
    let compare = |actual: &[Value]| {
        let mut errors = Vec::new();
        check::compare_stream(&golden, actual, &[], &mut errors, &mut BTreeSet::new());
        errors
    };
    assert!(compare(&golden).is_empty());
    assert!(
        compare(&golden[3..]).is_empty(),
        "one text chunk stands for several"
    );
    assert!(!compare(&golden[..4]).is_empty(), "no error line");
    assert!(
        !compare(&golden[4..]).is_empty(),
        "no text before the error"
    );
}
