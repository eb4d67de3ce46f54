//! Fair share between callers: which caller's job a load key runs next.
//!
//! The policy decides which load key a free runner serves (priority, drain, the wait
//! bound); this module decides whose job of that key it runs. Without it a key runs
//! its jobs oldest first, so one caller's 5,000 queued jobs hold another caller's
//! single request behind all of them. With it, callers whose best job in the key has
//! the key's top priority take turns by weight: start-time fair queuing over callers,
//! each job costing `UNIT / weight` of virtual time.
//!
//! - Every caller has a *finish tag*: the virtual time its last chosen job ended at.
//! - The *clock* is the start tag of the last choice; a caller starts at the later of
//!   its finish tag and the clock, so a caller that was idle banks no credit, and one
//!   that just had more than its share waits until the others catch up.
//! - The caller with the earliest start runs (ties: its oldest job first); its finish
//!   tag moves on by `UNIT / weight`.
//!
//! So a caller arriving beside a flooding one runs at the next free slot, after at most
//! one of the flood's jobs per slot, and callers of weights 3 and 1 that both keep the
//! key busy get three jobs to one. The tags are shared by every key and target: a
//! caller served on one model has had that share of the GPUs.
//!
//! Jobs without a caller (foreman running open) are one anonymous caller of weight 1.
//! Pure, as the rest of the policy: no clock, socket or database.

use std::collections::HashMap;

use foreman_store::{CallerHead, JobRef, QueueHead};

/// Virtual time one job of a caller of weight 1 takes.
const UNIT: u128 = 1 << 32;

/// The callers' finish tags and the virtual clock.
#[derive(Debug, Clone, Default)]
pub struct FairShare {
    clock: u128,
    finish: HashMap<Option<String>, u128>,
}

impl FairShare {
    /// The job `head`'s key should run next: among its callers whose best job has the
    /// key's top priority, the one whose turn it is. `head.best` when the head says
    /// nothing per caller.
    pub fn pick(&self, head: &QueueHead) -> JobRef {
        self.turn(head).map_or(head.best, |caller| caller.best)
    }

    /// Records that `job` of `head` was chosen: its caller's turn is used.
    pub fn charge(&mut self, head: &QueueHead, job: JobRef) {
        let Some(caller) = head.callers.iter().find(|caller| caller.best.id == job.id) else {
            return;
        };
        let start = self.start_of(caller);
        self.clock = start;
        self.finish.insert(
            caller.caller.clone(),
            start + UNIT / u128::from(caller.weight.max(1)),
        );
        // A caller whose finish tag the clock has passed would start at the clock
        // anyway: forgetting it changes nothing.
        let clock = self.clock;
        self.finish.retain(|_, finish| *finish > clock);
    }

    fn turn<'a>(&self, head: &'a QueueHead) -> Option<&'a CallerHead> {
        head.callers
            .iter()
            .filter(|caller| caller.best.priority == head.best.priority)
            .min_by_key(|caller| {
                (
                    self.start_of(caller),
                    caller.best.created_at,
                    caller.best.id,
                )
            })
    }

    fn start_of(&self, caller: &CallerHead) -> u128 {
        self.finish
            .get(&caller.caller)
            .copied()
            .unwrap_or(0)
            .max(self.clock)
    }

    /// How many callers have a finish tag ahead of the clock.
    #[cfg(test)]
    pub(crate) fn remembered(&self) -> usize {
        self.finish.len()
    }
}

#[cfg(test)]
mod tests {
    use foreman_store::JobId;

    use super::*;

    fn job(n: u128, priority: i32, created_at: i64) -> JobRef {
        JobRef {
            id: JobId::from(ulid::Ulid(n)),
            priority,
            created_at,
        }
    }

    fn head(callers: Vec<CallerHead>) -> QueueHead {
        let best = callers
            .iter()
            .map(|caller| caller.best)
            .min_by_key(|job| (std::cmp::Reverse(job.priority), job.created_at, job.id))
            .expect("a caller");
        QueueHead {
            model: "m".into(),
            load_options: String::new(),
            best,
            oldest_created_at: best.created_at,
            depth: callers.iter().map(|caller| caller.depth).sum(),
            callers,
        }
    }

    fn caller(name: &str, weight: u32, best: JobRef) -> CallerHead {
        CallerHead {
            caller: Some(name.into()),
            weight,
            best,
            depth: 1,
        }
    }

    #[test]
    fn a_newcomer_runs_after_at_most_one_job_of_the_flood() {
        let mut fair = FairShare::default();
        // The flood ran alone for a while.
        for n in 0..100 {
            let only = head(vec![caller("flood", 1, job(n, 0, n as i64))]);
            let picked = fair.pick(&only);
            fair.charge(&only, picked);
        }
        let both = head(vec![
            caller("flood", 1, job(100, 0, 100)),
            caller("chat", 1, job(1_000, 0, 1_000)),
        ]);
        assert_eq!(fair.pick(&both).id, job(1_000, 0, 0).id, "its turn is now");
        assert!(fair.remembered() <= 2);
    }

    #[test]
    fn weights_set_the_shares() {
        let mut fair = FairShare::default();
        let mut counts: HashMap<&str, u32> = HashMap::new();
        for n in 0..400u128 {
            let both = head(vec![
                caller("heavy", 3, job(n * 2, 0, n as i64)),
                caller("light", 1, job(n * 2 + 1, 0, n as i64)),
            ]);
            let picked = fair.pick(&both);
            let name = if picked.id == both.callers[0].best.id {
                "heavy"
            } else {
                "light"
            };
            *counts.entry(name).or_default() += 1;
            fair.charge(&both, picked);
        }
        assert_eq!(counts["heavy"], 300);
        assert_eq!(counts["light"], 100);
    }

    #[test]
    fn only_callers_holding_the_top_priority_take_turns() {
        let fair = FairShare::default();
        let urgent = job(5, 7, 50);
        let mixed = head(vec![caller("a", 1, job(1, 0, 1)), caller("b", 100, urgent)]);
        assert_eq!(fair.pick(&mixed), urgent);
        // Without per-caller heads, the key's best job runs.
        let plain = QueueHead {
            callers: Vec::new(),
            ..mixed.clone()
        };
        assert_eq!(fair.pick(&plain), urgent);
    }
}
