//! Read/write splitting: server roles and health, the monitor that discovers them, the router.

pub mod backend;
pub mod monitor;
pub mod positions;
pub mod router;
pub mod ryw;

pub use backend::{Backend, Role};
pub use router::{
    place, replica_still_serves, sent_to_primary_on_request, verdict, Decision, Request, SessionRoute,
    Verdict,
};
pub use ryw::WriteMark;
