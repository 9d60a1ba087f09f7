//! Connection start: SSL/GSS negotiation, the startup packet, and password authentication.
//!
//! Unknown users run the same SCRAM exchange against a mock secret, so they fail at the
//! same step, with the same error, after the same work as a wrong password.

use std::collections::BTreeMap;
use std::sync::Arc;

use pgwire::messages::response::SslResponse;
use pgwire::messages::startup::{
    Authentication, NegotiateProtocolVersion, Password, SASLInitialResponse, SASLResponse, Startup,
};
use tokio::io::{AsyncRead, AsyncWrite};

use super::codec::{Decode, StartupPacket};
use super::error::PgError;
use super::stream::{ClientStream, PgConn, ReadError};
use crate::auth::{fill_random, ScramExchange, ScramSecret, Verifier};
use crate::config::{AuthMethod, TlsMode};
use crate::metrics as m;
use crate::state::State;

/// Why a connection ended before its session began.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("authentication failed for user {user:?}: {reason}")]
    AuthFailed { user: String, reason: String },
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What the connection asked for once negotiation is over.
pub enum Opened<S> {
    /// A startup packet on a (possibly TLS) stream.
    Startup(PgConn<ClientStream<S>>, Startup),
    /// A cancel request, already handled; the connection just closes.
    Cancelled,
}

/// Runs SSL/GSS negotiation up to the startup packet.
pub async fn negotiate<S>(io: S, state: &State) -> Result<Opened<S>, StartupError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let max = state.config.server.max_message_bytes;
    let mut conn = PgConn::new(io, max);
    loop {
        match conn.read_startup().await? {
            StartupPacket::SslRequest => {
                if conn.buffered() > 0 {
                    // Bytes pipelined behind an SSLRequest were sent before the client knew
                    // whether TLS would be used: they could be injected by a middlebox.
                    return refuse(
                        conn,
                        PgError::protocol("received unencrypted data after SSL request"),
                    )
                    .await;
                }
                let Some(acceptor) = &state.tls else {
                    conn.send(&SslResponse::Refuse);
                    conn.flush().await?;
                    continue;
                };
                conn.send(&SslResponse::Accept);
                conn.flush().await?;
                let tls = acceptor
                    .accept(conn.into_inner())
                    .await
                    .map_err(StartupError::Tls)?;
                let mut conn = PgConn::new(ClientStream::Tls(Box::new(tls)), max);
                return match conn.read_startup().await? {
                    StartupPacket::Startup(s) => Ok(Opened::Startup(conn, s)),
                    StartupPacket::Cancel { pid, secret } => Ok(cancel(state, pid, &secret)),
                    _ => {
                        refuse(
                            conn,
                            PgError::protocol("unexpected negotiation request inside TLS"),
                        )
                        .await
                    }
                };
            }
            StartupPacket::GssEncRequest => {
                conn.send_raw(b"N");
                conn.flush().await?;
            }
            StartupPacket::Cancel { pid, secret } => return Ok(cancel(state, pid, &secret)),
            StartupPacket::Startup(s) => {
                let conn = PgConn::new(ClientStream::Plain(conn.into_inner()), max);
                if state.tls_mode == TlsMode::Require {
                    let msg = "SSL connection is required: connect with sslmode=require";
                    return refuse(conn, PgError::fatal("28000", msg)).await;
                }
                return Ok(Opened::Startup(conn, s));
            }
        }
    }
}

fn cancel<S>(state: &State, pid: i32, secret: &[u8]) -> Opened<S> {
    let done = state.cancels.cancel(pid, secret);
    let result = if done { "sent" } else { "unknown_key" };
    metrics::counter!(m::CANCEL_REQUESTS, "protocol" => "postgres", "result" => result)
        .increment(1);
    Opened::Cancelled
}

async fn refuse<S, T>(mut conn: PgConn<S>, err: PgError) -> Result<T, StartupError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    conn.send(&err.to_response());
    conn.close().await;
    Err(StartupError::Refused(err.message))
}

/// Who logged in and where to.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    pub database: String,
    pub params: BTreeMap<String, String>,
}

/// Checks the startup packet and authenticates the user.
pub async fn authenticate<S>(
    conn: &mut PgConn<S>,
    startup: Startup,
    state: &State,
    peer: Option<std::net::SocketAddr>,
) -> Result<Login, StartupError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut params = startup.parameters;
    let Some(user) = params.remove("user").filter(|u| !u.is_empty()) else {
        let err = PgError::fatal(
            "28000",
            "no PostgreSQL user name specified in startup packet",
        );
        return fail(conn, err, "no user").await;
    };
    let database = params
        .remove("database")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| user.clone());
    negotiate_version(conn, startup.protocol_number_minor, &mut params);

    let access = state.access.load_full();
    let (method, verifier) = match access.users.get(&user) {
        Some(u) => (u.method, Some(&u.verifier)),
        None => (AuthMethod::ScramSha256, None),
    };
    let outcome = match method {
        AuthMethod::ScramSha256 => scram(conn, &user, verifier).await?,
        AuthMethod::Md5 => md5(conn, &user, verifier).await?,
        AuthMethod::Password => cleartext(conn, &user, verifier).await?,
    };
    if let Err(reason) = outcome {
        let err = PgError::fatal(
            "28P01",
            format!("password authentication failed for user \"{user}\""),
        );
        metrics::counter!(m::AUTH_FAILURES, "protocol" => "postgres", "reason" => "password")
            .increment(1);
        crate::access::audit_failed_login(
            state,
            "postgres",
            &user,
            peer,
            &database,
            "password authentication failed",
        );
        conn.send(&err.to_response());
        conn.close().await;
        return Err(StartupError::AuthFailed { user, reason });
    }
    Ok(Login {
        user,
        database,
        params,
    })
}

