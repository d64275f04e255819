//! The few fields of an X.509 certificate that pgpilot reads itself, for a server certificate
//! trusted directly (`net::directly_trusted`): webpki checks them only while building a chain, and
//! offers no way to check them on a certificate it refuses to use as an end entity. And the
//! subject's Common Name, which webpki never reads but libpq takes as the host name of a
//! certificate without subjectAltName host names (`net::common_name`).

/// DER tags of the elements walked through.
const SEQUENCE: u8 = 0x30;
const VERSION: u8 = 0xa0;
const EXTENSIONS: u8 = 0xa3;
const OID: u8 = 0x06;
const SET: u8 = 0x31;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const UTF8_STRING: u8 = 0x0c;
const PRINTABLE_STRING: u8 = 0x13;
const IA5_STRING: u8 = 0x16;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// id-ce-extKeyUsage (2.5.29.37) and id-kp-serverAuth (1.3.6.1.5.5.7.3.1), encoded.
const EXTENDED_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
const SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
/// id-ce-subjectAltName (2.5.29.17) and id-at-commonName (2.5.4.3), encoded.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// The GeneralName tags of a dNSName ([2] IA5String) and an iPAddress ([7] OCTET STRING).
const DNS_NAME: u8 = 0x82;
const IP_ADDRESS: u8 = 0x87;

/// What decides whether a certificate may stand for a server on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFields {
    /// The validity period, in seconds since the Unix epoch (0 for any time before it).
    pub not_before: u64,
    pub not_after: u64,
    /// Issued by itself: its issuer's name is its subject's, as OpenSSL requires of a certificate
    /// that ends a chain.
    pub self_issued: bool,
    /// Usable by a TLS server: no extended key usage, or one that lists serverAuth (webpki's rule).
    pub serves_tls: bool,
    /// The subject's first Common Name, when it is text (UTF8String, PrintableString, IA5String).
    pub common_name: Option<String>,
    /// Its subjectAltName lists a dNSName or an iPAddress: then only those name the host.
    pub names_hosts_in_alt_name: bool,
}

/// Reads a DER certificate's fields; None when it is not a certificate.
pub fn read(der: &[u8]) -> Option<CertFields> {
    let mut input = der;
    let mut certificate = next(&mut input, SEQUENCE)?;
    let mut tbs = next(&mut certificate, SEQUENCE)?;
    if tbs.first() == Some(&VERSION) {
        next_any(&mut tbs)?;
    }
    next_any(&mut tbs)?; // serialNumber
    next(&mut tbs, SEQUENCE)?; // signature algorithm
    let issuer = next(&mut tbs, SEQUENCE)?;
    let mut validity = next(&mut tbs, SEQUENCE)?;
    let not_before = time(&mut validity)?;
    let not_after = time(&mut validity)?;
    let subject = next(&mut tbs, SEQUENCE)?;
    next(&mut tbs, SEQUENCE)?; // subjectPublicKeyInfo
    let (mut serves_tls, mut names_hosts_in_alt_name) = (true, false);
    // What follows: the optional issuer and subject unique IDs, then the extensions.
    while let Some((tag, mut contents)) = next_any(&mut tbs) {
        if tag == EXTENSIONS {
            let extensions = next(&mut contents, SEQUENCE)?;
            serves_tls = extension(extensions, EXTENDED_KEY_USAGE)?.is_none_or(lists_server_auth);
            names_hosts_in_alt_name = extension(extensions, SUBJECT_ALT_NAME)?.is_some_and(lists_host_names);
        }
    }
    Some(CertFields {
        not_before,
        not_after,
        self_issued: issuer == subject,
        serves_tls,
        common_name: common_name(subject),
        names_hosts_in_alt_name,
    })
}

/// The value (a SEQUENCE's contents) of the extension `id` among `extensions`, if it has one.
fn extension<'a>(mut extensions: &'a [u8], id: &[u8]) -> Option<Option<&'a [u8]>> {
    while !extensions.is_empty() {
        let mut extension = next(&mut extensions, SEQUENCE)?;
        let found = next(&mut extension, OID)?;
        if extension.first() == Some(&BOOLEAN) {
            next_any(&mut extension)?; // critical
        }
        let mut value = next(&mut extension, OCTET_STRING)?;
        if found == id {
            return Some(Some(next(&mut value, SEQUENCE)?));
        }
    }
    Some(None)
}

