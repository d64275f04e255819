//! Where server passwords come from, in order: the database's password_file / password_env / URL,
//! the auth_file entry of the server user, a SCRAM key a client proved, then PGPASSWORD.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use pgpilot_wire::auth::scram::ProvenClientKey;
use pgpilot_wire::auth::Secret;

use super::userlist::UserList;
use crate::pool::{SecretSource, ServerSecret, ServerTarget};

#[derive(Default)]
pub struct Secrets {
    pub userlist: ArcSwap<UserList>,
    /// Passwords configured per logical database.
    database_passwords: ArcSwap<HashMap<String, String>>,
    /// Secrets auth_query found for users who then logged in (md5 hashes log the pools in).
    queried: Mutex<HashMap<String, Secret>>,
    /// ClientKeys proven by SCRAM clients, per user: pass-through when no password is known.
    proven: Mutex<HashMap<String, ProvenClientKey>>,
}

impl Secrets {
    pub fn new(userlist: UserList, database_passwords: HashMap<String, String>) -> Arc<Secrets> {
        Arc::new(Secrets {
            userlist: ArcSwap::from_pointee(userlist),
            database_passwords: ArcSwap::from_pointee(database_passwords),
            queried: Mutex::new(HashMap::new()),
            proven: Mutex::new(HashMap::new()),
        })
    }

    pub fn replace(&self, userlist: UserList, database_passwords: HashMap<String, String>) {
        self.userlist.store(Arc::new(userlist));
        self.database_passwords.store(Arc::new(database_passwords));
    }

    pub fn remember_proven_key(&self, user: &str, key: ProvenClientKey) {
        self.proven.lock().insert(user.to_string(), key);
    }

    pub fn remember_queried(&self, user: &str, secret: Secret) {
        self.queried.lock().insert(user.to_string(), secret);
    }

    /// The password configured for `[databases.NAME]` (password_file, password_env or URL), else
    /// for the `*` fallback a database of that name may be made from.
    pub fn database_password(&self, database: &str) -> Option<String> {
        let passwords = self.database_passwords.load();
        passwords.get(database).or_else(|| passwords.get(crate::config::FALLBACK_DATABASE)).cloned()
    }

    pub fn client_secret(&self, user: &str) -> Option<Secret> {
        self.userlist.load().get(user).cloned()
    }
}

impl SecretSource for Secrets {
    fn secret_for(&self, target: &ServerTarget) -> ServerSecret {
        if let Some(p) = self.database_passwords.load().get(&target.database) {
            return ServerSecret::Password(p.clone());
        }
        match self.userlist.load().get(&target.user) {
            Some(Secret::Plain(p)) => return ServerSecret::Password(p.clone()),
            Some(Secret::Md5(h)) => return ServerSecret::Md5Hash(h.clone()),
            _ => {}
        }
        if let Some(Secret::Md5(h)) = self.queried.lock().get(&target.user) {
            return ServerSecret::Md5Hash(h.clone());
        }
        if let Some(key) = self.proven.lock().get(&target.user) {
            return ServerSecret::ScramKey(key.clone());
        }
        match std::env::var("PGPASSWORD") {
            Ok(p) if !p.is_empty() => ServerSecret::Password(p),
            _ => ServerSecret::None,
        }
    }
}
