//! Admin HTTP listener: `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus text),
//! `POST /reload` (users, policies and audit settings from the config file), `POST
//! /cache/flush` (drops every cached answer).
//!
//! A deliberately small HTTP/1.1 server: one request per connection, bounded header size
//! and read time.

use std::sync::Arc;
use std::time::Duration;

use crate::state::State;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const MAX_REQUEST: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves admin requests until shutdown.
pub async fn serve(listener: TcpListener, state: Arc<State>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                let shutdown = shutdown.clone();
                let state = state.clone();
                tracker.spawn(async move {
                    if let Err(e) = handle(stream, state, &shutdown).await {
                        tracing::debug!(error = %e, "admin request failed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracker.close();
    tracker.wait().await;
}

async fn handle(
    mut stream: TcpStream,
    state: Arc<State>,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let head = tokio::time::timeout(READ_TIMEOUT, async {
        loop {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(Some(()));
            }
            if buf.len() > MAX_REQUEST {
                return Ok(None);
            }
        }
    })
    .await;
    if !matches!(head, Ok(Ok(Some(())))) {
        return respond(
            &mut stream,
            "400 Bad Request",
            "text/plain",
            "bad request\n",
        )
        .await;
    }
    let line = String::from_utf8_lossy(&buf);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/healthz") => respond(&mut stream, "200 OK", "text/plain", "ok\n").await,
        ("GET", "/readyz") if shutdown.is_cancelled() => {
            respond(
                &mut stream,
                "503 Service Unavailable",
                "text/plain",
                "shutting down\n",
            )
            .await
        }
        ("GET", "/readyz") => respond(&mut stream, "200 OK", "text/plain", "ready\n").await,
        ("GET", "/metrics") => {
            let body = crate::metrics::render();
            respond(&mut stream, "200 OK", "text/plain; version=0.0.4", &body).await
        }
        ("POST", "/reload") => {
            let (status, body) = reload(state).await;
            respond(&mut stream, status, "text/plain", &body).await
        }
        ("POST", "/cache/flush") => {
            let (status, body) = flush_cache(&state).await;
            respond(&mut stream, status, "text/plain", &body).await
        }
        ("GET", _) => respond(&mut stream, "404 Not Found", "text/plain", "not found\n").await,
        _ => {
            respond(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                "method not allowed\n",
            )
            .await
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// `POST /reload`: the status line and body.
async fn reload(state: Arc<State>) -> (&'static str, String) {
    match tokio::task::spawn_blocking(move || state.reload()).await {
        Ok(Ok(msg)) => ("200 OK", format!("{msg}\n")),
        Ok(Err(e)) => (
            "422 Unprocessable Entity",
            format!("reload failed; the previous configuration stays: {e}\n"),
        ),
        Err(_) => ("500 Internal Server Error", "reload failed\n".into()),
    }
}

/// `POST /cache/flush`: the status line and body.
async fn flush_cache(state: &State) -> (&'static str, String) {
    match &state.cache {
        Some(cache) => match cache.flush().await {
            Ok(()) => ("200 OK", "cache flushed\n".into()),
            Err(e) => (
                "503 Service Unavailable",
                format!("cache flush failed: {e}\n"),
            ),
        },
        None => ("404 Not Found", "no route has the cache enabled\n".into()),
    }
}
