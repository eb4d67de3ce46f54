//! End-to-end tests of the simulator over real HTTP on loopback: the wire contract,
//! residency and swaps, concurrency counters, faults, and the `ollama-sim` binary itself.

mod binary;
mod common;
mod concurrency;
mod contract;
mod errors;
mod faults;
mod fidelity;
mod generation;
mod golden;
mod openai;
mod origin_guard;
mod residency;
mod sched;
mod translated;