async fn fail<S, T>(conn: &mut PgConn<S>, err: PgError, reason: &str) -> Result<T, StartupError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    metrics::counter!(m::AUTH_FAILURES, "protocol" => "postgres", "reason" => "protocol")
        .increment(1);
    conn.send(&err.to_response());
    conn.close().await;
    Err(StartupError::Refused(reason.to_string()))
}

/// Protocol 3.2+ and `_pq_.` options are answered with what this server speaks (3.0, none).
fn negotiate_version<S>(conn: &mut PgConn<S>, minor: u16, params: &mut BTreeMap<String, String>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let unsupported: Vec<String> = params
        .keys()
        .filter(|k| k.starts_with("_pq_."))
        .cloned()
        .collect();
    params.retain(|k, _| !k.starts_with("_pq_."));
    if minor > 0 || !unsupported.is_empty() {
        conn.send(&NegotiateProtocolVersion::new(0, unsupported));
    }
}

/// Reads the next password-family message body ('p').
async fn read_password_message<S>(conn: &mut PgConn<S>) -> Result<super::codec::Frame, StartupError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    conn.flush().await?;
    let frame = conn.read_frame().await?;
    if frame.tag() != b'p' {
        let err = PgError::protocol(format!(
            "expected password response, got message type {}",
            frame.tag() as char
        ));
        return fail(conn, err, "protocol").await;
    }
    Ok(frame)
}

type AuthOutcome = Result<(), String>;

async fn scram<S>(
    conn: &mut PgConn<S>,
    user: &str,
    verifier: Option<&Verifier>,
) -> Result<AuthOutcome, StartupError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let secret = match verifier {
        Some(Verifier::Scram(s)) => s.clone(),
        _ => ScramSecret::mock(user),
    };
    let mut exchange = ScramExchange::new(secret);
    conn.send(&Authentication::SASL(vec!["SCRAM-SHA-256".into()]));
    let frame = read_password_message(conn).await?;
    let initial: SASLInitialResponse = match frame.decode() {
        Ok(m) => m,
        Err(e) => return fail(conn, PgError::protocol(e.to_string()), "protocol").await,
    };
    if initial.auth_method != "SCRAM-SHA-256" {
        let err = PgError::protocol(format!(
            "unsupported SASL mechanism {:?}",
            initial.auth_method
        ));
        return fail(conn, err, "protocol").await;
    }
    let first = match exchange.server_first(initial.data.as_deref().unwrap_or_default()) {
        Ok(f) => f,
        Err(e) => return Ok(Err(e.to_string())),
    };
    conn.send(&Authentication::SASLContinue(first.into_bytes().into()));
    let frame = read_password_message(conn).await?;
    let response: SASLResponse = match frame.decode() {
        Ok(m) => m,
        Err(e) => return fail(conn, PgError::protocol(e.to_string()), "protocol").await,
    };
    match exchange.server_final(&response.data) {
        Ok(last) if verifier.is_some() => {
            conn.send(&Authentication::SASLFinal(last.into_bytes().into()));
            Ok(Ok(()))
        }
        Ok(_) => Ok(Err("unknown user".into())),
        Err(e) => Ok(Err(e.to_string())),
    }
}

async fn md5<S>(
    conn: &mut PgConn<S>,
    user: &str,
    verifier: Option<&Verifier>,
) -> Result<AuthOutcome, StartupError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut salt = [0u8; 4];
    fill_random(&mut salt);
    conn.send(&Authentication::MD5Password(salt.to_vec()));
    let frame = read_password_message(conn).await?;
    let password: Password = match frame.decode() {
        Ok(p) => p,
        Err(e) => return fail(conn, PgError::protocol(e.to_string()), "protocol").await,
    };
    let ok = verifier.is_some_and(|v| v.check_md5_response(&salt, &password.password));
    Ok(if ok {
        Ok(())
    } else {
        Err(format!("md5 mismatch for {user}"))
    })
}

async fn cleartext<S>(
    conn: &mut PgConn<S>,
    user: &str,
    verifier: Option<&Verifier>,
) -> Result<AuthOutcome, StartupError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    conn.send(&Authentication::CleartextPassword);
    let frame = read_password_message(conn).await?;
    let password: Password = match frame.decode() {
        Ok(p) => p,
        Err(e) => return fail(conn, PgError::protocol(e.to_string()), "protocol").await,
    };
    let ok = verifier.is_some_and(|v| v.check_cleartext(user, &password.password));
    Ok(if ok {
        Ok(())
    } else {
        Err("wrong password".into())
    })
}

/// The route a login names, or a FATAL 3D000 for the client.
pub fn find_route(state: &State, database: &str) -> Result<Arc<crate::state::RouteEntry>, PgError> {
    state
        .routes
        .get(database)
        .cloned()
        .ok_or_else(|| PgError::fatal("3D000", format!("database \"{database}\" does not exist")))
}
