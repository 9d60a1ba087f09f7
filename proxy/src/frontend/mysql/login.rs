//! Connection phase: HandshakeV10 with a fresh scramble, the optional TLS upgrade, and
//! authentication with `caching_sha2_password` or `mysql_native_password` (switching the
//! client to the one the user can use). Unknown users and wrong passwords both get 1045
//! after the same work.

use mysql_common::constants::{CapabilityFlags, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthSwitchRequest, HandshakePacket, HandshakeResponse};
use mysql_common::proto::MySerialize;
use tokio::io::{AsyncRead, AsyncWrite};

use super::packet::{Packets, ReadError};
use super::write::{self, MyError};
use crate::auth::mysql as verify;
use crate::auth::{scram_verifier, Verifier};
use crate::config::{AuthMethod, TlsMode};
use crate::metrics as m;
use crate::state::State;

/// The version string clients see. Clients pick defaults by it (a MySQL 8 version makes
/// some send `utf8mb4_0900_ai_ci`, which MariaDB lacks), so it names the common ground.
pub const SERVER_VERSION: &str = "5.7.99-sluice";

/// utf8mb4_general_ci.
const DEFAULT_COLLATION: u8 = 45;

const NATIVE: &[u8] = b"mysql_native_password";
const SHA2: &[u8] = b"caching_sha2_password";

/// Capabilities sluice offers (CLIENT_SSL is added when TLS is configured).
pub fn server_capabilities() -> CapabilityFlags {
    CapabilityFlags::CLIENT_LONG_PASSWORD
        | CapabilityFlags::CLIENT_LONG_FLAG
        | CapabilityFlags::CLIENT_CONNECT_WITH_DB
        | CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_INTERACTIVE
        | CapabilityFlags::CLIENT_TRANSACTIONS
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_MULTI_STATEMENTS
        | CapabilityFlags::CLIENT_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PS_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_CONNECT_ATTRS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
}

/// Why a login did not complete.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("{0}")]
    Refused(String),
}

/// A logged-in client.
pub struct Login {
    pub user: String,
    pub database: Option<String>,
    pub capabilities: CapabilityFlags,
    /// The greeting's scramble (COM_CHANGE_USER answers are computed from it).
    pub scramble: [u8; 20],
    /// The character set the client announced in its handshake.
    pub charset: String,
}

/// The character set of a handshake's collation id ("" when unknown).
fn charset_of(collation: u8) -> String {
    use mysql_common::collations::{Collation, CollationId};
    Collation::from(CollationId::from(u16::from(collation)))
        .charset()
        .to_string()
}

/// A random scramble without NUL bytes (it travels NUL-terminated).
pub fn new_scramble() -> [u8; 20] {
    let mut s = [0u8; 20];
    crate::auth::fill_random(&mut s);
    for b in &mut s {
        *b = (*b % 127) + 1;
    }
    s
}

/// Sends an error and reports the refusal.
async fn refuse<S, T>(p: &mut Packets<S>, e: MyError) -> Result<T, LoginError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    write::err(p, &e);
    p.close().await;
    Err(LoginError::Refused(e.message))
}

fn auth_failed(reason: &'static str) {
    metrics::counter!(m::AUTH_FAILURES, "protocol" => "mysql", "reason" => reason).increment(1);
}

