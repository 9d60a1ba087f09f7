//! PostgreSQL frontend: negotiation and login ([`startup`]), then a session loop that sees
//! every frontend message one at a time ([`session`]) over a pure frame codec ([`codec`]).

pub mod codec;
pub mod encode;
pub mod error;
mod relay;
pub mod session;
pub mod startup;
pub mod stream;

use std::net::SocketAddr;
use std::sync::Arc;

use backends::stream::MaybeTls;

use pgwire::messages::startup::{Authentication, BackendKeyData, ParameterStatus, SecretKey};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use self::error::PgError;
use self::session::{End, Session};
use self::startup::{Login, Opened, StartupError};
use self::stream::{ClientStream, PgConn};
use crate::access::SessionPolicy;
use crate::metrics as m;
use backends::neutral::NeutralSession;

use crate::state::{BackendHandle, CancelKey, CancelTarget, State};

/// Why a client connection ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("login timed out")]
    LoginTimeout,
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Read(#[from] stream::ReadError),
}

/// Serves one client connection from accept to close.
pub async fn handle<S>(
    io: S,
    peer: Option<SocketAddr>,
    state: Arc<State>,
    shutdown: CancellationToken,
) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let login = async {
        match startup::negotiate(io, &state).await? {
            Opened::Startup(mut conn, packet) => {
                let login = startup::authenticate(&mut conn, packet, &state, peer).await?;
                Ok::<_, StartupError>(Some((conn, login)))
            }
            Opened::Cancelled => Ok(None),
        }
    };
    let timeout = state.config.server.login_timeout();
    let opened = tokio::select! {
        r = tokio::time::timeout(timeout, login) => r,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let Some((mut conn, login)) = (match opened {
        Ok(r) => r?,
        Err(_) => {
            metrics::counter!(m::AUTH_FAILURES, "protocol" => "postgres", "reason" => "timeout")
                .increment(1);
            return Err(ConnError::LoginTimeout);
        }
    }) else {
        return Ok(());
    };
    serve(&mut conn, login, peer, &state, &shutdown).await
}

async fn serve<S>(
    conn: &mut PgConn<ClientStream<S>>,
    login: Login,
    peer: Option<SocketAddr>,
    state: &State,
    shutdown: &CancellationToken,
) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let route = match startup::find_route(state, &login.database) {
        Ok(r) => r,
        Err(e) => return refuse(conn, e).await,
    };
    let tls = matches!(conn.get_ref(), MaybeTls::Tls(_));
    if let Err(reason) =
        crate::access::admit(state, "postgres", &login.user, peer, tls, Some(&route.name))
    {
        let msg = format!("access denied for user \"{}\": {reason}", login.user);
        return refuse(conn, PgError::fatal("28000", msg)).await;
    }
    let mut policy = SessionPolicy::new(
        &login.user,
        &route.name,
        "postgres",
        peer,
        route.backend.dialect(),
        &route.database,
    )
    .with_search_path(crate::access::startup_search_path(&login.params).as_deref())
    .with_cache(route.cache.is_some(), &login.params);
    if let Some(encoding) = login.params.get("client_encoding") {
        policy.client_encoding(encoding);
    }
    if let crate::state::BackendHandle::Mysql(pool) = &route.backend {
        // how the MySQL server reads statements: its sql_mode and name folding
        match pool.server_facts().await {
            Ok(f) => {
                let lexing = crate::classify::Lexing::from_sql_mode(&f.sql_mode);
                policy =
                    policy.with_lexing(lexing.unwrap_or_default(), f.lower_case_table_names != 0);
                if lexing.is_none() {
                    policy.unknown_lexing();
                }
            }
            Err(e) => return refuse(conn, PgError::from(&e).into_fatal()).await,
        }
    }
    let Some(_route_slot) = route.clients.enter() else {
        let msg = format!("too many connections for database \"{}\"", route.name);
        return refuse(conn, PgError::fatal("53300", msg)).await;
    };
    let Some(_user_slot) = state.user_slot(&login.user) else {
        let msg = format!("too many connections for role \"{}\"", login.user);
        return refuse(conn, PgError::fatal("53300", msg)).await;
    };
    match &route.backend {
        BackendHandle::Sqlite(b) => {
            let backend = match b.connect().await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(route = %route.name, error = %e, "backend connection failed");
                    return refuse(conn, PgError::from(&e).into_fatal()).await;
                }
            };
            let cancel = CancelTarget::Sqlite(backend.canceller());
            let backend = NeutralSession::Sqlite(backend);
            serve_neutral(conn, &login, backend, cancel, policy, state, shutdown).await
        }
        BackendHandle::Postgres(pool) => {
            relay::serve(conn, &login, &route, pool, policy, state, shutdown).await
        }
        BackendHandle::Mysql(pool) => {
            // A PostgreSQL client on a MySQL route holds one server connection for its
            // whole session (session pooling), reset when the session ends.
            let server = match pool.checkout().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(route = %route.name, error = %e, "no server connection");
                    return refuse(conn, PgError::from(&e).into_fatal()).await;
                }
            };
            let cancel = CancelTarget::Mysql {
                pool: pool.clone(),
                thread: server.id(),
            };
            let backend = NeutralSession::mysql(server);
            serve_neutral(conn, &login, backend, cancel, policy, state, shutdown).await
        }
    }
}

