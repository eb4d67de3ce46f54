//! The answer to a grouped embeddings call, split back into each line's answer.
//!
//! Each line gets its slice of the embeddings, in input order (`data`, re-indexed from
//! 0, on `/v1/embeddings`; `embeddings` on `/api/embed`) and the other fields of the
//! answer (`model`, `object`, durations) as they came. The target reports one token
//! count per call, not per input, so a line's usage is the group's count apportioned
//! over its lines in proportion to the characters of each line's inputs, by largest
//! remainder: the lines of a group add up exactly to what the target reported.

use foreman_store::JobKind;
use serde_json::{Map, Value};

/// Why an answer cannot be split.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SplitError {
    #[error("the target's answer has no {0} list")]
    NoList(&'static str),
    #[error("the target answered {got} embeddings for the {expected} inputs of the group")]
    Count { got: usize, expected: usize },
}

/// `total` shared out in proportion to `weights`, in whole units, by largest remainder
/// (ties to the earlier share): the shares add up to `total`. Without any weight,
/// evenly.
pub fn apportion(total: u64, weights: &[u64]) -> Vec<u64> {
    if weights.is_empty() {
        return Vec::new();
    }
    let even;
    let weights = if weights.iter().all(|w| *w == 0) {
        even = vec![1u64; weights.len()];
        &even[..]
    } else {
        weights
    };
    let sum: u128 = weights.iter().map(|w| u128::from(*w)).sum();
    let mut shares = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    for (at, weight) in weights.iter().enumerate() {
        let exact = u128::from(total) * u128::from(*weight);
        shares.push((exact / sum) as u64);
        remainders.push((exact % sum, at));
    }
    let given: u64 = shares.iter().sum();
    // Larger remainders first, the earlier share first among equals.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, at) in remainders.iter().take((total - given) as usize) {
        shares[at] += 1;
    }
    shares
}

/// Splits `answer`, the target's answer to a grouped call of job kind `kind`, into one
/// answer per line: `inputs[i]` embeddings for line `i`, its usage apportioned by
/// `chars[i]`, the characters of its inputs. The embeddings are moved, not copied: an
/// answer of 2,048 vectors is megabytes.
pub fn split(
    kind: JobKind,
    answer: Value,
    inputs: &[usize],
    chars: &[u64],
) -> Result<Vec<Value>, SplitError> {
    let openai = kind == JobKind::OpenAiEmbedding;
    let list_name = if openai { "data" } else { "embeddings" };
    let Value::Object(mut fields) = answer else {
        return Err(SplitError::NoList(list_name));
    };
    let Some(Value::Array(list)) = fields.remove(list_name) else {
        return Err(SplitError::NoList(list_name));
    };
    let expected: usize = inputs.iter().sum();
    if list.len() != expected {
        return Err(SplitError::Count {
            got: list.len(),
            expected,
        });
    }
    let counted = |field: Option<&Value>| field.and_then(Value::as_u64);
    let usage = fields.get("usage");
    let prompt = apportion_field(counted(usage.and_then(|u| u.get("prompt_tokens"))), chars);
    let total = apportion_field(counted(usage.and_then(|u| u.get("total_tokens"))), chars);
    let eval = apportion_field(counted(fields.get("prompt_eval_count")), chars);
    let mut entries = list.into_iter();
    let mut answers = Vec::with_capacity(inputs.len());
    for (at, count) in inputs.iter().enumerate() {
        let mut own: Map<String, Value> = fields.clone();
        let slice: Vec<Value> = entries
            .by_ref()
            .take(*count)
            .enumerate()
            .map(|(index, mut entry)| {
                if openai && let Some(entry) = entry.as_object_mut() {
                    entry.insert("index".into(), Value::from(index));
                }
                entry
            })
            .collect();
        own.insert(list_name.into(), Value::Array(slice));
        if let Some(Value::Object(usage)) = own.get_mut("usage") {
            if let Some(prompt) = &prompt {
                usage.insert("prompt_tokens".into(), Value::from(prompt[at]));
            }
            if let Some(total) = &total {
                usage.insert("total_tokens".into(), Value::from(total[at]));
            }
        }
        if let Some(eval) = &eval {
            own.insert("prompt_eval_count".into(), Value::from(eval[at]));
        }
        answers.push(Value::Object(own));
    }
    Ok(answers)
}

