#!/usr/bin/env python3
"""How much resident memory keyed bookings cost the server.

Starts the release binary (open, on a loopback port), books N tokens with an
Idempotency-Key each, once with plain bodies and once with bodies padded by
unknown fields, and prints how much the server's resident set grew in each
run. A remembered key keeps only a digest of its request, so the padded run
should cost what the plain one does.

    cargo build --release
    python3 loadtest/idempotency-memory.py            # durable, 5,000 bookings, 15,000-byte padding
    BENCH_BOOKINGS=20000 python3 loadtest/idempotency-memory.py --in-memory

Not part of CI: the figures depend on the machine and its allocator.
"""

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

BINARY = os.environ.get("BENCH_BINARY", "target/release/opd-token-engine")
BOOKINGS = int(os.environ.get("BENCH_BOOKINGS", "5000"))
PADDING = int(os.environ.get("BENCH_PADDING_BYTES", "15000"))
CAPACITY_MAX = 10_000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def request(connection, method, path, body=None, headers=None):
    payload = None if body is None else json.dumps(body).encode()
    all_headers = {"content-type": "application/json"} if payload else {}
    all_headers.update(headers or {})
    connection.request(method, path, body=payload, headers=all_headers)
    response = connection.getresponse()
    text = response.read()
    return response.status, text


def run(padding, extra_args):
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        server = subprocess.Popen(
            [BINARY, "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir,
             "--rate-limit-per-second", "0", *extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for _ in range(100):
                try:
                    if request(connection, "GET", "/healthz")[0] == 200:
                        break
                except OSError:
                    connection.close()
                time.sleep(0.1)
            slots = (BOOKINGS + CAPACITY_MAX - 1) // CAPACITY_MAX
            for index in range(slots):
                status, text = request(connection, "POST", "/slots", {
                    "slotId": f"MEM-{index}", "doctorId": f"DM{index}", "date": "2030-01-07",
                    "startTime": "08:00", "endTime": "09:00", "capacity": CAPACITY_MAX})
                assert status == 201, text
            # Warm the allocator and the connection before the first reading.
            for number in range(200):
                status, text = request(connection, "GET", "/slots?doctorId=DM0")
                assert status == 200, text
            before = rss_kib(server.pid)
            for number in range(BOOKINGS):
                body = {"patientId": f"P{number}", "slotId": f"MEM-{number // CAPACITY_MAX}",
                        "source": "ONLINE"}
                if padding:
                    body["note"] = "x" * padding
                status, text = request(connection, "POST", "/tokens", body,
                                       {"idempotency-key": f"key-{number}"})
                assert status == 201, text
            after = rss_kib(server.pid)
            return before, after
        finally:
            server.terminate()
            server.wait()


def main():
    extra_args = sys.argv[1:]
    mode = "in memory" if "--in-memory" in extra_args else "durable (SQLite)"
    print(f"{BOOKINGS} keyed bookings, {mode}, binary {BINARY}")
    for label, padding in (("plain bodies", 0), (f"bodies + {PADDING} B of unknown fields", PADDING)):
        before, after = run(padding, extra_args)
        grown = after - before
        print(f"  {label:40} RSS {before / 1024:7.1f} -> {after / 1024:7.1f} MiB, "
              f"grew {grown / 1024:6.1f} MiB ({grown * 1024 / BOOKINGS:7.0f} B per booking)")


if __name__ == "__main__":
    main()
