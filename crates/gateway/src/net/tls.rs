//! TLS on both sides with rustls. A TLS connection is bridged onto a Unix socket pair by a small
//! task, so sessions always drive plain readiness-based sockets; TLS is the uncommon path.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error as TlsError, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;

use super::common_name;
use super::directly_trusted::DirectlyTrusted;
use super::sock::Sock;
use crate::config::{ServerTls, ServerTlsMode, SYSTEM_ROOTS};

/// A TLS session as SHOW CLIENTS and SHOW SERVERS show it, in OpenSSL's spelling as PgBouncer does:
/// `TLSv1.3/TLS_AES_256_GCM_SHA384`.
pub fn describe(
    version: Option<rustls::ProtocolVersion>,
    suite: Option<rustls::SupportedCipherSuite>,
) -> String {
    format!(
        "{}/{}",
        version.and_then(|v| v.as_str()).unwrap_or("TLS").replace("v1_", "v1."),
        suite
            .and_then(|c| c.suite().as_str())
            .map(|name| name.replacen("TLS13_", "TLS_", 1))
            .unwrap_or_default()
    )
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?
        .collect();
    let certs = certs.map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read private key from {}: {e}", path.display()))
}

/// Accepts TLS from clients with the configured certificate.
pub fn client_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| format!("client TLS certificate/key: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// What a server's certificate is checked against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Roots {
    /// A PEM bundle of CA certificates.
    File(PathBuf),
    /// The public web roots bundled with pgpilot (`sslrootcert=system`).
    WebPki,
}

/// How much of a server's certificate is checked; one connector is built per distinct check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CertCheck {
    /// prefer / require: encryption only, as libpq.
    Nothing,
    /// verify-ca: the chain, not the host name.
    Chain(Roots),
    /// verify-full: the chain and the host name.
    ChainAndName(Roots),
}

impl CertCheck {
    /// The check a server's effective settings ask for; None when no TLS is attempted.
    pub fn for_server(server: &ServerTls) -> Result<Option<CertCheck>, String> {
        if !server.mode.may_use_tls() {
            return Ok(None);
        }
        if !server.mode.verifies() {
            return Ok(Some(CertCheck::Nothing));
        }
        // Like libpq, which fails when it finds no root certificate: never trust a default set
        // silently, a private CA's servers would otherwise be checked against the wrong roots.
        let roots = match server.ca_file.as_deref() {
            Some(p) if p == Path::new(SYSTEM_ROOTS) => Roots::WebPki,
            Some(p) => Roots::File(p.to_path_buf()),
            None => return Err(missing_ca_message(server.mode)),
        };
        Ok(Some(match server.mode {
            ServerTlsMode::VerifyCa => CertCheck::Chain(roots),
            _ => CertCheck::ChainAndName(roots),
        }))
    }
}

/// Why a verify mode without a CA file is refused, and what to set.
pub fn missing_ca_message(mode: ServerTlsMode) -> String {
    let mode = mode.name();
    format!(
        "sslmode {mode} needs the CA to check the server with: add sslrootcert=/path/ca.pem to the URL or set [tls] server_tls_ca_file (\"{SYSTEM_ROOTS}\" trusts the bundled public web roots)"
    )
}

/// The TLS connectors for every certificate check the configured servers use.
#[derive(Default)]
pub struct ServerConnectors {
    by_check: HashMap<CertCheck, Arc<tokio_rustls::TlsConnector>>,
}

impl ServerConnectors {
    /// Builds one connector per distinct check among `servers`, all presenting `client_cert`.
    pub fn build<'a>(
        servers: impl IntoIterator<Item = &'a ServerTls>,
        client_cert: Option<(&Path, &Path)>,
    ) -> Result<ServerConnectors, String> {
        let mut by_check = HashMap::new();
        for server in servers {
            let Some(check) = CertCheck::for_server(server)? else { continue };
            if let std::collections::hash_map::Entry::Vacant(slot) = by_check.entry(check) {
                let connector = server_connector(slot.key(), client_cert)?;
                slot.insert(Arc::new(connector));
            }
        }
        Ok(ServerConnectors { by_check })
    }

    /// The connector for a server; None when it gets no TLS (or was not among those built, in
    /// which case an 'S' answer fails the connection rather than going unchecked).
    pub fn for_server(&self, server: &ServerTls) -> Option<Arc<tokio_rustls::TlsConnector>> {
        let check = CertCheck::for_server(server).ok()??;
        self.by_check.get(&check).cloned()
    }
}

