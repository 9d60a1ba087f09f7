//! Stored password verifiers and the checks run against them. Config files hold verifiers
//! only (`SCRAM-SHA-256$...` or `md5...`), never plaintext passwords.

pub mod mysql;
pub mod scram;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};

use crate::config::AuthMethod;
pub use scram::{ScramExchange, ScramSecret};

/// Default PBKDF2 iteration count, as in PostgreSQL.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// A parsed stored verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verifier {
    Scram(ScramSecret),
    /// `md5(password || username)`, hex.
    Md5(String),
}

/// Why a stored verifier is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifierError {
    #[error("expected a SCRAM-SHA-256 verifier from `sluice passwd`, not a plaintext password")]
    NotScram,
    #[error("expected an md5 verifier (`md5` + 32 hex digits) from `sluice passwd --md5 USER`")]
    NotMd5,
    #[error("malformed SCRAM-SHA-256 verifier: {0}")]
    Malformed(&'static str),
}

impl Verifier {
    /// Parses the stored form a user's auth method needs. Cleartext-password users may hold
    /// either kind.
    pub fn parse(stored: &str, method: AuthMethod) -> Result<Verifier, VerifierError> {
        let is_md5 = stored.len() == 35
            && stored.starts_with("md5")
            && stored[3..].bytes().all(|b| b.is_ascii_hexdigit());
        match method {
            AuthMethod::Md5 if is_md5 => Ok(Verifier::Md5(stored[3..].to_ascii_lowercase())),
            AuthMethod::Md5 => Err(VerifierError::NotMd5),
            AuthMethod::Password if is_md5 => Ok(Verifier::Md5(stored[3..].to_ascii_lowercase())),
            AuthMethod::ScramSha256 | AuthMethod::Password => {
                ScramSecret::parse(stored).map(Verifier::Scram)
            }
        }
    }

    /// Checks a cleartext password (for `auth = "password"` users).
    pub fn check_cleartext(&self, user: &str, password: &str) -> bool {
        match self {
            Verifier::Scram(secret) => secret.check_password(password),
            Verifier::Md5(hex) => {
                constant_time_eq(md5_hex(password, user).as_bytes(), hex.as_bytes())
            }
        }
    }

    /// Checks an md5 password response: `"md5" + md5(hex || salt)`.
    pub fn check_md5_response(&self, salt: &[u8; 4], response: &str) -> bool {
        match self {
            Verifier::Md5(hex) => {
                let mut input = hex.as_bytes().to_vec();
                input.extend_from_slice(salt);
                let expected = format!("md5{}", hex_encode(&md5::compute(input).0));
                constant_time_eq(expected.as_bytes(), response.as_bytes())
            }
            Verifier::Scram(_) => false,
        }
    }
}

/// A fresh SCRAM-SHA-256 verifier for a password.
pub fn scram_verifier(password: &str, iterations: u32) -> String {
    let mut salt = [0u8; 16];
    fill_random(&mut salt);
    ScramSecret::derive(password, &salt, iterations).to_string()
}

/// An md5 verifier for a password and user name.
pub fn md5_verifier(password: &str, user: &str) -> String {
    format!("md5{}", md5_hex(password, user))
}

fn md5_hex(password: &str, user: &str) -> String {
    hex_encode(&md5::compute(format!("{password}{user}")).0)
}

pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fills `buf` from the operating system's secure random source.
pub fn fill_random(buf: &mut [u8]) {
    // The system RNG only fails when the OS cannot supply randomness; nothing safe can
    // continue without it.
    SystemRandom::new()
        .fill(buf)
        .expect("operating system random source failed");
}

/// Compares secrets without an early exit on the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

pub(crate) fn unb64(text: &str) -> Option<Vec<u8>> {
    B64.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_scram_verifier_checks_its_password_only() {
        let stored = scram_verifier("s3cret", 4096);
        assert!(stored.starts_with("SCRAM-SHA-256$4096:"));
        let v = Verifier::parse(&stored, AuthMethod::ScramSha256).unwrap();
        assert!(v.check_cleartext("u", "s3cret"));
        assert!(!v.check_cleartext("u", "s3cret "));
    }

    #[test]
    fn two_verifiers_for_one_password_differ_by_salt() {
        assert_ne!(scram_verifier("pw", 4096), scram_verifier("pw", 4096));
    }

    #[test]
    fn md5_verifiers_match_postgres() {
        // PostgreSQL: SELECT 'md5' || md5('secret' || 'alice')
        assert_eq!(
            md5_verifier("secret", "alice"),
            "md54a0a68b43b6cd5cf266fa02f196e2371"
        );
        let v = Verifier::parse(&md5_verifier("secret", "alice"), AuthMethod::Md5).unwrap();
        assert!(v.check_cleartext("alice", "secret"));
        let salt = [1, 2, 3, 4];
        let inner = md5_hex("secret", "alice");
        let mut input = inner.into_bytes();
        input.extend_from_slice(&salt);
        let response = format!("md5{}", hex_encode(&md5::compute(input).0));
        assert!(v.check_md5_response(&salt, &response));
        assert!(!v.check_md5_response(&[0, 0, 0, 0], &response));
    }

    #[test]
    fn plaintext_in_place_of_a_verifier_is_refused() {
        assert_eq!(
            Verifier::parse("hunter2", AuthMethod::ScramSha256),
            Err(VerifierError::NotScram)
        );
        assert_eq!(
            Verifier::parse("hunter2", AuthMethod::Md5),
            Err(VerifierError::NotMd5)
        );
    }
}
