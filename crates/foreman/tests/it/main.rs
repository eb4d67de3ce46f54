//! foreman end to end: a real simulator upstream on loopback, foreman on port 0 with
//! a real SQLite file, and real HTTP between them.

mod admission;
mod answered;
mod auth;
mod browser;
mod capacity;
mod chaos;
mod cli;
mod common;
mod config;
mod crash;
mod dashboard;
mod error_shapes;
mod eta;
mod fuzz;
mod golden;
mod hostile;
mod jobs;
mod metrics;
mod official_clients;
mod openai;
mod ops;
mod origin_guard;
mod packaging;
mod postgres;
mod readme;
mod reliability;
mod routes;
mod scheduling;
mod shutdown;
mod targets;
mod translated;
mod validation;
mod waiters;
mod webhook_addresses;
mod webhooks;
