//! How the store reaches the server: the parsed connection settings and
//! the TLS connector every connection (sessions, the event listener) uses.
//!
//! TLS is rustls. With a CA file ([`PostgresTls::ca_file`]) TLS is required
//! and the server's certificate chain and host name are verified against
//! that CA (libpq's `sslmode=verify-full`). Without one, the URL's `sslmode`
//! decides (`prefer` by default: TLS when the server offers it, `require`:
//! TLS or no connection, `disable`: never) and the certificate is not
//! verified, as libpq does for `prefer` and `require`: the connection is
//! encrypted but not authenticated.

use crate::{Result, StoreError};
use postgres::config::SslMode;
use postgres::Client;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// TLS settings of the PostgreSQL store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostgresTls {
    /// PEM file with the CA certificate(s) that signed the server's
    /// certificate. Set: TLS is required and verified (chain and host name).
    pub ca_file: Option<PathBuf>,
}

/// A server to connect to: its settings and the TLS connector.
#[derive(Clone)]
pub(crate) struct Server {
    pub(crate) config: postgres::Config,
    tls: MakeRustlsConnect,
}

impl Server {
    /// The server of `config`, reached as `tls` says.
    pub(crate) fn new(mut config: postgres::Config, tls: &PostgresTls) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Invalid(format!("TLS: {e}")))?;
        let client = match &tls.ca_file {
            Some(path) => {
                let bad = |what: String| StoreError::Invalid(format!("store.tls.caFile {}: {what}", path.display()));
                let mut roots = rustls::RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| bad(e.to_string()))?
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| bad(e.to_string()))?;
                if certs.is_empty() {
                    return Err(bad("no PEM certificate in it".into()));
                }
                for cert in certs {
                    roots.add(cert).map_err(|e| bad(e.to_string()))?;
                }
                // A CA is given: TLS is wanted, never a plain fallback.
                if config.get_ssl_mode() != SslMode::Disable {
                    config.ssl_mode(SslMode::Require);
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
                .with_no_client_auth(),
        };
        Ok(Self { config, tls: MakeRustlsConnect::new(client) })
    }

    /// Opens a connection. Blocks.
    pub(crate) fn connect(&self) -> std::result::Result<Client, postgres::Error> {
        self.config.connect(self.tls.clone())
    }
}

/// Accepts any server certificate (libpq's `sslmode=prefer`/`require`),
/// while still checking the handshake's signatures.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
