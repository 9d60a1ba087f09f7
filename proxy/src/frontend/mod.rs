//! Client-facing protocols. Each frontend owns its startup, authentication and session loop.

pub mod mysql;
pub mod postgres;
