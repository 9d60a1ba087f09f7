//! Runtime state built from a validated config: users with parsed verifiers, routes with
//! opened backends, TLS acceptor, and the cancel-key registry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use backends::mysql::{MyConnectConfig, MyPool};
use backends::postgres::{BackendKey, ConnectConfig, PgPool, PoolSettings, TlsTarget};
use backends::sqlite::{Canceller, SqliteBackend};
use bytes::Bytes;
use rustls_pki_types::ServerName;
use tokio_rustls::TlsAcceptor;

use arc_swap::ArcSwap;

use crate::access::AccessState;
use crate::audit::AuditSink;
use crate::auth::Verifier;
use crate::config::{
    AuthMethod, Backend, BackendKind, BackendTls, Config, PoolMode, Route, TlsMode,
};

/// A configured client identity.
pub struct UserEntry {
    pub method: AuthMethod,
    pub verifier: Verifier,
    /// SHA1(SHA1(password)) for MySQL's `mysql_native_password`, when configured.
    pub mysql_native: Option<[u8; 20]>,
    pub connections: Arc<Limit>,
    pub rules: crate::access::ConnectionRules,
}

/// What serves a route.
#[derive(Clone)]
pub enum BackendHandle {
    Sqlite(SqliteBackend),
    /// A pool of PostgreSQL server connections (one pool per route).
    Postgres(Arc<PgPool>),
    /// A pool of MySQL/MariaDB server connections (one pool per route).
    Mysql(Arc<MyPool>),
}

impl BackendHandle {
    /// The SQL dialect statements for this backend are classified in.
    pub fn dialect(&self) -> crate::classify::Dialect {
        use crate::classify::Dialect;
        match self {
            BackendHandle::Sqlite(_) => Dialect::Sqlite,
            BackendHandle::Postgres(_) => Dialect::Postgres,
            BackendHandle::Mysql(_) => Dialect::Mysql,
        }
    }
}

/// A client-visible database name and what serves it.
pub struct RouteEntry {
    pub name: String,
    /// The database name on the backend (MySQL names resolve in it).
    pub database: String,
    pub backend: BackendHandle,
    pub pool_mode: PoolMode,
    pub clients: Arc<Limit>,
    /// The read cache's rules here (None: no route caches; then nothing is invalidated
    /// either). Lookups need `rules.enabled`.
    pub cache: Option<crate::cache::RouteRules>,
}

/// A counter with a ceiling (0 = none), handing out slots.
pub struct Limit {
    max: u32,
    count: AtomicU32,
}

/// Holds one place under a [`Limit`] while alive.
pub struct LimitSlot(Arc<Limit>);

