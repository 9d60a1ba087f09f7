//! The `sluice` command line: check-config and passwd.

use tests::sluice::{run_cli, SluiceConfig};

#[test]
fn check_config_accepts_a_valid_file() {
    let prepared = SluiceConfig::default().write();
    let (code, out, err) = run_cli(&["check-config", prepared.path.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok"));
}

#[test]
fn check_config_names_an_unknown_key_and_its_line() {
    let prepared = SluiceConfig {
        extra: "bogus_setting = 1\n".into(),
        ..Default::default()
    }
    .write();
    let (code, _, err) = run_cli(&["check-config", prepared.path.to_str().unwrap()], None);
    assert_ne!(code, 0);
    assert!(
        err.contains("bogus_setting") && err.contains("line"),
        "{err}"
    );
}

#[test]
fn check_config_names_a_missing_cert_file() {
    let prepared = SluiceConfig::default().write();
    std::fs::remove_file(&prepared.pki.server_cert).unwrap();
    let (code, _, err) = run_cli(&["check-config", prepared.path.to_str().unwrap()], None);
    assert_ne!(code, 0);
    assert!(
        err.contains("tls.cert") && err.contains("server.crt"),
        "{err}"
    );
}

#[test]
fn passwd_prints_a_verifier_that_logs_in() {
    let (code, out, err) = run_cli(&["passwd"], Some("correct horse\n"));
    assert_eq!(code, 0, "{err}");
    let verifier = out.trim();
    assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");
    assert!(!verifier.contains("correct horse"));
    let v = proxy::auth::Verifier::parse(verifier, proxy::config::AuthMethod::ScramSha256).unwrap();
    assert!(v.check_cleartext("anyone", "correct horse"));
    let (code, out, _) = run_cli(&["passwd", "--md5", "bob"], Some("pw\n"));
    assert_eq!(code, 0);
    assert_eq!(out.trim(), proxy::auth::md5_verifier("pw", "bob"));
}
