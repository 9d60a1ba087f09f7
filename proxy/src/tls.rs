//! rustls server configuration for client-facing TLS (ring provider only).

use std::sync::Arc;

use rustls::crypto::ring;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{Tls, TlsMode};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.cert and tls.key are required when tls.mode is allow or require")]
    Missing,
    #[error("cannot read certificates from {path}: {message}")]
    Cert { path: String, message: String },
    #[error("cannot read private key from {path}: {message}")]
    Key { path: String, message: String },
    #[error("certificate and key do not work together: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the server config, or `None` when TLS is disabled.
pub fn server_config(tls: &Tls) -> Result<Option<Arc<ServerConfig>>, TlsError> {
    if tls.mode == TlsMode::Disable {
        return Ok(None);
    }
    let (Some(cert_path), Some(key_path)) = (&tls.cert, &tls.key) else {
        return Err(TlsError::Missing);
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert_path.display().to_string(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: cert_path.display().to_string(),
            message: "no certificate found".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::Key {
        path: key_path.display().to_string(),
        message: e.to_string(),
    })?;
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Some(Arc::new(config)))
}

/// Builds a client config that trusts the CA certificates in `ca_path` (for TLS to
/// backends, verified against the server name).
pub fn client_config(ca_path: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let cert_err = |message: String| TlsError::Cert {
        path: ca_path.display().to_string(),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_path).map_err(|e| cert_err(e.to_string()))? {
        roots
            .add(cert.map_err(|e| cert_err(e.to_string()))?)
            .map_err(|e| cert_err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(cert_err("no certificate found".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