impl Drop for LimitSlot {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limit {
    pub fn new(max: u32) -> Arc<Limit> {
        Arc::new(Limit {
            max,
            count: AtomicU32::new(0),
        })
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    /// Takes a slot, or `None` when the limit is reached.
    pub fn enter(self: &Arc<Self>) -> Option<LimitSlot> {
        let prev = self.count.fetch_add(1, Ordering::AcqRel);
        let slot = LimitSlot(self.clone());
        (self.max == 0 || prev < self.max).then_some(slot)
    }
}

/// Everything a connection needs, shared read-only.
pub struct State {
    pub config: Config,
    pub tls: Option<TlsAcceptor>,
    pub tls_mode: TlsMode,
    /// Users, policies and audit: replaced whole by a reload.
    pub access: ArcSwap<AccessState>,
    pub routes: HashMap<String, Arc<RouteEntry>>,
    pub cancels: Arc<CancelRegistry>,
    /// `caching_sha2_password` fast-path verifiers, cached after a full authentication.
    pub sha2_cache: Mutex<HashMap<String, [u8; 32]>>,
    /// Live MySQL sessions by connection id, for KILL.
    pub mysql_sessions: Arc<crate::frontend::mysql::Sessions>,
    /// The read cache, when a route enables it.
    pub cache: Option<Arc<crate::cache::Cache>>,
}

/// Why state could not be built from a config.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("backend {name}: {source}")]
    Backend {
        name: String,
        source: backends::BackendError,
    },
    #[error("backends.{name}: {message}")]
    BackendConfig { name: String, message: String },
    #[error("users.{0}.password: {1}")]
    Verifier(String, crate::auth::VerifierError),
    #[error(transparent)]
    Policy(#[from] policies::PolicyError),
    #[error("{0}")]
    Cache(String),
    #[error("audit.sink: {0}")]
    Audit(std::io::Error),
}

impl State {
    /// Builds state: parses verifiers, loads certificates, opens (and seeds) backends.
    pub fn build(config: Config) -> Result<State, StateError> {
        let tls = crate::tls::server_config(&config.tls)?.map(TlsAcceptor::from);
        let access = State::build_access(&config, None)?;
        let mut sqlite: HashMap<&str, SqliteBackend> = HashMap::new();
        for (name, b) in &config.backends {
            if b.kind == BackendKind::Sqlite {
                let path = b.path.as_deref().unwrap_or(std::path::Path::new(""));
                let backend = SqliteBackend::open(path, b.seed.as_deref()).map_err(|source| {
                    StateError::Backend {
                        name: name.clone(),
                        source,
                    }
                })?;
                sqlite.insert(name, backend);
            }
        }
        let mut routes = HashMap::new();
        let caching = config.routes.values().any(|r| r.cache.enabled);
        for (name, r) in &config.routes {
            let b = &config.backends[&r.backend];
            let backend = match b.kind {
                BackendKind::Sqlite => BackendHandle::Sqlite(sqlite[r.backend.as_str()].clone()),
                BackendKind::Postgres => {
                    let database = r.database.clone().unwrap_or_else(|| name.clone());
                    let connect = pg_connect_config(&r.backend, b, database)?;
                    BackendHandle::Postgres(Arc::new(PgPool::new(connect, pool_settings(r))))
                }
                BackendKind::Mysql => {
                    let database = r.database.clone().unwrap_or_else(|| name.clone());
                    let connect = my_connect_config(&r.backend, b, database)?;
                    BackendHandle::Mysql(Arc::new(MyPool::new(&connect, pool_settings(r))))
                }
            };
            let database = r.database.clone().unwrap_or_else(|| name.clone());
            // every route to a database some route caches invalidates on writes
            let cache = caching.then(|| cache_rules(r, b, &database));
            let entry = RouteEntry {
                name: name.clone(),
                database,
                backend,
                pool_mode: r.pool_mode,
                clients: Limit::new(r.max_clients),
                cache,
            };
            routes.insert(name.clone(), Arc::new(entry));
        }
        let cache = if caching {
            Some(Arc::new(
                crate::cache::Cache::new(&config.cache).map_err(StateError::Cache)?,
            ))
        } else {
            None
        };
        Ok(State {
            tls_mode: config.tls.mode,
            cache,
            config,
            tls,
            access: ArcSwap::from_pointee(access),
            routes,
            cancels: Arc::new(CancelRegistry::default()),
            sha2_cache: Mutex::new(HashMap::new()),
            mysql_sessions: Arc::default(),
        })
    }
}

/// A route's cache rules; the namespace names the backend database, so every route and
/// instance that reaches it shares its generations.
fn cache_rules(
    r: &crate::config::Route,
    b: &crate::config::Backend,
    database: &str,
) -> crate::cache::RouteRules {
    let namespace = match b.kind {
        BackendKind::Sqlite => format!(
            "sqlite://{}",
            b.path
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
        ),
        kind => format!(
            "{}://{}:{}/{database}",
            format!("{kind:?}").to_lowercase(),
            b.host.as_deref().unwrap_or("localhost"),
            b.port.unwrap_or(if kind == BackendKind::Postgres {
                5432
            } else {
                3306
            })
        ),
    };
    crate::cache::RouteRules::new(
        r.cache.clone(),
        namespace,
        b.user.clone().unwrap_or_default(),
    )
}

impl State {
    /// The users, policy and audit sink of `config`. Connection counters of users that
    /// stay are kept; an audit sink with unchanged settings is kept.
    pub fn build_access(
        config: &Config,
        previous: Option<&AccessState>,
    ) -> Result<AccessState, StateError> {
        let mut users = HashMap::new();
        for (name, user) in &config.users {
            let verifier = Verifier::parse(&user.password, user.auth)
                .map_err(|e| StateError::Verifier(name.clone(), e))?;
            let connections = previous
                .and_then(|p| p.users.get(name))
                .filter(|u| u.connections.max() == user.max_connections)
                .map(|u| u.connections.clone())
                .unwrap_or_else(|| Limit::new(user.max_connections));
            users.insert(
                name.clone(),
                UserEntry {
                    method: user.auth,
                    verifier,
                    mysql_native: user
                        .mysql_native_password
                        .as_deref()
                        .and_then(crate::auth::mysql::parse_native),
                    connections,
                    rules: crate::access::ConnectionRules::from_config(user),
                },
            );
        }
        let policy = AccessState::policy_from(config)?;
        if policy.is_none() && !config.users.is_empty() {
            tracing::warn!(
                "no [policy] configured: every authenticated user may run any statement"
            );
        }
        let settings = format!("{:?}", config.audit);
        let audit = match previous.and_then(|p| p.audit.as_ref()) {
            Some(a) if a.settings == settings => Some(a.clone()),
            _ => AuditSink::start(&config.audit).map_err(StateError::Audit)?,
        };
        Ok(AccessState {
            users,
            policy,
            unparsed_allowed: AccessState::unparsed_from(config),
            audit,
            generation: previous.map_or(0, |p| p.generation + 1),
            classified: previous.map(|p| p.classified.clone()).unwrap_or_default(),
        })
    }

