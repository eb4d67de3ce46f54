//! The scheduling policy: which queued job runs next on a target.
//!
//! Drain by model, bounded:
//! 1. if some model's oldest eligible job has waited `max_wait` or longer, serve the
//!    model that has waited longest (no starvation);
//! 2. else, if jobs want the resident model, run its best job (no swap);
//! 3. else run the best job overall (one swap).
//!
//! "Best" is highest priority, then oldest. Invariant: this module is pure. It sees
//! no clock, socket or database; the worker passes `now` and the queue's heads in.

use foreman_store::{JobId, QueueHead};

/// What the worker should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub job: JobId,
    pub model: String,
    pub reason: Reason,
}

/// Why a job was picked; logged, and useful in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A job of another model hit the wait bound.
    Starving,
    /// The resident model still has work.
    Drain,
    /// Nothing for the resident model: switch.
    Switch,
}

/// Picks the next job from one head per model. `resident` is the model the target
/// has loaded (as a model key), if known.
pub fn decide(
    heads: &[QueueHead],
    resident: Option<&str>,
    now_ms: i64,
    max_wait_ms: i64,
) -> Option<Decision> {
    let pick = |head: &QueueHead, reason| Decision {
        job: head.best.id,
        model: head.model.clone(),
        reason,
    };
    let starving = heads
        .iter()
        .filter(|head| now_ms - head.oldest_created_at >= max_wait_ms)
        .min_by_key(|head| head.oldest_created_at);
    if let Some(head) = starving
        && Some(head.model.as_str()) != resident
    {
        return Some(pick(head, Reason::Starving));
    }
    if let Some(head) = heads
        .iter()
        .find(|head| Some(head.model.as_str()) == resident)
    {
        return Some(pick(head, Reason::Drain));
    }
    heads
        .iter()
        .min_by_key(|head| {
            (
                std::cmp::Reverse(head.best.priority),
                head.best.created_at,
                head.best.id,
            )
        })
        .map(|head| pick(head, Reason::Switch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use foreman_store::JobRef;

    /// A head for `model` whose best job has `priority` and was created at `created`,
    /// and whose oldest job was created at `oldest`.
    fn head(model: &str, priority: i32, created: i64, oldest: i64) -> QueueHead {
        QueueHead {
            model: model.to_string(),
            best: JobRef {
                id: JobId::generate(),
                priority,
                created_at: created,
            },
            oldest_created_at: oldest,
            depth: 1,
        }
    }

    /// Runs `decide` and renders the outcome as `model/reason`.
    fn check(heads: &[QueueHead], resident: Option<&str>, now: i64, expected: &str) {
        let got = match decide(heads, resident, now, 1_000) {
            Some(decision) => format!("{}/{:?}", decision.model, decision.reason),
            None => "none".to_string(),
        };
        assert_eq!(got, expected);
    }

    #[test]
    fn policy_table() {
        let a = head("a", 0, 100, 100);
        let b = head("b", 0, 50, 50);
        let b_urgent = head("b", 5, 200, 200);
        check(&[], Some("a"), 0, "none");
        check(&[a.clone(), b.clone()], Some("a"), 500, "a/Drain");
        check(&[a.clone(), b.clone()], None, 500, "b/Switch");
        check(&[a.clone(), b.clone()], Some("c"), 500, "b/Switch");
        check(&[a.clone(), b_urgent.clone()], None, 500, "b/Switch");
        check(&[a.clone(), b.clone()], Some("a"), 1_050, "b/Starving");
        check(&[a.clone(), b.clone()], Some("b"), 1_050, "b/Drain");
        check(
            &[head("a", 0, 10, 10), head("b", 0, 20, 20)],
            Some("c"),
            5_000,
            "a/Starving",
        );
        check(std::slice::from_ref(&a), Some("a"), 10_000, "a/Drain");
    }
}
