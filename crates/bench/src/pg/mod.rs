//! A minimal PostgreSQL client built for load generation.
//!
//! General-purpose drivers pay for things a load generator does not need: a channel hop to a
//! connection task per query, typed row decoding, statement caches. Here one task owns one socket,
//! writes a whole request with one syscall, and scans the reply in place in a reused buffer, the
//! way pgbench drives libpq. Startup and authentication (trust, password, md5, SCRAM-SHA-256) use
//! `postgres-protocol`; TLS is not supported.

mod conn;
mod messages;

pub use conn::{Conn, ConnError, DbError};
pub use messages::{RowCapture, TxStatus};
