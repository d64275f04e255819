//! PgBouncer's client_tls_* and server_tls_* settings that pgpilot's `[tls]` section takes over.
//! (Protocol and cipher lists are in general.rs's table of settings pgpilot does not honour.)

use super::ini::Entry;
use super::{Builder, Outcome};
use crate::config::{ClientTlsMode, ServerTlsMode};

pub fn apply(b: &mut Builder, key: &str, setting: String, e: &Entry) -> Result<(), String> {
    let value = e.value.trim();
    let file = (!value.is_empty()).then(|| b.path(value));
    let t = &mut b.config.tls;
    let mut outcome = Outcome::CarriedOver;
    let mut weakens = false;
    match key {
        "client_tls_sslmode" => {
            let (mode, lost) = client_tls_mode(value)?;
            t.client_tls_sslmode = mode;
            if let Some(why) = lost {
                outcome = Outcome::NotHonoured(why.into());
                weakens = true;
            }
        }
        "client_tls_cert_file" => t.client_tls_cert_file = file,
        "client_tls_key_file" => t.client_tls_key_file = file,
        "client_tls_ca_file" => {
            if file.is_some() {
                outcome = Outcome::NotHonoured(
                    "pgpilot does not ask clients for certificates, so it needs no CA to check them".into(),
                );
            }
        }
        "server_tls_sslmode" => t.server_tls_sslmode = server_tls_mode(value)?,
        "server_tls_ca_file" => t.server_tls_ca_file = file,
        "server_tls_cert_file" => t.server_tls_cert_file = file,
        "server_tls_key_file" => t.server_tls_key_file = file,
        other => return Err(format!("bug: {other} is not a TLS setting")),
    }
    let target: &[&str] = if key == "client_tls_ca_file" { &[] } else { &["tls", key] };
    b.note(setting, Some(&e.origin), outcome, target);
    if weakens {
        b.weakens();
    }
    Ok(())
}

/// The client-side mode, and what is lost when pgpilot cannot honour it fully.
fn client_tls_mode(value: &str) -> Result<(ClientTlsMode, Option<&'static str>), String> {
    Ok(match value.to_ascii_lowercase().as_str() {
        "disable" => (ClientTlsMode::Disable, None),
        "allow" => (ClientTlsMode::Allow, None),
        "prefer" => (ClientTlsMode::Prefer, None),
        "require" => (ClientTlsMode::Require, None),
        "verify-ca" | "verify-full" => (
            ClientTlsMode::Require,
            Some(
                "pgpilot does not verify client certificates: written as require, so TLS is still required but a \
                 client without a valid certificate is let in",
            ),
        ),
        other => return Err(format!("unknown sslmode {other:?}")),
    })
}

fn server_tls_mode(value: &str) -> Result<ServerTlsMode, String> {
    let v = value.to_ascii_lowercase();
    ServerTlsMode::parse(&v).ok_or_else(|| format!("unknown sslmode {v:?}"))
}
