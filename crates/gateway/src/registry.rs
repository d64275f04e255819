//! Every connected client, for cancel requests, SHOW CLIENTS, limits and shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::pool::CancelTarget;

const SHARDS: usize = 16;

/// What a client is doing, as SHOW CLIENTS tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    /// Logging in.
    Login = 0,
    /// Connected, no server (PgBouncer counts these as cl_active too).
    Idle = 1,
    /// Waiting for a server.
    Waiting = 2,
    /// Linked to a server.
    Active = 3,
}

impl ClientState {
    fn from_u8(v: u8) -> ClientState {
        match v {
            1 => ClientState::Idle,
            2 => ClientState::Waiting,
            3 => ClientState::Active,
            _ => ClientState::Login,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Login => "login",
            ClientState::Idle => "idle",
            ClientState::Waiting => "waiting",
            ClientState::Active => "active",
        }
    }
}

/// One client's public face: shared between its session and the registry.
pub struct ClientInfo {
    pub id: u64,
    /// The cancel key pgpilot gave the client (not any server's).
    pub pid: i32,
    pub secret: i32,
    pub addr: String,
    /// The address the client reached pgpilot on (SHOW CLIENTS' local_addr); None on the Unix socket.
    pub local: Option<std::net::SocketAddr>,
    /// The TLS protocol and cipher suite (SHOW CLIENTS' `tls`); None in the clear.
    pub tls: Option<Box<str>>,
    pub connected_at: SystemTime,
    pub database: Mutex<Arc<str>>,
    pub user: Mutex<Arc<str>>,
    pub application_name: Mutex<Arc<str>>,
    state: AtomicU8,
    /// Unix time (µs) of the last request, for SHOW CLIENTS.
    pub last_request_us: AtomicU64,
    /// The server the client is linked to, for cancel requests. A mutex, not an `ArcSwapOption`:
    /// it changes twice per transaction, and each `ArcSwap` store scans every thread's debt slots.
    pub server: Mutex<Option<Arc<CancelTarget>>>,
    pub server_id: AtomicU64,
    /// Why the client holds its server for the whole session in transaction mode, if it does.
    pub pinned: Mutex<Option<&'static str>>,
    /// Set to ask the session to end: 1 at its next transaction boundary (shutdown), 2 at once
    /// (KILL), 3 at once because its server was fenced off after a failover.
    close_requested: AtomicU8,
    /// A cancel request came while the client waited for a server: its request is not sent.
    cancel_while_waiting: std::sync::atomic::AtomicBool,
    /// The client's prepared statements (protocol and SQL) at its last transaction's end, for
    /// SHOW CLIENTS' prepared_statements.
    prepared: std::sync::atomic::AtomicU32,
    pub wake: crate::signal::Signal,
}

impl ClientInfo {
    /// Notes how many statements the client has prepared (SHOW CLIENTS' prepared_statements).
    pub fn set_prepared(&self, count: usize) {
        self.prepared.store(u32::try_from(count).unwrap_or(u32::MAX), Relaxed);
    }

    /// The client's prepared statements at its last transaction's end.
    pub fn prepared(&self) -> u32 {
        self.prepared.load(Relaxed)
    }

    pub fn state(&self) -> ClientState {
        ClientState::from_u8(self.state.load(Relaxed))
    }

    pub fn set_state(&self, s: ClientState) {
        self.state.store(s as u8, Relaxed);
    }

    pub fn touch(&self) {
        self.last_request_us.store(now_us(), Relaxed);
    }

    /// How long the client has waited for a server so far, in µs; 0 when it is not waiting. The
    /// session touches the request time as it starts to wait (`attach`), and not again until it
    /// has a server.
    pub fn waited_us(&self) -> u64 {
        if self.state() != ClientState::Waiting {
            return 0;
        }
        now_us().saturating_sub(self.last_request_us.load(Relaxed))
    }

    /// Asks the session to end: `now` even inside a transaction (KILL), otherwise when it is idle.
    pub fn request_close(&self, now: bool) {
        self.close_requested.fetch_max(if now { 2 } else { 1 }, Relaxed);
        self.wake.raise();
    }

    /// Ends the session at once: the server it holds is no longer the primary (a failover), and
    /// what it would write there would be lost.
    pub fn request_close_fenced(&self) {
        self.close_requested.fetch_max(3, Relaxed);
        self.wake.raise();
    }

    /// The session is being ended because its server was fenced off.
    pub fn server_fenced(&self) -> bool {
        self.close_requested.load(Relaxed) == 3
    }

    pub fn close_requested(&self) -> bool {
        self.close_requested.load(Relaxed) > 0
    }

    pub fn kill_requested(&self) -> bool {
        self.close_requested.load(Relaxed) > 1
    }

    /// A cancel request for a client that has no server: taken by its wait for one, if it waits.
    /// Noted whatever the state: the session may be taking a server this very moment, and it
    /// looks once more after; a request that starts later clears it.
    pub fn cancel_while_waiting(&self) {
        self.cancel_while_waiting.store(true, Relaxed);
        if self.state() == ClientState::Waiting {
            self.wake.raise();
        }
    }