/// A session whose backend answers with neutral results (SQLite, or MySQL/MariaDB for a
/// PostgreSQL client).
async fn serve_neutral<S>(
    conn: &mut PgConn<ClientStream<S>>,
    login: &Login,
    backend: NeutralSession,
    cancel: CancelTarget,
    policy: SessionPolicy,
    state: &State,
    shutdown: &CancellationToken,
) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let key = state.cancels.register(cancel);
    let params: Vec<(String, String)> = parameter_statuses(login)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    greet(conn, &params, &key);
    tracing::debug!(user = %login.user, route = %policy.route, "session started");
    match Session::new(conn, backend, policy, state)
        .run(shutdown)
        .await?
    {
        End::Client | End::Shutdown => Ok(()),
    }
}

/// Completes login: AuthenticationOk, the session parameters, and the cancel key.
fn greet<S>(conn: &mut PgConn<S>, params: &[(String, String)], key: &CancelKey)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    conn.send(&Authentication::Ok);
    for (name, value) in params {
        conn.send(&ParameterStatus::new(name.clone(), value.clone()));
    }
    let secret = i32::from_be_bytes(key.secret[..4].try_into().unwrap_or_default());
    conn.send(&BackendKeyData::new(key.pid, SecretKey::I32(secret)));
    metrics::counter!(m::LOGINS, "protocol" => "postgres").increment(1);
}

pub(crate) async fn refuse<S>(conn: &mut PgConn<S>, err: PgError) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    conn.send(&err.to_response());
    conn.close().await;
    Err(ConnError::Refused(err.message))
}

fn parameter_statuses(login: &Login) -> Vec<(&'static str, String)> {
    let app = login
        .params
        .get("application_name")
        .cloned()
        .unwrap_or_default();
    vec![
        ("server_version", "15.0 (sluice)".into()),
        ("server_encoding", "UTF8".into()),
        ("client_encoding", "UTF8".into()),
        ("DateStyle", "ISO, MDY".into()),
        ("TimeZone", "UTC".into()),
        ("integer_datetimes", "on".into()),
        ("standard_conforming_strings", "on".into()),
        ("IntervalStyle", "postgres".into()),
        ("is_superuser", "off".into()),
        ("session_authorization", login.user.clone()),
        ("application_name", app),
    ]
}

/// The rows an answer's CommandComplete messages report.
pub(crate) fn rows_in(answer: &[u8]) -> u64 {
    let mut rows = 0;
    let mut rest = answer;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let end = (1 + len).min(rest.len());
        if rest[0] == b'C' {
            rows += crate::audit::command_tag_rows(&rest[5..end]);
        }
        rest = &rest[end..];
    }
    rows
}
