//! Configuration: serde types read from one TOML file, checked by [`validate`] before use.
//!
//! Every table rejects unknown keys, so a typo is an error that names the key and its line,
//! never a silently ignored setting. Relative paths are resolved against the directory of
//! the config file. `examples/reference.toml` documents every key.

mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use validate::validate;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: Server,
    pub listeners: Listeners,
    #[serde(default)]
    pub tls: Tls,
    pub admin: Option<Admin>,
    #[serde(default)]
    pub users: BTreeMap<String, User>,
    #[serde(default)]
    pub backends: BTreeMap<String, Backend>,
    #[serde(default)]
    pub routes: BTreeMap<String, Route>,
    /// Access policies; without this table every authenticated user may run anything.
    pub policy: Option<PolicyFiles>,
    #[serde(default)]
    pub audit: Audit,
    /// The read cache's store (Redis or in-process); routes opt in with `[routes.X.cache]`.
    #[serde(default)]
    pub cache: CacheStore,
    /// The file this config was read from (for reload).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// Where cached answers and table generations live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheStore {
    /// A Redis URL (`redis://host:port/db`, `rediss://` for TLS); shared by every sluice
    /// instance pointing at it. None: an in-process cache (one instance only).
    pub redis: Option<String>,
    /// Redis Cluster seed URLs (instead of `redis`).
    pub redis_cluster: Vec<String>,
    /// Milliseconds one Redis call may take before the query goes to the backend.
    pub timeout_ms: u64,
    /// Consecutive Redis failures that open the circuit breaker (the cache is skipped).
    pub breaker_failures: u32,
    /// Seconds the breaker stays open before one call probes Redis again.
    pub breaker_open_secs: f64,
    /// Entries the in-process cache holds at most.
    pub memory_entries: u64,
    /// Largest answer stored, in bytes (larger ones are not cached).
    pub max_entry_bytes: usize,
}

impl Default for CacheStore {
    fn default() -> Self {
        CacheStore {
            redis: None,
            redis_cluster: Vec::new(),
            timeout_ms: 50,
            breaker_failures: 5,
            breaker_open_secs: 5.0,
            memory_entries: 10_000,
            max_entry_bytes: 1024 * 1024,
        }
    }
}

/// A route's cache rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteCache {
    /// Cache the answers of cacheable reads on this route.
    pub enabled: bool,
    /// Seconds an answer is kept (a backstop: writes through sluice invalidate at once).
    pub ttl_secs: f64,
    /// Per-table TTL overrides (`"public.orders" = 5`); a read of several tables keeps
    /// the smallest.
    pub tables: BTreeMap<String, f64>,
    /// Tables (globs) whose reads are never cached.
    pub never: Vec<String>,
    /// What a write invalidates: `database` (default: every entry of the backend
    /// database, safe with triggers, cascades and views) or `table` (only entries that
    /// read the tables written; for schemas without triggers, cascading foreign keys or
    /// views over written tables).
    pub invalidate: Invalidate,
}

impl Default for RouteCache {
    fn default() -> Self {
        RouteCache {
            enabled: false,
            ttl_secs: 60.0,
            tables: BTreeMap::new(),
            never: Vec::new(),
            invalidate: Invalidate::Database,
        }
    }
}

/// The reach of a write's invalidation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Invalidate {
    Database,
    Table,
}

/// The casbin model and policy files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFiles {
    /// The model file; defaults to the model sluice ships (`policies/model.conf`).
    pub model: Option<PathBuf>,
    /// Policy files (casbin CSV: `p, subject, route, object, action, allow|deny` and
    /// `g, user, role, route`), read in order.
    pub files: Vec<PathBuf>,
}

/// Where audit events go and what they hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Audit {
    pub enabled: bool,
    /// `stdout` or a file path (appended to).
    pub sink: String,
    /// `digest`: a hash of the statement text; `full`: the text too.
    pub statements: AuditStatements,
    /// `best_effort`: drop events when the sink is full or failing (counted);
    /// `strict`: refuse new statements while events cannot be written.
    pub mode: AuditMode,
    /// Events buffered before the sink is considered full.
    pub buffer: usize,
}

