//! pgbench's built-in scripts, word for word, so results compare with pgbench's own.

pub const BUILTIN_NAMES: [&str; 3] = ["tpcb-like", "simple-update", "select-only"];

const TPCB_LIKE: &str = r"\set aid random(1, 100000 * :scale)
\set bid random(1, 1 * :scale)
\set tid random(1, 10 * :scale)
\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
";

const SIMPLE_UPDATE: &str = r"\set aid random(1, 100000 * :scale)
\set bid random(1, 1 * :scale)
\set tid random(1, 10 * :scale)
\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
";

const SELECT_ONLY: &str = r"\set aid random(1, 100000 * :scale)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
";

/// The text of a pgbench built-in script; like pgbench, any unambiguous prefix works.
pub fn builtin(name: &str) -> Option<(&'static str, &'static str)> {
    let mut hits = BUILTIN_NAMES.iter().filter(|n| n.starts_with(name));
    let found = hits.next()?;
    if hits.next().is_some() {
        return None;
    }
    let text = match *found {
        "tpcb-like" => TPCB_LIKE,
        "simple-update" => SIMPLE_UPDATE,
        _ => SELECT_ONLY,
    };
    Some((found, text))
}
