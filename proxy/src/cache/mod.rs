//! The read cache: which statements may be answered from it, under which key, and the
//! invalidation of what writes change.
//!
//! A read is cached only when it is one statement, classified as a read of tables only,
//! deterministic (no volatile or unknown function, no session variable, no row lock),
//! outside an explicit transaction, in a session whose settings sluice knows, and not
//! excluded by the route's rules or a `/* sluice:nocache */` hint. Its key holds the
//! route, the backend role, the user's identity scope, the session's settings and
//! search_path, the exact statement text and parameters, and the generations of the
//! tables read; the full key is stored with the answer and compared on every hit.

mod direct;
mod pipelined;
pub mod resultset;
mod store;
mod watchdog;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use policies::Action;
use sha2::{Digest, Sha256};

use crate::classify::Classified;
use crate::config::{CacheStore, Invalidate, RouteCache};
use crate::metrics as m;
pub use store::Found;
use store::Store;

/// Generation name that every entry of a namespace depends on: bumped by writes whose
/// reach is unknown (functions, DDL) and, with `invalidate = "database"`, by every write.
const WHOLE_DATABASE: &str = "*";

/// Schemas whose contents change without writes through sluice: never cached.
const CATALOGS: &[&str] = &[
    "pg_catalog",
    "information_schema",
    "mysql",
    "performance_schema",
    "sys",
    "sqlite_master",
    "main.sqlite_master",
    "main.sqlite_schema",
];

/// The version of the stored answers' format (first in every key).
const ENTRY_FORMAT: &str = "v2/";

/// The longest a read waits for another session's identical read to fill the cache.
const WAIT_FOR_FILL: Duration = Duration::from_secs(60);

/// Misses being filled now, by entry: later identical misses wait for the answer.
type Flights = Arc<Mutex<HashMap<String, tokio::sync::watch::Sender<Option<Bytes>>>>>;

/// The cache of one sluice instance (shared with others through Redis).
pub struct Cache {
    store: Store,
    max_entry_bytes: usize,
    flights: Flights,
}

/// A route's cache settings, resolved at startup.
#[derive(Debug, Clone)]
pub struct RouteRules {
    pub rules: RouteCache,
    /// The backend database: generations are per namespace, shared by every route and
    /// instance that reaches the same database.
    pub namespace: String,
    /// The role sluice uses on the backend (part of every key).
    pub role: String,
    /// The prefix (and Redis Cluster hash tag) of the namespace's keys.
    tag: String,
}

impl RouteRules {
    pub fn new(rules: RouteCache, namespace: String, role: String) -> RouteRules {
        RouteRules {
            rules,
            tag: store::tag(&namespace),
            namespace,
            role,
        }
    }
}

/// A cacheable read, ready to look up.
pub struct Plan {
    /// The namespace's key prefix.
    tag: String,
    /// Generation names: the tables read, then the whole database.
    tables: Vec<String>,
    /// The full key without generations (compared on a hit).
    key: String,
    /// Its hash (in the store key).
    base: String,
    ttl: Duration,
}

/// A miss to fill: store the answer once it is complete. Dropping it unfilled lets
/// the reads waiting for it run their own query.
pub struct Fill {
    plan: Plan,
    generations: String,
    flight: Flight,
}

/// This session's claim on filling one entry.
struct Flight {
    key: String,
    flights: Flights,
    answer: tokio::sync::watch::Sender<Option<Bytes>>,
}

impl Drop for Flight {
    fn drop(&mut self) {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if flights
            .get(&self.key)
            .is_some_and(|tx| tx.same_channel(&self.answer))
        {
            flights.remove(&self.key);
        }
    }
}

/// What a lookup found.
pub enum Lookup {
    Hit(Bytes),
    Miss(Fill),
    /// The store cannot be used now: run the query.
    Unavailable,
}

/// A read that does not use the cache, counted by reason.
pub fn bypass(reason: &'static str) -> Lookup {
    metrics::counter!(m::CACHE_BYPASSES, "reason" => reason).increment(1);
    Lookup::Unavailable
}