/// Greets the client, upgrades to TLS when asked, and authenticates.
pub async fn login<S>(
    mut p: Packets<S>,
    state: &State,
    connection_id: u32,
    peer: Option<std::net::SocketAddr>,
) -> Result<(Packets<S>, Login), LoginError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let scramble = new_scramble();
    let mut caps = server_capabilities();
    if state.tls.is_some() && state.tls_mode != TlsMode::Disable {
        caps |= CapabilityFlags::CLIENT_SSL;
    }
    // Part 2 of the scramble travels NUL-terminated (auth data length 21).
    let mut part2 = scramble[8..].to_vec();
    part2.push(0);
    let greeting = HandshakePacket::new(
        10,
        SERVER_VERSION.as_bytes(),
        connection_id,
        scramble[..8].try_into().unwrap_or_default(),
        Some(part2),
        caps,
        DEFAULT_COLLATION,
        StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        Some(SHA2),
    );
    let mut out = Vec::with_capacity(128);
    greeting.serialize(&mut out);
    p.reset_seq();
    p.send(&out);
    p.flush().await.map_err(ReadError::Io)?;

    let mut packet = p.read().await?;
    if packet.len() < 32 {
        return refuse(&mut p, MyError::new(1043, "08S01", "Bad handshake")).await;
    }
    let client_flags = u32::from_le_bytes([packet[0], packet[1], packet[2], packet[3]]);
    if client_flags & CapabilityFlags::CLIENT_SSL.bits() != 0 && packet.len() == 32 {
        let Some(acceptor) = state
            .tls
            .as_ref()
            .filter(|_| caps.contains(CapabilityFlags::CLIENT_SSL))
        else {
            return refuse(
                &mut p,
                MyError::new(1043, "08S01", "Bad handshake: TLS is not enabled"),
            )
            .await;
        };
        p = p.upgrade(acceptor).await.map_err(LoginError::Tls)?;
        packet = p.read().await?;
    } else if state.tls_mode == TlsMode::Require {
        auth_failed("tls_required");
        let e = MyError::new(
            3159,
            "HY000",
            "Connections using insecure transport are prohibited: connect with TLS (--ssl)",
        );
        return refuse(&mut p, e).await;
    }
    let tls = p.is_tls();
    let response = match ParseBuf(&packet).parse::<HandshakeResponse>(()) {
        Ok(r) => r,
        Err(_) => return refuse(&mut p, MyError::new(1043, "08S01", "Bad handshake")).await,
    };
    let client_caps = response.capabilities();
    if !client_caps.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
        let e = MyError::new(1043, "08S01", "Bad handshake: protocol 4.1 is required");
        return refuse(&mut p, e).await;
    }
    let user = String::from_utf8_lossy(response.user()).into_owned();
    let database = response
        .db_name()
        .filter(|d| !d.is_empty())
        .map(|d| String::from_utf8_lossy(d).into_owned());
    let plugin = response
        .auth_plugin()
        .map(|a| a.as_bytes().to_vec())
        .unwrap_or_else(|| NATIVE.to_vec());
    let data = response.scramble_buf().to_vec();
    let capabilities = client_caps & (caps | CapabilityFlags::CLIENT_SSL);
    let charset = charset_of(response.collation());

    if authenticate(&mut p, state, &user, &scramble, plugin, data, tls).await? {
        // The caller answers OK once it has checked the database and limits.
        Ok((
            p,
            Login {
                user,
                database,
                capabilities,
                scramble,
                charset,
            },
        ))
    } else {
        let route = database.as_deref().unwrap_or("");
        crate::access::audit_failed_login(
            state,
            "mysql",
            &user,
            peer,
            route,
            "password authentication failed",
        );
        refuse(&mut p, MyError::access_denied(&user, true)).await
    }
}

/// Runs one authentication exchange (also used by COM_CHANGE_USER). Returns whether the
/// client proved its password; the caller answers OK or 1045.
pub async fn authenticate<S>(
    p: &mut Packets<S>,
    state: &State,
    user: &str,
    scramble: &[u8; 20],
    mut plugin: Vec<u8>,
    mut data: Vec<u8>,
    tls: bool,
) -> Result<bool, LoginError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let access = state.access.load_full();
    let entry = access.users.get(user);
    let native = entry.and_then(|e| e.mysql_native);
    // mysql_native_password when the client asks for it, or when caching_sha2_password
    // could only end in a refused full authentication (plaintext, nothing cached) and the
    // user has a native verifier. Unknown users are treated like users with one.
    let has_native = native.is_some() || entry.is_none();
    let cached = state
        .sha2_cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains_key(user);
    let wanted: &[u8] = if has_native && (plugin == NATIVE || (!tls && !cached)) {
        NATIVE
    } else {
        SHA2
    };
    // An empty response asks for the exchange to start over with the chosen plugin.
    if plugin != wanted || data.is_empty() {
        let mut with_nul = scramble.to_vec();
        with_nul.push(0);
        let switch = AuthSwitchRequest::new(wanted, with_nul);
        let mut out = Vec::new();
        switch.serialize(&mut out);
        p.send(&out);
        p.flush().await.map_err(ReadError::Io)?;
        data = p.read().await?.to_vec();
        plugin = wanted.to_vec();
    }
    let ok = if plugin == NATIVE {
        // Unknown users are checked against a stand-in so both failures cost the same.
        let stage2 = native.unwrap_or_else(|| dummy_native(user));
        verify::check_native(&stage2, scramble, &data) && entry.is_some()
    } else {
        sha2(p, state, user, scramble, &data, tls).await?
    };
    tracing::debug!(
        user,
        plugin = %String::from_utf8_lossy(&plugin),
        response_len = data.len(),
        ok,
        "mysql authentication"
    );
    if !ok {
        auth_failed(if entry.is_none() {
            "unknown_user"
        } else {
            "wrong_password"
        });
    }
    Ok(ok)
}

