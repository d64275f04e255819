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
    let Some(target) = client.server.load_full() else {
        return; // nothing is running
    };
    if let Err(e) = send(&target).await {
        tracing::warn!(server = %target.address, error = %e, "could not forward a cancel request");
    }
}

/// Sends a CancelRequest for `target`'s backend.
pub async fn send(target: &CancelTarget) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut out = BytesMut::with_capacity(16);
    startup::cancel_request(&mut out, target.pid, target.secret);
    if target.is_unix {
        let mut s = UnixStream::connect(&target.address).await?;
        s.write_all(&out).await?;
        s.shutdown().await
    } else {
        let mut s = TcpStream::connect(&target.address).await?;
        s.write_all(&out).await?;
        s.shutdown().await
    }
}
