//! Throwaway PostgreSQL clusters and Redis servers started from the system's binaries.
//!
//! Every cluster gets its own directory (under `TMPDIR`, else `/tmp`) and loopback port and is torn
//! down when dropped; the directories of a process killed before it could do so are swept later. When the
//! process runs as root the server runs as the unprivileged user `postgres`, because PostgreSQL
//! refuses to run as root. A missing binary is a loud panic naming the package to install: a test
//! that needs a server never passes without one.

mod binaries;
mod cluster;
mod fixtures;
mod ports;
mod redis;
mod run;
mod scratch;

pub use binaries::{pg_bin_dir, PgBinaries};
pub use cluster::{Cluster, ClusterBuilder};
pub use fixtures::HIDDEN_WRITERS;
pub use ports::{free_port, try_free_port};
pub use redis::{RedisCluster, RedisServer};
pub use run::exited_within;
pub use scratch::{base_dir, sweep_abandoned, sweep_abandoned_in, SweepOutcome, Swept};
