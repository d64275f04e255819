//! The pgpilot gateway: a PostgreSQL wire-protocol proxy with connection pooling, an admin console
//! compatible with PgBouncer's, and an HTTP side for metrics and monitoring.

pub mod admin;
pub mod advisor;
pub mod auth;
pub mod cache;
pub mod config;
pub mod databases;
mod gateway;
pub mod hashing;
pub mod http;
pub mod insight;
pub mod jobs;
pub mod memory;
pub mod metrics;
pub mod net;
pub mod pool;
mod process_signals;
pub mod registry;
pub mod routing;
pub mod session;
mod shapes;
pub mod shared;
pub mod signal;
pub mod stats;
mod text_memo;
pub mod timefmt;

pub use gateway::Gateway;
