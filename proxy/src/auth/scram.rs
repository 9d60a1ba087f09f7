//! SCRAM-SHA-256 (RFC 5802, RFC 7677) on the server side, as PostgreSQL runs it: a pure
//! state machine over the SASL message bodies, with no I/O.
//!
//! The user name comes from the startup packet; the one inside the SCRAM message is
//! ignored (libpq sends it empty). Channel binding is not offered, so clients must send the
//! `n` or `y` GS2 flag.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::OnceLock;

use ring::{digest, hmac, pbkdf2};

use super::{b64, constant_time_eq, fill_random, unb64, VerifierError, DEFAULT_ITERATIONS};

/// The stored half of a SCRAM-SHA-256 credential.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScramSecret(..)")
    }
}

impl fmt::Display for ScramSecret {
    /// PostgreSQL's format: `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            b64(&self.salt),
            b64(&self.stored_key),
            b64(&self.server_key)
        )
    }
}

fn hmac_sha256(key: &[u8], data: &[&[u8]]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    for part in data {
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

fn key32(text: &str) -> Result<[u8; 32], VerifierError> {
    unb64(text)
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or(VerifierError::Malformed("keys must be 32 bytes of base64"))
}

impl ScramSecret {
    /// Parses PostgreSQL's stored verifier format.
    pub fn parse(stored: &str) -> Result<ScramSecret, VerifierError> {
        let rest = stored
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or(VerifierError::NotScram)?;
        let (params, keys) = rest
            .split_once('$')
            .ok_or(VerifierError::Malformed("missing '$' before the keys"))?;
        let (iter, salt) = params.split_once(':').ok_or(VerifierError::Malformed(
            "missing ':' between iterations and salt",
        ))?;
        let (stored_key, server_key) = keys
            .split_once(':')
            .ok_or(VerifierError::Malformed("missing ':' between the keys"))?;
        let iterations: u32 =
            iter.parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(VerifierError::Malformed(
                    "iterations must be a positive integer",
                ))?;
        let salt = unb64(salt)
            .filter(|s| !s.is_empty())
            .ok_or(VerifierError::Malformed("salt must be base64"))?;
        Ok(ScramSecret {
            iterations,
            salt,
            stored_key: key32(stored_key)?,
            server_key: key32(server_key)?,
        })
    }

    /// Derives the secret for a password (SASLprep-normalised when it can be, raw otherwise,
    /// as PostgreSQL does).
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> ScramSecret {
        let salted = salted_password(password, salt, iterations);
        let client_key = hmac_sha256(&salted, &[b"Client Key"]);
        ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(&salted, &[b"Server Key"]),
        }
    }

    /// A stand-in secret for a user that does not exist: stable per name, so a probe sees
    /// the same salt each time, and indistinguishable from a real one until the proof fails.
    pub fn mock(user: &str) -> ScramSecret {
        static KEY: OnceLock<[u8; 32]> = OnceLock::new();
        let key = KEY.get_or_init(|| {
            let mut k = [0u8; 32];
            fill_random(&mut k);
            k
        });
        ScramSecret {
            iterations: DEFAULT_ITERATIONS,
            salt: hmac_sha256(key, &[b"salt", user.as_bytes()])[..16].to_vec(),
            stored_key: hmac_sha256(key, &[b"stored", user.as_bytes()]),
            server_key: hmac_sha256(key, &[b"server", user.as_bytes()]),
        }
    }

    /// Checks a cleartext password against this secret.
    pub fn check_password(&self, password: &str) -> bool {
        let derived = ScramSecret::derive(password, &self.salt, self.iterations);
        constant_time_eq(&derived.stored_key, &self.stored_key)
    }
}

fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let normalised = stringprep::saslprep(password)
        .map(|p| p.into_owned())
        .unwrap_or_else(|_| password.to_string());
    let mut out = [0u8; 32];
    let iterations = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        normalised.as_bytes(),
        &mut out,
    );
    out
}

/// Why a SCRAM exchange failed. Every variant ends the login with the same client-facing
/// error; the variants exist for logs and metrics.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("nonce mismatch")]
    Nonce,
    #[error("wrong password")]
    Proof,
}

/// One server-side SCRAM-SHA-256 exchange.
pub struct ScramExchange {
    secret: ScramSecret,
    server_nonce: String,
    /// client-first-message-bare + "," + server-first-message, once sent.
    transcript: Option<(String, String)>,
}

impl ScramExchange {
    /// Starts an exchange against a stored secret (or a mock one for an unknown user).
    pub fn new(secret: ScramSecret) -> Self {
        let mut raw = [0u8; 18];
        fill_random(&mut raw);
        ScramExchange::with_nonce(secret, b64(&raw))
    }

    fn with_nonce(secret: ScramSecret, server_nonce: String) -> Self {
        ScramExchange {
            secret,
            server_nonce,
            transcript: None,
        }
    }

