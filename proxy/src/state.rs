//! Runtime state built from a validated config: users with parsed verifiers, routes with
//! opened backends, TLS acceptor, and the cancel-key registry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use backends::sqlite::{Canceller, SqliteBackend};
use bytes::Bytes;
use tokio_rustls::TlsAcceptor;

use crate::auth::Verifier;
use crate::config::{AuthMethod, BackendKind, Config, TlsMode};

/// A configured client identity.
pub struct UserEntry {
    pub method: AuthMethod,
    pub verifier: Verifier,
}

/// A backend opened for use.
#[derive(Clone)]
pub enum BackendHandle {
    Sqlite(SqliteBackend),
}

/// A client-visible database name and what serves it.
pub struct RouteEntry {
    pub name: String,
    pub backend: BackendHandle,
    pub max_clients: u32,
    clients: AtomicU32,
}

/// Holds one client's place on a route while alive.
pub struct RouteSlot(Arc<RouteEntry>);

impl Drop for RouteSlot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

impl RouteEntry {
    /// Takes a client slot, or `None` when the route is at `max_clients`.
    pub fn enter(self: &Arc<Self>) -> Option<RouteSlot> {
        let prev = self.clients.fetch_add(1, Ordering::AcqRel);
        let slot = RouteSlot(self.clone());
        (self.max_clients == 0 || prev < self.max_clients).then_some(slot)
    }
}

/// Everything a connection needs, shared read-only.
pub struct State {
    pub config: Config,
    pub tls: Option<TlsAcceptor>,
    pub tls_mode: TlsMode,
    pub users: HashMap<String, UserEntry>,
    pub routes: HashMap<String, Arc<RouteEntry>>,
    pub cancels: Arc<CancelRegistry>,
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
    #[error("users.{0}.password: {1}")]
    Verifier(String, crate::auth::VerifierError),
}

impl State {
    /// Builds state: parses verifiers, loads certificates, opens (and seeds) backends.
    pub fn build(config: Config) -> Result<State, StateError> {
        let tls = crate::tls::server_config(&config.tls)?.map(TlsAcceptor::from);
        let mut users = HashMap::new();
        for (name, user) in &config.users {
            let verifier = Verifier::parse(&user.password, user.auth)
                .map_err(|e| StateError::Verifier(name.clone(), e))?;
            users.insert(
                name.clone(),
                UserEntry {
                    method: user.auth,
                    verifier,
                },
            );
        }
        let mut opened: HashMap<String, BackendHandle> = HashMap::new();
        for (name, b) in &config.backends {
            let handle = match b.kind {
                BackendKind::Sqlite => {
                    let path = b.path.as_deref().unwrap_or(std::path::Path::new(""));
                    let backend =
                        SqliteBackend::open(path, b.seed.as_deref()).map_err(|source| {
                            StateError::Backend {
                                name: name.clone(),
                                source,
                            }
                        })?;
                    BackendHandle::Sqlite(backend)
                }
            };
            opened.insert(name.clone(), handle);
        }
        let routes = config
            .routes
            .iter()
            .map(|(name, r)| {
                let entry = RouteEntry {
                    name: name.clone(),
                    backend: opened[&r.backend].clone(),
                    max_clients: r.max_clients,
                    clients: AtomicU32::new(0),
                };
                (name.clone(), Arc::new(entry))
            })
            .collect();
        Ok(State {
            tls_mode: config.tls.mode,
            config,
            tls,
            users,
            routes,
            cancels: Arc::new(CancelRegistry::default()),
        })
    }
}

/// Maps the (pid, secret) keys handed to clients to what a cancel request interrupts.
#[derive(Default)]
pub struct CancelRegistry {
    entries: Mutex<HashMap<i32, (Bytes, Canceller)>>,
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
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, (Bytes, Canceller)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Issues a fresh key for a session.
    pub fn register(self: &Arc<Self>, canceller: Canceller) -> CancelKey {
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