    /// A connection slot of a configured user; None when the user is unknown or at its
    /// connection limit.
    pub fn user_slot(&self, user: &str) -> Option<LimitSlot> {
        self.access().users.get(user)?.connections.enter()
    }

    /// The current users, policy and audit sink.
    pub fn access(&self) -> arc_swap::Guard<Arc<AccessState>> {
        self.access.load()
    }

    /// Reads the config file again and swaps in its users, policies and audit settings.
    /// On any error the running state stays as it was. Returns what was applied.
    pub fn reload(&self) -> Result<String, String> {
        let result = self.try_reload();
        match &result {
            Ok(msg) => {
                metrics::counter!(crate::metrics::RELOADS, "outcome" => "ok").increment(1);
                tracing::info!(result = %msg, "configuration reloaded");
            }
            Err(e) => {
                metrics::counter!(crate::metrics::RELOAD_FAILURES).increment(1);
                tracing::error!(error = %e, "reload failed; the previous configuration stays");
            }
        }
        result
    }

    fn try_reload(&self) -> Result<String, String> {
        let path = self
            .config
            .source
            .as_deref()
            .ok_or("this instance was not started from a config file")?;
        let config = Config::load(path).map_err(|e| e.to_string())?;
        let current = self.access.load_full();
        let next = State::build_access(&config, Some(&current)).map_err(|e| e.to_string())?;
        let rules = next.policy.as_ref().map_or(0, |p| p.rules());
        self.access.store(Arc::new(next));
        let mut msg = format!(
            "reloaded {} users and {rules} policy rules",
            config.users.len()
        );
        let fixed = [
            (
                "listeners",
                format!("{:?}", config.listeners) != format!("{:?}", self.config.listeners),
            ),
            (
                "tls",
                format!("{:?}", config.tls) != format!("{:?}", self.config.tls),
            ),
            (
                "backends",
                format!("{:?}", config.backends) != format!("{:?}", self.config.backends),
            ),
            ("routes", route_shape(&config) != route_shape(&self.config)),
            (
                "server",
                format!("{:?}", config.server) != format!("{:?}", self.config.server),
            ),
        ];
        let changed: Vec<&str> = fixed.iter().filter(|(_, c)| *c).map(|(n, _)| *n).collect();
        if !changed.is_empty() {
            msg.push_str(&format!(
                "; changes to [{}] take effect at restart",
                changed.join("], [")
            ));
        }
        Ok(msg)
    }
}

/// Routes without the settings a reload applies (`unparsed`).
fn route_shape(config: &Config) -> String {
    let mut routes = config.routes.clone();
    for r in routes.values_mut() {
        r.unparsed = crate::config::Unparsed::Deny;
    }
    format!("{routes:?}")
}

fn secs(v: f64) -> Option<Duration> {
    (v > 0.0).then(|| Duration::from_secs_f64(v))
}

fn pool_settings(r: &Route) -> PoolSettings {
    PoolSettings {
        size: r.pool_size,
        min_idle: r.min_idle,
        checkout_timeout: Duration::from_secs_f64(r.checkout_timeout_secs),
        idle_timeout: secs(r.idle_timeout_secs),
        max_lifetime: secs(r.max_lifetime_secs),
        statement_cache: r.statement_cache_size,
    }
}

fn backend_password(name: &str, b: &Backend) -> Result<Option<String>, StateError> {
    match &b.password_env {
        Some(var) => std::env::var(var)
            .map(Some)
            .map_err(|_| StateError::BackendConfig {
                name: name.to_string(),
                message: format!("environment variable {var} is not set"),
            }),
        None => Ok(b.password.clone()),
    }
}

fn my_connect_config(
    name: &str,
    b: &Backend,
    database: String,
) -> Result<MyConnectConfig, StateError> {
    Ok(MyConnectConfig {
        host: b.host.clone().unwrap_or_default(),
        port: b.port.unwrap_or(3306),
        user: b.user.clone().unwrap_or_default(),
        password: backend_password(name, b)?,
        database,
        connect_timeout: Duration::from_secs_f64(b.connect_timeout_secs),
        tls_ca: (b.tls == BackendTls::VerifyFull)
            .then(|| b.tls_ca.clone())
            .flatten(),
        tls_server_name: b.tls_server_name.clone(),
    })
}

fn pg_connect_config(
    name: &str,
    b: &Backend,
    database: String,
) -> Result<ConnectConfig, StateError> {
    let err = |message: String| StateError::BackendConfig {
        name: name.to_string(),
        message,
    };
    let host = b.host.clone().unwrap_or_default();
    let password = backend_password(name, b)?;
    let tls = match (b.tls, &b.tls_ca) {
        (BackendTls::VerifyFull, Some(ca)) => {
            let config = crate::tls::client_config(ca)?;
            let sni = b.tls_server_name.clone().unwrap_or_else(|| host.clone());
            let server_name = ServerName::try_from(sni)
                .map_err(|e| err(format!("invalid TLS server name: {e}")))?;
            Some(TlsTarget {
                config,
                server_name,
            })
        }
        _ => None,
    };
    Ok(ConnectConfig {
        host,
        port: b.port.unwrap_or(5432),
        user: b.user.clone().unwrap_or_default(),
        password,
        database,
        connect_timeout: Duration::from_secs_f64(b.connect_timeout_secs),
        tls,
    })
}

/// What a cancel request interrupts: a SQLite statement, or the query on whichever
/// PostgreSQL server connection serves the session at that moment.
#[derive(Clone)]
pub enum CancelTarget {
    Sqlite(Canceller),
    Postgres(Arc<ServerSlot>),
    /// A MySQL/MariaDB connection a PostgreSQL client holds: `KILL QUERY` on another one.
    Mysql {
        pool: Arc<MyPool>,
        thread: u32,
    },
}

/// The server connection a PostgreSQL session holds right now, if any. A cancel holds the
/// lock until the server has taken the request, and a session clears the slot (under the
/// same lock) before it gives the connection back, so a cancel never reaches a connection
/// that already serves another client.
#[derive(Default)]
pub struct ServerSlot(tokio::sync::Mutex<Option<BackendKey>>);

impl ServerSlot {
    pub async fn set(&self, key: Option<BackendKey>) {
        *self.0.lock().await = key;
    }

