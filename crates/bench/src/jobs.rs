//! Job threads, as pgbench's -j: each thread runs a single-threaded tokio runtime that owns its
//! clients' sockets, so a client's wake-up never crosses threads and nothing is stolen or locked.

use std::sync::Arc;
use std::time::Instant;

use futures::future::join_all;
use tokio::sync::{oneshot, watch};

use crate::client::{run_client, RunShared, Tally};
use crate::pg::Conn;

#[derive(Clone, Copy, Debug)]
enum Go {
    Wait,
    Start(Instant),
    Abort,
}

/// Threads that have opened their connections and wait for the clock to start.
pub(crate) struct ReadyJobs {
    go: watch::Sender<Go>,
    done: Vec<oneshot::Receiver<Vec<Tally>>>,
}

/// Starts `jobs` threads sharing `clients` clients round-robin, each opening its connections
/// (unless connecting per transaction). Returns once all are connected, or the first error.
pub(crate) async fn spawn(
    shared: Arc<RunShared>,
    clients: usize,
    jobs: usize,
    seed: u64,
) -> Result<ReadyJobs, String> {
    let jobs = jobs.clamp(1, clients.max(1));
    let (go_tx, go_rx) = watch::channel(Go::Wait);
    let mut ready = Vec::with_capacity(jobs);
    let mut done = Vec::with_capacity(jobs);
    for job in 0..jobs {
        let ids: Vec<usize> = (job..clients).step_by(jobs).collect();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let shared = shared.clone();
        let go = go_rx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("bench-job-{job}"))
            .spawn(move || job_thread(shared, ids, seed, go, ready_tx, done_tx));
        if let Err(e) = spawned {
            let _ = go_tx.send(Go::Abort);
            return Err(format!("starting a job thread: {e}"));
        }
        ready.push(ready_rx);
        done.push(done_rx);
    }
    for r in ready {
        let outcome = r.await.unwrap_or_else(|_| Err("a job thread stopped before connecting".into()));
        if let Err(e) = outcome {
            let _ = go_tx.send(Go::Abort);
            return Err(e);
        }
    }
    Ok(ReadyJobs { go: go_tx, done })
}

impl ReadyJobs {
    /// Starts every client at `start` and returns a future of all their tallies.
    pub fn start(self, start: Instant) -> impl std::future::Future<Output = Result<Vec<Tally>, String>> {
        let _ = self.go.send(Go::Start(start));
        async move {
            let mut all = Vec::new();
            for d in join_all(self.done).await {
                all.extend(d.map_err(|_| "a job thread ended without reporting".to_string())?);
            }
            Ok(all)
        }
    }
}

fn job_thread(
    shared: Arc<RunShared>,
    ids: Vec<usize>,
    seed: u64,
    mut go: watch::Receiver<Go>,
    ready: oneshot::Sender<Result<(), String>>,
    done: oneshot::Sender<Vec<Tally>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("building a job runtime: {e}")));
            return;
        }
    };
    runtime.block_on(async move {
        let mut conns: Vec<Option<Conn>> = Vec::with_capacity(ids.len());
        if shared.connect_each {
            conns.resize_with(ids.len(), || None);
        } else {
            for c in join_all(ids.iter().map(|_| Conn::connect(&shared.endpoint))).await {
                match c {
                    Ok(c) => conns.push(Some(c)),
                    Err(e) => {
                        let _ = ready.send(Err(format!("opening a client connection: {e}")));
                        return;
                    }
                }
            }
        }
        let _ = ready.send(Ok(()));
        let start = loop {
            match *go.borrow_and_update() {
                Go::Start(at) => break at,
                Go::Abort => return,
                Go::Wait => {}
            }
            if go.changed().await.is_err() {
                return;
            }
        };
        let handles: Vec<_> = ids
            .into_iter()
            .zip(conns)
            .map(|(id, conn)| {
                let client_seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(id as u64);
                tokio::spawn(run_client(shared.clone(), id, conn, start, client_seed))
            })
            .collect();
        let mut tallies = Vec::with_capacity(handles.len());
        for h in join_all(handles).await {
            match h {
                Ok(t) => tallies.push(t),
                Err(e) => {
                    let mut t = Tally::new(shared.scripts.len());
                    t.fatal = Some(format!("a client task failed: {e}"));
                    tallies.push(t);
                }
            }
        }
        let _ = done.send(tallies);
    });
}
