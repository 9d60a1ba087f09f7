//! sluice: a database access proxy. This crate holds everything that faces clients and
//! decides; `backends` dials out and `policies` decides access.

pub mod access;
pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cache;
pub mod classify;
pub mod config;
pub mod frontend;
pub mod listener;
pub mod metrics;
pub mod pipeline;
pub mod state;
pub mod tls;
