//! Sockets, TLS and listening.

pub mod listener;
pub mod sock;
pub mod spare_buffers;
pub mod tls;

pub use sock::{ReadError, Sock};
