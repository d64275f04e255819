//! The PostgreSQL frontend/backend protocol as pgpilot needs it: frame scanning with bounded lengths,
//! the messages a proxy has to read or write itself, and the authentication exchanges (md5 and
//! SCRAM-SHA-256, server side; the client side comes from `postgres-protocol`). No I/O lives here.

pub mod auth;
pub mod backend;
pub mod error;
pub mod frame;
pub mod frontend;
pub mod startup;

pub use error::{PgError, Severity, SqlState};
pub use frame::{Frame, FrameError, FrontendFrames, Header, Limits};
