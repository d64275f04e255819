//! Read-your-writes: the primary position a client's reads must see after its last write.

use crate::databases::Database;

/// What a client's last write asks of the replica that serves its reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WriteMark {
    /// No write yet (or read-your-writes is off): any replica within the lag limits will do.
    #[default]
    None,
    /// A transaction that may have written committed at this Unix ms; until the monitor reads the
    /// primary's position after it, only the primary is sure to show it.
    Committed { at_ms: u64 },
    /// The primary's position read after the commit: a replica that has replayed it shows the write.
    /// Fixed once known, so that later writes by other clients do not hold this client back.
    Position(u64),
}

impl WriteMark {
    /// Called when a transaction that may have written ends on the primary.
    pub fn committed(&mut self, at_ms: u64) {
        *self = WriteMark::Committed { at_ms };
    }

    /// Turns a commit time into the first primary position stamped after it. The monitor stamps a
    /// position with the time its probe was sent, so a strictly later stamp was read after the
    /// commit. The first one, from the primary's recent positions, and not the latest: settled at
    /// the client's next read, the latest holds every write made since by other clients, which a
    /// replica replaying even a little behind never reaches while they keep writing.
    pub fn settle(&mut self, db: &Database) {
        if let WriteMark::Committed { at_ms } = *self {
            let primary = &db.backends[db.primary_index()];
            if let Some(first) = primary.history.first_after(at_ms) {
                *self = WriteMark::Position(first.lsn);
                return;
            }
            // No history yet (just started, or a failover cleared it): the latest position.
            let (lsn, stamped_ms) = primary.lsn();
            if stamped_ms > at_ms {
                *self = WriteMark::Position(lsn);
            }
        }
    }

    /// What this mark asks of a replica now.
    pub fn requirement(self, db: &Database) -> Requirement {
        match self {
            _ if !db.read_your_writes() => Requirement::Any,
            WriteMark::None => Requirement::Any,
            WriteMark::Committed { .. } => Requirement::PrimaryOnly,
            WriteMark::Position(lsn) => Requirement::Replayed(lsn),
        }
    }
}

/// WAL page size (PostgreSQL's XLOG_BLCKSZ as built by every distribution).
const WAL_PAGE: u64 = 8192;

/// Whether a replica that replayed up to `replay` shows everything before the primary's position
/// `need`. The primary's position is where its next record goes (pg_current_wal_insert_lsn), which
/// on a new page lies past the page header (24 bytes, 40 at a segment's start), while the replica
/// reports where its last record ended, on the page boundary: there is nothing to replay between
/// the two, and an idle primary would otherwise never be caught up with.
pub fn replayed(replay: u64, need: u64) -> bool {
    replay >= need || (replay.is_multiple_of(WAL_PAGE) && matches!(need - replay, 24 | 40))
}

/// What a client's reads need from a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    Any,
    /// It must have replayed the primary's WAL up to here.
    Replayed(u64),
    /// No replica can be trusted yet.
    PrimaryOnly,
}

#[cfg(test)]
mod tests {
    use super::replayed;

    #[test]
    fn a_page_header_is_nothing_to_replay() {
        assert!(replayed(0x3000100, 0x3000100));
        assert!(!replayed(0x30000f8, 0x3000100));
        // The primary idles at a new segment (long header) or page (short header).
        assert!(replayed(0x3000000, 0x3000028));
        assert!(replayed(0x3002000, 0x3002018));
        // Past the header a record was written.
        assert!(!replayed(0x3002000, 0x3002030));
        assert!(!replayed(0x3001ff8, 0x3002018));
    }
}