impl Default for Audit {
    fn default() -> Self {
        Audit {
            enabled: false,
            sink: "stdout".into(),
            statements: AuditStatements::Digest,
            mode: AuditMode::BestEffort,
            buffer: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditStatements {
    Digest,
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditMode {
    BestEffort,
    Strict,
}

/// Process-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Seconds a client has to finish TLS, startup and authentication.
    pub login_timeout_secs: f64,
    /// Seconds running queries get to finish after SIGTERM/SIGINT before sluice exits.
    pub shutdown_timeout_secs: f64,
    /// Largest protocol message a client may send, in bytes.
    pub max_message_bytes: usize,
    /// Seconds between checks of the config, policy and model files; a change reloads
    /// them as SIGHUP does. 0 (the default): no watching.
    pub watch_secs: f64,
    /// Threads that run sessions. 0 (the default): one per CPU sluice may run on (one
    /// thread when that is a single CPU). 1: one thread running
    /// every session, with no cross-thread wakeups (the cheapest per statement on small
    /// machines, where sluice shares the cores with the databases and clients).
    pub workers: usize,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            login_timeout_secs: 10.0,
            shutdown_timeout_secs: 30.0,
            max_message_bytes: 64 * 1024 * 1024,
            watch_secs: 0.0,
            workers: 0,
        }
    }
}

impl Server {
    pub fn login_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.login_timeout_secs)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.shutdown_timeout_secs)
    }

    /// How often to look for changed files; None: not at all.
    pub fn watch_interval(&self) -> Option<Duration> {
        (self.watch_secs > 0.0).then(|| Duration::from_secs_f64(self.watch_secs))
    }
}

/// Client-facing listen addresses, one per protocol.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listeners {
    pub postgres: Option<SocketAddr>,
    pub mysql: Option<SocketAddr>,
}

/// Whether clients must, may or cannot use TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plaintext only: SSLRequest is declined.
    #[default]
    Disable,
    /// TLS when the client asks for it, plaintext otherwise.
    Allow,
    /// TLS only: plaintext clients are refused at startup.
    Require,
}

/// TLS termination for client connections.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    #[serde(default)]
    pub mode: TlsMode,
    /// PEM certificate chain, server certificate first.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

/// The admin HTTP listener (/healthz, /readyz, /metrics).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub listen: SocketAddr,
}

/// How a user proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    Md5,
    /// Cleartext password over the wire; only sensible with TLS required.
    Password,
}

/// A client identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// A stored verifier, never a plaintext password: `SCRAM-SHA-256$...` (from
    /// `sluice passwd`) or, for md5 users, `md5` + hex digest.
    pub password: String,
    #[serde(default)]
    pub auth: AuthMethod,
    /// MySQL clients: a `mysql_native_password` verifier (`*` + 40 hex digits, from
    /// `sluice passwd --mysql`). Without it, MySQL clients log in with
    /// `caching_sha2_password` only.
    pub mysql_native_password: Option<String>,
    /// Most connections this user may hold at once (0 = no limit).
    #[serde(default)]
    pub max_connections: u32,
    /// Client networks this user may connect from (CIDR); empty: any.
    #[serde(default)]
    pub networks: Vec<String>,
    /// Refuse this user's plaintext connections even when `tls.mode` allows them.
    #[serde(default)]
    pub require_tls: bool,
    /// Routes this user may use (names or glob patterns); empty: every route.
    #[serde(default)]
    pub routes: Vec<String>,
}

/// The kinds of backend sluice can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Sqlite,
    Postgres,
    /// MySQL or MariaDB.
    Mysql,
}

/// TLS from sluice to a PostgreSQL server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BackendTls {
    /// Plaintext.
    #[default]
    Disable,
    /// TLS, with the server certificate verified against `tls_ca` and the host name.
    VerifyFull,
}

