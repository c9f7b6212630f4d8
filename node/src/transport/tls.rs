//! TLS for SIP (RFC 3261 §26.2): the server identity (from PEM, or self-signed), the client's
//! trust, on rustls with the ring provider.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{Config, Error};

/// Reads every certificate of a PEM bundle (for [`Config::tls_roots`]).
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls {
            problem: format!("the PEM certificates cannot be read: {e}"),
        })?;
    if certificates.is_empty() {
        return Err(Error::Tls {
            problem: "the PEM text holds no CERTIFICATE section".into(),
        });
    }
    Ok(certificates)
}

/// The acceptor of the TLS listeners and the certificate they present.
pub(super) fn server(config: &Config) -> Result<(TlsAcceptor, CertificateDer<'static>), Error> {
    let (chain, key) = match &config.tls_identity {
        Some(identity) => {
            let chain = certificates_from_pem(&identity.chain_pem)?;
            let key = PrivateKeyDer::from_pem_slice(&identity.key_pem).map_err(|e| Error::Tls {
                problem: format!("the PEM private key cannot be read: {e}"),
            })?;
            (chain, key)
        }
        None => self_signed(config)?,
    };
    let leaf = chain.first().cloned().ok_or(Error::Tls {
        problem: "the certificate chain is empty".into(),
    })?;
    let server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rustls_error)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::Tls {
            problem: format!("the certificate and private key cannot be used together: {e}"),
        })?;
    Ok((TlsAcceptor::from(Arc::new(server)), leaf))
}

/// The connector of outgoing TLS connections, trusting [`Config::tls_roots`] (or anything,
/// with [`Config::dangerous_accept_any_server_certificate`]).
pub(super) fn client(config: &Config) -> Result<TlsConnector, Error> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(rustls_error)?;
    let client = if config.dangerous_accept_any_server_certificate {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for root in &config.tls_roots {
            roots.add(root.clone()).map_err(|e| Error::Tls {
                problem: format!("a trusted root certificate cannot be used: {e}"),
            })?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(TlsConnector::from(Arc::new(client)))
}

/// The name a TLS client checks the server's certificate against: its IP address.
pub(super) fn server_name(ip: IpAddr) -> ServerName<'static> {
    ServerName::IpAddress(ip.into())
}

/// rustls with ring, named explicitly: the process default would be ambiguous if another
/// crate turned on aws-lc-rs.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn rustls_error(e: rustls::Error) -> Error {
    Error::Tls {
        problem: e.to_string(),
    }
}

/// A self-signed certificate for the IP addresses of the TLS listen addresses (both loopback
/// addresses for an unspecified one) and `localhost`.
fn self_signed(
    config: &Config,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    let mut names = BTreeSet::from(["localhost".to_owned()]);
    for addr in &config.tls {
        match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => names.insert(Ipv4Addr::LOCALHOST.to_string()),
            IpAddr::V6(ip) if ip.is_unspecified() => names.insert(Ipv6Addr::LOCALHOST.to_string()),
            ip => names.insert(ip.to_string()),
        };
    }
    let certified = rcgen::generate_simple_self_signed(names.into_iter().collect::<Vec<_>>())
        .map_err(|e| Error::Tls {
            problem: format!("cannot make a self-signed certificate: {e}"),
        })?;
    let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    Ok((vec![certified.cert.der().clone()], key.into()))
}

/// Accepts every server certificate; still checks that the handshake is signed by the key of
/// the certificate presented. Only with [`Config::dangerous_accept_any_server_certificate`].
#[derive(Debug)]
struct AcceptAnyServer {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
