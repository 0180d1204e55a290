#!/usr/bin/env python3
"""What one operation costs Tessera and its PostgreSQL: the measurements behind docs/SCALING.md.

    scripts/scaling.py                 # needs target/release/{tessera,tessera-bench}

For each operation (register, login, verify of a session this instance has not seen yet, verify
of a known session, refresh one at a time and under load, logout) it reports, per operation:
Tessera's CPU time, PostgreSQL's CPU time, statements and transactions, rows inserted, updated
and deleted, WAL records, bytes and full-page images, and WAL flushes; and the memory a session
takes in the liveness cache (RSS growth per session as 20,000 and then 40,000 sessions are
touched). Counts do not depend on how busy the machine is; CPU times a little.

It starts a PostgreSQL cluster of its own (initdb into target/scaling-pg, port SCALE_PG_PORT,
default 5433, `pg_stat_statements` preloaded), so that the WAL and the statements it counts are
Tessera's alone and not those of other databases on the shared server. Only 127.0.0.1 is used;
every load run is bounded in time. Results: target/scaling-<time>/ (report.md, raw.json).
"""

import glob
import http.client
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESSERA = os.path.join(ROOT, "target/release/tessera")
BENCH = os.path.join(ROOT, "target/release/tessera-bench")
PG_PORT = int(os.environ.get("SCALE_PG_PORT", "5433"))
PG_DIR = os.path.join(ROOT, "target/scaling-pg")
PG_URL = f"postgres://postgres@127.0.0.1:{PG_PORT}"
DB = "tessera_scale"
PORT = int(os.environ.get("SCALE_PORT", "18090"))
TICKS = os.sysconf("SC_CLK_TCK")
PASSWORD = "correct horse battery staple"


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def as_postgres(*args):
    """Runs a PostgreSQL server program as the `postgres` user when we are root."""
    if os.geteuid() == 0:
        return sh("runuser", "-u", "postgres", "--", *args)
    return sh(*args)


def psql(sql, db=DB):
    return sh("psql", f"{PG_URL}/{db}", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql).strip()


def start_cluster():
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bins:
        sys.exit("no PostgreSQL server programs under /usr/lib/postgresql/*/bin")
    bin_dir = bins[-1]
    data = os.path.join(PG_DIR, "data")
    if not os.path.isdir(data):
        os.makedirs(PG_DIR, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(PG_DIR, "postgres")
        as_postgres(f"{bin_dir}/initdb", "-D", data, "-A", "trust", "-U", "postgres")
    ready = subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(PG_PORT)])
    if ready.returncode != 0:
        # The shared cluster's own settings where they matter (shared_buffers, durability).
        options = (
            f"-p {PG_PORT} -k {PG_DIR} -c listen_addresses=127.0.0.1 "
            "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=top "
            "-c shared_buffers=128MB -c synchronous_commit=on -c max_wal_size=1GB"
        )
        as_postgres(f"{bin_dir}/pg_ctl", "-D", data, "-l", os.path.join(PG_DIR, "log"), "-o", options, "-w", "start")
    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", db="postgres")
    psql(f"CREATE DATABASE {DB}", db="postgres")
    psql("CREATE EXTENSION pg_stat_statements")
    # The postmaster writes its pid first in postmaster.pid. (A backend's parent read from
    # /proc raced with that backend exiting once psql had disconnected.)
    with open(os.path.join(data, "postmaster.pid")) as f:
        return f.readline().strip()


