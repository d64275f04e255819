//! Logins remembered per pool set. Working out what a client is shown at login and which values
//! its session holds reads every startup parameter against every parameter the server reports,
//! and that was most of a login's own work; but applications log in with the same startup
//! packet again and again (a pool of one program's connections, a script reconnecting), and
//! identical inputs give identical answers. A memo keyed by the startup packet's parameters and
//! the server's reported ones skips the work. Only successful logins are remembered, so an
//! error is always worked out (and logged) afresh.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use pgpilot_wire::backend;

use super::params::ParamSet;

/// Distinct logins kept; past this the memo starts over (a program that names each connection
/// differently, as application_name_add_host does, fills it and gains nothing).
const KEPT: usize = 32;

/// What a login with these inputs gave.
pub struct Welcomed {
    /// The ParameterStatus messages the client is sent.
    pub statuses: Bytes,
    /// The session's parameter values.
    pub client: ParamSet,
}

struct Entry {
    server: Arc<Vec<(String, String)>>,
    startup: Vec<(String, String)>,
    welcomed: Arc<Welcomed>,
}

#[derive(Default)]
pub struct LoginMemo {
    entries: Mutex<Vec<Entry>>,
}

impl LoginMemo {
    /// What an earlier login with the same startup parameters, against the same server
    /// parameters, was given.
    pub fn find(
        &self,
        server: &Arc<Vec<(String, String)>>,
        startup: &[(String, String)],
    ) -> Option<Arc<Welcomed>> {
        let entries = self.entries.lock();
        let same_server = |e: &Entry| Arc::ptr_eq(&e.server, server) || *e.server == **server;
        entries.iter().find(|e| e.startup == startup && same_server(e)).map(|e| e.welcomed.clone())
    }

    /// Keeps what a login with these inputs was given, and hands it back to be sent.
    pub fn remember(
        &self,
        server: Arc<Vec<(String, String)>>,
        startup: Vec<(String, String)>,
        shown: &[(String, String)],
        client: ParamSet,
    ) -> Arc<Welcomed> {
        let mut statuses = BytesMut::new();
        for (k, v) in shown {
            backend::parameter_status(&mut statuses, k, v);
        }
        let welcomed = Arc::new(Welcomed { statuses: statuses.freeze(), client });
        let mut entries = self.entries.lock();
        if entries.len() == KEPT {
            entries.clear();
        }
        entries.push(Entry { server, startup, welcomed: welcomed.clone() });
        welcomed
    }
}