    async fn cancel(&self) {
        let guard = self.0.lock().await;
        if let Some(key) = *guard {
            if let Err(e) = backends::postgres::cancel::send(key, Duration::from_secs(5)).await {
                tracing::warn!(error = %e, "cancel request to the server failed");
            }
        }
    }
}

impl CancelTarget {
    fn cancel(&self) {
        match self {
            CancelTarget::Sqlite(c) => c.cancel(),
            CancelTarget::Postgres(slot) => {
                let slot = slot.clone();
                tokio::spawn(async move { slot.cancel().await });
            }
            CancelTarget::Mysql { pool, thread } => {
                let (pool, thread) = (pool.clone(), *thread);
                tokio::spawn(async move {
                    if let Err(e) = pool.run(&format!("KILL QUERY {thread}")).await {
                        tracing::warn!(error = %e, thread, "cancel request failed");
                    }
                });
            }
        }
    }
}

/// Maps the (pid, secret) keys handed to clients to what a cancel request interrupts.
#[derive(Default)]
pub struct CancelRegistry {
    entries: Mutex<HashMap<i32, (Bytes, CancelTarget)>>,
}

/// A registered key; removed from the registry when dropped.
pub struct CancelKey {
    pub pid: i32,
    pub secret: Bytes,
    registry: Arc<CancelRegistry>,
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.pid);
    }
}

impl CancelRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, (Bytes, CancelTarget)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Issues a fresh key for a session.
    pub fn register(self: &Arc<Self>, canceller: CancelTarget) -> CancelKey {
        let mut map = self.lock();
        loop {
            let mut raw = [0u8; 8];
            crate::auth::fill_random(&mut raw);
            let pid = i32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) & 0x7fff_ffff;
            if pid == 0 || map.contains_key(&pid) {
                continue;
            }
            let secret = Bytes::copy_from_slice(&raw[4..]);
            map.insert(pid, (secret.clone(), canceller));
            return CancelKey {
                pid,
                secret,
                registry: self.clone(),
            };
        }
    }

    /// Interrupts the session with this key. Returns false (and does nothing) for an
    /// unknown pid or a wrong secret.
    pub fn cancel(&self, pid: i32, secret: &[u8]) -> bool {
        let target = {
            let map = self.lock();
            match map.get(&pid) {
                Some((s, c)) if crate::auth::constant_time_eq(s, secret) => Some(c.clone()),
                _ => None,
            }
        };
        match target {
            Some(c) => {
                c.cancel();
                true
            }
            None => false,
        }
    }
}