def proc_cpu(pid, children=False):
    """CPU seconds of a process (and of its reaped children)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    # After the ")": state is field 3 of stat(5); utime 14, stime 15, cutime 16, cstime 17.
    used = int(fields[11]) + int(fields[12])
    if children:
        used += int(fields[13]) + int(fields[14])
    return used / TICKS


def cluster_cpu(postmaster):
    """The cluster's CPU: the postmaster, its live children, and the children it reaped."""
    total = proc_cpu(postmaster, children=True)
    for task in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(task) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[1] == str(postmaster):
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Server:
    def __init__(self, out):
        self.log = open(os.path.join(out, "tessera.log"), "w")
        env = dict(
            os.environ,
            TESSERA_DATABASE_URL=f"{PG_URL}/{DB}?sslmode=disable",
            TESSERA_LISTEN=f"127.0.0.1:{PORT}",
            TESSERA_LOGIN_RATE="0",
            TESSERA_REFRESH_RATE="0",
            TESSERA_MAX_SESSIONS="100000",
        )
        env.pop("RUST_LOG", None)  # the default configuration
        self.proc = subprocess.Popen([TESSERA, "serve"], env=env, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on"):
            sys.exit(f"tessera did not start: {line!r}; see {self.log.name}")
        time.sleep(1)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Client:
    """One keep-alive connection, as a browser tab or an app would hold."""

    def __init__(self):
        self.conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)

    def call(self, method, path, body=None, token=None, expect=200):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        payload = json.dumps(body) if body is not None else None
        try:
            self.conn.request(method, path, body=payload, headers=headers)
            r = self.conn.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # The server closed the connection while it sat idle between steps: reconnect.
            self.conn.close()
            self.conn.request(method, path, body=payload, headers=headers)
            r = self.conn.getresponse()
        data = r.read()
        if r.status != expect:
            raise RuntimeError(f"{method} {path}: {r.status} {data[:200]!r}")
        return json.loads(data) if data else None


def db_counters():
    row = psql(
        "SELECT pg_current_wal_lsn() - '0/0', d.xact_commit + d.xact_rollback, d.tup_inserted, "
        "d.tup_updated, d.tup_deleted, w.wal_records, w.wal_fpi, w.wal_sync, "
        "(SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s "
        "  WHERE s.dbid = d.datid AND s.query NOT ILIKE '%pg_stat%' AND s.query NOT ILIKE '%pg_current_wal%') "
        f"FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = '{DB}'"
    ).split("|")
    keys = ["wal_bytes", "transactions", "rows_inserted", "rows_updated", "rows_deleted", "wal_records", "wal_fpi", "wal_flushes", "statements"]
    return dict(zip(keys, (float(v) for v in row)))


def statements():
    rows = psql(
        "SELECT calls, rows, wal_bytes, left(regexp_replace(query, '\\s+', ' ', 'g'), 110) FROM pg_stat_statements s "
        f"JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '{DB}' AND query NOT ILIKE '%pg_stat%' "
        "AND query NOT ILIKE '%pg_current_wal%' ORDER BY calls DESC LIMIT 12"
    )
    return [line.split("|", 3) for line in rows.splitlines() if line]


def measure(name, ops_hint, action, server, postmaster, results):
    # Counts still held by idle backends (see below) go to the step they belong to.
    time.sleep(11)
    psql("SELECT pg_stat_statements_reset()")
    before = db_counters()
    cpu_t, cpu_pg = proc_cpu(server.proc.pid), cluster_cpu(postmaster)
    n = action()
    cpu_t, cpu_pg = proc_cpu(server.proc.pid) - cpu_t, cluster_cpu(postmaster) - cpu_pg
    # A backend that went idle less than a second after its last report holds its counts for
    # 10 s (PostgreSQL 15's PGSTAT_IDLE_INTERVAL); with 1.5 s here, the rotation batches' own
    # connection, busy to the end, left a fifth of a run's rows uncounted.
    time.sleep(11)
    after = db_counters()
    per_op = {k: (after[k] - before[k]) / n for k in after}
    per_op["tessera_cpu_us"] = cpu_t / n * 1e6
    per_op["postgres_cpu_us"] = cpu_pg / n * 1e6
    results[name] = {"ops": n, "per_op": per_op, "statements": statements(), "note": ops_hint}
    p = per_op
    print(
        f"{name:28} n={n:6}  tessera {p['tessera_cpu_us']:7.1f} us  postgres {p['postgres_cpu_us']:7.1f} us  "
        f"stmts {p['statements']:.2f}  xacts {p['transactions']:.2f}  ins/upd/del {p['rows_inserted']:.2f}/"
        f"{p['rows_updated']:.2f}/{p['rows_deleted']:.2f}  WAL {p['wal_bytes']:.0f} B {p['wal_records']:.1f} rec "
        f"{p['wal_fpi']:.2f} fpi  flushes {p['wal_flushes']:.2f}",
        flush=True,
    )


