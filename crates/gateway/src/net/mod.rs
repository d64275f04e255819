//! Sockets, TLS and listening.

mod cert_fields;
mod common_name;
mod directly_trusted;
pub mod listener;
pub mod sock;
pub mod spare_buffers;
pub mod tls;

pub use sock::{ReadError, Sock};
