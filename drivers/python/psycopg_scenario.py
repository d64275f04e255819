"""The driver scenario with psycopg 3 (sync API, one thread per client).

Connects with libpq's environment (PGHOST, PGPORT, PGUSER, PGDATABASE). Exits 1 with a FAIL line
on any mismatch, 0 with a one-line summary otherwise. See docs/drivers.md.
"""

import re
import threading
import time
from decimal import Decimal

import psycopg
from psycopg import errors
from psycopg.types.json import Jsonb

from scenario_values import (
    CLIENTS,
    COPY_ROWS,
    DIVIDE_SQL,
    LISTEN_CHANNEL,
    ROUNDS,
    ROUNDTRIP_SQL,
    SESSION_SQL,
    Mismatch,
    Notifications,
    Values,
    check,
    check_roundtrip,
    check_session,
    copy_label,
    copy_out_expected,
    failure,
    finish,
    start_watchdog,
    zone,
)


def named(sql):
    """psycopg's placeholders: $n becomes %(pn)s (a repeated name is sent once, as the same $n)."""
    return re.sub(r"\$(\d+)", r"%(p\1)s", sql)


ROUNDTRIP = named(ROUNDTRIP_SQL)
DIVIDE = named(DIVIDE_SQL)


class Canceller:
    """Cancels the connection's query 200 ms after it starts and every 250 ms after that until
    stopped: a cancel that reaches the server before the query does is ignored (by PostgreSQL
    too), and on a loaded machine the query may not have been sent 200 ms later. cancel_safe()
    returns once the request is delivered, so after stop() none can reach the next statement."""

    def __init__(self, conn):
        self.stopped = threading.Event()
        self.sent = threading.Event()
        self.thread = threading.Thread(target=self.run, args=(conn,))
        self.thread.start()

    def run(self, conn):
        pause = 0.2
        while not self.stopped.wait(pause):
            self.sent.set()
            conn.cancel_safe()
            pause = 0.25

    def stop(self):
        self.stopped.set()
        self.thread.join()


