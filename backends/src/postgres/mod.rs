//! PostgreSQL backends: server connections that relay protocol messages byte for byte
//! ([`conn`]), their bb8 pool ([`pool`]), and cancel requests ([`cancel`]).

pub mod cancel;
pub mod conn;
pub mod neutral;
pub mod pool;
pub mod wire;

pub use cancel::BackendKey;
pub use conn::{ConnectConfig, ServerConn, TlsTarget};
pub use pool::{PgPool, PoolSettings, PooledServer};
