//! What the server owes, in order. Every message sent to the server that gets an answer has an
//! entry, so answers pgpilot must hide (to its own injected messages) are dropped, answers it gives
//! in the server's place (a statement already prepared there) come out in the right position, and
//! pgpilot knows exactly when a batch is over.

use super::observe::Observed;
use std::collections::VecDeque;
use std::sync::Arc;

use crate::pool::statements::PreparedStatement;

use pgpilot_sql::SetCommand;

/// The kind of message whose answer is awaited.
#[derive(Debug)]
pub enum Reply {
    Parse {
        /// The client's name, forgotten again if the Parse fails or is skipped after an error.
        client_name: Option<Box<[u8]>>,
        /// The server-side registration to undo if the Parse fails.
        hash: Option<u64>,
    },
    /// The client's Parse of its unnamed statement (transaction pooling), with what pgpilot
    /// remembered as that statement before: it is so again if the server skips the Parse.
    UnnamedParse(UnnamedBefore),
    /// The client's Close of its unnamed statement, with what pgpilot remembered as that
    /// statement before: it is so again if the server skips the Close.
    UnnamedClose(Option<Box<super::client::UnnamedStatement>>),
    /// `statement`: the hash of the pgpilot-prepared statement it binds, if any, and what is known
    /// of the server's copy it binds.
    Bind {
        statement: Option<u64>,
        copy: BoundCopy,
    },
    /// `statement`: the client's pgpilot-prepared statement it describes, if any.
    Describe {
        statement: Option<Arc<PreparedStatement>>,
    },
    /// A Describe of a portal bound from the pgpilot-prepared statement `statement`: its row
    /// description is the one the client decodes that statement's results with from now on
    /// (pgJDBC describes the portal, never the statement).
    DescribePortal {
        statement: Arc<PreparedStatement>,
    },
    /// With its statistics record when insight is on.
    Execute(Option<Box<Observed>>),
    Close,
    Sync(Batch),
    Query(Batch),
    /// A FunctionCall message: its Batch carries the pin a session-changing function asks for.
    FunctionCall(Batch),
    /// pgpilot reading back the values of these settings (one row, a column each).
    Settings(Box<super::backend::SettingsRead>),
    /// pgpilot asking whether the server still holds the pinned client's session state (one row,
    /// one boolean: pin_release.rs).
    PinCheck,
    /// pgpilot giving the server the client's session settings; the client's request waits for it.
    ParamSync,
    /// The client's `BEGIN READ ONLY`, answered by pgpilot when it came and sent now, in front of
    /// the transaction's first statement, to the server that statement was routed to
    /// (deferred_begin.rs); the client's request waits for it.
    DeferredBegin,
    /// pgpilot describing the server's copy of statement `hash` to learn its row type before a
    /// client that knows the statement with one binds it (row_shape.rs).
    CheckDescribe {
        hash: u64,
    },
    /// The Sync ending those checks; the client's request waits for it.
    CheckSync,
    /// A Parse under a name the client has prepared already, sent as a Bind that fails so that
    /// the server skips to Sync and aborts a transaction as it would for the Parse: the client is
    /// told PostgreSQL's 42P05 about this name, or its 25P02 in a failed transaction when the
    /// text is one PostgreSQL refuses there first (`checked_in_failed_transaction`).
    DuplicateParse {
        name: Box<[u8]>,
        checked_in_failed_transaction: bool,
    },
}

/// What to undo when the server skips the message a synthetic answer stands for (an error
/// earlier in the batch): the client's statements stay as PostgreSQL would have left them.
#[derive(Debug)]
pub enum OnSkip {
    Nothing,
    /// A Parse answered by pgpilot: the name was not prepared.
    Forget(Box<[u8]>),
    /// A Close answered by pgpilot: the statement was not closed.
    Restore(Box<[u8]>, std::sync::Arc<crate::pool::statements::PreparedStatement>),
}

