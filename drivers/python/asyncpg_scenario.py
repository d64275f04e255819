"""The driver scenario with asyncpg (one asyncio task and connection per client).

asyncpg prepares every statement under a name and caches it (its default), and asks for binary
results. Connects with the PGHOST, PGPORT, PGUSER, PGDATABASE environment. Exits 1 with a FAIL
line on any mismatch, 0 with a one-line summary otherwise. See docs/drivers.md.
"""

import asyncio
import time
from decimal import Decimal

import asyncpg
from asyncpg import exceptions

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


class Client:
    def __init__(self, c, listener_ready, all_prepared):
        self.c = c
        self.listener_ready = listener_ready
        self.all_prepared = all_prepared
        self.zone = zone(c, False)
        self.conn = None
        self.notifications = asyncio.Queue()

    async def run(self):
        c = self.c
        self.conn = await asyncpg.connect(server_settings={"application_name": f"drivers-asyncpg-{c}"})
        try:
            await self.conn.execute(f"SET search_path TO client_{c}, public")
            await self.set_zone(False)
            await self.prepared_before_use()
            if c == 0:
                await self.conn.add_listener(LISTEN_CHANNEL, self.on_notification)
                self.listener_ready.set()
            else:
                await asyncio.wait_for(self.listener_ready.wait(), 60)
            for r in range(ROUNDS):
                await self.round(r)
            if c == 0:
                await self.await_notifications()
            else:
                await self.conn.execute(f"NOTIFY {LISTEN_CHANNEL}, 'client-{c}'")
        finally:
            await self.conn.close()

    async def prepared_before_use(self):
        """Every client prepares, and only once all have does any run its statement: asyncpg's
        prepare() sends no Sync until the statement runs, and its lookup of the varchar[] codec
        sets jit with a bound value (set_config('jit', $1, false)); neither may keep a server
        from the others (there are more clients than servers)."""
        stmt = await self.conn.prepare("SELECT $1::varchar[] AS tags, $2::int AS client")
        await asyncio.wait_for(self.all_prepared.wait(), 60)
        row = await stmt.fetchrow(["a", f"c{self.c}"], self.c)
        check(self.c, "prepared before use", (["a", f"c{self.c}"], self.c), (row["tags"], row["client"]))

    def on_notification(self, _conn, _pid, channel, payload):
        self.notifications.put_nowait((channel, payload))

    async def set_zone(self, second):
        self.zone = zone(self.c, second)
        await self.conn.execute(f"SET TimeZone TO '{self.zone[0]}'")

    async def round(self, r):
        if r == ROUNDS // 2:
            await self.set_zone(True)
        if r == 7:
            await self.error_and_recovery()
        elif r == 13:
            await self.cancel()
        elif r % 10 == 5:
            await self.copy()
        if r % 3 == 2:
            await self.statements(r, f"round {r} (autocommit)")
        else:
            async with self.conn.transaction():
                await self.statements(r, f"round {r}")

    async def statements(self, r, when):
        """Both statements of a round, in an order that differs between clients: drivers name
        their statements in the order of first use, so one name stands for different SQL on
        different clients."""
        if (self.c + r) % 2:
            await self.check_session(when)
            await self.roundtrip(r)
        else:
            await self.roundtrip(r)
            await self.check_session(when)

    async def roundtrip(self, r):
        c, v = self.c, Values(self.c, r)
        row = await self.conn.fetchrow(
            ROUNDTRIP_SQL,
            v.i4,
            v.i8,
            Decimal(v.num_text),
            v.txt,
            v.flag,
            v.ts,
            v.day,
            v.uuid,
            v.doc_text,
            v.raw,
            v.ints,
            v.texts,
            None,
        )
        # asyncpg hands jsonb over as text; PostgreSQL's output of jsonb is canonical.
        check_roundtrip(c, f"round {r}", v, row, doc=v.doc_text)

    async def check_session(self, when):
        row = await self.conn.fetchrow(SESSION_SQL)
        check_session(self.c, when, self.zone, tuple(row), self.conn.get_settings().TimeZone)

    async def error_and_recovery(self):
        conn, c = self.conn, self.c
        await conn.execute("BEGIN")
        try:
            await conn.fetchval(DIVIDE_SQL, 0)
            raise Mismatch(f"client {c}: 10 / 0 did not fail")
        except exceptions.DivisionByZeroError:
            pass
        try:
            await conn.fetchval("SELECT 1")
            raise Mismatch(f"client {c}: a statement after an error inside BEGIN did not fail")
        except exceptions.InFailedSQLTransactionError:
            pass
        await conn.execute("ROLLBACK")
        check(c, "10 / 2 after ROLLBACK", 5, await conn.fetchval(DIVIDE_SQL, 2))
        await self.check_session("after ROLLBACK")

    async def cancel(self):
        """asyncpg's cancel API is the query timeout: it sends a CancelRequest and keeps the error
        (57014) to itself. That the server really cancelled shows afterwards: the transaction is
        aborted, and at once — a cancel that never arrived would end only at statement_timeout."""
        conn, c = self.conn, self.c
        await conn.execute("BEGIN")
        await conn.execute("SET LOCAL statement_timeout = '10s'")
        started = time.monotonic()
        try:
            await conn.fetchval("SELECT pg_sleep(30)", timeout=0.2)
            raise Mismatch(f"client {c}: pg_sleep(30) was not cancelled")
        except asyncio.TimeoutError:
            pass
        except exceptions.QueryCanceledError:
            raise Mismatch(f"client {c}: pg_sleep(30) was cancelled before its own cancel request was sent: a cancel meant for another client's query reached this client's server") from None
        try:
            await conn.fetchval("SELECT 1")
            raise Mismatch(f"client {c}: cancel: the transaction was not aborted by the cancel")
        except exceptions.InFailedSQLTransactionError:
            pass
        elapsed = time.monotonic() - started
        if elapsed > 5:
            raise Mismatch(f"client {c}: cancel: the query ended only after {elapsed:.1f}s")
        await conn.execute("ROLLBACK")
        await self.check_session("after a cancelled query")

    async def copy(self):
        conn, c = self.conn, self.c
        out = bytearray()

        async def sink(chunk):
            out.extend(chunk)

        async with conn.transaction():
            await conn.execute(f"DELETE FROM client_{c}.items")
            # Binary COPY in, text COPY out.
            records = [(i, copy_label(c, i)) for i in range(1, COPY_ROWS + 1)]
            await conn.copy_records_to_table(
                "items", schema_name=f"client_{c}", columns=["id", "label"], records=records
            )
            await conn.copy_from_query(f"SELECT id, label FROM client_{c}.items ORDER BY id", output=sink)
        check(c, "COPY out of the rows copied in", copy_out_expected(c), out.decode())

    async def await_notifications(self):
        notifications = Notifications()
        deadline = time.monotonic() + Notifications.LIMIT
        while not notifications.complete:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                channel, payload = await asyncio.wait_for(self.notifications.get(), remaining)
            except asyncio.TimeoutError:
                raise notifications.missing() from None
            notifications.add(channel, payload)


async def main():
    start_watchdog("asyncpg")
    started = time.monotonic()
    listener_ready = asyncio.Event()
    all_prepared = asyncio.Barrier(CLIENTS)
    failures = []

    async def run(c):
        try:
            await Client(c, listener_ready, all_prepared).run()
        except Exception as e:  # any driver error is a failure of the scenario too
            failures.append(failure(c, e))
        finally:
            if c == 0:
                listener_ready.set()

    await asyncio.gather(*(run(c) for c in range(CLIENTS)))
    finish(f"asyncpg {asyncpg.__version__}", failures, started, "binary", "COPY in (binary)/out")


if __name__ == "__main__":
    asyncio.run(main())