async fn sha2<S>(
    p: &mut Packets<S>,
    state: &State,
    user: &str,
    scramble: &[u8; 20],
    data: &[u8],
    tls: bool,
) -> Result<bool, LoginError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let cached = state
        .sha2_cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(user)
        .copied();
    if let Some(stage2) = cached {
        if verify::check_sha2_fast(&stage2, scramble, data) {
            p.send(&[0x01, 0x03]);
            return Ok(true);
        }
    }
    // perform_full_authentication: the client sends its password, which only TLS protects.
    p.send(&[0x01, 0x04]);
    p.flush().await.map_err(ReadError::Io)?;
    let answer = p.read().await?;
    if !tls {
        auth_failed("tls_required");
        let e = MyError::new(
            1045,
            "28000",
            format!(
                "Access denied for user '{user}': caching_sha2_password full authentication \
                 needs a TLS connection (or a mysql_native_password verifier for this user)"
            ),
        );
        return refuse(p, e).await;
    }
    let password = match answer.split_last() {
        Some((0, head)) => head,
        _ => &answer[..],
    };
    let password = String::from_utf8_lossy(password);
    let access = state.access.load_full();
    let entry = access.users.get(user);
    let ok = match entry {
        Some(e) => {
            e.verifier.check_cleartext(user, &password)
                || e.mysql_native
                    .is_some_and(|n| verify::check_native_cleartext(&n, &password))
        }
        None => {
            dummy_scram().check_cleartext(user, &password);
            false
        }
    };
    if ok {
        state
            .sha2_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user.to_string(), verify::sha2_stage2(&password));
    }
    Ok(ok)
}

fn dummy_native(user: &str) -> [u8; 20] {
    verify::parse_native(&verify::native_verifier(user)).unwrap_or_default()
}

/// A verifier no password matches, with the default cost, for unknown users.
fn dummy_scram() -> &'static Verifier {
    static DUMMY: std::sync::OnceLock<Verifier> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut random = [0u8; 24];
        crate::auth::fill_random(&mut random);
        let stored = scram_verifier(
            &crate::auth::hex_encode(&random),
            crate::auth::DEFAULT_ITERATIONS,
        );
        Verifier::parse(&stored, AuthMethod::ScramSha256).expect("a fresh SCRAM verifier parses")
    })
}

/// COM_CHANGE_USER: user, auth data, database and auth plugin.
pub(super) type ChangeUser = (String, Vec<u8>, Option<String>, Vec<u8>);

/// Parses COM_CHANGE_USER.
pub(super) fn parse_change_user(body: &[u8], caps: CapabilityFlags) -> Option<ChangeUser> {
    fn cstr<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
        let end = buf.iter().position(|&b| b == 0)?;
        let (head, rest) = buf.split_at(end);
        *buf = &rest[1..];
        Some(head)
    }
    let mut rest = body;
    let user = String::from_utf8_lossy(cstr(&mut rest)?).into_owned();
    let data = if caps.contains(CapabilityFlags::CLIENT_SECURE_CONNECTION) {
        let (&len, tail) = rest.split_first()?;
        let len = usize::from(len);
        if tail.len() < len {
            return None;
        }
        rest = &tail[len..];
        tail[..len].to_vec()
    } else {
        cstr(&mut rest)?.to_vec()
    };
    let database = cstr(&mut rest)
        .filter(|d| !d.is_empty())
        .map(|d| String::from_utf8_lossy(d).into_owned());
    let mut plugin = b"mysql_native_password".to_vec();
    if rest.len() >= 2 {
        rest = &rest[2..];
        if caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH) {
            if let Some(name) = cstr(&mut rest).filter(|n| !n.is_empty()) {
                plugin = name.to_vec();
            }
        }
    }
    Some((user, data, database, plugin))
}