/// Effects of a Query (or of the extended batch a Sync ends) that count only if it succeeds.
#[derive(Debug, Default)]
pub struct Batch {
    pub settings: Vec<SetCommand>,
    /// Its set_config calls certainly ran, with the values written (see Statement::set_config_runs).
    pub set_config_runs: bool,
    /// The request is one statement sent outside a transaction: if it succeeds its SETs are the
    /// server's values as written. Otherwise a savepoint, a later ROLLBACK or an error in the same
    /// request may have undone them, and the values are read back from the server.
    pub single_statement: bool,
    /// What its SQL PREPAREs and DEALLOCATEs do to the client's statements, in order (a Query's;
    /// of an extended batch, a DEALLOCATE ALL sent with Parse).
    pub sql_changes: Vec<SqlStatementChange>,
    /// How many of them the server completed: prepared statements are not transactional (a
    /// PREPARE or DEALLOCATE stands though a later statement of the request fails). Counted from
    /// a Query's CommandCompletes; a failed extended batch's changes are not applied.
    pub sql_changes_run: usize,
    pub discard_all: bool,
    /// RESET ALL seen without classifying the text (session pooling tracks no other setting).
    pub reset_all: bool,
    pub pins: Option<&'static str>,
    /// A statement that may end what pins a client ran (UNLISTEN, DROP, DISCARD, an unlock...).
    pub may_end_pinned_state: bool,
    /// WITH HOLD cursors declared and cursors closed, in order: a client pinned by its WITH HOLD
    /// cursors alone is let go once they are all closed.
    pub cursors: Vec<CursorChange>,
    /// Per-statement statistics of a Query, when insight is on.
    pub observed: Option<Box<Observed>>,
    /// pgpilot's own PREPARE of a client's SQL-prepared statement on a server that lacked it: its
    /// error (a lock timeout, a cancel, a dropped table) is the one the client is owed.
    pub replays_sql_prepare: bool,
}

/// A change a statement of a Query makes to the client's SQL-prepared statements.
#[derive(Debug)]
pub enum SqlStatementChange {
    /// PREPARE name → its text.
    Prepare(String, String),
    Deallocate(String),
    /// It drops the server's statements, pgpilot's included.
    DeallocateAll,
}

/// The client's unnamed statement before a Parse of it.
#[derive(Debug)]
pub enum UnnamedBefore {
    /// The Parse repeats it.
    Same,
    Was(UnnamedState),
}

/// The client's unnamed statement as pgpilot keeps it (None: it has none).
pub type UnnamedState = Option<Box<super::client::UnnamedStatement>>;

/// The server's copy of the statement a client's Bind names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundCopy {
    /// Prepared there before, or not one pgpilot prepares (the unnamed statement, SQL PREPARE).
    Kept,
    /// Prepared there for this Bind, from the client's text as the server reads it now.
    /// `per_column_formats`: the Bind names a format per result column, so a protocol violation
    /// (08P01) means the copy has another number of columns than the client learned: the result
    /// type changed since (DDL).
    Fresh { per_column_formats: bool },
    /// None: the client prepared the statement before its result type changed, and the Bind is
    /// sent so that the server fails it.
    Outdated,
}

/// A change to the client's WITH HOLD cursors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorChange {
    Declared(Box<str>),
    Closed(Box<str>),
    ClosedAll,
}

impl CursorChange {
    /// The changes a statement makes.
    pub fn of(stmt: &pgpilot_sql::Statement) -> impl Iterator<Item = CursorChange> + '_ {
        stmt.session_effects.iter().filter_map(|e| match e {
            pgpilot_sql::SessionEffect::DeclareCursor { name, with_hold: true } => {
                Some(CursorChange::Declared(name.as_str().into()))
            }
            pgpilot_sql::SessionEffect::CloseCursor(Some(name)) => {
                Some(CursorChange::Closed(name.as_str().into()))
            }
            pgpilot_sql::SessionEffect::CloseCursor(None) => Some(CursorChange::ClosedAll),
            _ => None,
        })
    }
}

impl Batch {
    /// Whether the batch has no effect to apply at its end.
    pub fn is_empty(&self) -> bool {
        self.settings.is_empty()
            && self.sql_changes.is_empty()
            && !self.discard_all
            && !self.reset_all
            && self.pins.is_none()
            && !self.may_end_pinned_state
            && self.cursors.is_empty()
            && self.observed.is_none()
    }
}

impl Reply {
    /// Whether a message with this tag ends the answer (ErrorResponse is handled apart).
    pub fn ends_with(&self, tag: u8) -> bool {
        match self {
            Reply::Parse { .. } | Reply::UnnamedParse(_) => tag == b'1',
            // Never succeeds; a BindComplete cannot come.
            Reply::DuplicateParse { .. } => tag == b'2',
            Reply::Bind { .. } => tag == b'2',
            Reply::Describe { .. } | Reply::DescribePortal { .. } | Reply::CheckDescribe { .. } => {
                matches!(tag, b'T' | b'n')
            }
            Reply::Execute(_) => matches!(tag, b'C' | b'I' | b's'),
            Reply::Close | Reply::UnnamedClose(_) => tag == b'3',
            Reply::Sync(_)
            | Reply::CheckSync
            | Reply::Query(_)
            | Reply::FunctionCall(_)
            | Reply::Settings(_)
            | Reply::PinCheck
            | Reply::ParamSync
            | Reply::DeferredBegin => tag == b'Z',
        }
    }

