//! One accept loop for every frontend: stops on shutdown, tracks every connection task,
//! keeps the connection gauges, and logs a connection's error once at the task boundary.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::metrics::{self as m, GaugeGuard};

/// Accepts connections until `shutdown`, spawning `handler` for each onto `tracker`.
pub async fn serve<F, Fut, E>(
    listener: TcpListener,
    protocol: &'static str,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    handler: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(protocol, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        metrics::counter!(m::CONNECTIONS_ACCEPTED, "protocol" => protocol).increment(1);
        let gauge = GaugeGuard::new(metrics::gauge!(m::CONNECTIONS_ACTIVE, "protocol" => protocol));
        let span = tracing::info_span!("conn", protocol, %peer);
        let task = handler(stream, peer);
        tracker.spawn(
            async move {
                let _gauge = gauge;
                if let Err(e) = task.await {
                    tracing::info!(error = %e, "connection ended with an error");
                }
            }
            .instrument(span),
        );
    }
}