    /// Handles client-first-message; returns server-first-message.
    pub fn server_first(&mut self, client_first: &[u8]) -> Result<String, ScramError> {
        let text =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let bare = match text.as_bytes().first() {
            Some(b'n') | Some(b'y') => text
                .splitn(3, ',')
                .nth(2)
                .ok_or(ScramError::Malformed("missing GS2 header"))?,
            Some(b'p') => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("bad GS2 flag")),
        };
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
            .ok_or(ScramError::Malformed("missing client nonce"))?;
        let server_first = format!(
            "r={client_nonce}{},s={},i={}",
            self.server_nonce,
            b64(&self.secret.salt),
            self.secret.iterations
        );
        self.transcript = Some((bare.to_string(), server_first.clone()));
        Ok(server_first)
    }

    /// Handles client-final-message; returns server-final-message when the proof is right.
    pub fn server_final(&mut self, client_final: &[u8]) -> Result<String, ScramError> {
        let (bare, server_first) = self
            .transcript
            .take()
            .ok_or(ScramError::Malformed("client-final before client-first"))?;
        let text =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("missing proof"))?;
        let mut attrs = without_proof.split(',');
        let binding = attrs.next().and_then(|a| a.strip_prefix("c="));
        if !matches!(binding, Some("biws") | Some("eSws")) {
            return Err(ScramError::ChannelBinding);
        }
        let nonce = attrs.next().and_then(|a| a.strip_prefix("r="));
        let expected_nonce = server_first
            .strip_prefix("r=")
            .and_then(|s| s.split(',').next());
        if nonce.is_none() || nonce != expected_nonce {
            return Err(ScramError::Nonce);
        }
        let proof = unb64(proof)
            .and_then(|p| <[u8; 32]>::try_from(p).ok())
            .ok_or(ScramError::Malformed("proof must be 32 bytes of base64"))?;
        let auth_message = format!("{bare},{server_first},{without_proof}");
        let signature = hmac_sha256(&self.secret.stored_key, &[auth_message.as_bytes()]);
        let mut client_key = [0u8; 32];
        for (k, (p, s)) in client_key
            .iter_mut()
            .zip(proof.iter().zip(signature.iter()))
        {
            *k = p ^ s;
        }
        if !constant_time_eq(&sha256(&client_key), &self.secret.stored_key) {
            return Err(ScramError::Proof);
        }
        let server_signature = hmac_sha256(&self.secret.server_key, &[auth_message.as_bytes()]);
        Ok(format!("v={}", b64(&server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 section 3, password "pencil".
    const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
        p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";

    fn rfc_secret() -> ScramSecret {
        ScramSecret::derive("pencil", &unb64(SALT).unwrap(), 4096)
    }

    #[test]
    fn the_rfc_7677_exchange_succeeds() {
        let mut ex = ScramExchange::with_nonce(rfc_secret(), SERVER_NONCE.into());
        let first = ex.server_first(CLIENT_FIRST.as_bytes()).unwrap();
        assert_eq!(
            first,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let last = ex.server_final(CLIENT_FINAL.as_bytes()).unwrap();
        assert_eq!(last, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn a_wrong_password_fails_at_the_proof() {
        let secret = ScramSecret::derive("not pencil", &unb64(SALT).unwrap(), 4096);
        let mut ex = ScramExchange::with_nonce(secret, SERVER_NONCE.into());
        ex.server_first(CLIENT_FIRST.as_bytes()).unwrap();
        assert_eq!(
            ex.server_final(CLIENT_FINAL.as_bytes()),
            Err(ScramError::Proof)
        );
    }

    #[test]
    fn a_mock_secret_fails_the_same_way_and_is_stable() {
        assert_eq!(ScramSecret::mock("ghost"), ScramSecret::mock("ghost"));
        assert_ne!(
            ScramSecret::mock("ghost").salt,
            ScramSecret::mock("other").salt
        );
        let mut ex = ScramExchange::with_nonce(ScramSecret::mock("ghost"), SERVER_NONCE.into());
        ex.server_first(CLIENT_FIRST.as_bytes()).unwrap();
        assert_eq!(
            ex.server_final(CLIENT_FINAL.as_bytes()),
            Err(ScramError::Proof)
        );
    }

    #[test]
    fn a_replayed_nonce_or_channel_binding_request_is_refused() {
        let mut ex = ScramExchange::with_nonce(rfc_secret(), "other".into());
        ex.server_first(CLIENT_FIRST.as_bytes()).unwrap();
        assert_eq!(
            ex.server_final(CLIENT_FINAL.as_bytes()),
            Err(ScramError::Nonce)
        );
        let mut ex = ScramExchange::new(rfc_secret());
        assert_eq!(
            ex.server_first(b"p=tls-server-end-point,,n=,r=abc"),
            Err(ScramError::ChannelBinding)
        );
    }

    #[test]
    fn stored_verifiers_round_trip() {
        let s = rfc_secret();
        assert_eq!(ScramSecret::parse(&s.to_string()).unwrap(), s);
        assert!(ScramSecret::parse("SCRAM-SHA-256$0:abc$x:y").is_err());
    }
}