fn apportion_field(total: Option<u64>, chars: &[u64]) -> Option<Vec<u64>> {
    total.map(|total| apportion(total, chars))
}

/// The characters of a line's text inputs, its weight in the group's usage.
pub fn characters(inputs: &[&str]) -> u64 {
    inputs.iter().map(|text| text.chars().count() as u64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shares_add_up_to_the_total_and_follow_the_weights() {
        assert_eq!(apportion(10, &[1, 1]), vec![5, 5]);
        assert_eq!(apportion(10, &[1, 2, 2]), vec![2, 4, 4]);
        // 7 over 1:1:1 is 2.33 each: the one unit left goes to the earliest.
        assert_eq!(apportion(7, &[1, 1, 1]), vec![3, 2, 2]);
        // Largest remainder wins the unit, not position: 5 over 3:1:3 is 2.14, 0.71, 2.14.
        assert_eq!(apportion(5, &[3, 1, 3]), vec![2, 1, 2]);
        assert_eq!(apportion(0, &[4, 5]), vec![0, 0]);
        assert_eq!(apportion(3, &[0, 0]), vec![2, 1]);
        assert_eq!(apportion(9, &[0, 5]), vec![0, 9]);
        assert_eq!(apportion(5, &[]), Vec::<u64>::new());
        for (total, weights) in [
            (1_000_003u64, vec![17u64, 1, 999, 42, 5, 5]),
            (13, vec![1; 32]),
            (u64::from(u32::MAX), vec![u64::from(u32::MAX), 3, 1]),
        ] {
            let shares = apportion(total, &weights);
            assert_eq!(shares.iter().sum::<u64>(), total, "{weights:?}");
            let sum: u64 = weights.iter().sum();
            for (share, weight) in shares.iter().zip(&weights) {
                let exact = total as f64 * *weight as f64 / sum as f64;
                assert!((*share as f64 - exact).abs() < 1.0, "{share} vs {exact}");
            }
        }
    }

    #[test]
    fn an_openai_answer_is_split_reindexed_with_usage_shared_by_characters() {
        let answer = json!({
            "object": "list",
            "model": "e",
            "data": [
                {"object": "embedding", "embedding": [0.1], "index": 0},
                {"object": "embedding", "embedding": [0.2], "index": 1},
                {"object": "embedding", "embedding": [0.3], "index": 2},
            ],
            "usage": {"prompt_tokens": 10, "total_tokens": 10},
        });
        let lines = split(JobKind::OpenAiEmbedding, answer, &[1, 2], &[3, 7]).expect("splits");
        assert_eq!(
            lines[0],
            json!({"object": "list", "model": "e",
                "data": [{"object": "embedding", "embedding": [0.1], "index": 0}],
                "usage": {"prompt_tokens": 3, "total_tokens": 3}})
        );
        assert_eq!(
            lines[1],
            json!({"object": "list", "model": "e",
                "data": [{"object": "embedding", "embedding": [0.2], "index": 0},
                         {"object": "embedding", "embedding": [0.3], "index": 1}],
                "usage": {"prompt_tokens": 7, "total_tokens": 7}})
        );
    }

    #[test]
    fn a_native_answer_is_split_with_its_eval_count_shared() {
        let answer = json!({
            "model": "e", "embeddings": [[1.0], [2.0], [3.0]],
            "total_duration": 5, "load_duration": 1, "prompt_eval_count": 5,
        });
        let lines = split(JobKind::Embed, answer.clone(), &[1, 1, 1], &[1, 1, 1]).expect("splits");
        let counts: Vec<u64> = lines
            .iter()
            .map(|l| l["prompt_eval_count"].as_u64().unwrap())
            .collect();
        assert_eq!(counts, vec![2, 2, 1]);
        assert_eq!(lines[2]["embeddings"], json!([[3.0]]));
        assert_eq!(lines[2]["total_duration"], 5);
        assert_eq!(
            split(JobKind::Embed, answer.clone(), &[1, 1], &[1, 1]),
            Err(SplitError::Count {
                got: 3,
                expected: 2
            })
        );
        assert_eq!(
            split(JobKind::OpenAiEmbedding, answer, &[3], &[1]),
            Err(SplitError::NoList("data"))
        );
    }
}
