//! TLS client setup shared by the protocol drivers: certificates are always verified; a private CA
//! is added as a trusted root, never by turning verification off.

use std::path::Path;

use async_native_tls::{Certificate, TlsConnector};

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read CA file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("CA file {path} is not a PEM certificate: {source}")]
    Parse {
        path: String,
        source: async_native_tls::Error,
    },
}

/// A connector that trusts the system roots, plus the certificate in `ca_file` when given.
pub fn connector(ca_file: Option<&Path>) -> Result<TlsConnector, TlsSetupError> {
    let mut connector = TlsConnector::new();
    if let Some(path) = ca_file {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| TlsSetupError::Read {
            path: shown.clone(),
            source,
        })?;
        let cert = Certificate::from_pem(&pem).map_err(|source| TlsSetupError::Parse {
            path: shown,
            source,
        })?;
        connector = connector.add_root_certificate(cert);
    }
    Ok(connector)
}
