//! Backend connections for sluice: everything that dials out (or, for SQLite, opens a file).
//!
//! This crate knows nothing of frontends, users or access policies. Each backend returns
//! protocol-neutral results ([`result::ResultSet`]) or, for relayed protocols (later), raw
//! protocol messages.

pub mod error;
pub mod mysql;
pub mod neutral;
pub mod pool;
pub mod postgres;
pub mod result;
pub mod sqlite;
pub mod stream;

pub use error::BackendError;
