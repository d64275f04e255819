//! A server certificate that is itself one of the CA file's certificates is trusted as such, as
//! libpq's OpenSSL (and so PgBouncer) trusts a self-signed certificate found among its trusted
//! ones. webpki builds a chain from the server's certificate instead, and refuses one that is a CA
//! (basicConstraints CA:TRUE, which `openssl req -x509` sets) as `CaUsedAsEndEntity`.

use std::time::Duration;

use rustls::client::verify_server_name;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, Error as TlsError};

use super::cert_fields::{self, CertFields};

/// The CA file's certificates, for a server presenting one of them as its own.
#[derive(Debug, Default)]
pub struct DirectlyTrusted {
    certs: Vec<CertificateDer<'static>>,
}

impl DirectlyTrusted {
    pub fn new(certs: Vec<CertificateDer<'static>>) -> DirectlyTrusted {
        DirectlyTrusted { certs }
    }

    /// The verdict on a self-issued `end_entity`, which only itself can have issued: trusted as
    /// it is when byte for byte one of the trusted certificates, else of an unknown issuer. None
    /// for one issued by another (its chain decides, as in OpenSSL). `name` is the host name to
    /// check, None under verify-ca.
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        name: Option<&ServerName<'_>>,
        now: UnixTime,
    ) -> Option<Result<(), TlsError>> {
        let fields = cert_fields::read(end_entity.as_ref()).filter(|fields| fields.self_issued)?;
        if !self.certs.iter().any(|cert| cert.as_ref() == end_entity.as_ref()) {
            // Rather than what webpki stumbled on first: CaUsedAsEndEntity for one that is a CA.
            return Some(Err(CertificateError::UnknownIssuer.into()));
        }
        Some(verify_trusted(end_entity, &fields, name, now))
    }
}

/// What OpenSSL still asks of a trusted certificate that ends its own chain: that it is within
/// its validity period, meant for a TLS server, and (verify-full) for the host.
fn verify_trusted(
    end_entity: &CertificateDer<'_>,
    fields: &CertFields,
    name: Option<&ServerName<'_>>,
    now: UnixTime,
) -> Result<(), TlsError> {
    // webpki's parse: a well-formed X.509 v3 certificate, as for any other server certificate.
    let parsed = ParsedCertificate::try_from(end_entity)?;
    let at = |secs| UnixTime::since_unix_epoch(Duration::from_secs(secs));
    if now.as_secs() < fields.not_before {
        let not_before = at(fields.not_before);
        return Err(CertificateError::NotValidYetContext { time: now, not_before }.into());
    }
    if now.as_secs() > fields.not_after {
        return Err(CertificateError::ExpiredContext { time: now, not_after: at(fields.not_after) }.into());
    }
    if !fields.serves_tls {
        return Err(CertificateError::InvalidPurpose.into());
    }
    match name {
        Some(name) => verify_server_name(&parsed, name),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_750_000_000; // June 2025

    fn self_signed_ca(configure: impl FnOnce(&mut rcgen::CertificateParams)) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec!["db.example".to_string()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        configure(&mut params);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn verdict(cert: &CertificateDer<'static>, name: Option<&str>) -> Option<Result<(), TlsError>> {
        let name = name.map(|n| ServerName::try_from(n.to_string()).unwrap());
        let now = UnixTime::since_unix_epoch(Duration::from_secs(NOW));
        DirectlyTrusted::new(vec![cert.clone()]).verify(cert, name.as_ref(), now)
    }

    #[test]
    fn a_trusted_self_signed_ca_is_checked_for_name_and_time() {
        let cert = self_signed_ca(|_| {});
        assert_eq!(verdict(&cert, Some("db.example")), Some(Ok(())));
        assert_eq!(verdict(&cert, None), Some(Ok(())));
        let wrong_name = verdict(&cert, Some("other.example")).unwrap().unwrap_err();
        assert!(wrong_name.to_string().contains("not valid for name"), "{wrong_name}");
        let expired = self_signed_ca(|p| p.not_after = rcgen::date_time_ymd(2020, 1, 1));
        let err = verdict(&expired, None).unwrap().unwrap_err();
        assert!(
            matches!(err, TlsError::InvalidCertificate(CertificateError::ExpiredContext { .. })),
            "{err}"
        );
        let future = self_signed_ca(|p| p.not_before = rcgen::date_time_ymd(2090, 1, 1));
        let err = verdict(&future, None).unwrap().unwrap_err();
        assert!(
            matches!(err, TlsError::InvalidCertificate(CertificateError::NotValidYetContext { .. })),
            "{err}"
        );
        let client_only =
            self_signed_ca(|p| p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth]);
        assert_eq!(verdict(&client_only, None), Some(Err(CertificateError::InvalidPurpose.into())));
    }

    #[test]
    fn a_self_signed_certificate_not_in_the_file_has_an_unknown_issuer() {
        let trusted = self_signed_ca(|_| {});
        let presented = self_signed_ca(|_| {});
        let now = UnixTime::since_unix_epoch(Duration::from_secs(NOW));
        let verdict = DirectlyTrusted::new(vec![trusted]).verify(&presented, None, now);
        assert_eq!(verdict, Some(Err(CertificateError::UnknownIssuer.into())));
    }

    #[test]
    fn a_certificate_issued_by_another_is_left_to_its_chain() {
        let mut ca = rcgen::CertificateParams::new(vec![]).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, "a private CA");
        let issuer = rcgen::Issuer::new(ca, rcgen::KeyPair::generate().unwrap());
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["db.example".to_string()]).unwrap();
        let leaf = params.signed_by(&key, &issuer).unwrap().der().clone();
        assert_eq!(verdict(&leaf, Some("db.example")), None);
    }
}