/// How pgpilot checks the servers it connects to.
fn server_connector(
    check: &CertCheck,
    client_cert: Option<(&Path, &Path)>,
) -> Result<tokio_rustls::TlsConnector, String> {
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        CertCheck::Chain(roots) => Arc::new(chain_verifier(roots, false)?),
        CertCheck::ChainAndName(roots) => Arc::new(chain_verifier(roots, true)?),
        CertCheck::Nothing => Arc::new(EncryptOnly(provider())),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| format!("server TLS client certificate: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The verifier of verify-ca (`check_name` false) or verify-full against `roots`.
fn chain_verifier(roots: &Roots, check_name: bool) -> Result<ChainVerifier, String> {
    let mut store = RootCertStore::empty();
    let trusted = match roots {
        Roots::File(path) => {
            let certs = load_certs(path)?;
            for cert in &certs {
                store.add(cert.clone()).map_err(|e| format!("CA certificate in {}: {e}", path.display()))?;
            }
            DirectlyTrusted::new(certs)
        }
        // Public roots never serve as a server's own certificate.
        Roots::WebPki => {
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            DirectlyTrusted::default()
        }
    };
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
        .build()
        .map_err(|e| e.to_string())?;
    Ok(ChainVerifier { inner, check_name, trusted })
}

/// verify-ca checks the chain only; verify-full also the host name, in the subjectAltName or, when
/// that names no host, in the Common Name (as libpq). A certificate the chain check refuses may
/// still be one of the CA file's own, trusted as it is (as OpenSSL does).
#[derive(Debug)]
struct ChainVerifier {
    inner: Arc<WebPkiServerVerifier>,
    check_name: bool,
    trusted: DirectlyTrusted,
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let verdict = self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        let verdict = verdict.or_else(|refusal| {
            let name = self.check_name.then_some(server_name);
            match self.trusted.verify(end_entity, name, now) {
                Some(direct) => direct.map(|()| ServerCertVerified::assertion()),
                None => Err(refusal),
            }
        });
        // Both paths check the name last: a refusal for the name is of an otherwise good
        // certificate, which verify-ca takes as it is and verify-full by its Common Name too.
        match verdict {
            Err(refusal) if is_for_name(&refusal) => {
                if !self.check_name || common_name::names_host(end_entity, server_name) {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(refusal)
                }
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A refusal because the certificate is not for the host name.
fn is_for_name(refusal: &TlsError) -> bool {
    use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
    matches!(refusal, TlsError::InvalidCertificate(NotValidForName | NotValidForNameContext { .. }))
}

/// prefer/require: encryption without authentication of the server, as libpq's sslmode=require.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// How long the TLS close_notify may take to reach a peer that does not read.
const CLOSE_NOTIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Moves a TLS stream's plaintext onto a Unix socket pair and returns the session's end.
pub fn bridge<S>(tls: S) -> io::Result<Sock>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = UnixStream::pair()?;
    tokio::spawn(pump(tls, theirs));
    Ok(Sock::Unix(ours))
}

/// Copies both ways until the session closes its end, then ends the TLS connection at once
/// (close_notify, then the socket is dropped). copy_bidirectional would also wait for the peer's
/// EOF, so a stalled client that pgpilot turned away kept its two descriptors until it closed.
async fn pump<S>(tls: S, session: UnixStream)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let (mut tls_read, mut tls_write) = tokio::io::split(tls);
    let (mut session_read, mut session_write) = session.into_split();
    let to_session = async {
        // The peer's EOF (or a broken connection) is passed on as EOF; the session then closes.
        let _ = tokio::io::copy(&mut tls_read, &mut session_write).await;
        let _ = session_write.shutdown().await;
        std::future::pending::<()>().await
    };
    let to_peer = async {
        let _ = tokio::io::copy(&mut session_read, &mut tls_write).await;
        let _ = tokio::time::timeout(CLOSE_NOTIFY_TIMEOUT, tls_write.shutdown()).await;
    };
    // Only the session's side ends the bridge: dropping the halves closes the TCP socket.
    tokio::select! {
        _ = to_session => {}
        _ = to_peer => {}
    }
}
