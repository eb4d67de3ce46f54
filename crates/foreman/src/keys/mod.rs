//! API keys: who may call which routes, with which models, how often and how much, and
//! what each key used.
//!
//! A key is a random secret the operator creates (`foreman keys create` or
//! `POST /foreman/keys`), stored only as a digest with its grant (scopes, model
//! patterns, limits, weight). The auth layer (`api/auth.rs`) identifies the secret a
//! request presents ([`ring`]), checks the route's scope ([`access`]), the models the
//! body names and the key's limits ([`live`]), and marks the request with its
//! [`crate::caller::Caller`] for the scheduler's fair share; the [`ledger`] counts
//! what the key used, for `foreman keys usage` and `/metrics`.

pub mod access;
pub mod cli;
pub mod grant;
pub mod ledger;
pub mod live;
pub mod manage;
pub mod ring;
pub mod secret;

pub use grant::{Grant, Scope};
pub use ledger::Ledger;
pub use ring::KeyRing;
