#!/usr/bin/env python3
"""Bookings per second on PostgreSQL by slot size and booking path.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test python3 loadtest/pg-slot-size.py

Builds nothing: run `cargo build --release` first. For each slot size in
SIZES (default "10 5000") and each mode below, it fills slots (one doctor
each, capacity 10) on a fresh schema with that many active tokens through
a server booking in one call, then measures bookings into those slots for
SECONDS (default 10) with CLIENTS keep-alive connections (default 16).
The measured bookings make the slots grow, so sizes up to 100 use
SLOTS_SMALL slots (default 400) and larger sizes SLOTS_LARGE (default 16);
the mean size during the run is printed, with each mode's stale copies and
commits per booking (from the servers' metrics). MODES (a comma-separated
list of the names below) runs only some. The modes:

  lock-first      one instance without --one-call-bookings
  lock-first x2   two such instances on the same schema, half the
                  connections each
  one-call        one instance with it
  one-call x2     two such instances
  pgbench 1/call  the reference without the service: pgbench calls
                  opd_book_group with one booking (loadtest/pgbench), each
                  client into slots of its own
  pgbench G/call  the same with GROUP bookings per call (default 16), when
                  each client has GROUP slots of its own

Every booking must answer 201 (each is waitlisted: the slots are full, so
every path makes the same decision); anything else stops the run. The
modes of one size run back to back, so their ratios come from one run of
the machine. PostgreSQL shares this machine's cores with the servers and
the clients, as it does in the figures of the README.
"""

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "opd-token-engine")
URL = os.environ.get("DATABASE_URL", "")
SIZES = [int(s) for s in os.environ.get("SIZES", "10 5000").split()]
SLOTS_SMALL = int(os.environ.get("SLOTS_SMALL", "400"))
SLOTS_LARGE = int(os.environ.get("SLOTS_LARGE", "16"))
SECONDS = float(os.environ.get("SECONDS", "10"))
CLIENTS = int(os.environ.get("CLIENTS", "16"))
GROUP = int(os.environ.get("GROUP", "16"))
PGBENCH_DIR = os.path.join(ROOT, "loadtest", "pgbench")
TODAY = time.strftime("%Y-%m-%d", time.gmtime())


