//! Accepting clients on TCP addresses and an optional Unix socket.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use socket2::{Domain, Socket, Type};
use tokio::net::{TcpListener, UnixListener};

use super::Sock;
use crate::shared::Shared;

/// Room for bursts of new connections (pgbench -C, application restarts).
const BACKLOG: i32 = 4096;

pub fn bind_tcp(addr: &str) -> std::io::Result<TcpListener> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// `<dir>/.s.PGSQL.<port>` with permissions `mode` (unix_socket_mode), replacing a stale socket file.
pub fn bind_unix(dir: &Path, port: u16, mode: u32) -> std::io::Result<(UnixListener, PathBuf)> {
    let path = dir.join(format!(".s.PGSQL.{port}"));
    if path.exists() {
        // A file left by a process that is gone is replaced; one that something still listens on
        // (a PgBouncer or PostgreSQL on the same port) is not taken from it, as PgBouncer refuses.
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{}: unix socket is in use by another process", path.display()),
            ));
        }
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    // bind() leaves what the umask allows (0755 under the usual 022), and connecting needs write
    // permission: other users' clients would be refused.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    Ok((listener, path))
}

pub async fn accept_tcp(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                super::sock::nodelay(&stream);
                if shared.config.load().pgpilot.tcp_keepalive {
                    super::sock::keepalive(&stream);
                }
                tokio::spawn(crate::session::serve(shared.clone(), Sock::Tcp(stream)).boxed());
            }
            Err(e) => accept_error(e).await,
        }
    }
}

pub async fn accept_unix(shared: Arc<Shared>, listener: UnixListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(crate::session::serve(shared.clone(), Sock::Unix(stream)).boxed());
            }
            Err(e) => accept_error(e).await,
        }
    }
}

/// Out of file descriptors or similar: say so and back off instead of spinning.
async fn accept_error(e: std::io::Error) {
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
