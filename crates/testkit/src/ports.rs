use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

/// A loopback TCP port that is free now and has not been handed out before in this process.
pub fn free_port() -> u16 {
    try_free_port().unwrap_or_else(|e| panic!("binding an ephemeral loopback port: {e}"))
}

/// [`free_port`], with the error of a machine that has no port to give (for callers that report
/// errors rather than panic, such as `pgpilot demo`).
pub fn try_free_port() -> std::io::Result<u16> {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr())?.port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
}