/// A database server (or file) sluice connects to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    pub kind: BackendKind,
    /// SQLite: the database file (created when missing).
    pub path: Option<PathBuf>,
    /// SQLite: a SQL file run once when the database file is created.
    pub seed: Option<PathBuf>,
    /// PostgreSQL and MySQL: server host name or address.
    pub host: Option<String>,
    /// PostgreSQL and MySQL: server port (defaults 5432 and 3306).
    pub port: Option<u16>,
    /// PostgreSQL and MySQL: the role sluice logs in as.
    pub user: Option<String>,
    /// PostgreSQL and MySQL: that role's password (prefer `password_env`).
    pub password: Option<String>,
    /// PostgreSQL and MySQL: name of an environment variable holding the password.
    pub password_env: Option<String>,
    /// PostgreSQL and MySQL: seconds to open and authenticate a server connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: f64,
    /// PostgreSQL and MySQL: TLS to the server.
    #[serde(default)]
    pub tls: BackendTls,
    /// PostgreSQL and MySQL: PEM file of the CA certificates trusted for the server (verify-full).
    pub tls_ca: Option<PathBuf>,
    /// PostgreSQL and MySQL: name checked against the server certificate; defaults to `host`.
    pub tls_server_name: Option<String>,
}

fn default_connect_timeout() -> f64 {
    5.0
}

/// How server connections are shared between clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A client keeps one server connection for its whole session.
    #[default]
    Session,
    /// A server connection goes back to the pool at the end of each transaction.
    Transaction,
}

/// A client-visible database name and where it leads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Name of an entry in `[backends]`.
    pub backend: String,
    /// Database name on the backend; defaults to the route's own name.
    pub database: Option<String>,
    #[serde(default)]
    pub pool_mode: PoolMode,
    /// Most server connections this route opens.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// Most clients connected to this route at once (0 = no limit).
    #[serde(default)]
    pub max_clients: u32,
    /// Server connections kept open even when idle.
    #[serde(default)]
    pub min_idle: u32,
    /// Seconds a client waits for a server connection before it gets SQLSTATE 53300.
    #[serde(default = "default_checkout_timeout")]
    pub checkout_timeout_secs: f64,
    /// Seconds an idle server connection is kept (0 = forever).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: f64,
    /// Seconds after which a server connection is retired (0 = never).
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime_secs: f64,
    /// Most prepared statements sluice keeps per server connection (transaction mode).
    #[serde(default = "default_statement_cache")]
    pub statement_cache_size: usize,
    /// With policies on: what happens to statements sluice cannot classify. `deny`
    /// (default) or `allow` (unsafe: such statements skip the policy check).
    #[serde(default)]
    pub unparsed: Unparsed,
    /// The read cache on this route (off by default).
    #[serde(default)]
    pub cache: RouteCache,
}

/// What happens to statements that cannot be classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Unparsed {
    #[default]
    Deny,
    Allow,
}

fn default_checkout_timeout() -> f64 {
    5.0
}

fn default_idle_timeout() -> f64 {
    600.0
}

fn default_max_lifetime() -> f64 {
    3600.0
}

fn default_statement_cache() -> usize {
    500
}

fn default_pool_size() -> u32 {
    10
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl Config {
    /// Reads, parses, resolves relative paths and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = Config::from_toml(&text, path, base)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses and validates config text; `origin` names it in errors and `base` anchors
    /// relative paths.
    pub fn from_toml(text: &str, origin: &Path, base: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.resolve_paths(base);
        validate(&config).map_err(|(key, message)| ConfigError::Invalid {
            path: origin.to_path_buf(),
            key,
            message,
        })?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(path) = p {
                if path.is_relative() {
                    *path = base.join(&*path);
                }
            }
        };
        fix(&mut self.tls.cert);
        fix(&mut self.tls.key);
        if let Some(policy) = &mut self.policy {
            fix(&mut policy.model);
            for f in &mut policy.files {
                if f.is_relative() {
                    *f = base.join(&*f);
                }
            }
        }
        if self.audit.sink != "stdout" && Path::new(&self.audit.sink).is_relative() {
            self.audit.sink = base.join(&self.audit.sink).display().to_string();
        }
        for backend in self.backends.values_mut() {
            fix(&mut backend.path);
            fix(&mut backend.seed);
            fix(&mut backend.tls_ca);
        }
    }
}