def bench_run(scenario, conc, secs, out):
    r = subprocess.run(
        [BENCH, "run", "--url", f"http://127.0.0.1:{PORT}", "--scenario", scenario, "-c", str(conc), "-d", str(secs), "--warmup", "0", "--json"],
        capture_output=True, text=True,
    )
    with open(os.path.join(out, f"bench-{scenario}.txt"), "w") as f:
        f.write(r.stdout + r.stderr)
    result = json.loads(r.stdout.strip().splitlines()[-1])
    if result.get("error_total"):
        sys.exit(f"tessera-bench {scenario}: errors {result['errors']}")
    return result


def main():
    for binary in (TESSERA, BENCH):
        if not os.access(binary, os.X_OK):
            sys.exit(f"{binary} missing: cargo build --release -p tessera -p tessera-bench")
    out = os.path.join(ROOT, "target", time.strftime("scaling-%Y%m%dT%H%M%SZ", time.gmtime()))
    os.makedirs(out)
    postmaster = start_cluster()
    server = Server(out)
    results = {}
    users = 300
    client = Client()
    emails = [f"scale-{i}@example.com" for i in range(users)]

    def register():
        for email in emails:
            client.call("POST", "/v1/auth/register", {"email": email, "password": PASSWORD}, expect=201)
        return users

    grants = []

    def login():
        for email in emails:
            grants.append(client.call("POST", "/v1/auth/login", {"email": email, "password": PASSWORD}))
        return users

    def verify_first():
        for g in grants:
            client.call("GET", "/v1/auth/me", token=g["access_token"])
        return len(grants)

    def verify_known():
        n = 0
        for _ in range(20):
            for g in grants:
                client.call("GET", "/v1/auth/me", token=g["access_token"])
                n += 1
        return n

    def refresh_one_at_a_time():
        n = 0
        for _ in range(10):
            for g in grants:
                fresh = client.call("POST", "/v1/auth/refresh", {"refresh_token": g["refresh_token"]})
                g.update(fresh)
                n += 1
        return n

    def logout():
        for g in grants:
            client.call("POST", "/v1/auth/logout", {"refresh_token": g["refresh_token"]}, expect=204)
        return len(grants)

    def refresh_under_load():
        # 32 clients back to back for 8 s; their setup (32 registrations and logins) is
        # counted too, under 0.5 % of the operations.
        return bench_run("refresh", 32, 8, out)["ok"]

    def verify_under_load():
        return bench_run("verify", 32, 8, out)["ok"]

    measure("register", "sequential", register, server, postmaster, results)
    measure("login", "sequential", login, server, postmaster, results)
    # The logins above put their sessions in this instance's memory: a restart empties it, so
    # the first verify of each session reads the database once.
    server.stop()
    server = Server(out)
    client = Client()
    measure("verify, session not in memory", "sequential", verify_first, server, postmaster, results)
    measure("verify, session in memory", "sequential", verify_known, server, postmaster, results)
    measure("refresh, one at a time", "sequential", refresh_one_at_a_time, server, postmaster, results)
    measure("logout", "sequential", logout, server, postmaster, results)
    measure("refresh, 32 clients", "tessera-bench, c=32, 8 s", refresh_under_load, server, postmaster, results)
    measure("verify, 32 clients", "tessera-bench, c=32, 8 s", verify_under_load, server, postmaster, results)
    server.stop()

    # Memory per remembered session: seed sessions, then touch 20,000 and 40,000 of them.
    tokens = os.path.join(out, "tokens.jsonl")
    sh(BENCH, "seed", "--database-url", f"{PG_URL}/{DB}?sslmode=disable", "--users", "40000", "--sessions", "40000",
       "--emit", "40000", "--emit-tokens", tokens, "--quiet")
    with open(tokens) as f:
        seeded = [json.loads(line) for line in f if line.strip()]
    server = Server(out)
    client = Client()
    rss = [rss_kib(server.proc.pid)]
    for half in (seeded[:20000], seeded[20000:]):
        for s in half:
            fresh = client.call("POST", "/v1/auth/refresh", {"refresh_token": s["refresh_token"]})
            client.call("GET", "/v1/auth/me", token=fresh["access_token"])
        rss.append(rss_kib(server.proc.pid))
    server.stop()
    per_session = (rss[2] - rss[1]) * 1024 / 20000
    results["memory"] = {"rss_kib": rss, "bytes_per_session_second_20k": per_session}
    print(f"RSS after 0 / 20k / 40k sessions touched: {rss} KiB; {per_session:.0f} B per session (second 20k)")
    with open(os.path.join(out, "raw.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"results in {out}")


if __name__ == "__main__":
    main()
