//! Builds the runtime state from a config, binds the listeners, and runs until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::state::State;

/// A started sluice: where it listens, and how to stop it.
pub struct Running {
    pub postgres_addr: Option<SocketAddr>,
    pub mysql_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pub state: Arc<State>,
    shutdown: CancellationToken,
    done: JoinHandle<()>,
}

impl Running {
    /// The token that stops this instance when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the instance has stopped (after its shutdown token is cancelled).
    pub async fn wait(self) {
        let _ = self.done.await;
    }

    /// Stops accepting, lets sessions finish within the shutdown timeout, and waits.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.wait().await;
    }
}

/// Starts sluice: binds every configured listener and returns once they accept.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    crate::metrics::handle();
    let state = tokio::task::spawn_blocking(move || State::build(config)).await??;
    let state = Arc::new(state);
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut listeners = Vec::new();

    let mut postgres_addr = None;
    if let Some(addr) = state.config.listeners.postgres {
        let listener = bind(addr, "postgres").await?;
        postgres_addr = Some(listener.local_addr()?);
        let (st, sd) = (state.clone(), shutdown.clone());
        listeners.push(tokio::spawn(crate::listener::serve(
            listener,
            "postgres",
            shutdown.clone(),
            tracker.clone(),
            move |stream, peer| {
                crate::frontend::postgres::handle(stream, Some(peer), st.clone(), sd.clone())
            },
        )));
    }
    let mut mysql_addr = None;
    if let Some(addr) = state.config.listeners.mysql {
        let listener = bind(addr, "mysql").await?;
        mysql_addr = Some(listener.local_addr()?);
        let (st, sd) = (state.clone(), shutdown.clone());
        listeners.push(tokio::spawn(crate::listener::serve(
            listener,
            "mysql",
            shutdown.clone(),
            tracker.clone(),
            move |stream, peer| {
                crate::frontend::mysql::handle(stream, Some(peer), st.clone(), sd.clone())
            },
        )));
    }
    tokio::spawn(sample_pools(state.clone(), shutdown.clone()));
    if let Some(every) = state.config.server.watch_interval() {
        tokio::spawn(watch_files(state.clone(), every, shutdown.clone()));
    }
    let mut admin_addr = None;
    if let Some(admin) = &state.config.admin {
        let listener = bind(admin.listen, "admin").await?;
        admin_addr = Some(listener.local_addr()?);
        listeners.push(tokio::spawn(crate::admin::serve(
            listener,
            state.clone(),
            shutdown.clone(),
        )));
    }
    tracing::info!(postgres = ?postgres_addr, mysql = ?mysql_addr, admin = ?admin_addr, "sluice is listening");

    let grace = state.config.server.shutdown_timeout();
    let token = shutdown.clone();
    let done = tokio::spawn(async move {
        token.cancelled().await;
        for l in listeners {
            let _ = l.await;
        }
        tracker.close();
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                remaining = tracker.len(),
                "shutdown timeout reached; closing remaining sessions"
            );
        }
        tracing::info!("sluice stopped");
    });
    Ok(Running {
        postgres_addr,
        mysql_addr,
        admin_addr,
        state,
        shutdown,
        done,
    })
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for {what}: {e}"))
}

/// Runs sluice until `shutdown` is cancelled, then drains.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let running = start(config).await?;
    let token = running.shutdown_token();
    let state = running.state.clone();
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let stop = token.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = hup.recv() => {}
                _ = stop.cancelled() => return,
            }
            tracing::info!("SIGHUP: reloading the configuration");
            let state = state.clone();
            let _ = tokio::task::spawn_blocking(move || state.reload()).await;
        }
    });
    tokio::select! {
        _ = shutdown.cancelled() => token.cancel(),
        _ = token.cancelled() => {}
    }
    running.wait().await;
    Ok(())
}

/// Reloads, as SIGHUP does, when the config file or a policy or model file it names
/// changes (checked every `every`), until shutdown. A half-written file fails to load and
/// leaves the old state serving; the write that completes it is one more change.
async fn watch_files(state: Arc<State>, every: std::time::Duration, shutdown: CancellationToken) {
    let Some(path) = state.config.source.clone() else {
        return;
    };
    let look = move || {
        let path = path.clone();
        async move {
            tokio::task::spawn_blocking(move || file_signatures(&path))
                .await
                .unwrap_or_default()
        }
    };
    let mut seen = look().await;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        let now = look().await;
        if now != seen {
            tracing::info!("configuration files changed: reloading");
            let st = state.clone();
            let _ = tokio::task::spawn_blocking(move || st.reload()).await;
            seen = now;
        }
    }
}

type FileSignature = (std::path::PathBuf, Option<(std::time::SystemTime, u64)>);

/// The files a reload reads (the config, and the model and policy files it names when it
/// loads), each with its modification time and size (None: missing).
fn file_signatures(config: &std::path::Path) -> Vec<FileSignature> {
    let mut files = vec![config.to_path_buf()];
    if let Some(policy) = Config::load(config).ok().and_then(|c| c.policy) {
        files.extend(policy.model);
        files.extend(policy.files);
    }
    files
        .into_iter()
        .map(|f| {
            let meta = std::fs::metadata(&f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            (f, meta)
        })
        .collect()
}

/// Publishes each pooled route's pool state (open and idle server connections) as
/// gauges, once a second, until shutdown.
async fn sample_pools(state: Arc<State>, shutdown: CancellationToken) {
    let pools: Vec<_> = state
        .routes
        .values()
        .filter_map(|r| {
            let sample: Box<dyn Fn() -> (u32, u32) + Send + Sync> = match &r.backend {
                crate::state::BackendHandle::Postgres(pool) => {
                    let pool = pool.clone();
                    Box::new(move || pool.state())
                }
                crate::state::BackendHandle::Mysql(pool) => {
                    let pool = pool.clone();
                    Box::new(move || pool.state())
                }
                crate::state::BackendHandle::Sqlite(_) => return None,
            };
            Some((r.name.clone(), sample))
        })
        .collect();
    if pools.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        for (route, sample) in &pools {
            let (open, idle) = sample();
            let gauge = |state: &'static str| metrics::gauge!(crate::metrics::POOL_CONNECTIONS, "route" => route.clone(), "state" => state);
            gauge("open").set(f64::from(open));
            gauge("idle").set(f64::from(idle));
        }
    }
}
