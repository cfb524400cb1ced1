"""`make capacity` (and the capacity part of `make bench`): how many streamed replies chatsite holds at once.

    .venv/bin/python bench/capacity.py                      # every server, N = 100 ... 2,000
    .venv/bin/python bench/capacity.py --servers uvicorn --n 100,250

For each server of SERVERS and each N: N users, each with one new chat, each open one streamed
send; the sends start evenly over RAMP seconds. The upstream (bench/capacity_upstream.py)
answers each with 50 pieces 200 ms apart, every piece the time it was written. The load
client (bench/capacity_client.py, a process of its own) times the first byte and each piece;
meanwhile this process probes /health/, counts PostgreSQL connections and sums the workers'
memory, every 100 ms. Then the database is checked: every reply of the run complete with the
text the client got and the upstream sent, every reservation settled.

Every N runs on a freshly started server (2 workers, production settings) and its own upstream,
which are stopped, process group and all, before the next; replies left `generating` are ended.
The database is CAPACITY_DATABASE_URL, by default BENCH_DATABASE_URL's server with the database
`chatsite_bench_capacity` (created and migrated here; the 1M-row data set is not needed).
The results replace the capacity section of BENCHMARKS.md; the figures of servers this run did
not measure are kept from bench/.work/capacity.json when an earlier run left them there.
"""
# ruff: noqa: E402

import argparse
import contextlib
import http.client
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import common

URL = common.setup(common.own_database_url("chatsite_bench_capacity", override="CAPACITY_DATABASE_URL"))

import psutil
import psycopg
import requests
from django.db import connections

from bench.common import Process, nearest_rank
from bench.fixtures import People, end_leftovers, new_chats, prepare, sends_for
from billing.models import UsageEvent
from chatsite.testing.appserver import free_port, production_env
from sessions_app.models import ChatMessage

SECTION = common.CAPACITY_SECTION
NS = [100, 250, 500, 750, 1000, 2000]
RAMP = 5.0  # seconds over which the N sends start
AFTER_LAST_START = 60.0  # a send still open this long after the last one started is cut
PIECES, PIECE_DELAY = 50, 0.2
WORKERS = 2
WARM_UPS = 8
PROBE_EVERY = 0.1
STORE = common.WORK / "capacity.json"
# The thread-based server of today (gunicorn gthread, chatsite.wsgi): its code is run from this
# commit, in a temporary git worktree, so it stays comparable once this tree serves ASGI.
THREADS_COMMIT = "2da7eca"
# The server chatsite is served with (`make serve`, README): the one SPEC 8's summary judges.
PRODUCTION = "uvicorn"
TARGETS = {  # SPEC 8, on 2 cores with 2 workers
    "first_byte_p95": 1000.0,  # ms
    "piece_p95": 100.0,  # ms
    "health_worst": 500.0,  # ms
    "pg_peak": 40,
    "rss_peak": 2**30,  # bytes, all workers together
}


@dataclass(frozen=True)
class Server:
    """How to start one server: {python} and {port} are filled in; `commit` runs that commit's tree."""

    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    commit: str | None = None


