#!/usr/bin/env python3
"""bigquery.py PORT PID MB [RUNS]: one client sends `SELECT length('...')` with an MB-megabyte
literal through the pooler listening on PORT (user and database postgres, no password), RUNS times
(default 3); after each, prints the resident memory and its peak of process PID (the pooler)."""
import socket
import struct
import sys
import time


def status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split()[1] + " kB"
    return "?"


def until_idle(s):
    got = b""
    while not got.endswith(b"Z\0\0\0\x05I"):
        data = s.recv(65536)
        if not data:
            raise SystemExit(f"connection closed: {got[:200]!r}")
        got += data
    return got


def run(port, mb):
    s = socket.create_connection(("127.0.0.1", port))
    params = b"user\0postgres\0database\0postgres\0\0"
    s.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
    until_idle(s)
    body = b"SELECT length('" + b"x" * (mb << 20) + b"')\0"
    s.sendall(b"Q" + struct.pack("!i", 4 + len(body)) + body)
    reply = until_idle(s)
    s.close()
    if b"D" not in reply:
        raise SystemExit(f"no row: {reply[:200]!r}")


def main():
    port, pid, mb = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    print(f"before: rss {status(pid, 'VmRSS')}")
    for i in range(1, runs + 1):
        run(port, mb)
        time.sleep(1)
        print(f"run {i}: rss {status(pid, 'VmRSS')}, peak {status(pid, 'VmHWM')}")


main()