def die(message):
    print(f"pg-slot-size: {message}", file=sys.stderr)
    sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One instance on `schema`, stopped on exit."""

    def __init__(self, schema, one_call):
        self.port = free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("OPD_") and not k.startswith("DATABASE_")}
        env.update(OPD_RATE_LIMIT_PER_SECOND="0", OPD_WAITLIST_MAX="100000",
                   OPD_MAX_CONNECTIONS_PER_ADDRESS="4096", RUST_LOG="warn")
        args = [BIN, "--database-url", URL, "--database-schema", schema,
                "--listen", f"127.0.0.1:{self.port}"]
        if one_call:
            args.append("--one-call-bookings")
        self.process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                if request(self.port, "GET", "/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        die(f"the server on {schema} did not start")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


def request(port, method, path, body=None, connection=None):
    own = connection is None
    connection = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Host": "127.0.0.1", "Content-Type": "application/json"}
    connection.request(method, path, body=json.dumps(body) if body else None, headers=headers)
    response = connection.getresponse()
    data = response.read()
    if own:
        connection.close()
    return response.status, data


def slot_ids(size):
    count = SLOTS_SMALL if size <= 100 else SLOTS_LARGE
    return [f"PS{doctor:03}-09" for doctor in range(1, count + 1)]


def book_all(ports, slots, count, patients, deadline=None):
    """Books `count` tokens (or until `deadline`) over CLIENTS connections
    spread over `ports` into `slots` in turn; returns how many were booked."""
    booked = [0] * CLIENTS
    failures = []
    next_index = iter(range(count if count else 10**12))
    lock = threading.Lock()

    def client(index):
        port = ports[index % len(ports)]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while not failures:
            if deadline and time.monotonic() >= deadline:
                return
            with lock:
                n = next(next_index, None)
            if n is None:
                return
            body = {"patientId": f"{patients}{n}", "slotId": slots[n % len(slots)],
                    "source": "WALK_IN"}
            status, data = request(port, "POST", "/tokens", body, connection)
            if status != 201:
                failures.append(f"{status} {data[:200]!r}")
                return
            booked[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        die(f"a booking answered {failures[0]}")
    return sum(booked)


def psql(sql):
    env = dict(os.environ, PGOPTIONS="-c client_min_messages=warning")
    subprocess.run(["psql", URL, "-qc", sql], check=True, stdout=subprocess.DEVNULL, env=env)


def database_counts():
    """The database's committed transactions and the write-ahead log's
    syncs to disk so far (PostgreSQL's statistics, for every database)."""
    out = subprocess.run(
        ["psql", URL, "-Atc", "SELECT (SELECT sum(xact_commit) FROM pg_stat_database), "
         "(SELECT wal_sync FROM pg_stat_wal)"],
        check=True, capture_output=True, text=True).stdout.strip()
    return [float(value) for value in out.split("|")]


def pgbench(schema, size, group):
    """Bookings per second of pgbench calling opd_book_group with `group`
    bookings per call, or None when the clients cannot each have `group`
    slots of their own."""
    per = len(slot_ids(size)) // CLIENTS
    if per < group:
        return None
    env = dict(os.environ, PGOPTIONS=f"-c search_path={schema} -c client_min_messages=warning")
    subprocess.run(["psql", URL, "-v", "ON_ERROR_STOP=1", "-qf",
                    os.path.join(PGBENCH_DIR, "bench_book.sql")],
                   check=True, stdout=subprocess.DEVNULL, env=env)
    script = os.path.join(PGBENCH_DIR, "one.pgb" if group == 1 else "group.pgb")
    rate = None
    for seconds in (2, SECONDS):
        out = subprocess.run(
            ["pgbench", "-n", "-M", "prepared", "-c", str(CLIENTS), "-j", "2",
             "-T", str(max(1, round(seconds))), "-D", f"per={per}", "-D", f"group={group}",
             "-f", script, URL],
            capture_output=True, text=True, env=env)
        if out.returncode != 0:
            die(f"pgbench failed: {out.stderr[:800]}")
        out = out.stdout
        found = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
        if not found:
            die(f"pgbench printed no rate: {out[-500:]}")
        rate = float(found.group(1)) * group
    return rate


def filled_schema(size, name):
    """A fresh schema whose slots hold `size` active tokens each."""
    schema = f"opd_slot_size_{size}_{''.join(c for c in name if c.isalnum())}_{os.getpid()}"
    psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    server = Server(schema, one_call=True)
    slots = slot_ids(size)
    for slot in slots:
        status, data = request(server.port, "POST", "/slots", {
            "slotId": slot, "doctorId": slot[:5], "date": TODAY,
            "startTime": "09:00", "endTime": "10:00", "capacity": 10})
        if status != 201:
            die(f"creating {slot}: {status} {data[:200]!r}")
    book_all([server.port], slots, size * len(slots), "FILL")
    server.stop()
    return schema


def busy_ticks(pid=None):
    """CPU time in clock ticks: of process `pid` (user and system), or of
    the whole machine (every state but idle and iowait)."""
    if pid is not None:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]


def database_ticks():
    """CPU time in clock ticks of every PostgreSQL process, by pid."""
    ticks = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as stat:
                name, rest = stat.read().split("(", 1)[1].rsplit(")", 1)
        except OSError:
            continue
        if name == "postgres":
            fields = rest.split()
            ticks[pid] = int(fields[11]) + int(fields[12])
    return ticks


def measure(schema, size, one_call, instances):
    """Bookings per second, the slots' mean size during the run, and the
    share of the machine's CPU the servers, this client and the rest
    (PostgreSQL) took."""
    slots = slot_ids(size)
    servers = [Server(schema, one_call) for _ in range(instances)]
    ports = [server.port for server in servers]
    warmed = book_all(ports, slots, 0, "WARM", deadline=time.monotonic() + 2)
    started = time.monotonic()
    before = (busy_ticks(), sum(busy_ticks(s.process.pid) for s in servers), os.times())
    counted = database_counts()
    database_before = database_ticks()
    booked = book_all(ports, slots, 0, "RUN", deadline=started + SECONDS)
    elapsed = time.monotonic() - started
    after = (busy_ticks(), sum(busy_ticks(s.process.pid) for s in servers), os.times())
    database_after = database_ticks()
    transactions, syncs = [b - a for a, b in zip(counted, database_counts())]
    rate = booked / elapsed
    counts = [0.0] * 5
    for server in servers:
        counts = [a + b for a, b in zip(counts, scraped(server.port))]
        server.stop()
    tick = os.sysconf("SC_CLK_TCK")
    available = elapsed * (os.cpu_count() or 1)
    machine = (after[0] - before[0]) / tick
    server_cpu = (after[1] - before[1]) / tick
    client_cpu = (after[2].user + after[2].system) - (before[2].user + before[2].system)
    shares = (server_cpu / available, client_cpu / available,
              (machine - server_cpu - client_cpu) / available)
    per_booking = [count / (warmed + booked) for count in counts]
    database_cpu = sum(ticks - database_before.get(pid, 0)
                       for pid, ticks in database_after.items()) / tick
    per_booking += [transactions / booked, syncs / booked, database_cpu / booked * 1e6,
                    server_cpu / booked * 1e6]
    return rate, size + (warmed + booked / 2) / len(slots), shares, per_booking


