//! The first packet of a connection: StartupMessage, SSLRequest, GSSENCRequest or CancelRequest.

use bytes::{BufMut, BytesMut};
use thiserror::Error;

use crate::frame::{read_cstr, read_i32};

pub const PROTOCOL_3_0: i32 = 196_608;
pub const SSL_REQUEST: i32 = 80_877_103;
pub const GSSENC_REQUEST: i32 = 80_877_104;
pub const CANCEL_REQUEST: i32 = 80_877_102;
/// PostgreSQL's own limit on a startup packet.
pub const MAX_STARTUP_LEN: usize = 10_000;

#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    Startup(StartupParams),
    Ssl,
    GssEnc,
    Cancel { pid: i32, secret: i32 },
}

/// A StartupMessage's protocol minor version and its name/value pairs, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StartupParams {
    pub minor_version: i32,
    pub params: Vec<(String, String)>,
}

impl StartupParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Protocol options (`_pq_.*`) this proxy does not understand and must report back.
    pub fn protocol_options(&self) -> Vec<String> {
        self.params.iter().filter(|(k, _)| k.starts_with("_pq_.")).map(|(k, _)| k.clone()).collect()
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum StartupError {
    #[error("invalid length of startup packet")]
    BadLength,
    #[error("unsupported frontend protocol {0}.{1}: server supports 3.0 to 3.0")]
    UnsupportedProtocol(i32, i32),
    #[error("invalid startup packet layout")]
    Malformed,
    /// pgpilot keeps startup parameters as UTF-8 text (it matches names, logs and forwards them).
    #[error("startup parameter \"{0}\" is not valid UTF-8: pgpilot accepts UTF-8 names and values only")]
    NotUtf8(String),
}

/// How many bytes the packet at the front of `buf` occupies, once four bytes are there.
pub fn packet_len(buf: &[u8]) -> Result<Option<usize>, StartupError> {
    let Some((len, _)) = read_i32(buf, 0) else { return Ok(None) };
    if len < 8 || len as usize > MAX_STARTUP_LEN {
        return Err(StartupError::BadLength);
    }
    Ok(Some(len as usize))
}

/// Parses a whole startup packet (length included).
pub fn parse(packet: &[u8]) -> Result<StartupPacket, StartupError> {
    let (code, pos) = read_i32(packet, 4).ok_or(StartupError::Malformed)?;
    match code {
        SSL_REQUEST => Ok(StartupPacket::Ssl),
        GSSENC_REQUEST => Ok(StartupPacket::GssEnc),
        CANCEL_REQUEST => {
            let (pid, p) = read_i32(packet, pos).ok_or(StartupError::Malformed)?;
            let (secret, _) = read_i32(packet, p).ok_or(StartupError::Malformed)?;
            Ok(StartupPacket::Cancel { pid, secret })
        }
        code if code >> 16 == 3 => Ok(StartupPacket::Startup(parse_params(packet, pos, code & 0xffff)?)),
        code => Err(StartupError::UnsupportedProtocol(code >> 16, code & 0xffff)),
    }
}

fn parse_params(packet: &[u8], mut pos: usize, minor_version: i32) -> Result<StartupParams, StartupError> {
    let mut params = Vec::new();
    loop {
        let (name, next) = read_cstr(packet, pos).ok_or(StartupError::Malformed)?;
        if name.is_empty() {
            break;
        }
        let (value, next) = read_cstr(packet, next).ok_or(StartupError::Malformed)?;
        let not_utf8 = || StartupError::NotUtf8(String::from_utf8_lossy(name).into_owned());
        let mut value = String::from_utf8(value.to_vec()).map_err(|_| not_utf8())?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| not_utf8())?;
        if name == "user" || name == "database" {
            clip_to_name(&mut value);
        }
        params.push((name, value));
        pos = next;
    }
    Ok(StartupParams { minor_version, params })
}