/// Whether a subjectAltName's GeneralNames include a dNSName or an iPAddress.
fn lists_host_names(mut names: &[u8]) -> bool {
    while let Some((tag, _)) = next_any(&mut names) {
        if tag == DNS_NAME || tag == IP_ADDRESS {
            return true;
        }
    }
    false
}

/// The first Common Name of a Name (a SEQUENCE of SETs of type-and-value SEQUENCEs), as libpq
/// takes the first; None when it has none in a text form (or the name is malformed, which is
/// left to webpki's parse rather than making the other fields unreadable).
fn common_name(mut name: &[u8]) -> Option<String> {
    while !name.is_empty() {
        let mut relative = next(&mut name, SET)?;
        while !relative.is_empty() {
            let mut attribute = next(&mut relative, SEQUENCE)?;
            if next(&mut attribute, OID)? != COMMON_NAME {
                continue;
            }
            let (tag, value) = next_any(&mut attribute)?;
            let text = [UTF8_STRING, PRINTABLE_STRING, IA5_STRING].contains(&tag).then_some(value)?;
            return String::from_utf8(text.to_vec()).ok();
        }
    }
    None
}

fn lists_server_auth(mut purposes: &[u8]) -> bool {
    while let Some(purpose) = next(&mut purposes, OID) {
        if purpose == SERVER_AUTH {
            return true;
        }
    }
    false
}

/// The next element's contents when its tag is `tag`.
fn next<'a>(input: &mut &'a [u8], tag: u8) -> Option<&'a [u8]> {
    let (found, contents) = next_any(input)?;
    (found == tag).then_some(contents)
}

/// Splits the next element (tag and contents) off `input`; single-byte tags, as X.509's are.
fn next_any<'a>(input: &mut &'a [u8]) -> Option<(u8, &'a [u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let size = usize::from(first & 0x7f);
        if size == 0 || size > 4 || rest.len() < size {
            return None;
        }
        let (bytes, rest) = rest.split_at(size);
        (bytes.iter().fold(0usize, |len, &b| len << 8 | usize::from(b)), rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    *input = rest;
    Some((tag, contents))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`), as RFC
/// 5280 has certificates write them, in seconds since the Unix epoch.
fn time(input: &mut &[u8]) -> Option<u64> {
    let (tag, text) = next_any(input)?;
    let (year, rest) = match (tag, text.len()) {
        (UTC_TIME, 13) => {
            let yy = digits(&text[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        (GENERALIZED_TIME, 15) => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let [month, day, hour, minute, second] =
        [0, 2, 4, 6, 8].map(|at| digits(&rest[at..at + 2]).unwrap_or(u32::MAX));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_since_epoch(year, month, day);
    let seconds = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    Some(u64::try_from(seconds).unwrap_or(0))
}

fn digits(text: &[u8]) -> Option<u32> {
    text.iter().try_fold(0, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// days_from_civil).
fn days_since_epoch(year: u32, month: u32, day: u32) -> i64 {
    let year = i64::from(year) - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (i64::from(month) + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(params: rcgen::CertificateParams) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn validity_in_both_time_forms() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        // rcgen writes UTCTime up to 2049, GeneralizedTime from 2050 on.
        params.not_before = rcgen::date_time_ymd(1999, 12, 31);
        params.not_after = rcgen::date_time_ymd(2090, 3, 1);
        let fields = read(&certificate(params)).unwrap();
        assert_eq!(fields.not_before, 946_598_400);
        assert_eq!(fields.not_after, 3_792_009_600);
        assert!(fields.self_issued && fields.serves_tls);
    }

    #[test]
    fn extended_key_usage_must_list_server_auth() {
        let with = |purposes: Vec<rcgen::ExtendedKeyUsagePurpose>| {
            let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.extended_key_usages = purposes;
            read(&certificate(params)).unwrap().serves_tls
        };
        use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        assert!(with(vec![]));
        assert!(with(vec![ClientAuth, ServerAuth]));
        assert!(!with(vec![ClientAuth]));
    }

    #[test]
    fn a_certificate_issued_by_another_is_not_self_issued() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(vec![]).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "a private CA");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let leaf = params.signed_by(&key, &issuer).unwrap();
        assert!(!read(leaf.der()).unwrap().self_issued);
    }

    #[test]
    fn anything_else_is_no_certificate() {
        assert_eq!(read(b""), None);
        assert_eq!(read(&[0x30, 0x82, 0xff]), None);
        assert_eq!(read(&[0x30, 0x03, 0x02, 0x01, 0x00]), None);
    }
}