def scraped(port):
    """The server's stale copies, commits, copies read whole, and copies
    brought up by their changes (by bookings, and by its event follower)
    so far, from its metrics."""
    text = request(port, "GET", "/metrics")[1].decode()
    def value(name):
        found = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M)
        return float(found.group(1)) if found else 0.0
    return (value("opd_postgres_stale_copies_total"), value("opd_storage_commit_batch_size_count"),
            value("opd_postgres_copy_reads_total"), value("opd_postgres_copy_refreshes_total"),
            value("opd_postgres_follower_copy_refreshes_total"))


def main():
    if not URL:
        die("set DATABASE_URL to a PostgreSQL on this machine")
    host = urllib.parse.urlparse(URL.split(",")[0]).hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1"):
        die("DATABASE_URL must point at this machine")
    if not os.access(BIN, os.X_OK):
        die(f"build first: {BIN} is missing")
    if not shutil.which("pgbench"):
        die("pgbench is missing (Debian: apt-get install postgresql-15)")
    modes = [("lock-first", False, 1), ("lock-first x2", False, 2), ("one-call", True, 1),
             ("one-call x2", True, 2)]
    references = [("pgbench 1/call", 1), (f"pgbench {GROUP}/call", GROUP)]
    chosen = [name.strip() for name in os.environ.get("MODES", "").split(",") if name.strip()]
    if chosen:
        known = [mode[0] for mode in modes] + [reference[0] for reference in references]
        unknown = [name for name in chosen if name not in known]
        if unknown:
            die(f"unknown modes {unknown}; known: {known}")
        modes = [mode for mode in modes if mode[0] in chosen]
        references = [reference for reference in references if reference[0] in chosen]
    results = {}
    for size in SIZES:
        for name, one_call, instances in modes:
            schema = filled_schema(size, name)
            rate, mean, (server, client, rest), (stale, commits, reads, refreshes, followed, transactions, syncs,
             database_us, server_us) = measure(
                schema, size, one_call, instances)
            results[(size, name)] = rate
            psql(f"DROP SCHEMA {schema} CASCADE")
            print(f"{size:>6} tokens per slot (mean {mean:6.0f} during the run)  "
                  f"{name:<13} {rate:8.0f} bookings/s  CPU: servers {server:4.0%}, "
                  f"client {client:4.0%}, rest {rest:4.0%}; per booking: {stale:.2f} stale, "
                  f"{reads:.2f} copy reads, {refreshes:.2f} refreshes ({followed:.2f} by the follower), "
                  f"{commits:.2f} commits; database: "
                  f"{transactions:.2f} transactions, {syncs:.2f} log syncs; CPU µs per booking: "
                  f"database {database_us:.0f}, servers {server_us:.0f}", flush=True)
        for name, group in references:
            schema = filled_schema(size, name)
            rate = pgbench(schema, size, group)
            results[(size, name)] = rate
            psql(f"DROP SCHEMA {schema} CASCADE")
            shown = "-" if rate is None else f"{rate:8.0f} bookings/s"
            print(f"{size:>6} tokens per slot                          {name:<13} {shown}",
                  flush=True)
    print()
    print(f"{CLIENTS} connections, {SECONDS:.0f} s per mode; bookings/s by tokens per slot "
          f"({' '.join(str(size) for size in SIZES)})")
    shown = lambda rate: "       -" if rate is None else f"{rate:8.0f}"
    for name in [mode[0] for mode in modes] + [reference[0] for reference in references]:
        line = "  ".join(shown(results[(size, name)]) for size in SIZES)
        print(f"{name:<14} {line}")
    ratio = lambda a, b: "-" if not a or not b else f"{a / b:.2f}x"
    if len(SIZES) == 2:
        small, large = SIZES
        for name, _, _ in modes:
            print(f"{name:<13} {large} / {small}: "
                  f"{ratio(results[(large, name)], results[(small, name)])}")
    for size in SIZES:
        get = lambda name: results.get((size, name))
        print(f"{size:>6} tokens: one-call {ratio(get('one-call'), get('lock-first'))} "
              f"lock-first; two instances {ratio(get('lock-first x2'), get('lock-first'))} "
              f"one lock-first, {ratio(get('one-call x2'), get('one-call'))} one one-call")
        print(f"{size:>6} tokens: one-call {ratio(get('one-call'), get('pgbench 1/call'))} "
              f"pgbench 1/call; lock-first {ratio(get('lock-first'), get('pgbench 1/call'))}; "
              f"pgbench {GROUP}/call {ratio(get(f'pgbench {GROUP}/call'), get('lock-first'))} "
              f"lock-first")


if __name__ == "__main__":
    main()
