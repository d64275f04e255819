//! Client authentication and the secrets used to log in to servers.

pub mod client;
pub mod query;
pub mod secrets;
pub mod userlist;

pub use secrets::Secrets;
pub use userlist::UserList;
