//! What an idle client costs: heap bytes held per logged-in client that sits between requests,
//! counted by a global allocator wrapper (deterministic, unlike RSS). Ten thousand idle clients are
//! the point of a pooler, so this is a bound, not a benchmark. And what a large result leaves
//! behind in the pool once it has been read.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

use common::*;
use pgpilot_testkit::Cluster;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The tests share the heap count: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_client_holds_little_memory() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let pg = Cluster::start();
    let gw = start(config_for(&pg)).await;
    let addr = addr(&gw);
    // Warm up: the first logins create the pools, registries and their capacity.
    let warm: Vec<_> = futures::future::join_all((0..100).map(|_| raw_login(addr))).await;
    catalog_loaded(&gw).await;
    // A second round only when the first is over a bound: once in CI both figures of one round
    // were 640 bytes over the usual (640 KB held across the whole reading, then let go), which a
    // client's own cost cannot do; a regression shows in every round.
    let mut round = idle_round(&gw).await;
    if !round.within_bounds() {
        println!("over a bound in the first round: measuring again");
        round = idle_round(&gw).await;
    }
    assert!(round.given_back <= 1792, "an idle client holds {} bytes of heap", round.given_back);
    assert!(round.per_client <= 2304, "idle clients took {} bytes of heap each", round.per_client);
    drop(warm);
    gw.shutdown().await;
}

/// Heap figures of one round of a thousand idle clients, per client.
struct IdleRound {
    per_client: isize,
    given_back: isize,
}

impl IdleRound {
    fn within_bounds(&self) -> bool {
        self.given_back <= 1792 && self.per_client <= 2304
    }
}

/// Logs a thousand clients in, reads the heap while they sit idle, lets them go, reads it again.
async fn idle_round(gw: &pgpilot_gateway::Gateway) -> IdleRound {
    const CLIENTS: usize = 1000;
    let addr = addr(gw);
    let before = settled_heap().await;
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS / 100 {
        clients.extend(futures::future::join_all((0..100).map(|_| raw_login(addr))).await);
    }
    // The lowest of a few settled readings: a catalog being read again by the monitor (hundreds of
    // KB, briefly) once landed in a single reading on a loaded machine.
    let mut after = settled_heap().await;
    for _ in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        after = after.min(settled_heap().await);
    }
    // The test's own end of each connection (a tokio registration, about 260 bytes) is counted
    // too. Measured at about 1,700-1,750 bytes in all (debug build): the session task (~700), the
    // client's registry entry (~310), the gateway's socket registration and a few short strings.
    let per_client = (after - before) / CLIENTS as isize;
    // What the clients give back when they leave: the same less what stays allocated for good (the
    // runtime's registration slab grows by pages) and what other work held at the first reading.
    // On a loaded machine the first figure has measured 1,916 once; this one is the steady bound.
    drop(clients);
    let registry = gw.shared().registry.clone();
    assert!(eventually(std::time::Duration::from_secs(10), || registry.count() <= 100).await, "clients left");
    let mut gone = settled_heap().await;
    for _ in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        gone = gone.max(settled_heap().await);
    }
    let given_back = (after - gone) / CLIENTS as isize;
    println!("heap per idle client: {per_client} bytes, given back when they leave: {given_back} ({CLIENTS} clients)");
    IdleRound { per_client, given_back }
}

/// Results of 40 MB read by psql through a pool of two servers: the servers go back to the pool
/// holding buffers of a few hundred KB at most. The read buffer doubled at every row split across
/// two reads and kept tens of MB per server for the life of the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_result_leaves_no_large_buffer_in_the_pool() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (_pg, gw, before) = warm_gateway(2).await;
    let a = addr(&gw);
    let bin = pgpilot_testkit::pg_bin_dir().expect("PostgreSQL binaries").tool("psql");
    let read = || {
        let mut psql = std::process::Command::new(&bin);
        psql.args(["-X", "-q", "-o", "/dev/null", "-h", &a.ip().to_string(), "-p", &a.port().to_string()])
            .args(["-U", "postgres", "-d", "postgres"])
            .args(["-c", "SELECT repeat('x', 997) FROM generate_series(1, 40000)"])
            .env("PGSSLMODE", "disable");
        tokio::task::spawn_blocking(move || psql.status().expect("running psql"))
    };
    for _ in 0..2 {
        let (x, y) = tokio::join!(read(), read());
        assert!(x.unwrap().success() && y.unwrap().success());
    }
    let kept = heap_kept_since(before).await;
    println!("heap kept after 160 MB of results: {kept} bytes");
    assert!(kept < 2 << 20, "{kept} bytes kept after the results were read");
    gw.shutdown().await;
}

/// Queries of 24 MB through a pool of one server: the server goes back to the pool without the
/// buffer that carried them. Writing moved the buffer's start past what was sent, its capacity
/// looked small, and the server kept the whole allocation for the life of the connection (450 MB
/// resident after one 200 MB query).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_query_leaves_no_large_buffer_in_the_pool() {
    use tokio::io::AsyncWriteExt;
    let _alone = ONE_AT_A_TIME.lock().await;
    let (_pg, gw, before) = warm_gateway(1).await;
    for _ in 0..2 {
        let mut s = raw_login(addr(&gw)).await;
        let sql = format!("SELECT length('{}')", "x".repeat(24 << 20));
        s.write_all(&query_message(&sql)).await.unwrap();
        let got = read_until_ready(&mut s).await;
        assert!(backend_messages(&got).iter().any(|m| m.0 == b'D'));
    }
    let kept = heap_kept_since(before).await;
    println!("heap kept after 48 MB of queries: {kept} bytes");
    assert!(kept < 2 << 20, "{kept} bytes kept after the queries ran");
    gw.shutdown().await;
}

/// A gateway with a pool of `size` servers, its catalog loaded and one query run, and the live heap
/// then.
async fn warm_gateway(size: usize) -> (Cluster, pgpilot_gateway::Gateway, isize) {
    let pg = Cluster::start();
    let mut config = config_for(&pg);
    config.pgpilot.default_pool_size = size;
    let gw = start(config).await;
    catalog_loaded(&gw).await;
    psql(&gw, "postgres", "SELECT 1").unwrap();
    let before = settled_heap().await;
    (pg, gw, before)
}

/// What the heap holds beyond `before` once it has settled: the lowest of a few readings.
async fn heap_kept_since(before: isize) -> isize {
    let mut after = settled_heap().await;
    for _ in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        after = after.min(settled_heap().await);
    }
    after - before
}

/// The live heap once the logins' transient buffers are gone: on a loaded machine the last sessions
/// may still be finishing their login when a fixed pause ends, and a few 8 KB login buffers would
/// then be counted as idle cost.
async fn settled_heap() -> isize {
    let mut last = LIVE.load(Relaxed);
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let now = LIVE.load(Relaxed);
        if now >= last - 4096 {
            return now.min(last);
        }
        last = now;
    }
    last
}

/// The monitor reads pg_proc (a few hundred KB of catalog) soon after start; on a cold machine that
/// can land inside the measurement and be charged to the clients.
async fn catalog_loaded(gw: &pgpilot_gateway::Gateway) {
    for _ in 0..100 {
        if gw.shared().databases.load().values().all(|db| !db.functions.load().is_empty()) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the function catalog was not read within 10 s");
}
