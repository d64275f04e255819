"""What every client of the driver scenario sends and expects back (shared by psycopg and asyncpg).

The same values, statements and expectations exist in each driver's program (see docs/drivers.md);
they are deterministic in (client, round) so a value that comes back to the wrong client shows.
"""

import datetime
import os
import pathlib
import sys
import threading
import time
import uuid
from decimal import Decimal

CLIENTS = int(os.environ.get("DRIVER_CLIENTS", "50"))
ROUNDS = int(os.environ.get("DRIVER_ROUNDS", "30"))
LISTEN_CHANNEL = "drivers_events"
SQL_DIR = pathlib.Path(__file__).resolve().parent.parent / "sql"


def statement(name):
    """A statement every driver runs, from drivers/sql/NAME.sql (comment lines left out)."""
    lines = (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.startswith("--")).strip()


ROUNDTRIP_SQL = statement("roundtrip")
SESSION_SQL = statement("session")



DIVIDE_SQL = "SELECT 10 / $1::int4"


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def start_watchdog(driver, seconds=150):
    """Ends the program with a FAIL line if the scenario hangs (a lost reply, a stuck pool)."""

    def expire():
        print(f"FAIL: {driver}: the scenario did not finish within {seconds} s", file=sys.stderr, flush=True)
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


class Mismatch(Exception):
    pass


def check(client, what, expected, got):
    if expected != got:
        raise Mismatch(f"client {client}: {what}: expected {expected!r}, got {got!r}")


def zone(client, second):
    """An IANA zone for the client (the second one after its mid-run SET), and its UTC offset."""
    hours = ((client + (11 if second else 0)) % 27) - 12
    if hours == 0:
        return "Etc/GMT", 0
    # POSIX sign convention: Etc/GMT-5 is five hours EAST of UTC.
    name = f"Etc/GMT{'-' if hours > 0 else '+'}{abs(hours)}"
    return name, hours * 3600


def search_path(client):
    return f"client_{client}, public"


EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


class Values:
    """The parameters of round `r` of client `c`, and what the server must say about them."""

    def __init__(self, c, r):
        self.i4 = c * 1000 + r
        self.i8 = 4_000_000_000_000_000_000 + c * 1000 + r
        whole = 1_000_000_000_000 * (c + 1) + r
        self.num_text = f"{whole}.25"
        self.txt = f"c{c} r{r} 'single' \"double\" \\back ü ✓"
        self.flag = (c + r) % 2 == 0
        self.ts_ms = 1_700_000_000_000 + c * 86_400_123 + r * 1_001
        self.ts = EPOCH + datetime.timedelta(milliseconds=self.ts_ms)
        self.days = c * 10 + r
        self.day = datetime.date(2000, 1, 1) + datetime.timedelta(days=self.days)
        self.uuid_text = f"{c:08x}-{r:04x}-4000-8000-{c * r:012x}"
        self.uuid = uuid.UUID(self.uuid_text)
        self.doc_text = f'{{"k": "c{c}-r{r}", "n": [{c}, {r}, null], "nested": {{"t": true}}}}'
        self.doc = {"k": f"c{c}-r{r}", "n": [c, r, None], "nested": {"t": True}}
        self.raw = bytes([c, r, 0, 255, 39, 92, 10])
        self.ints = [c, r, -1, 2147483647]
        self.texts = ["alpha", "b c", 'q"uote', "back\\slash", "", "NULL", f"c{c}r{r}", "ü"]
        self.digest = "|".join(
            [
                str(self.i4 + 1),
                str(self.i8 * 2),
                str(whole * 4 + 1),
                str(len(self.txt)),
                "f" if self.flag else "t",
                str(self.ts_ms),
                str(self.days),
                self.uuid_text,
                f"c{c}-r{r}",
                self.raw.hex(),
                ",".join(str(i) for i in self.ints),
                ",".join(self.texts),
                "t",
            ]
        )


def check_roundtrip(c, what, v, got, doc):
    """The roundtrip row `got` (a mapping by column name) against the values `v` that were sent;
    `doc` is the jsonb value as the driver hands it over."""
    check(c, f"{what} digest", v.digest, got["digest"])
    expected = {
        "i4": v.i4,
        "i8": v.i8,
        "num": Decimal(v.num_text),
        "txt": v.txt,
        "flag": v.flag,
        "ts": v.ts,
        "day": v.day,
        "id": v.uuid,
        "doc": doc,
        "raw": v.raw,
        "ints": v.ints,
        "texts": v.texts,
        "nothing": None,
    }
    for name, value in expected.items():
        check(c, f"{what} {name}", value, got[name])


def check_session(c, when, zone_now, row, reported_time_zone):
    """The session row (search_path, TimeZone, UTC offset, owner) and the TimeZone the server
    last reported through ParameterStatus."""
    check(c, f"{when}: search_path", search_path(c), row[0])
    check(c, f"{when}: TimeZone", zone_now[0], row[1])
    check(c, f"{when}: UTC offset of now()", zone_now[1], row[2])
    check(c, f"{when}: owner of the table `mine`", c, row[3])
    check(c, f"{when}: TimeZone reported by ParameterStatus", zone_now[0], reported_time_zone)


class Notifications:
    """What client 0 must receive: one NOTIFY from each other client, each exactly once."""

    LIMIT = 30

    def __init__(self):
        self.expected = {f"client-{k}" for k in range(1, CLIENTS)}
        self.seen = set()

    @property
    def complete(self):
        return self.seen == self.expected

    def add(self, channel, payload):
        check(0, "notification channel", LISTEN_CHANNEL, channel)
        if payload in self.seen:
            raise Mismatch(f"client 0: notification {payload!r} delivered twice")
        self.seen.add(payload)

    def missing(self):
        missing = sorted(self.expected - self.seen, key=lambda p: int(p.split("-")[1]))
        return Mismatch(f"client 0: no NOTIFY received from {', '.join(missing)} within {self.LIMIT} s")


def failure(c, error):
    """A client's failure as one line: a mismatch says it all, a driver error gets its type."""
    if isinstance(error, Mismatch):
        return str(error)
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"client {c}: {type(error).__name__}: {first_line}"


def finish(driver, failures, started, results, copy):
    """Prints the FAIL lines and exits 1, or prints the one-line summary."""
    if failures:
        for f in failures[:10]:
            print(f"FAIL: {f}", flush=True)
        fail(f"{driver}: {len(failures)} of {CLIENTS} clients failed")
    print(
        f"{driver}: OK: {CLIENTS} clients x {ROUNDS} rounds of named prepared statements ({results} "
        f"results), {copy}, error recovery, cancel, per-client search_path/TimeZone, {CLIENTS - 1} "
        f"notifications in {time.monotonic() - started:.1f}s"
    )


def copy_label(c, i):
    """Row i of client c's COPY data: a tab and non-ASCII text to exercise escaping, some NULLs."""
    return None if i % 10 == 0 else f"c{c}-r{i}\tü"


COPY_ROWS = 200


def copy_out_expected(c):
    """COPY ... TO STDOUT text format of the rows copied in."""
    lines = []
    for i in range(1, COPY_ROWS + 1):
        label = copy_label(c, i)
        shown = "\\N" if label is None else label.replace("\\", "\\\\").replace("\t", "\\t")
        lines.append(f"{i}\t{shown}\n")
    return "".join(lines)
