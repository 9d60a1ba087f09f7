//! Where answers and table generations live: Redis (shared by every sluice instance using
//! it) or an in-process cache.
//!
//! Every table of a backend database has a generation, bumped by each write sluice
//! forwards. An entry's key holds the generations of the tables its statement read, so a
//! write through any instance makes every older entry unreachable at once. With Redis, one
//! command (an MGET) reads the generations and the entry, which holds the generations it
//! was computed under; only an entry with the current ones is served.
//! Keys of one backend database share a Redis Cluster hash tag, so the MGET's keys sit in
//! one slot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::ConnectionLike;

use super::direct::{Direct, Endpoint, Values};
use super::pipelined::Pipelined;
use super::watchdog::Watchdog;
use crate::config::CacheStore;
use crate::metrics as m;

/// Plain connections a lookup may use directly (beyond them, lookups share one
/// pipelined connection).
const DIRECT_CONNECTIONS: usize = 1;

/// A lookup counted in flight while it lives.
struct InFlight<'a> {
    count: &'a AtomicUsize,
    /// No other lookup was in flight when it started.
    alone: bool,
}

impl<'a> InFlight<'a> {
    fn start(count: &'a AtomicUsize) -> InFlight<'a> {
        let alone = count.fetch_add(1, Ordering::AcqRel) == 0;
        InFlight { count, alone }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A lookup's outcome.
pub enum Found {
    /// The stored value (its key already compared by the caller).
    Hit(Bytes),
    /// Not stored: the generations read, to store the answer under.
    Miss(String),
    /// The store cannot be used now (Redis down, slow, or the breaker open).
    Unavailable,
}

pub enum Store {
    Memory(MemoryStore),
    Redis(Box<RedisStore>),
}

impl Store {
    pub fn new(config: &CacheStore) -> Result<Store, String> {
        if let Some(url) = &config.redis {
            let client =
                redis::Client::open(url.as_str()).map_err(|e| format!("cache.redis: {e}"))?;
            let store = RedisStore::new(Target::Single(Box::new(client)), config);
            return Ok(Store::Redis(Box::new(store)));
        }
        if !config.redis_cluster.is_empty() {
            let client = redis::cluster::ClusterClient::new(config.redis_cluster.clone())
                .map_err(|e| format!("cache.redis_cluster: {e}"))?;
            let seeds = config.redis_cluster.clone();
            let store = RedisStore::new(Target::Cluster(Box::new(client), seeds), config);
            return Ok(Store::Redis(Box::new(store)));
        }
        Ok(Store::Memory(MemoryStore::new(config.memory_entries)))
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Redis(_))
    }

    /// Reads the generations of `tables` (of the namespace whose keys start with `tag`)
    /// and the entry stored under them.
    pub async fn get(&self, tag: &str, tables: &[String], base: &str) -> Found {
        match self {
            Store::Memory(s) => s.get(tag, tables, base).await,
            Store::Redis(s) => s.get(tag, tables, base).await,
        }
    }

    pub async fn put(&self, tag: &str, base: &str, generations: &str, value: Bytes, ttl: Duration) {
        match self {
            Store::Memory(s) => s.put(tag, base, generations, value, ttl).await,
            Store::Redis(s) => s.put(tag, base, generations, value, ttl).await,
        }
    }

    /// Bumps the generation of every table in `tables`. Returns false when it may not have
    /// happened (Redis trouble); the store then bumps the namespace's epoch once it can.
    pub async fn bump(&self, tag: &str, tables: &[String]) -> bool {
        match self {
            Store::Memory(s) => {
                s.bump(tag, tables);
                true
            }
            Store::Redis(s) => s.bump(tag, tables).await,
        }
    }

    /// Drops every entry (generations stay: they only grow).
    pub async fn flush(&self) -> Result<(), String> {
        match self {
            Store::Memory(s) => {
                s.entries.invalidate_all();
                Ok(())
            }
            Store::Redis(s) => s.flush().await,
        }
    }
}

/// The hash tag of a namespace's keys (computed once per route).
pub fn tag(namespace: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(namespace.as_bytes());
    format!("{{sluice:{}}}", super::hex(&h[..8]))
}

/// A Redis entry's answer when it was stored under `generations`.
fn strip_generations(stored: Vec<u8>, generations: &str) -> Option<Bytes> {
    let len = u16::from_be_bytes([*stored.first()?, *stored.get(1)?]) as usize;
    let at = 2 + len;
    (stored.get(2..at)? == generations.as_bytes()).then(|| Bytes::from(stored).slice(at..))
}

/// An in-process entry's key: its generations are part of it.
fn entry_key(tag: &str, base: &str, generations: &str) -> String {
    format!("{tag}:e:{base}:{generations}")
}

/// The in-process store.
pub struct MemoryStore {
    entries: moka::future::Cache<String, (Bytes, Instant)>,
    generations: Mutex<HashMap<String, u64>>,
}

impl MemoryStore {
    fn new(capacity: u64) -> MemoryStore {
        MemoryStore {
            entries: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(Duration::from_secs(24 * 3600))
                .build(),
            generations: Mutex::new(HashMap::new()),
        }
    }

    fn generations(&self, tag: &str, tables: &[String]) -> String {
        let gens = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        tables
            .iter()
            .map(|t| {
                gens.get(&format!("{tag}:g:{t}"))
                    .copied()
                    .unwrap_or(0)
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    async fn get(&self, tag: &str, tables: &[String], base: &str) -> Found {
        let generations = self.generations(tag, tables);
        match self.entries.get(&entry_key(tag, base, &generations)).await {
            Some((value, expires)) if expires > Instant::now() => Found::Hit(value),
            _ => Found::Miss(generations),
        }
    }

    async fn put(&self, tag: &str, base: &str, generations: &str, value: Bytes, ttl: Duration) {
        let key = entry_key(tag, base, generations);
        self.entries
            .insert(key, (value, Instant::now() + ttl))
            .await;
    }

    fn bump(&self, tag: &str, tables: &[String]) {
        let mut gens = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        for t in tables {
            *gens.entry(format!("{tag}:g:{t}")).or_insert(0) += 1;
        }
    }
}

enum Target {
    Single(Box<redis::Client>),
    /// The client, and the node URLs it was given (flush scans each).
    Cluster(Box<redis::cluster::ClusterClient>, Vec<String>),
}

enum Conn {
    Single(redis::aio::ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Conn {
    async fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let value = match self {
            Conn::Single(c) => c.req_packed_command(cmd).await?,
            Conn::Cluster(c) => c.req_packed_command(cmd).await?,
        };
        Ok(redis::from_redis_value(value)?)
    }

    async fn pipeline<T: redis::FromRedisValue>(
        self,
        pipe: &redis::Pipeline,
    ) -> redis::RedisResult<T> {
        match self {
            Conn::Single(mut c) => pipe.query_async(&mut c).await,
            Conn::Cluster(mut c) => pipe.query_async(&mut c).await,
        }
    }
}

/// The Redis store, with a timeout per call and a circuit breaker.
pub struct RedisStore {
    target: Target,
    /// Plain connections for lookups alone in flight, and one pipelined connection for
    /// the others (a single node reached over TCP without TLS; else lookups use `conn`).
    direct: Option<Direct>,
    pipelined: Option<Pipelined>,
    /// Lookups in flight.
    lookups: AtomicUsize,
    conn: tokio::sync::OnceCell<Conn>,
    timeout: Duration,
    /// Enforces `timeout` on lookups, stores and bumps.
    watchdog: Arc<Watchdog>,
    breaker: Breaker,
    /// Namespaces whose generation bumps may have been lost while Redis was unreachable:
    /// their epoch is bumped before the cache is used again.
    lost: Mutex<Vec<String>>,
    has_lost: AtomicBool,
}

struct Breaker {
    /// Whether `open_until` is set (read without its lock on every call).
    open: AtomicBool,
    failures: AtomicU32,
    threshold: u32,
    open_for: Duration,
    open_until: Mutex<Option<Instant>>,
}

impl Breaker {
    /// Whether a call may go to Redis now (closed, or open long enough to probe).
    fn allows(&self) -> bool {
        if !self.open.load(Ordering::Acquire) {
            return true;
        }
        let mut open = self.open_until.lock().unwrap_or_else(|e| e.into_inner());
        match *open {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                // half open: this call probes; others wait for its outcome
                *open = Some(Instant::now() + self.open_for);
                true
            }
            None => true,
        }
    }

    fn success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if !self.open.load(Ordering::Acquire) {
            return;
        }
        let mut open = self.open_until.lock().unwrap_or_else(|e| e.into_inner());
        self.open.store(false, Ordering::Release);
        if open.take().is_some() {
            tracing::info!("cache: Redis reachable again; circuit breaker closed");
            metrics::gauge!(m::CACHE_BREAKER_OPEN).set(0.0);
        }
    }

    fn failure(&self) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.threshold {
            let mut open = self.open_until.lock().unwrap_or_else(|e| e.into_inner());
            if open.is_none() {
                tracing::warn!(failures = n, "cache: Redis failing; circuit breaker open");
                metrics::gauge!(m::CACHE_BREAKER_OPEN).set(1.0);
            }
            *open = Some(Instant::now() + self.open_for);
            self.open.store(true, Ordering::Release);
        }
    }
}

impl RedisStore {
    fn new(target: Target, config: &CacheStore) -> RedisStore {
        let (direct, pipelined) = match &target {
            Target::Single(client) => {
                let info = client.get_connection_info();
                (
                    Direct::new(info, DIRECT_CONNECTIONS),
                    Endpoint::new(info).map(Pipelined::new),
                )
            }
            Target::Cluster(..) => (None, None),
        };
        RedisStore {
            direct,
            pipelined,
            lookups: AtomicUsize::new(0),
            target,
            conn: tokio::sync::OnceCell::new(),
            timeout: Duration::from_millis(config.timeout_ms),
            watchdog: Arc::default(),
            breaker: Breaker {
                open: AtomicBool::new(false),
                failures: AtomicU32::new(0),
                threshold: config.breaker_failures.max(1),
                open_for: Duration::from_secs_f64(config.breaker_open_secs),
                open_until: Mutex::new(None),
            },
            lost: Mutex::new(Vec::new()),
            has_lost: AtomicBool::new(false),
        }
    }

    /// A connection (opened on first use; the connection manager reconnects by itself).
    async fn conn(&self) -> redis::RedisResult<Conn> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                Ok::<_, redis::RedisError>(match &self.target {
                    Target::Single(client) => {
                        let config = redis::aio::ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(self.timeout))
                            // calls have their deadline from the watchdog
                            .set_response_timeout(None)
                            .set_number_of_retries(1);
                        Conn::Single(
                            redis::aio::ConnectionManager::new_with_config(
                                (**client).clone(),
                                config,
                            )
                            .await?,
                        )
                    }
                    Target::Cluster(client, _) => {
                        Conn::Cluster(client.get_async_connection().await?)
                    }
                })
            })
            .await?;
        Ok(match conn {
            Conn::Single(c) => Conn::Single(c.clone()),
            Conn::Cluster(c) => Conn::Cluster(c.clone()),
        })
    }

    /// Runs one call on the shared connection under the timeout and the breaker; None
    /// when Redis cannot be used.
    async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Option<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.guarded(op, async {
            let conn = self.conn().await?;
            f(conn).await
        })
        .await
    }

    /// Runs `exchange` under the timeout and the breaker; None when Redis cannot be used.
    async fn guarded<T>(
        &self,
        op: &'static str,
        exchange: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        if !self.breaker.allows() {
            return None;
        }
        let outcome = self.watchdog.run(self.timeout, exchange).await;
        let error = match outcome {
            Some(Ok(v)) => {
                self.breaker.success();
                if self.has_lost.load(Ordering::Acquire) && !self.restore_epochs().await {
                    return None;
                }
                return Some(v);
            }
            Some(Err(e)) => e.to_string(),
            None => "timed out".to_string(),
        };
        tracing::debug!(op, error = %error, "cache: Redis call failed");
        metrics::counter!(m::CACHE_ERRORS, "op" => op).increment(1);
        self.breaker.failure();
        None
    }

    /// After an outage with lost bumps: bumps those namespaces' epochs, so nothing stored
    /// before is served. False while that cannot be done.
    async fn restore_epochs(&self) -> bool {
        let namespaces: Vec<String> = self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for tag in &namespaces {
            let key = format!("{tag}:epoch");
            let done = tokio::time::timeout(self.timeout, async {
                let mut conn = self.conn().await?;
                conn.query::<i64>(redis::cmd("INCR").arg(&key)).await
            })
            .await;
            if !matches!(done, Ok(Ok(_))) {
                return false;
            }
        }
        let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        lost.retain(|n| !namespaces.contains(n));
        self.has_lost.store(!lost.is_empty(), Ordering::Release);
        tracing::info!("cache: epochs bumped after lost invalidations");
        true
    }

    async fn get(&self, tag: &str, tables: &[String], base: &str) -> Found {
        // one MGET: the generations, the epoch, then the entry (one slot: one hash tag)
        let mut cmd = redis::cmd("MGET");
        for t in tables {
            cmd.arg(format!("{tag}:g:{t}"));
        }
        cmd.arg(format!("{tag}:epoch"))
            .arg(format!("{tag}:e:{base}"));
        let got = self
            .guarded("get", async {
                // alone in flight: a plain connection; else the pipelined one, where
                // concurrent lookups leave in one write
                let _lookup = InFlight::start(&self.lookups);
                if let Some(direct) = self.direct.as_ref().filter(|_| _lookup.alone) {
                    if let Some(reply) = direct.mget(&cmd.get_packed_command()).await {
                        return reply;
                    }
                }
                if let Some(pipelined) = &self.pipelined {
                    return pipelined.mget(&cmd.get_packed_command()).await;
                }
                let mut conn = self.conn().await?;
                conn.query::<Values>(&cmd).await
            })
            .await;
        let Some(mut values) = got else {
            return Found::Unavailable;
        };
        let value = values.pop().flatten();
        let mut generations = String::with_capacity(8 * values.len());
        for (i, g) in values.iter().enumerate() {
            if i > 0 {
                generations.push(',');
            }
            match g.as_deref().map(std::str::from_utf8) {
                Some(Ok(g)) => generations.push_str(g),
                None => generations.push('0'),
                // not a generation sluice wrote: nothing can be trusted under it
                Some(Err(_)) => return Found::Unavailable,
            }
        }
        // the entry holds the generations it was computed under: current ones only
        match value.and_then(|v| strip_generations(v, &generations)) {
            Some(answer) => Found::Hit(answer),
            None => Found::Miss(generations),
        }
    }

    async fn put(&self, tag: &str, base: &str, generations: &str, value: Bytes, ttl: Duration) {
        let key = format!("{tag}:e:{base}");
        let ms = ttl.as_millis().max(1) as u64;
        let mut stored = Vec::with_capacity(2 + generations.len() + value.len());
        stored.extend_from_slice(&(generations.len() as u16).to_be_bytes());
        stored.extend_from_slice(generations.as_bytes());
        stored.extend_from_slice(&value);
        self.call("put", |mut c| async move {
            c.query::<()>(redis::cmd("SET").arg(&key).arg(stored).arg("PX").arg(ms))
                .await
        })
        .await;
    }

    async fn bump(&self, tag: &str, tables: &[String]) -> bool {
        let mut pipe = redis::pipe();
        for t in tables {
            pipe.cmd("INCR").arg(format!("{tag}:g:{t}")).ignore();
        }
        let done = self
            .call("bump", |c| async move { c.pipeline::<()>(&pipe).await })
            .await
            .is_some();
        if !done {
            let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
            if !lost.iter().any(|n| n == tag) {
                lost.push(tag.to_string());
            }
            self.has_lost.store(true, Ordering::Release);
        }
        done
    }

    /// Deletes every entry (generations stay). Entries are only reachable through their
    /// generations, so they are found by scanning: every node of a cluster.
    async fn flush(&self) -> Result<(), String> {
        match &self.target {
            Target::Single(client) => flush_node(client).await,
            Target::Cluster(_, nodes) => {
                for url in nodes {
                    let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
                    flush_node(&client).await?;
                }
                Ok(())
            }
        }
    }
}

/// Deletes the entries one node holds (one key per UNLINK: a cluster refuses keys of
/// several slots in one command).
async fn flush_node(client: &redis::Client) -> Result<(), String> {
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("{sluice:*}:e:*")
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.cmd("UNLINK").arg(k).ignore();
            }
            pipe.query_async::<()>(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}