    /// Whether the answer ends with ReadyForQuery.
    pub fn is_ready(&self) -> bool {
        self.is_sync()
            || matches!(
                self,
                Reply::Query(_)
                    | Reply::FunctionCall(_)
                    | Reply::Settings(_)
                    | Reply::PinCheck
                    | Reply::ParamSync
                    | Reply::DeferredBegin
            )
    }

    /// pgpilot's own Query that the client's request waits behind (flow.rs ParamSync).
    pub fn holds_request(&self) -> bool {
        matches!(self, Reply::ParamSync | Reply::DeferredBegin)
    }

    /// A Sync, where a server skipping messages after an error listens again.
    pub fn is_sync(&self) -> bool {
        matches!(self, Reply::Sync(_) | Reply::CheckSync)
    }

    /// Simple-protocol answers run on after an error, up to ReadyForQuery.
    pub fn survives_error(&self) -> bool {
        self.is_ready()
    }
}

#[derive(Debug)]
pub enum Expect {
    /// The client's message: its answer goes to the client.
    Client(Reply),
    /// pgpilot's own message: its answer is dropped.
    Injected(Reply),
    /// An answer pgpilot gives itself when its turn comes (ParseComplete for a statement already
    /// prepared on this server, CloseComplete for a client-side Close).
    Synthetic { bytes: &'static [u8], on_skip: OnSkip },
    /// A whole Query answered by pgpilot: CommandComplete with this tag, then ReadyForQuery.
    SyntheticCommand(&'static str),
    /// A simple Query pgpilot refuses itself (a value its own setting does not take): the error
    /// and ReadyForQuery.
    SyntheticError(Box<pgpilot_wire::PgError>),
    /// The client ended COPY IN here: Syncs sent before it during COPY are ignored by the server.
    CopyBoundary,
}

impl Expect {
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Expect::Client(r) | Expect::Injected(r) => Some(r),
            _ => None,
        }
    }
}

pub const PARSE_COMPLETE: &[u8] = &[b'1', 0, 0, 0, 4];
pub const CLOSE_COMPLETE: &[u8] = &[b'3', 0, 0, 0, 4];
pub const BIND_COMPLETE: &[u8] = &[b'2', 0, 0, 0, 4];
pub const NO_DATA: &[u8] = &[b'n', 0, 0, 0, 4];
/// ParameterDescription of a statement without parameters.
pub const NO_PARAMETERS: &[u8] = &[b't', 0, 0, 0, 6, 0, 0];

/// The queue plus the count of ReadyForQuery messages still owed.
#[derive(Debug, Default)]
pub struct Expected {
    queue: VecDeque<Expect>,
    ready_owed: u32,
}

impl Expected {
    /// Forgets everything owed, keeping the queue's memory.
    pub fn clear(&mut self) {
        self.queue.clear();
        self.ready_owed = 0;
    }

    pub fn push(&mut self, e: Expect) {
        if e.reply().is_some_and(Reply::is_ready) {
            self.ready_owed += 1;
        }
        self.queue.push_back(e);
    }

