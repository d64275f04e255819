//! Cancel requests: a client names its pgpilot cancel key; pgpilot cancels whatever the client's
//! server is running, with that server's own key, over a new connection.

use bytes::BytesMut;
use pgpilot_wire::startup;
use tokio::net::{TcpStream, UnixStream};

use crate::pool::CancelTarget;
use crate::shared::Shared;

pub async fn forward(shared: &Shared, pid: i32, secret: i32) {
    let Some(client) = shared.registry.find_for_cancel(pid, secret) else {
        tracing::debug!(pid, "cancel request for an unknown client or with a wrong key");
        return;
    };
    let Some(target) = client.server.lock().clone() else {
        // Nothing is running; a client waiting for a server gives its request up.
        client.cancel_while_waiting();
        return;
    };
    // Noted too: should the cancel reach pgpilot's settings sync ahead of the request, the
    // request is given up rather than moved to another server and run (flow.rs, Exit::Moved).
    client.note_cancel_forwarded();
    if let Err(e) = send(&target).await {
        tracing::warn!(server = %target.address, error = %e, "could not forward a cancel request");
    }
}

/// How long a cancel may take to be carried out before pgpilot stops waiting for it.
const CANCEL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Sends a CancelRequest for `target`'s backend and waits until PostgreSQL has acted on it (it
/// closes the connection then), as libpq's PQcancel does. Until then the server is marked as being
/// cancelled and the pool does not hand it to another client: a late signal would cancel that
/// client's query instead.
pub async fn send(target: &CancelTarget) -> std::io::Result<()> {
    let _in_flight = target.cancelling();
    match tokio::time::timeout(CANCEL_TIMEOUT, deliver(target)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the server did not act on the cancel request",
        )),
    }
}

async fn deliver(target: &CancelTarget) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut out = BytesMut::with_capacity(16);
    startup::cancel_request(&mut out, target.pid, target.secret);
    let mut sink = [0u8; 64];
    if target.is_unix {
        let mut s = UnixStream::connect(&target.address).await?;
        s.write_all(&out).await?;
        while s.read(&mut sink).await? > 0 {}
    } else {
        let mut s = TcpStream::connect(&target.address).await?;
        s.write_all(&out).await?;
        while s.read(&mut sink).await? > 0 {}
    }
    Ok(())
}