/// Everything a key depends on besides the statement's classification.
pub struct KeyParts<'a> {
    pub route: &'a str,
    /// The user's identity scope: users that may be told apart by policy never share.
    pub scope: &'a str,
    /// The session's result-changing settings (startup parameters, SETs, search_path).
    pub session: &'a str,
    pub sql: &'a str,
    /// Parameter values, types and result formats (extended protocol); empty otherwise.
    pub params: &'a [u8],
}

impl Cache {
    pub fn new(config: &CacheStore) -> Result<Cache, String> {
        Ok(Cache {
            store: Store::new(config)?,
            max_entry_bytes: config.max_entry_bytes,
            flights: Arc::default(),
        })
    }

    /// Whether entries are shared with other instances (Redis).
    pub fn is_shared(&self) -> bool {
        self.store.is_shared()
    }

    pub fn max_entry_bytes(&self) -> usize {
        self.max_entry_bytes
    }

    /// The plan for a cacheable read, or why the statement bypasses the cache.
    pub fn plan(
        &self,
        route: &RouteRules,
        parts: &KeyParts<'_>,
        statements: &[Classified],
    ) -> Result<Plan, &'static str> {
        let hint = Hint::parse(parts.sql);
        if hint == Hint::NoCache {
            return Err("hint");
        }
        let [stmt] = statements else {
            return Err("not_single");
        };
        if stmt.action != Action::Select
            || !stmt.effects.is_empty()
            || stmt.executes.is_some()
            || stmt.accesses.iter().any(|a| a.action != Action::Select)
        {
            return Err("not_read");
        }
        if !stmt.deterministic {
            return Err("volatile");
        }
        let mut tables: Vec<String> = stmt.accesses.iter().map(|a| a.object.clone()).collect();
        if tables.iter().any(|t| is_catalog(t)) {
            return Err("catalog");
        }
        let rules = &route.rules;
        if tables
            .iter()
            .any(|t| rules.never.iter().any(|p| policies::glob(p, t)))
        {
            return Err("excluded");
        }
        let mut ttl = rules.ttl_secs;
        for t in &tables {
            if let Some(secs) = rules.tables.get(t) {
                ttl = ttl.min(*secs);
            }
        }
        if let Hint::Cache { ttl: Some(t) } = hint {
            ttl = t.as_secs_f64();
        }
        tables.sort();
        tables.dedup();
        tables.push(WHOLE_DATABASE.to_string());
        let key = full_key(route, parts);
        let hash = Sha256::digest(key.as_bytes());
        let base = hex(&hash[..16]);
        Ok(Plan {
            tag: route.tag.clone(),
            tables,
            key,
            base,
            ttl: Duration::from_secs_f64(ttl.max(0.001)),
        })
    }

    /// Plans a read and looks it up: `Unavailable`, counted as a bypass by reason, when
    /// the statement may not be answered from the cache.
    pub async fn read(
        &self,
        route: &RouteRules,
        parts: &KeyParts<'_>,
        statements: &[Classified],
    ) -> Lookup {
        match self.plan(route, parts, statements) {
            Ok(plan) => self.lookup(plan).await,
            Err(reason) => bypass(reason),
        }
    }

    /// Looks the plan up: one store round trip.
    pub async fn lookup(&self, plan: Plan) -> Lookup {
        match self.store.get(&plan.tag, &plan.tables, &plan.base).await {
            Found::Hit(value) => match unpack(&value, &plan.key) {
                Some(answer) => {
                    metrics::counter!(m::CACHE_HITS).increment(1);
                    Lookup::Hit(answer)
                }
                None => {
                    // a hash collision or a corrupt entry: never served
                    metrics::counter!(m::CACHE_MISSES).increment(1);
                    Lookup::Unavailable
                }
            },
            Found::Miss(generations) => self.miss(plan, generations).await,
            Found::Unavailable => bypass("store_unavailable"),
        }
    }

    /// A miss: this session fills the entry, or, when an identical read is already
    /// running for another session, waits for its answer.
    async fn miss(&self, plan: Plan, generations: String) -> Lookup {
        // the full key, not its hash: a shared answer is never another key's
        let key = format!("{}\0{generations}", plan.key);
        let claim = {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            match flights.get(&key) {
                Some(tx) => Err(tx.subscribe()),
                None => {
                    let (tx, _) = tokio::sync::watch::channel(None);
                    flights.insert(key.clone(), tx.clone());
                    Ok(tx)
                }
            }
        };
        let mut rx = match claim {
            Ok(answer) => {
                metrics::counter!(m::CACHE_MISSES).increment(1);
                let flight = Flight {
                    key,
                    flights: self.flights.clone(),
                    answer,
                };
                return Lookup::Miss(Fill {
                    plan,
                    generations,
                    flight,
                });
            }
            Err(rx) => rx,
        };
        let shared = tokio::time::timeout(WAIT_FOR_FILL, async {
            loop {
                if let Some(a) = rx.borrow_and_update().clone() {
                    return Some(a);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match shared {
            Ok(Some(answer)) => {
                metrics::counter!(m::CACHE_HITS).increment(1);
                metrics::counter!(m::CACHE_SHARED).increment(1);
                Lookup::Hit(answer)
            }
            // the other read failed or gave up: run the query without filling
            _ => {
                metrics::counter!(m::CACHE_MISSES).increment(1);
                Lookup::Unavailable
            }
        }
    }

    /// Stores a complete answer for a miss (in the background: the client is not kept
    /// waiting).
    pub fn fill(self: &Arc<Self>, fill: Fill, answer: Bytes) {
        if answer.len() > self.max_entry_bytes {
            metrics::counter!(m::CACHE_BYPASSES, "reason" => "too_large").increment(1);
            return;
        }
        metrics::histogram!(m::CACHE_ENTRY_BYTES).record(answer.len() as f64);
        // reads waiting for this one get the answer now; later ones find it stored
        fill.flight.answer.send_replace(Some(answer.clone()));
        let value = pack(&fill.plan.key, &answer);
        let cache = self.clone();
        tokio::spawn(async move {
            let p = &fill.plan;
            cache
                .store
                .put(&p.tag, &p.base, &fill.generations, value, p.ttl)
                .await;
            metrics::counter!(m::CACHE_STORES).increment(1);
            drop(fill);
        });
    }

    /// Makes every entry that read `tables` of `namespace` unreachable (the whole
    /// database for `invalidate = "database"` or when `tables` holds `*`). Awaited
    /// before the client learns that its write completed.
    pub async fn invalidate(&self, route: &RouteRules, tables: &[String]) {
        if tables.is_empty() {
            return;
        }
        let whole = route.rules.invalidate == Invalidate::Database
            || tables.iter().any(|t| t == WHOLE_DATABASE);
        let names: Vec<String> = if whole {
            vec![WHOLE_DATABASE.to_string()]
        } else {
            tables.to_vec()
        };
        metrics::counter!(m::CACHE_INVALIDATIONS).increment(names.len() as u64);
        self.store.bump(&route.tag, &names).await;
    }

    pub async fn flush(&self) -> Result<(), String> {
        self.store.flush().await
    }
}

/// Every field of a key, each after its length (so no two field lists give one key).
fn full_key(route: &RouteRules, parts: &KeyParts<'_>) -> String {
    use std::fmt::Write;
    let mut key = String::with_capacity(128 + parts.sql.len() + 2 * parts.params.len());
    // the format of stored answers: a new one never reads entries of an older sluice
    key.push_str(ENTRY_FORMAT);
    for field in [
        route.namespace.as_str(),
        route.role.as_str(),
        parts.route,
        parts.scope,
        parts.session,
        parts.sql,
    ] {
        let _ = write!(key, "{}:{field}", field.len());
    }
    let _ = write!(key, "{}:", parts.params.len());
    key.push_str(&hex(parts.params));
    key
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// The tables a permitted request writes (to invalidate once it succeeded). A write whose
/// reach is unknown (a function or procedure call, DDL, an unclassified statement) is
/// `*`: the whole database.
pub fn written(statements: &[Classified], classified: bool) -> Vec<String> {
    if !classified {
        return vec![WHOLE_DATABASE.to_string()];
    }
    let mut out = Vec::new();
    for stmt in statements {
        for a in &stmt.accesses {
            match a.action {
                Action::Insert
                | Action::Update
                | Action::Delete
                | Action::Truncate
                | Action::CopyIn => out.push(a.object.clone()),
                Action::Ddl | Action::Execute | Action::Admin | Action::Other => {
                    out.push(WHOLE_DATABASE.to_string())
                }
                _ => {}
            }
        }
        if matches!(stmt.action, Action::Ddl | Action::Execute | Action::Other)
            || stmt.executes.is_some()
        {
            out.push(WHOLE_DATABASE.to_string());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Writes of an open transaction, held until it ends.
#[derive(Default)]
pub struct TxWrites {
    pending: Vec<String>,
}

impl TxWrites {
    /// What to invalidate now after a request that wrote `request`: nothing while a
    /// transaction stays open (its writes wait for its end), and at its end the
    /// transaction's writes too, unless it rolled back.
    pub fn settle(
        &mut self,
        mut request: Vec<String>,
        in_transaction: bool,
        rolled_back: bool,
    ) -> Vec<String> {
        if in_transaction {
            self.pending.extend(request);
            return Vec::new();
        }
        let transaction = std::mem::take(&mut self.pending);
        if !rolled_back {
            request.extend(transaction);
        }
        request.sort();
        request.dedup();
        request
    }

    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

/// Whether a request ends with a ROLLBACK (of the whole transaction).
pub fn ends_in_rollback(statements: &[Classified]) -> bool {
    // `ROLLBACK TO SAVEPOINT s; COMMIT` commits: only the last statement counts
    statements.last().is_some_and(|s| {
        s.effects
            .iter()
            .any(|e| matches!(e, crate::classify::Effect::Rollback))
    })
}

fn is_catalog(table: &str) -> bool {
    let schema = table.split('.').next().unwrap_or("");
    CATALOGS.contains(&schema) || CATALOGS.contains(&table) || table.starts_with("pg_catalog.")
}

/// `[len of key][key][answer]`.
fn pack(key: &str, answer: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(4 + key.len() + answer.len());
    out.put_u32(key.len() as u32);
    out.put_slice(key.as_bytes());
    out.put_slice(answer);
    out.freeze()
}

/// The answer, when the stored key is `key`.
fn unpack(value: &Bytes, key: &str) -> Option<Bytes> {
    let len = u32::from_be_bytes(value.get(..4)?.try_into().ok()?) as usize;
    let stored = value.get(4..4 + len)?;
    (stored == key.as_bytes()).then(|| value.slice(4 + len..))
}

/// A per-statement hint in a comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    None,
    /// `/* sluice:nocache */`
    NoCache,
    /// `/* sluice:cache */` or `/* sluice:cache ttl=30s */` (s, ms or plain seconds).
    Cache {
        ttl: Option<Duration>,
    },
}

impl Hint {
    pub fn parse(sql: &str) -> Hint {
        let mut rest = sql;
        while let Some(start) = rest.find("/*") {
            let Some(end) = rest[start..].find("*/") else {
                break;
            };
            let body = rest[start + 2..start + end].trim();
            rest = &rest[start + end + 2..];
            let mut words = body.split_whitespace();
            match words.next() {
                Some("sluice:nocache") => return Hint::NoCache,
                Some("sluice:cache") => {
                    let ttl = words
                        .find_map(|w| w.strip_prefix("ttl="))
                        .and_then(parse_duration);
                    return Hint::Cache { ttl };
                }
                _ => {}
            }
        }
        Hint::None
    }
}

fn parse_duration(v: &str) -> Option<Duration> {
    let (num, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60.0)
    } else {
        (v, 1.0)
    };
    let secs = num.parse::<f64>().ok()? * scale;
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests;