    pub fn ready_owed(&self) -> u32 {
        self.ready_owed
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn front(&self) -> Option<&Expect> {
        self.queue.front()
    }

    /// A PREPARE or DEALLOCATE of the client's Query completed on the server.
    pub fn note_sql_change_run(&mut self) {
        if let Some(Expect::Client(Reply::Query(batch))) = self.queue.front_mut() {
            batch.sql_changes_run += 1;
        }
    }

    /// The statistics record of the client statement whose answer is arriving now.
    pub fn front_observed(&mut self) -> Option<&mut Observed> {
        match self.queue.front_mut()? {
            Expect::Client(Reply::Execute(o)) | Expect::Client(Reply::Query(Batch { observed: o, .. })) => {
                o.as_deref_mut()
            }
            _ => None,
        }
    }

    pub fn pop(&mut self) -> Option<Expect> {
        let e = self.queue.pop_front()?;
        if e.reply().is_some_and(Reply::is_ready) {
            self.ready_owed -= 1;
        }
        Some(e)
    }

    /// Whether the client or pgpilot waits for the server: a ReadyForQuery is owed, or answers to
    /// messages the client ended with a Flush instead of a Sync.
    pub fn answer_owed(&self) -> bool {
        self.ready_owed() > 0 || self.client_pending()
    }

    /// Whether a client request is still unanswered (pgpilot's own, such as a settings sync, do not
    /// count: they leave the transaction status as it is).
    pub fn client_pending(&self) -> bool {
        self.queue.iter().any(|e| matches!(e, Expect::Client(_)))
    }

    /// Whether the first ReadyForQuery owed after the front entry ends a Sync with nothing after it:
    /// the front entry's batch is the last thing sent to the server.
    pub fn sync_is_last_after_front(&self) -> bool {
        let later = self.queue.iter().skip(1).position(|e| e.reply().is_some_and(Reply::is_ready));
        later.is_some_and(|i| {
            i + 2 == self.queue.len() && matches!(self.queue[i + 1].reply(), Some(Reply::Sync(_)))
        })
    }

    /// Makes the front entry pgpilot's own: its answer is dropped, not sent to the client.
    pub fn hide_front(&mut self) {
        if let Some(front) = self.queue.front_mut() {
            if let Expect::Client(_) = front {
                let Expect::Client(reply) = std::mem::replace(front, Expect::CopyBoundary) else {
                    unreachable!()
                };
                *front = Expect::Injected(reply);
            }
        }
    }

    /// Whether the entry at the front is pgpilot's own.
    pub fn front_is_injected(&self) -> bool {
        matches!(self.queue.front(), Some(Expect::Injected(_)))
    }

    /// Hands `before` — what the client's unnamed statement is once a change to it that the
    /// server skipped is undone — to the first change to it still owed after that one: that
    /// change was made in pgpilot's books already and stands, and its own undo, if the server
    /// skips it too, restores `before`. Gives `before` back when no such change is owed.
    pub fn pass_unnamed_before(&mut self, before: UnnamedState) -> Result<(), UnnamedState> {
        for e in self.queue.iter_mut() {
            match e {
                Expect::Client(Reply::UnnamedParse(b)) => {
                    *b = UnnamedBefore::Was(before);
                    return Ok(());
                }
                Expect::Client(Reply::UnnamedClose(was)) => {
                    *was = before;
                    return Ok(());
                }
                _ => {}
            }
        }
        Err(before)
    }

    /// After an error in the extended protocol the server skips everything up to the next Sync:
    /// removes those entries and returns them.
    pub fn skip_to_sync(&mut self) -> Vec<Expect> {
        let mut skipped = Vec::new();
        while let Some(e) = self.queue.front() {
            if e.reply().is_some_and(Reply::is_sync) {
                break;
            }
            skipped.extend(self.pop());
        }
        skipped
    }

    /// The server entered COPY IN for the entry at the front: it ignores Syncs until the client's
    /// CopyDone/CopyFail. Drops those Syncs (and the boundary); returns whether the boundary was found.
    pub fn copy_in_started(&mut self) -> bool {
        let mut i = 1;
        while i < self.queue.len() {
            match &self.queue[i] {
                Expect::CopyBoundary => {
                    self.queue.remove(i);
                    return true;
                }
                Expect::Client(Reply::Sync(_)) => {
                    self.queue.remove(i);
                    self.ready_owed -= 1;
                }
                _ => i += 1,
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipping_stops_at_sync() {
        let mut e = Expected::default();
        e.push(Expect::Client(Reply::Bind { statement: None, copy: BoundCopy::Kept }));
        e.push(Expect::Synthetic { bytes: PARSE_COMPLETE, on_skip: OnSkip::Nothing });
        e.push(Expect::Client(Reply::Execute(None)));
        e.push(Expect::Client(Reply::Sync(Batch::default())));
        assert_eq!(e.ready_owed(), 1);
        assert_eq!(e.skip_to_sync().len(), 3);
        assert!(matches!(e.front(), Some(Expect::Client(Reply::Sync(_)))));
    }

    #[test]
    fn syncs_sent_during_copy_in_are_ignored() {
        let mut e = Expected::default();
        e.push(Expect::Client(Reply::Execute(None)));
        e.push(Expect::Client(Reply::Sync(Batch::default())));
        e.push(Expect::CopyBoundary);
        e.push(Expect::Client(Reply::Sync(Batch::default())));
        assert_eq!(e.ready_owed(), 2);
        assert!(e.copy_in_started());
        assert_eq!(e.ready_owed(), 1);
    }
}