SERVERS = {
    "threads": Server(
        ["{python}", "-m", "gunicorn", "-c", "gunicorn.conf.py", "chatsite.wsgi"],
        env={"GUNICORN_WORKERS": str(WORKERS), "GUNICORN_THREADS": "32"},
        commit=THREADS_COMMIT,
    ),
    # What `make serve` runs: gunicorn.conf.py, uvicorn workers (chatsite.workers) on uvloop and httptools.
    "uvicorn": Server(
        ["{python}", "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        env={"GUNICORN_WORKERS": str(WORKERS)},
    ),
    # uvloop as uvicorn uses; a backlog (and so a per-worker backpressure of backlog / workers)
    # above the largest N, so that granian's defaults (1,024 and 512) do not cap the run.
    "granian": Server(
        ["{python}", "-m", "granian", "--interface", "asgi", "--workers", str(WORKERS), "--host", "127.0.0.1",
         "--port", "{port}", "--loop", "uvloop", "--backlog", "8192", "--log-level", "warning",
         "chatsite.asgi:application"],
    ),
}  # fmt: skip


# The source tree a server runs from.


@contextlib.contextmanager
def source_tree(commit: str | None):
    """This tree, or `commit` checked out in a temporary git worktree (removed after)."""
    if commit is None:
        yield ROOT
        return
    git = shutil.which("git")
    if git is None:
        raise Skip("git is not installed")
    folder = Path(tempfile.mkdtemp(prefix="chatsite-capacity-"))
    tree = folder / commit
    try:
        subprocess.run([git, "-C", str(ROOT), "worktree", "add", "--detach", str(tree), commit],
                       check=True, capture_output=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        detail = exc.stderr.decode(errors="replace").strip() if isinstance(exc, subprocess.CalledProcessError) else exc
        raise Skip(f"no git worktree of commit {commit}: {detail}") from None
    try:
        yield tree
    finally:
        subprocess.run([git, "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
        shutil.rmtree(folder, ignore_errors=True)


class Skip(Exception):
    """A server this run cannot start, with why."""


# Measuring while the load runs.


class Monitor:
    """Every PROBE_EVERY s, in threads of this process: /health/, PostgreSQL connections, worker memory."""

    def __init__(self, *, port: int, server: Process, database: str) -> None:
        self.port, self.server, self.database = port, server, database
        self.health: list[tuple[float, bool]] = []  # (ms, answered 200)
        self.connections: list[int] = []
        self.rss: list[int] = []
        self.stopping = threading.Event()
        # Connected now, to the `postgres` database, so it is neither refused nor counted later.
        self.pg = psycopg.connect(urlunsplit(urlsplit(URL)._replace(path="/postgres")), autocommit=True)
        # PostgreSQL's limit is the whole server's: what other databases hold is not the server's to use.
        self.others, self.limit = self.pg.execute(
            "SELECT count(*) FILTER (WHERE datname IS DISTINCT FROM %s AND backend_type = 'client backend'"
            " AND pid <> pg_backend_pid()),"
            " current_setting('max_connections')::int FROM pg_stat_activity",
            [database],
        ).fetchone()
        self.threads = [threading.Thread(target=self._every, args=(what,), daemon=True)
                        for what in (self._probe, self._count, self._memory)]  # fmt: skip
        # Listing a process tree reads all of /proc: done once, and again only if a worker went.
        self.workers = server.workers()
        self.cpu_before = self._worker_cpu()
        self.postgres_before = postgres_cpu()

    def __enter__(self) -> "Monitor":
        psutil.cpu_percent()  # starts the machine's count
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.machine_cpu = psutil.cpu_percent()
        self.worker_cpu = sum(self._worker_cpu().values()) - sum(self.cpu_before.values())
        self.postgres_cpu = postgres_cpu() - self.postgres_before
        self.stopping.set()
        for thread in self.threads:
            thread.join()
        self.pg.close()

    def _every(self, what) -> None:
        due = time.monotonic()
        while not self.stopping.is_set():
            what()
            due += PROBE_EVERY
            self.stopping.wait(max(0.0, due - time.monotonic()))
            due = max(due, time.monotonic() - PROBE_EVERY)  # after a slow probe, go on from now

    def _probe(self) -> None:
        # A new connection each time, as a load balancer's health check makes.
        started = time.perf_counter()
        ok = False
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            connection.request("GET", "/health/")
            response = connection.getresponse()
            response.read()
            ok = response.status == 200
            connection.close()
        except OSError:
            pass
        self.health.append(((time.perf_counter() - started) * 1000, ok))

    def _count(self) -> None:
        row = self.pg.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [self.database]).fetchone()
        self.connections.append(row[0])

    def _memory(self) -> None:
        try:
            self.rss.append(sum(worker.memory_info().rss for worker in self.workers))
        except psutil.Error:
            self.workers = self.server.workers()

    def _worker_cpu(self) -> dict[int, float]:
        seconds = {}
        for worker in self.server.workers():
            with contextlib.suppress(psutil.Error):
                times = worker.cpu_times()
                seconds[worker.pid] = times.user + times.system
        return seconds


def postgres_cpu() -> float:
    """The CPU seconds of PostgreSQL on this machine so far: its processes, and the backends that have ended."""
    processes = {p.pid: p for p in psutil.process_iter(["name", "ppid"]) if p.info["name"] == "postgres"}
    seconds = 0.0
    for process in processes.values():
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            seconds += times.user + times.system
            if process.info["ppid"] not in processes:  # the postmaster: its ended children count as its own
                seconds += times.children_user + times.children_system
    return seconds


# One run: one server, N sends.


def run_client(plan: dict, name: str) -> dict:
    plan_path, results_path = common.WORK / f"{name}-plan.json", common.WORK / f"{name}-results.json"
    plan_path.write_text(json.dumps(plan))
    results_path.unlink(missing_ok=True)
    command = [sys.executable, str(ROOT / "bench" / "capacity_client.py"), str(plan_path), str(results_path)]
    with open(common.WORK / f"{name}-client.log", "wb") as log:
        subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False,
                       timeout=plan["deadline"] + 120)  # fmt: skip
    if not results_path.exists():
        raise RuntimeError(f"the load client wrote no results; see bench/.work/{name}-client.log")
    return json.loads(results_path.read_text())


def run_one(name: str, server: Server, tree: Path, n: int, people: People, *, ramp: float, cut_after: float) -> dict:
    """Start the upstream and the server, warm up, load with N sends, stop them, check the database."""
    label = f"{name}-{n}"
    print(f"capacity: {name}, N = {n} ...", flush=True)
    leftovers = end_leftovers()
    chats = new_chats(people, people.users[:n])
    warm_chats = new_chats(people, people.warm_users)

    upstream_port, port = free_port(), free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    upstream_command = [sys.executable, str(ROOT / "bench" / "capacity_upstream.py"), "--port", str(upstream_port),
                        "--pieces", str(PIECES), "--delay", str(PIECE_DELAY)]  # fmt: skip
    upstream = Process(f"capacity-{label}-upstream", upstream_command, cwd=ROOT, env=dict(os.environ))
    env = production_env(
        common.WORK / "media", SECRET_KEY=os.environ["SECRET_KEY"], AI_BASE_URL=f"{upstream_url}/v1",
        AI_API_KEY="capacity-bench", GUNICORN_BIND=f"127.0.0.1:{port}", **server.env,
    )  # fmt: skip
    command = [part.format(python=sys.executable, port=port) for part in server.command]
    app = Process(f"capacity-{label}-server", command, cwd=tree, env=env)
    started_at = datetime.now(UTC)
    try:
        upstream.start()
        upstream.wait_ready(f"{upstream_url}/v1/models", 10)
        app.start()
        app.wait_ready(f"http://127.0.0.1:{port}/health/ready/")
        # Warm-up: imports, connections and caches in each worker; the upstream answers at once.
        warm_sends = sends_for(people, people.warm_users, warm_chats, "warm-up")
        warm = run_client({"port": port, "ramp": 0.5, "deadline": 30, "sends": warm_sends}, f"capacity-{label}-warm")
        warm_ok = sum(r["outcome"] == "done" for r in warm["results"])
        upstream_before = requests.get(f"{upstream_url}/stats?reset", timeout=5).json()  # the warm-up not counted
        plan = {"port": port, "ramp": ramp, "deadline": ramp + cut_after,
                "sends": sends_for(people, people.users[:n], chats, f"capacity {name} N={n}")}  # fmt: skip
        connections.close_all()  # this process holds no connection to the database while it is measured
        load_before = os.getloadavg()[0]
        with Monitor(port=port, server=app, database=urlsplit(URL).path.lstrip("/")) as monitor:
            client = run_client(plan, f"capacity-{label}")
        # Replies whose stream broke may still run; give them their time before the server stops.
        settle_by = time.monotonic() + 20
        while (ChatMessage.objects.filter(session_id__in=chats, status=ChatMessage.Status.GENERATING).exists()
               and time.monotonic() < settle_by):  # fmt: skip
            time.sleep(0.5)
        upstream_after = requests.get(f"{upstream_url}/stats", timeout=5).json()
        sent = requests.get(f"{upstream_url}/sent", timeout=30).json()
    finally:
        app.stop()
        upstream.stop()
    database = check_database(chats, client["results"], sent)
    ended = end_leftovers()
    assert not ChatMessage.objects.filter(status=ChatMessage.Status.GENERATING).exists()
    return figures(
        n=n, client=client, monitor=monitor, database=database, sent=sent, upstream=(upstream_before, upstream_after),
        notes={"started_at": started_at.isoformat(), "warm_ok": f"{warm_ok}/{len(warm['results'])}",
               "leftovers_before": leftovers, "ended_after": ended, "load_before": load_before, "ramp": ramp,
               "cut_after": cut_after},
    )  # fmt: skip


def check_database(chats: list[int], results: list[dict], sent: dict) -> dict:
    """Per chat: the reply as saved and its usage; and which sends are exact everywhere."""
    replies = {
        row["session_id"]: row
        for row in ChatMessage.objects.filter(session_id__in=chats, message_type=ChatMessage.Type.ASSISTANT).values(
            "session_id", "status", "content", "message_id"
        )
    }
    usage = dict(UsageEvent.objects.filter(session_id__in=chats).values_list("session_id", "state"))
    exact = 0
    for result in results:
        reply, upstream = replies.get(result["chat"]), sent.get(result["message"], {})
        text = result.get("text", "")
        result["exact"] = (
            result["outcome"] == "done" and result.get("done_status") == "complete"
            and len(text) == 20 * PIECES and len(result.get("delays_ms", [])) == PIECES
            and upstream.get("complete") and upstream.get("text") == text and result.get("reply_text") == text
            and reply is not None and reply["status"] == ChatMessage.Status.COMPLETE and reply["content"] == text
            and usage.get(result["chat"]) == UsageEvent.State.SETTLED
        )  # fmt: skip
        exact += result["exact"]
    return {
        "exact": exact,
        "replies": dict(Counter(row["status"] for row in replies.values())),
        "usage": dict(Counter(usage.values())),
        "chats_without_reply": len(chats) - len(replies),
    }


def figures(*, n, client, monitor, database, sent, upstream, notes) -> dict:
    results = client["results"]
    # Only a reply's first byte counts: an error answered at once is no reply.
    first = [r["first_byte_ms"] if r["status"] == 200 and "first_byte_ms" in r else math.inf for r in results]
    first += [math.inf] * client["not_started"]
    delays = [d for r in results for d in r.get("delays_ms", [])]
    health = [ms if ok else math.inf for ms, ok in monitor.health]
    before, after = upstream
    wall = client["wall_seconds"]
    row = {
        "n": n,
        "completed": database["exact"],
        "first_byte_p50": nearest_rank(first, 0.5),
        "first_byte_p95": nearest_rank(first, 0.95),
        "piece_p50": nearest_rank(delays, 0.5),
        "piece_p95": nearest_rank(delays, 0.95),
        "piece_max": max(delays, default=math.nan),
        "health_worst": max(health, default=math.nan),
        "health_failed": sum(not ok for _, ok in monitor.health),
        "health_probes": len(monitor.health),
        "pg_peak": max(monitor.connections, default=0),
        "rss_peak": max(monitor.rss, default=0),
        "outcomes": dict(Counter(r["outcome"] for r in results)),
        "database": database,
        "client_cpu": client["cpu_seconds"] / wall,
        "client_lag_max": client["loop_lag_max_ms"],
        "client_lag_p99": client["loop_lag_p99_ms"],
        "worker_cpu": monitor.worker_cpu / wall,
        "worker_ms_per_reply": 1000 * monitor.worker_cpu / n,
        "postgres_cpu": monitor.postgres_cpu / wall,
        "postgres_ms_per_reply": 1000 * monitor.postgres_cpu / n,
        "upstream_cpu": (after["cpu_seconds"] - before["cpu_seconds"]) / wall,
        "upstream_late_p95": after["late_p95_ms"],
        "upstream_peak": after["peak"],
        "machine_cpu": monitor.machine_cpu,
        "pg_others": monitor.others,
        "pg_limit": monitor.limit,
        "wall": wall,
        **notes,
    }
    row["met"] = verdicts(row)
    return row


def verdicts(row: dict) -> dict[str, bool]:
    return {
        "completed": row["completed"] == row["n"],
        "first_byte": row["first_byte_p95"] <= TARGETS["first_byte_p95"],
        "piece": row["piece_p95"] <= TARGETS["piece_p95"],
        "health": row["health_worst"] <= TARGETS["health_worst"],
        "pg": row["pg_peak"] <= TARGETS["pg_peak"],
        "rss": row["rss_peak"] <= TARGETS["rss_peak"],
    }


# The section of BENCHMARKS.md.


def ms(value: float) -> str:
    if value != value:
        return "–"
    if value == math.inf:
        return "never"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def largest(rows: list[dict]) -> str:
    met = [row["n"] for row in rows if all(row["met"].values())]
    if not met:
        return "none of N = " + ", ".join(f"{row['n']:,}" for row in rows)
    best = max(met)
    failed_below = [row["n"] for row in rows if row["n"] < best and not all(row["met"].values())]
    return f"{best:,}" + (f" (but not {', '.join(f'{n:,}' for n in failed_below)})" if failed_below else "")


def command_line(name: str) -> str:
    server = SERVERS[name]
    line = " ".join(part.replace("{python}", "python").replace("{port}", "PORT") for part in server.command)
    env = " ".join(f"{k}={v}" for k, v in server.env.items())
    where = f", from commit `{server.commit}`" if server.commit else ""
    return f"`{env + ' ' if env else ''}{line}`{where}"


def run_notes(row: dict, *, ramp: float, cut_after: float) -> list[str]:
    db = row["database"]
    notes = [
        f"measured {row['started_at'][:16].replace('T', ' ')} UTC, 1-minute load average {row['load_before']:.1f}"
        " before",
        f"outcomes {json.dumps(row['outcomes'])}",
        f"database: replies {json.dumps(db['replies'])}, usage {json.dumps(db['usage'])},"
        f" {db['chats_without_reply']} chats without a reply, {row['ended_after']} replies ended after the server"
        " stopped",
        f"/health/: {row['health_failed']} of {row['health_probes']} probes failed",
        f"PostgreSQL: max_connections {row['pg_limit']}, {row['pg_others']} held by other work when the run began",
        f"CPU in cores over the run: workers {row['worker_cpu']:.2f}"
        f" ({row['worker_ms_per_reply']:.1f} ms a reply), PostgreSQL {row.get('postgres_cpu', math.nan):.2f}"
        f" ({row.get('postgres_ms_per_reply', math.nan):.1f} ms a reply), load client {row['client_cpu']:.2f}"
        " (its loop"
        f" late by {ms(row['client_lag_p99'])} ms p99, {ms(row['client_lag_max'])} ms at most), upstream"
        f" {row['upstream_cpu']:.2f} (its timers {ms(row['upstream_late_p95'])} ms late p95), the machine"
        f" {row['machine_cpu'] / 100 * 2:.2f} of 2",
        f"the slowest piece {ms(row['piece_max'])} ms",
    ]
    if row["warm_ok"].split("/")[0] != row["warm_ok"].split("/")[1]:
        notes.append(f"warm-up sends done: only {row['warm_ok']}")
    if row.get("ramp", ramp) != ramp:
        notes.append(f"ramp {row['ramp']:g} s")
    if row.get("cut_after", cut_after) != cut_after:
        notes.append(f"cut {row['cut_after']:g} s after the last start")
    return notes


def section(store: dict, *, ramp: float, cut_after: float) -> str:
    names = [name for name in SERVERS if name in store]
    ns = sorted({row["n"] for name in names for row in store[name]["rows"]})
    lines = [
        SECTION,
        "",
        f"`make capacity` (part of `make bench`), {store['_written']} UTC. {store['_machine']}.",
        "",
        f"**How it runs.** For each N: N users, each with one new chat, each open one streamed send"
        f' (`POST /api/chat-sessions/{{id}}/send/` with `"stream": true`) on a connection of its own.'
        f" *At once* means the N sends start evenly over {ramp:g} s (send i at {ramp:g}·i/N s): every"
        f" reply lasts 10 s, so from {ramp:g} s to 10 s all N replies are in flight together. Firing all N"
        f" in the same millisecond would time the accept queue of a 2-core machine rather than what"
        f" it holds. A send still open {cut_after:g} s after the last start is cut. The upstream"
        f" (`bench/capacity_upstream.py`, asyncio) answers each with {PIECES} pieces"
        f" {PIECE_DELAY * 1000:g} ms apart, each piece the time it was written. The load client"
        f" (`bench/capacity_client.py`, asyncio on uvloop, a process of its own) and everything else"
        f" share the machine's cores with the server and PostgreSQL. The run begins on a database"
        f" cleared of what earlier runs left (their chats, messages, usage and sign-ins: each run adds"
        f" thousands, and PostgreSQL's autovacuum went through a million of them during a later run"
        f" before it was cleared). Each N runs on a freshly started"
        f" server ({WORKERS} workers, production settings) after {WARM_UPS} warm-up sends, and ends with"
        f" the server stopped and any reply still `generating` ended.",
        "",
        "Servers:",
        *[f"- **{name}**: {command_line(name)}" for name in names],
        "",
        "Columns: *completed*: sends whose streamed text is exactly the 50 stamps the upstream sent, that"
        " ended with `done` (status complete), and whose reply the database holds `complete` with that"
        " text and its usage `settled`. *first byte*: from opening the connection to the first body byte"
        " (the `user_message` event) of a 200 answer, over all N sends; a send answered with an error"
        " or not at all counts as endless."
        " *piece*: when a piece reached the client less the time stamped in it, over every piece received."
        f" */health/*: the slowest GET /health/, a new connection every {PROBE_EVERY * 1000:g} ms during the"
        f" run (*never*: one got no answer). *PG*: the most connections to the database at once"
        f" (`pg_stat_activity` every {PROBE_EVERY * 1000:g} ms). *RSS*: the most resident memory of all"
        " workers together (the master process not counted; shared pages count in each worker).",
        "Targets (SPEC 8): all complete and settled, first byte p95 ≤ 1 s, piece p95 ≤ 100 ms,"
        " /health/ ≤ 500 ms, ≤ 40 PostgreSQL connections, ≤ 1 GiB. Percentiles are nearest-rank.",
        "",
        "| N | server | completed | first byte p50 / p95 ms | piece p50 / p95 ms | /health/ worst ms"
        " | PG | RSS MiB | every target |",
        "|---:|---|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for n in ns:
        for name in names:
            row = next((r for r in store[name]["rows"] if r["n"] == n), None)
            if row is None:
                skipped = store[name].get("skipped", {}).get(str(n))
                if skipped:
                    lines.append(f"| {n:,} | {name} | skipped: {skipped} | | | | | | |")
                continue
            met = row["met"]
            lines.append(
                f"| {n:,} | {name} | {row['completed']:,}/{n:,} {mark(met['completed'])}"
                f" | {ms(row['first_byte_p50'])} / {ms(row['first_byte_p95'])} {mark(met['first_byte'])}"
                f" | {ms(row['piece_p50'])} / {ms(row['piece_p95'])} {mark(met['piece'])}"
                f" | {ms(row['health_worst'])} {mark(met['health'])}"
                f" | {row['pg_peak']} {mark(met['pg'])} | {row['rss_peak'] / 2**20:,.0f} {mark(met['rss'])}"
                f" | {'**met**' if all(met.values()) else 'not met'} |"
            )
    lines += ["", "**Largest N that met every target**: "
              + "; ".join(f"{name}: {largest(store[name]['rows'])}" for name in names) + "."]  # fmt: skip
    if PRODUCTION in names:
        lines.append(f"SPEC 8's summary judges **{PRODUCTION}**, the server `make serve` runs.")
    lines += ["", "What else each run saw:", ""]
    for name in names:
        if store[name].get("note"):
            lines.append(f"- {name}: {store[name]['note']}")
        for row in store[name]["rows"]:
            lines.append(
                f"- {name}, N = {row['n']:,}: " + "; ".join(run_notes(row, ramp=ramp, cut_after=cut_after)) + "."
            )
    return "\n".join(lines)


def main() -> None:
    global PIECES  # the run's pieces per reply, read where the sends are checked
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", default=",".join(map(str, NS)), help="comma-separated N (default %(default)s)")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated, of: %(default)s")
    parser.add_argument("--ramp", type=float, default=RAMP, help="seconds over which the N sends start")
    parser.add_argument(
        "--cut-after",
        type=float,
        default=AFTER_LAST_START,
        help="seconds after the last start when the sends still open are cut (default %(default)s)",
    )
    parser.add_argument("--keep-going", action="store_true", help="run larger N after fewer than half completed")
    parser.add_argument(
        "--pieces",
        type=int,
        default=PIECES,
        help="pieces per reply (default %(default)s); 1 measures what a send costs apart from streaming,"
        " and a run with other than the default is printed, not stored",
    )
    args = parser.parse_args()
    stored = args.pieces == PIECES
    PIECES = args.pieces
    ns = sorted({int(n) for n in args.n.split(",")})
    names = [name.strip() for name in args.servers.split(",")]
    unknown = [name for name in names if name not in SERVERS]
    if unknown:
        parser.error(f"unknown servers {unknown}; known: {', '.join(SERVERS)}")

    people = prepare(max(ns), warm_ups=WARM_UPS)
    store = json.loads(STORE.read_text()) if STORE.exists() else {}
    for name in names:
        server = SERVERS[name]
        entry = store[name] = {"rows": [], "skipped": {}, "note": ""}
        try:
            with source_tree(server.commit) as tree:
                for n in ns:
                    if any(row["completed"] < row["n"] / 2 for row in entry["rows"]) and not args.keep_going:
                        entry["skipped"][str(n)] = "a smaller N completed fewer than half"
                        continue
                    row = run_one(name, server, tree, n, people, ramp=args.ramp, cut_after=args.cut_after)
                    entry["rows"].append(row)
                    print(f"capacity: {name} N={n}: {row['completed']}/{n} completed, first byte p95"
                          f" {ms(row['first_byte_p95'])} ms, piece p95 {ms(row['piece_p95'])} ms, /health/ worst"
                          f" {ms(row['health_worst'])} ms, PG {row['pg_peak']}, RSS {row['rss_peak'] / 2**20:.0f} MiB,"
                          f" client CPU {row['client_cpu']:.2f}, workers' CPU"
                          f" {row['worker_ms_per_reply']:.1f} ms a reply, PostgreSQL's"
                          f" {row['postgres_ms_per_reply']:.1f} ms", flush=True)  # fmt: skip
        except Skip as skipped:
            entry["note"] = f"not run: {skipped}"
            print(f"capacity: {name} skipped: {skipped}", flush=True)
        if stored:
            STORE.write_text(json.dumps(store, default=str))
    if not stored:
        return
    store["_written"] = f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
    store["_machine"] = common.machine()
    STORE.write_text(json.dumps(store, default=str))
    text = section(store, ramp=args.ramp, cut_after=args.cut_after)
    common.write_section(SECTION, text, before="## Endpoints under load")
    print(text)


if __name__ == "__main__":
    main()
