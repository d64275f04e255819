//! Server connections and the pools that hold them.

mod backoff;
pub mod check;
pub mod connect;
pub mod limits;
#[allow(clippy::module_inception)]
mod pool;
pub mod server;
pub mod settings;
pub mod statements;
mod waiters;

pub use connect::{ConnectError, ServerSecret, ServerTarget};
pub use limits::{ConnectionLimit, PoolLimits};
pub use pool::{CheckoutError, Pool, PoolCounts, PoolId, SecretSource, WaitingClient};
pub use server::{CancelTarget, ServerConn};
pub use settings::PoolSettings;
