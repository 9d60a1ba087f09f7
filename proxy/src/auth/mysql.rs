//! MySQL authentication checks against stored verifiers.
//!
//! - `mysql_native_password`: the stored verifier is `*` + hex(SHA1(SHA1(password))), as in
//!   MySQL's own `mysql.user` table. The client proves it knows SHA1(password).
//! - `caching_sha2_password`: full authentication (over TLS) sends the password, checked
//!   against the user's verifier; a success caches SHA256(SHA256(password)) in memory so
//!   later logins take the fast path (a scramble), as MySQL does.

use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::{constant_time_eq, hex_encode};

/// Stored `mysql_native_password` verifier for a password.
pub fn native_verifier(password: &str) -> String {
    format!(
        "*{}",
        hex_encode(&native_stage2(password)).to_ascii_uppercase()
    )
}

fn native_stage2(password: &str) -> [u8; 20] {
    let stage1 = Sha1::digest(password.as_bytes());
    Sha1::digest(stage1).into()
}

/// Parses `*` + 40 hex digits.
pub fn parse_native(stored: &str) -> Option<[u8; 20]> {
    let hex = stored.strip_prefix('*')?;
    if hex.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Checks a `mysql_native_password` response:
/// SHA1(password) XOR SHA1(scramble || SHA1(SHA1(password))).
pub fn check_native(stage2: &[u8; 20], scramble: &[u8], response: &[u8]) -> bool {
    if response.len() != 20 {
        return false;
    }
    let mut h = Sha1::new();
    h.update(scramble);
    h.update(stage2);
    let mask = h.finalize();
    let stage1: Vec<u8> = response
        .iter()
        .zip(mask.iter())
        .map(|(a, b)| a ^ b)
        .collect();
    let candidate: [u8; 20] = Sha1::digest(&stage1).into();
    constant_time_eq(&candidate, stage2)
}

/// Checks a cleartext password against a native verifier.
pub fn check_native_cleartext(stage2: &[u8; 20], password: &str) -> bool {
    constant_time_eq(&native_stage2(password), stage2)
}

/// What the `caching_sha2_password` fast path is checked against.
pub fn sha2_stage2(password: &str) -> [u8; 32] {
    let stage1 = Sha256::digest(password.as_bytes());
    Sha256::digest(stage1).into()
}

/// Checks a `caching_sha2_password` fast-auth response:
/// SHA256(password) XOR SHA256(SHA256(SHA256(password)) || scramble).
pub fn check_sha2_fast(stage2: &[u8; 32], scramble: &[u8], response: &[u8]) -> bool {
    if response.len() != 32 {
        return false;
    }
    let mut h = Sha256::new();
    h.update(stage2);
    h.update(scramble);
    let mask = h.finalize();
    let stage1: Vec<u8> = response
        .iter()
        .zip(mask.iter())
        .map(|(a, b)| a ^ b)
        .collect();
    let candidate: [u8; 32] = Sha256::digest(&stage1).into();
    constant_time_eq(&candidate, stage2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_verifier_matches_mysql() {
        // MySQL: SELECT PASSWORD('secret') (5.7) = *14E65567ABDB5135D0CFD9A70B3032C179A49EE7
        assert_eq!(
            native_verifier("secret"),
            "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7"
        );
        assert_eq!(
            parse_native(&native_verifier("secret")),
            Some(native_stage2("secret"))
        );
        assert_eq!(parse_native("secret"), None);
    }

    #[test]
    fn native_and_sha2_responses_check_as_clients_compute_them() {
        let scramble = b"0123456789abcdefghij";
        let stage2 = native_stage2("pw");
        let response = mysql_common::scramble::scramble_native(scramble, b"pw").unwrap();
        assert!(check_native(&stage2, scramble, &response));
        let wrong = mysql_common::scramble::scramble_native(scramble, b"pW").unwrap();
        assert!(!check_native(&stage2, scramble, &wrong));

        let stage2 = sha2_stage2("pw");
        let response = mysql_common::scramble::scramble_sha256(scramble, b"pw").unwrap();
        assert!(check_sha2_fast(&stage2, scramble, &response));
        let wrong = mysql_common::scramble::scramble_sha256(scramble, b"pw2").unwrap();
        assert!(!check_sha2_fast(&stage2, scramble, &wrong));
    }
}
