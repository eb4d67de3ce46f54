//! Scheduling: which queued job each free runner of each target runs next.
//!
//! - [`load_key`]: what a job needs loaded (its model plus the options that make Ollama
//!   reload it), and the pins that rewrite those options;
//! - [`capacity`]: every target's slots, places, loaded keys and running jobs;
//! - [`policy`]: the pure decision, priority first, then drain by load key, with a
//!   bound on waiting;
//! - [`fair_share`]: whose job a chosen key runs, callers taking turns by weight;
//! - [`forecast`]: when queued jobs will start and finish, by playing the policy
//!   forward with learned run and load times.
//!
//! The runners ([`crate::runner`]) hold one [`Policy`] and one [`Capacity`] between
//! them, ask for a decision whenever a runner is free, and apply it.

pub mod capacity;
pub mod fair_share;
#[cfg(test)]
mod fair_tests;
pub mod forecast;
pub mod load_key;
pub mod policy;
#[cfg(test)]
mod protect_tests;
#[cfg(test)]
mod tests;

pub use capacity::{Capacity, TargetState};
pub use load_key::LoadKey;
pub use policy::{Decision, Policy, Reason};