    /// A cancel request sent on to the client's server: noted as one taken while waiting is, for
    /// a request that has not reached the server yet (pgpilot's settings ran ahead of it).
    pub fn note_cancel_forwarded(&self) {
        self.cancel_while_waiting.store(true, Relaxed);
    }

    pub fn cancel_pending(&self) -> bool {
        self.cancel_while_waiting.load(Relaxed)
    }

    pub fn take_cancel(&self) -> bool {
        // Loaded first: called at every request, and a swap is a locked write.
        self.cancel_while_waiting.load(Relaxed) && self.cancel_while_waiting.swap(false, Relaxed)
    }
}

/// Wall-clock microseconds from the kernel's coarse clock (a few milliseconds of resolution, for
/// SHOW CLIENTS): read on every request, where the precise clock costs a time-source read.
pub fn now_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } != 0 {
        return SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Clients by pid, one lock per shard.
type Shard = Mutex<HashMap<i32, Arc<ClientInfo>>>;

pub struct Registry {
    shards: Box<[Shard]>,
    count: AtomicUsize,
    /// Connections accepted that have not yet sent their startup packet (not in `shards`).
    opening: AtomicUsize,
    next_id: AtomicU64,
    next_pid: AtomicI32,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            count: AtomicUsize::new(0),
            opening: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            // Start somewhere random so keys do not repeat across restarts.
            next_pid: AtomicI32::new((rand::random::<u32>() >> 2) as i32),
        }
    }
}

/// Removes the client from the registry when its session ends, however it ends.
pub struct Registration {
    registry: Arc<Registry>,
    pub info: Arc<ClientInfo>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.shards[self.info.pid as usize % SHARDS].lock().remove(&self.info.pid);
        self.registry.count.fetch_sub(1, Relaxed);
    }
}

/// A connection counted against the client limit before it has said who it is; the count ends
/// with the slot, once the client is registered or gone.
pub struct OpeningSlot {
    registry: Arc<Registry>,
}

impl Drop for OpeningSlot {
    fn drop(&mut self) {
        self.registry.opening.fetch_sub(1, Relaxed);
    }
}

impl Registry {
    pub fn count(&self) -> usize {
        self.count.load(Relaxed)
    }

    /// Connections accepted that have not sent their startup packet yet (or are in TLS
    /// negotiation): not registered as clients, but counted against max_client_conn.
    pub fn opening(&self) -> usize {
        self.opening.load(Relaxed)
    }

    /// A slot for a connection just accepted, if connected and opening clients together are
    /// fewer than `max`: as in PgBouncer, a client counts from its accept, so connections that
    /// never log in cannot pile up beyond the limit (each holds a socket and a task).
    pub fn open(self: &Arc<Self>, max: usize) -> Option<OpeningSlot> {
        let opening = self.opening.fetch_add(1, Relaxed);
        if opening + self.count() >= max {
            self.opening.fetch_sub(1, Relaxed);
            return None;
        }
        Some(OpeningSlot { registry: self.clone() })
    }

    /// Registers a new client if fewer than `max` are connected.
    pub fn register(
        self: &Arc<Self>,
        addr: String,
        local: Option<std::net::SocketAddr>,
        tls: Option<Box<str>>,
        max: usize,
    ) -> Option<Registration> {
        if self.count.fetch_add(1, Relaxed) >= max {
            self.count.fetch_sub(1, Relaxed);
            return None;
        }
        let pid = self.next_pid.fetch_add(1, Relaxed) & 0x3fff_ffff;
        let none: Arc<str> = Arc::from("");
        let info = Arc::new(ClientInfo {
            id: self.next_id.fetch_add(1, Relaxed),
            pid,
            secret: rand::random(),
            addr,
            local,
            tls,
            connected_at: SystemTime::now(),
            database: Mutex::new(none.clone()),
            user: Mutex::new(none.clone()),
            application_name: Mutex::new(none),
            state: AtomicU8::new(ClientState::Login as u8),
            last_request_us: AtomicU64::new(now_us()),
            server: Mutex::new(None),
            server_id: AtomicU64::new(0),
            pinned: Mutex::new(None),
            close_requested: AtomicU8::new(0),
            cancel_while_waiting: Default::default(),
            prepared: Default::default(),
            wake: Default::default(),
        });
        self.shards[pid as usize % SHARDS].lock().insert(pid, info.clone());
        Some(Registration { registry: self.clone(), info })
    }

    /// The client a CancelRequest names, if its secret matches.
    pub fn find_for_cancel(&self, pid: i32, secret: i32) -> Option<Arc<ClientInfo>> {
        let shard = self.shards.get(pid as usize % SHARDS)?;
        shard.lock().get(&pid).filter(|c| c.secret == secret).cloned()
    }

    pub fn all(&self) -> Vec<Arc<ClientInfo>> {
        let mut out: Vec<_> =
            self.shards.iter().flat_map(|s| s.lock().values().cloned().collect::<Vec<_>>()).collect();
        out.sort_by_key(|c| c.id);
        out
    }
}
