//! End-to-end tests: real clients (psql, pgbench, tokio-postgres) against sluice over real
//! TLS, and the ephemeral real servers of the harness.
//!
//! Run with `scripts/test` (which builds the `sluice` binary some tests spawn).

mod admin;
mod cache;
mod cli;
mod cross;
mod harness;
mod login;
mod mysql;
mod policy;
mod policy_classes;
mod pooling;
mod queries;
mod relay;
mod shutdown;