class Client:
    def __init__(self, c, listener_ready):
        self.c = c
        self.listener_ready = listener_ready
        self.zone = zone(c, False)
        self.conn = None

    def run(self):
        c = self.c
        # prepare=True below makes every repeated statement a named server-side statement.
        with psycopg.connect(autocommit=True, application_name=f"drivers-psycopg-{c}") as conn:
            self.conn = conn
            conn.execute(f"SET search_path TO client_{c}, public")
            self.set_zone(False)
            if c == 0:
                conn.execute(f"LISTEN {LISTEN_CHANNEL}")
                self.listener_ready.set()
            elif not self.listener_ready.wait(60):
                raise Mismatch(f"client {c}: the listening client never got ready")
            for r in range(ROUNDS):
                self.round(r)
            if c == 0:
                self.await_notifications()
            else:
                conn.execute(f"NOTIFY {LISTEN_CHANNEL}, 'client-{c}'")

    def set_zone(self, second):
        self.zone = zone(self.c, second)
        self.conn.execute(f"SET TimeZone TO '{self.zone[0]}'")

    def round(self, r):
        if r == ROUNDS // 2:
            self.set_zone(True)
        if r == 7:
            self.error_and_recovery()
        elif r == 13:
            self.cancel()
        elif r % 10 == 5:
            self.copy()
        binary = r % 2 == 1
        if r % 3 == 2:
            self.statements(r, binary, f"round {r} (autocommit)")
        else:
            with self.conn.transaction():
                self.statements(r, binary, f"round {r}")

    def statements(self, r, binary, when):
        """Both statements of a round, in an order that differs between clients: drivers name
        their statements in the order of first use, so one name stands for different SQL on
        different clients."""
        if (self.c + r) % 2:
            self.check_session(when)
            self.roundtrip(r, binary)
        else:
            self.roundtrip(r, binary)
            self.check_session(when)

    def roundtrip(self, r, binary):
        c, v = self.c, Values(self.c, r)
        params = {
            "p1": v.i4,
            "p2": v.i8,
            "p3": Decimal(v.num_text),
            "p4": v.txt,
            "p5": v.flag,
            "p6": v.ts,
            "p7": v.day,
            "p8": v.uuid,
            "p9": Jsonb(v.doc),
            "p10": v.raw,
            "p11": v.ints,
            "p12": v.texts,
            "p13": None,
        }
        with self.conn.cursor(binary=binary) as cur:
            row = cur.execute(ROUNDTRIP, params, prepare=True).fetchone()
            got = dict(zip([d.name for d in cur.description], row))
        what = f"round {r} ({'binary' if binary else 'text'} results)"
        check_roundtrip(c, what, v, got, doc=v.doc)

    def check_session(self, when):
        row = self.conn.execute(SESSION_SQL, prepare=True).fetchone()
        check_session(self.c, when, self.zone, row, self.conn.info.parameter_status("TimeZone"))

    def error_and_recovery(self):
        conn, c = self.conn, self.c
        conn.execute("BEGIN")
        try:
            conn.execute(DIVIDE, {"p1": 0}, prepare=True)
            raise Mismatch(f"client {c}: 10 / 0 did not fail")
        except errors.DivisionByZero:
            pass
        try:
            conn.execute("SELECT 1")
            raise Mismatch(f"client {c}: a statement after an error inside BEGIN did not fail")
        except errors.InFailedSqlTransaction:
            pass
        conn.execute("ROLLBACK")
        check(c, "10 / 2 after ROLLBACK", 5, conn.execute(DIVIDE, {"p1": 2}, prepare=True).fetchone()[0])
        self.check_session("after ROLLBACK")

    def cancel(self):
        conn, c = self.conn, self.c
        conn.execute("BEGIN")
        # A cancel that never arrives ends here after 10 s instead of 30, with another message.
        conn.execute("SET LOCAL statement_timeout = '10s'")
        started = time.monotonic()
        canceller = Canceller(conn)
        try:
            conn.execute("SELECT pg_sleep(30)")
            raise Mismatch(f"client {c}: pg_sleep(30) was not cancelled")
        except errors.QueryCanceled as e:
            elapsed = time.monotonic() - started
            if not canceller.sent.is_set():
                raise Mismatch(f"client {c}: pg_sleep(30) was cancelled before its own cancel request was sent: a cancel meant for another client's query reached this client's server") from None
            if "user request" not in str(e) or elapsed > 5:
                raise Mismatch(f"client {c}: cancel: after {elapsed:.1f}s got {str(e).strip()!r}") from None
        finally:
            canceller.stop()
        conn.execute("ROLLBACK")
        self.check_session("after a cancelled query")

    def copy(self):
        conn, c = self.conn, self.c
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(f"DELETE FROM client_{c}.items")
            with cur.copy(f"COPY client_{c}.items (id, label) FROM STDIN") as copy:
                for i in range(1, COPY_ROWS + 1):
                    copy.write_row((i, copy_label(c, i)))
            out = bytearray()
            with cur.copy(f"COPY (SELECT id, label FROM client_{c}.items ORDER BY id) TO STDOUT") as copy:
                for chunk in copy:
                    out += chunk
        check(c, "COPY out of the rows copied in", copy_out_expected(c), out.decode())

    def await_notifications(self):
        notifications = Notifications()
        deadline = time.monotonic() + Notifications.LIMIT
        while not notifications.complete and time.monotonic() < deadline:
            for n in self.conn.notifies(timeout=max(0.0, deadline - time.monotonic()), stop_after=1):
                notifications.add(n.channel, n.payload)
        if not notifications.complete:
            raise notifications.missing()


def main():
    start_watchdog("psycopg")
    started = time.monotonic()
    listener_ready = threading.Event()
    failures = []

    def run(c):
        try:
            Client(c, listener_ready).run()
        except Exception as e:  # any driver error is a failure of the scenario too
            failures.append(failure(c, e))
        finally:
            if c == 0:
                listener_ready.set()

    threads = [threading.Thread(target=run, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    finish(f"psycopg {psycopg.__version__}", failures, started, "text and binary", "COPY in/out")


if __name__ == "__main__":
    main()
