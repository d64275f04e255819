//! The host name in a server certificate's subject Common Name. webpki reads only the
//! subjectAltName, but libpq (and so PgBouncer, and PostgreSQL's own docs, whose example makes a
//! server certificate with `-subj "/CN=dbhost.yourdomain.com"` and no subjectAltName) takes the
//! Common Name as the host name of a certificate whose subjectAltName names no host. One that
//! does name a host is never matched by its Common Name (RFC 6125).

use rustls::pki_types::{CertificateDer, ServerName};

use super::cert_fields;

/// Whether `end_entity`, which names no host in a subjectAltName, has `host` as its Common Name.
pub fn names_host(end_entity: &CertificateDer<'_>, host: &ServerName<'_>) -> bool {
    let Some(fields) = cert_fields::read(end_entity.as_ref()) else { return false };
    let Some(common_name) = fields.common_name.filter(|_| !fields.names_hosts_in_alt_name) else {
        return false;
    };
    match host {
        ServerName::DnsName(dns) => matches_dns_name(&common_name, dns.as_ref()),
        // As libpq, which compares the Common Name's text with the address as written.
        ServerName::IpAddress(ip) => common_name == std::net::IpAddr::from(*ip).to_string(),
        _ => false,
    }
}

/// libpq's comparison: case-insensitive, and a leading `*.` stands for exactly one whole label.
fn matches_dns_name(pattern: &str, host: &str) -> bool {
    if pattern.eq_ignore_ascii_case(host) {
        return true;
    }
    let Some(parent) = pattern.strip_prefix("*.") else { return false };
    match host.split_once('.') {
        Some((label, rest)) => !label.is_empty() && rest.eq_ignore_ascii_case(parent),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(common_name: &str, alt_names: &[&str]) -> CertificateDer<'static> {
        let alt_names = alt_names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let mut params = rcgen::CertificateParams::new(alt_names).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "pgpilot");
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn names(cert: &CertificateDer<'static>, host: &str) -> bool {
        names_host(cert, &ServerName::try_from(host.to_string()).unwrap())
    }

    #[test]
    fn the_common_name_is_read_with_whether_the_alt_name_names_hosts() {
        let read = |cert: CertificateDer<'static>| cert_fields::read(cert.as_ref()).unwrap();
        let cn_only = read(certificate("db.example", &[]));
        assert_eq!(cn_only.common_name.as_deref(), Some("db.example"));
        assert!(!cn_only.names_hosts_in_alt_name);
        assert!(read(certificate("db.example", &["other.example"])).names_hosts_in_alt_name);
        assert!(read(certificate("db.example", &["10.0.0.1"])).names_hosts_in_alt_name);
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "no common name");
        let key = rcgen::KeyPair::generate().unwrap();
        assert_eq!(read(params.self_signed(&key).unwrap().der().clone()).common_name, None);
    }

    #[test]
    fn a_common_name_names_the_host_only_without_alt_name_hosts() {
        assert!(names(&certificate("db.example", &[]), "db.example"));
        assert!(names(&certificate("DB.Example", &[]), "db.EXAMPLE"));
        assert!(!names(&certificate("db.example", &[]), "other.example"));
        assert!(!names(&certificate("db.example", &["other.example"]), "db.example"));
        assert!(!names(&certificate("db.example", &["10.0.0.1"]), "db.example"));
        assert!(names(&certificate("127.0.0.1", &[]), "127.0.0.1"));
        assert!(!names(&certificate("localhost", &[]), "127.0.0.1"));
        assert!(names(&certificate("::1", &[]), "::1"));
    }

    #[test]
    fn a_wildcard_stands_for_exactly_one_label() {
        assert!(matches_dns_name("*.example.com", "db.example.com"));
        assert!(matches_dns_name("*.Example.COM", "DB.example.com"));
        assert!(!matches_dns_name("*.example.com", "a.db.example.com"));
        assert!(!matches_dns_name("*.example.com", "example.com"));
        assert!(!matches_dns_name("*.example.com", ".example.com"));
        assert!(!matches_dns_name("*example.com", "db.example.com"));
        assert!(!matches_dns_name("db.*.com", "db.example.com"));
    }
}