/// PostgreSQL's names hold at most 63 bytes (NAMEDATALEN - 1), and it cuts longer user and
/// database names in a startup packet to that, as the names were cut when created: `CREATE ROLE`
/// of a longer name makes the shorter one, which a login with the long name must find.
const NAME_MAX: usize = 63;

fn clip_to_name(value: &mut String) {
    if value.len() > NAME_MAX {
        let end = (0..=NAME_MAX).rev().find(|&i| value.is_char_boundary(i)).unwrap_or(0);
        value.truncate(end);
    }
}

/// A StartupMessage for protocol 3.0 with the given parameters.
pub fn startup_message(out: &mut BytesMut, params: &[(&str, &str)]) {
    let start = out.len();
    out.put_u32(0);
    out.put_i32(PROTOCOL_3_0);
    for (k, v) in params {
        out.extend_from_slice(k.as_bytes());
        out.put_u8(0);
        out.extend_from_slice(v.as_bytes());
        out.put_u8(0);
    }
    out.put_u8(0);
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn ssl_request(out: &mut BytesMut) {
    out.put_u32(8);
    out.put_i32(SSL_REQUEST);
}

pub fn cancel_request(out: &mut BytesMut, pid: i32, secret: i32) {
    out.put_u32(16);
    out.put_i32(CANCEL_REQUEST);
    out.put_i32(pid);
    out.put_i32(secret);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_round_trip() {
        let mut out = BytesMut::new();
        startup_message(&mut out, &[("user", "app"), ("database", "db")]);
        assert_eq!(packet_len(&out).unwrap(), Some(out.len()));
        let StartupPacket::Startup(p) = parse(&out).unwrap() else { panic!() };
        assert_eq!(p.get("user"), Some("app"));
        assert_eq!(p.get("database"), Some("db"));
    }

    #[test]
    fn user_and_database_names_are_cut_as_postgresql_cuts_them() {
        let long = "u".repeat(70);
        let accented = format!("{}é", "a".repeat(62));
        let mut out = BytesMut::new();
        startup_message(&mut out, &[("user", &long), ("database", &accented), ("application_name", &long)]);
        let StartupPacket::Startup(p) = parse(&out).unwrap() else { panic!("not a startup packet") };
        assert_eq!(p.get("user"), Some("u".repeat(63).as_str()));
        assert_eq!(p.get("database"), Some("a".repeat(62).as_str()), "cut before a character's middle");
        assert_eq!(p.get("application_name"), Some(long.as_str()), "only names are cut");
    }

    #[test]
    fn cancel_request_parses() {
        let mut out = BytesMut::new();
        cancel_request(&mut out, 7, 9);
        assert_eq!(parse(&out).unwrap(), StartupPacket::Cancel { pid: 7, secret: 9 });
    }

    #[test]
    fn oversized_startup_is_refused() {
        assert_eq!(packet_len(&[0, 1, 0, 0]), Err(StartupError::BadLength));
        assert_eq!(packet_len(&[0, 0, 0, 4]), Err(StartupError::BadLength));
    }

    #[test]
    fn protocol_two_is_refused() {
        let packet = [0, 0, 0, 9, 0, 2, 0, 0, 0];
        assert_eq!(parse(&packet), Err(StartupError::UnsupportedProtocol(2, 0)));
    }

    #[test]
    fn unterminated_params_are_malformed() {
        let packet = [0, 0, 0, 12, 0, 3, 0, 0, b'u', b's', b'e', b'r'];
        assert_eq!(parse(&packet), Err(StartupError::Malformed));
    }

    #[test]
    fn a_value_not_in_utf8_is_named() {
        let packet = [0, 0, 0, 17, 0, 3, 0, 0, b'u', b's', b'e', b'r', 0, 0xe9, 0xff, 0, 0];
        assert_eq!(parse(&packet), Err(StartupError::NotUtf8("user".into())));
    }
}
