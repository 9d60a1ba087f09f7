//! What every bb8 pool of server connections shares: sizing, and a checkout that fails
//! fast while the server cannot be reached and times out when every connection stays busy.

use std::time::Duration;

use tokio::sync::watch;

use crate::BackendError;

/// Pool sizing and connection lifetimes.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub size: u32,
    pub min_idle: u32,
    pub checkout_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub max_lifetime: Option<Duration>,
    /// Most prepared statements sluice keeps on one server connection.
    pub statement_cache: usize,
}

/// Why no server connection was handed out.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("timed out after {0:?} waiting for a server connection")]
    Timeout(Duration),
    #[error(transparent)]
    Unavailable(BackendError),
}

/// Connect failures as a manager reports them: a count and the latest error text.
pub type Failures = watch::Sender<(u64, String)>;

/// Records a failed connect so that waiting checkouts fail at once.
pub fn report_failure(failures: &Failures, e: &BackendError) {
    metrics::counter!("sluice_server_connect_failures_total").increment(1);
    failures.send_modify(|(n, msg)| (*n, *msg) = (*n + 1, e.to_string()));
}

/// Takes a connection: fails at once with the connect error when opening one fails, and
/// with [`CheckoutError::Timeout`] after the checkout timeout.
pub async fn checkout<M>(
    pool: &bb8::Pool<M>,
    failures: &watch::Receiver<(u64, String)>,
    settings: &PoolSettings,
) -> Result<bb8::PooledConnection<'static, M>, CheckoutError>
where
    M: bb8::ManageConnection<Error = BackendError>,
{
    let mut failures = failures.clone();
    failures.borrow_and_update();
    tokio::select! {
        biased;
        got = pool.get_owned() => got.map_err(|e| match e {
            bb8::RunError::TimedOut => CheckoutError::Timeout(settings.checkout_timeout),
            bb8::RunError::User(e) => CheckoutError::Unavailable(e),
        }),
        _ = failures.changed() => {
            let msg = failures.borrow().1.clone();
            Err(CheckoutError::Unavailable(BackendError::Unavailable(msg)))
        }
    }
}

/// A pool builder with sluice's settings: sized and timed from `settings`, connections
/// checked on checkout, no retries (so a down server fails checkouts at once), and the
/// most recently used idle connection handed out first: its server process and its
/// caches are warm, and connections a quieter load no longer needs stay idle until the
/// idle timeout closes them.
pub fn builder<M>(settings: &PoolSettings) -> bb8::Builder<M>
where
    M: bb8::ManageConnection<Error = BackendError>,
{
    bb8::Pool::builder()
        .max_size(settings.size)
        .min_idle((settings.min_idle > 0).then_some(settings.min_idle))
        .connection_timeout(settings.checkout_timeout)
        .idle_timeout(settings.idle_timeout)
        .max_lifetime(settings.max_lifetime)
        .test_on_check_out(true)
        .retry_connection(false)
        .queue_strategy(bb8::QueueStrategy::Lifo)
        .error_sink(Box::new(LogSink))
}

/// Logs pool-internal errors (those not already reported by the manager).
#[derive(Debug, Clone, Copy)]
pub struct LogSink;

impl bb8::ErrorSink<BackendError> for LogSink {
    fn sink(&self, e: BackendError) {
        tracing::debug!(error = %e, "server connection dropped");
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<BackendError>> {
        Box::new(*self)
    }
}
