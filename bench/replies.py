"""`make replies` (part of `make bench`): replies across two app servers, and the bytes a reply writes.

    .venv/bin/python bench/replies.py [--trials 30] [--followers 10] [--long-pieces 500]
    .venv/bin/python bench/run.py --only replies

Two app servers, A and B (each gunicorn with one uvicorn worker, production settings), share
one PostgreSQL database and one upstream (bench/capacity_upstream.py: 20-byte pieces 200 ms
apart, each the wall-clock time it was written). This process is the client: asyncio, reading
each event stream as it comes (bench/capacity_client.py's parser). It measures:

1. a stop made on B ending a reply that runs on A: for each trial a streamed send on A in a
   chat of its own; after its third piece, POST /stop/ on B; the time from just before that
   POST until A's stream delivers `done` (status stopped), and the POST's own time;
2. a follower on B: several replies at once on A, each followed on B from its start
   (GET .../messages/{id}/stream/); for each piece, when it reached the follower less the
   time stamped in it, and the same on the sender's own stream on A;
3. the bytes one streamed reply writes: PostgreSQL's WAL position before the send and after
   the reply has ended and been settled, for a 10-second reply and a long one, split by table
   with pg_walinspect where it is installed (the WAL is the whole cluster's); the pieces'
   text read while the reply runs; and what the earlier design, which rewrote the whole text
   at each flush, would have written for the same pieces.

The database is REPLIES_DATABASE_URL, by default BENCH_DATABASE_URL's server with the database
`chatsite_bench_replies` (created and migrated here). The servers and the upstream are stopped,
process group and all, whatever happens; the run's users, with their chats, replies and usage,
are deleted at the end. The results replace the replies section of BENCHMARKS.md.
"""
# ruff: noqa: E402

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import common

URL = common.setup(common.own_database_url("chatsite_bench_replies", override="REPLIES_DATABASE_URL"))

import psycopg
from django.contrib.sessions.models import Session
from django.db import connection, connections
from django.utils.crypto import get_random_string

from accounts.models import User
from bench.capacity_client import PIECE_WIDTH, Send
from bench.common import Process, nearest_rank
from bench.fixtures import People, end_leftovers, new_chats, prepare
from billing.models import UsageEvent
from chatsite.testing.appserver import free_port, production_env
from sessions_app.models import ChatMessage, ReplyPiece
from sessions_app.runtime import FLUSH_SECONDS

SECTION = common.REPLIES_SECTION
PIECES, PIECE_DELAY = 50, 0.2  # the upstream's reply: 10 s
TRIALS, WARM_TRIALS = 30, 3
PIECES_BEFORE_STOP = 3
FOLLOWED = 10
LONG_PIECES = 500
SHORT_REPEATS = 3
EARLIER_FLUSH_SECONDS = 0.5  # FLUSH_INTERVAL of sessions_app/generation.py at commit 2da7eca
POLL_SECONDS = 0.02  # how often the pieces of a reply are read while it runs
TARGETS = {"stop_ms": 100.0, "follow_ms": 50.0}
STORE = common.WORK / "replies.json"
CATALOGS = "system catalogs"
# Where the next WAL record goes. pg_current_wal_lsn() is where PostgreSQL has written up to, which
# lags it by whatever has not been written out yet (a VACUUM does not wait for its WAL, a commit does).
INSERT_LSN = "SELECT pg_current_wal_insert_lsn()"
# The tables a send and its reply write to.
REPLY_TABLES = [
    "sessions_app_replypiece", "sessions_app_chatmessage", "sessions_app_chatsession", "billing_usageevent",
    "billing_usagebucket", "billing_chatsessionusage",
]  # fmt: skip


class Failed(Exception):
    """A stream that ended, or did not get there, before what was waited for."""


# The client.


class Stream(Send):
    """A streamed send on one server (POST, as the capacity client sends it) or a follow (GET), timed as it arrives."""

    def __init__(self, *, port: int, chat: int, cookie: str, csrf: str, message: str = "", follow: str = "") -> None:
        done = asyncio.get_running_loop().create_future()
        super().__init__({"port": port}, {"chat": chat, "message": message, "cookie": cookie, "csrf": csrf}, done)
        if follow:
            self.request = (
                f"GET /api/chat-sessions/{chat}/messages/{follow}/stream/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Accept: text/event-stream\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
            ).encode()
        self.port = port
        self.pieces: list[tuple[float, float]] = []  # (stamped, arrived) per piece, wall clock
        self.first_event_at: float | None = None
        self.done_at: float | None = None
        self.changed = asyncio.Event()

    async def open(self) -> "Stream":
        self.began = time.time()
        try:
            await asyncio.get_running_loop().create_connection(lambda: self, "127.0.0.1", self.port)
        except OSError as exc:
            self.finish(f"connect error ({type(exc).__name__})")
        return self

    def body(self, data: bytes, now: float) -> None:
        super().body(data, now)
        if self.events and self.first_event_at is None:
            self.first_event_at = now
        if "done_status" in self.result and self.done_at is None:
            self.done_at = now
        self.changed.set()

    def delta(self, content: str, now: float) -> None:
        counted = len(self.delays)
        super().delta(content, now)
        self.pieces += [(now - delay / 1000, now) for delay in self.delays[counted:]]

    def finish(self, outcome: str | None = None) -> None:
        super().finish(outcome)
        self.changed.set()

    async def until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.result["outcome"] is not None:
                raise Failed(f"the stream ended ({self.result['outcome']}) before {what}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise Failed(f"no {what} within {timeout:g} s") from None

    async def ended(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self.done), timeout)
        except TimeoutError:
            self.finish("timeout")


async def post(port: int, path: str, *, cookie: str, csrf: str) -> tuple[int, float, bytes]:
    """POST with no body on a connection of its own: the status, when the whole answer was in, the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\nX-CSRFToken: {csrf}\r\n"
            f"Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        body = await (reader.readexactly(int(length.group(1))) if length else reader.read())
        return int(head.split()[1]), time.time(), body
    finally:
        writer.close()


async def reply_of(db: psycopg.AsyncConnection, chat: int) -> tuple[int, str]:
    """The pk and message id of the chat's reply (saved, with the user's message, before the stream's first event)."""
    cursor = await db.execute(
        "SELECT id, message_id FROM sessions_app_chatmessage WHERE session_id = %s AND message_type = 'assistant'"
        " ORDER BY id DESC LIMIT 1",
        [chat],
    )
    pk, message_id = await cursor.fetchone()
    return pk, str(message_id)


def message(label: str, **options) -> str:
    """A unique message; `pieces=` and `delay=` in it shape the upstream's reply."""
    return " ".join([label, *(f"{name}={value}" for name, value in options.items()), get_random_string(8)])


# The servers.


class Servers:
    """The upstream and app servers A and B, each in a process group of its own, stopped on the way out."""

    def __init__(self) -> None:
        self.upstream_port = free_port()
        upstream = f"http://127.0.0.1:{self.upstream_port}"
        self.upstream = Process(
            "replies-upstream",
            [sys.executable, str(ROOT / "bench" / "capacity_upstream.py"), "--port", str(self.upstream_port),
             "--pieces", str(PIECES), "--delay", str(PIECE_DELAY)],
            cwd=ROOT, env=dict(os.environ),
        )  # fmt: skip
        env = production_env(
            common.WORK / "media", SECRET_KEY=os.environ["SECRET_KEY"], AI_BASE_URL=f"{upstream}/v1",
            AI_API_KEY="replies-bench", GUNICORN_WORKERS="1",
        )  # fmt: skip
        self.ports = {"a": free_port(), "b": free_port()}
        self.apps = {
            name: Process(f"replies-server-{name}", [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
                          cwd=ROOT, env={**env, "GUNICORN_BIND": f"127.0.0.1:{port}"})
            for name, port in self.ports.items()
        }  # fmt: skip
        self.a, self.b = self.ports["a"], self.ports["b"]

    def __enter__(self) -> "Servers":
        try:
            self.upstream.start()
            self.upstream.wait_ready(f"http://127.0.0.1:{self.upstream_port}/v1/models", 10)
            for app in self.apps.values():
                app.start()
            for name, app in self.apps.items():
                app.wait_ready(f"http://127.0.0.1:{self.ports[name]}/health/ready/")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        signal.alarm(0)  # the run's time limit ends here: stopping is bounded by Process.stop itself
        for process in [*self.apps.values(), self.upstream]:
            process.stop()


# 1. A stop made on B.


async def stop_trials(servers: Servers, people: People, chats: list[int], *, warm: int) -> list[dict]:
    user = people.users[0]
    cookie, csrf = people.cookie(user), people.csrf
    rows = []
    for i, chat in enumerate(chats):
        send = await Stream(port=servers.a, chat=chat, cookie=cookie, csrf=csrf, message=message("stop")).open()
        row = {"chat": chat, "warm": i < warm}
        try:
            await send.until(lambda s=send: len(s.pieces) >= PIECES_BEFORE_STOP, 15, f"{PIECES_BEFORE_STOP} pieces")
            asked = time.time()
            status, answered, body = await post(servers.b, f"/api/chat-sessions/{chat}/stop/", cookie=cookie, csrf=csrf)
            await send.ended(10)
        except Failed as failed:
            row["failed"] = str(failed)
            send.finish("failed")
            rows.append(row)
            continue
        stopped = json.loads(body).get("stopped_message_ids", []) if status == 200 else []
        row.update(
            stop_ms=(send.done_at - asked) * 1000 if send.done_at else math.inf,
            request_ms=(answered - asked) * 1000,
            request_status=status,
            stopped=len(stopped),
            done_status=send.result.get("done_status"),
            pieces=len(send.pieces),
        )
        rows.append(row)
        await asyncio.sleep(0.2)
    return rows


# 2. Followers on B.


async def follow_round(
    servers: Servers, people: People, users: list[User], chats: list[int], *, pieces: int = PIECES
) -> list[dict]:
    """One reply per chat on A, all at once, each followed on B from its start."""
    csrf = people.csrf
    sends = [
        Stream(port=servers.a, chat=chat, cookie=people.cookie(user), csrf=csrf,
               message=message("follow", pieces=pieces))
        for user, chat in zip(users, chats, strict=True)
    ]  # fmt: skip
    await asyncio.gather(*(send.open() for send in sends))
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as db:

        async def follow(send: Stream, user: User, chat: int) -> Stream:
            await send.until(lambda: send.first_event_at is not None, 15, "the first event")
            _, message_id = await reply_of(db, chat)
            return await Stream(port=servers.b, chat=chat, cookie=people.cookie(user), csrf=csrf,
                                follow=message_id).open()  # fmt: skip

        followers = await asyncio.gather(*(follow(*each) for each in zip(sends, users, chats, strict=True)))
    await asyncio.gather(*(stream.ended(pieces * PIECE_DELAY + 30) for stream in [*sends, *followers]))
    rows = []
    for send, follower in zip(sends, followers, strict=True):
        rows.append({
            "sender": {"outcome": send.result["outcome"], "done": send.result.get("done_status"),
                       "text": send.text, "pieces": send.pieces},
            "follower": {"outcome": follower.result["outcome"], "done": follower.result.get("done_status"),
                         "text": follower.text, "pieces": follower.pieces, "opened": follower.began},
        })  # fmt: skip
    return rows


# 3. Bytes written.


async def wal_reply(servers: Servers, people: People, user: User, chat: int, *, pieces: int) -> dict:
    """One streamed reply on A with nothing else running against the database: WAL before and after, and its pieces."""
    cookie, csrf = people.cookie(user), people.csrf
    seen: dict[int, int] = {}  # offset -> bytes of each piece row read while the reply ran
    async with (
        await psycopg.AsyncConnection.connect(URL, autocommit=True) as db,
        await psycopg.AsyncConnection.connect(URL, autocommit=True) as poller,
    ):
        before = await _scalar(db, INSERT_LSN)
        send = await Stream(port=servers.a, chat=chat, cookie=cookie, csrf=csrf,
                            message=message("wal", pieces=pieces)).open()  # fmt: skip
        await send.until(lambda: send.first_event_at is not None, 15, "the first event")
        reply_pk, _ = await reply_of(db, chat)

        async def poll() -> None:
            while True:
                cursor = await poller.execute(
                    'SELECT "offset", octet_length(text) FROM sessions_app_replypiece WHERE message_id = %s', [reply_pk]
                )
                seen.update(await cursor.fetchall())
                await asyncio.sleep(POLL_SECONDS)

        polling = asyncio.get_running_loop().create_task(poll())
        await send.ended(pieces * PIECE_DELAY + 60)
        polling.cancel()
        await asyncio.gather(polling, return_exceptions=True)
        if send.result.get("done_status") != "complete":
            raise Failed(f"the reply ended {send.result['outcome']} / {send.result.get('done_status')}")
        # Ended and settled: `done` follows the finish's commit; the reply and its usage say so.
        cursor = await db.execute(
            "SELECT m.status, octet_length(m.content), pg_column_size(m.content), e.state,"
            " (SELECT count(*) FROM sessions_app_replypiece p WHERE p.message_id = m.id)"
            " FROM sessions_app_chatmessage m JOIN billing_usageevent e ON e.message_id = m.id WHERE m.id = %s",
            [reply_pk],
        )
        status, size, stored, usage, left = await cursor.fetchone()
        await asyncio.sleep(0.5)  # nothing more of it is written
        after = await _scalar(db, INSERT_LSN)
        total = int(await _scalar(db, "SELECT pg_wal_lsn_diff(%s, %s)", [after, before]))
        records = await wal_records(db, before, after)
        # What the reply left for VACUUM (its deleted pieces, the old versions of updated rows), vacuumed now.
        vacuum_from = await _scalar(db, INSERT_LSN)
        await db.execute(f"VACUUM {', '.join(REPLY_TABLES)}")
        vacuum_to = await _scalar(db, INSERT_LSN)
        vacuum = int(await _scalar(db, "SELECT pg_wal_lsn_diff(%s, %s)", [vacuum_to, vacuum_from]))
        vacuum_records = await wal_records(db, vacuum_from, vacuum_to)
    return {
        "pieces": pieces, "status": status, "usage": usage, "size": size, "stored": stored, "pieces_left": left,
        "wal": total, "records": records, "seen": sorted(seen.items()), "arrivals": [at for _, at in send.pieces],
        "began": send.first_event_at, "lsn": [str(before), str(after)], "vacuum": vacuum,
        "vacuum_records": vacuum_records,
    }  # fmt: skip


async def _scalar(db: psycopg.AsyncConnection, sql: str, params: list | None = None):
    cursor = await db.execute(sql, params)
    return (await cursor.fetchone())[0]


async def wal_records(db: psycopg.AsyncConnection, start, end) -> dict | None:
    """The WAL between two positions by what it wrote: this database's tables, its commits, and everything else.

    None without pg_walinspect. A record counts with the space it takes (end - start LSN:
    alignment and page headers included); its full-page images separately.
    """
    if str(start) == str(end):  # nothing written; pg_walinspect refuses an empty range
        return {"parts": {}, "fpi": {}, "piece_inserts": 0, "catalogs": 0, "checkpoints": 0, "key_locks": 0}
    deadline = time.monotonic() + 10  # pg_walinspect reads only what is flushed
    while await _scalar(db, "SELECT pg_wal_lsn_diff(pg_current_wal_flush_lsn(), %s) < 0", [end]):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    try:
        cursor = await db.execute(
            "SELECT pg_wal_lsn_diff(end_lsn, start_lsn), fpi_length, xid, resource_manager, record_type, block_ref"
            " FROM pg_get_wal_records_info(%s, %s)",
            [start, end],
        )
    except psycopg.Error:
        return None
    rows = await cursor.fetchall()
    database = await _scalar(db, "SELECT oid FROM pg_database WHERE datname = current_database()")
    tables = await relation_tables(db)
    parts: Counter[str] = Counter()
    fpi: Counter[str] = Counter()
    ours: set[int] = set()
    piece_rows = catalogs = checkpoints = key_locks = 0  # piece rows: one per flush of the reply
    fpi_kinds: Counter[str] = Counter()
    for length, fpi_length, xid, manager, kind, block_ref in rows:
        refs = re.findall(r"rel \d+/(\d+)/(\d+)", block_ref or "")
        checkpoints += manager == "XLOG" and kind.startswith("CHECKPOINT")
        if not refs or int(refs[0][0]) != database:
            continue
        table = tables.get(int(refs[0][1]), "other relations")
        if table.startswith(CATALOGS):
            catalogs += int(length)  # autovacuum at work on them: nothing a reply writes
            continue
        if fpi_length:
            fpi_kinds[f"{table}: {manager} {kind}"] += fpi_length
        # The foreign-key check of each piece row locks the reply's row (FOR KEY SHARE): a LOCK record.
        key_locks += table == ChatMessage._meta.db_table and manager == "Heap" and kind == "LOCK"
        parts[table] += int(length)
        fpi[table] += fpi_length or 0
        ours.add(xid)
        piece_rows += table == ReplyPiece._meta.db_table and manager == "Heap" and kind.startswith("INSERT")
    for length, _, xid, manager, _, _ in rows:
        if manager == "Transaction" and xid in ours - {0}:
            parts["commits"] += int(length)
    return {
        "parts": dict(parts), "fpi": dict(fpi), "piece_inserts": piece_rows, "catalogs": catalogs,
        "checkpoints": checkpoints, "key_locks": key_locks, "fpi_kinds": dict(fpi_kinds),
    }  # fmt: skip


async def relation_tables(db: psycopg.AsyncConnection) -> dict[int, str]:
    """Each relation file of this database by the table it belongs to (an index's, a TOAST table's)."""
    cursor = await db.execute(
        "SELECT c.oid, pg_relation_filenode(c.oid), c.relname, i.indrelid, owner.oid,"
        " c.relnamespace IN ('pg_catalog'::regnamespace, 'pg_toast'::regnamespace), am.amname FROM pg_class c"
        " LEFT JOIN pg_index i ON i.indexrelid = c.oid LEFT JOIN pg_class owner ON owner.reltoastrelid = c.oid"
        " LEFT JOIN pg_am am ON am.oid = c.relam"
    )
    rows = await cursor.fetchall()
    by_oid = {oid: (name, index_of, toast_of, system, am) for oid, _, name, index_of, toast_of, system, am in rows}

    def table(oid: int) -> str:
        name, index_of, toast_of, system, am = by_oid[oid]
        if system and index_of is None and toast_of is None:
            return CATALOGS
        if index_of is not None:
            # B-tree entries go with their table; a full-text index is named apart (it costs by the text).
            return table(index_of) + (f" ({am} index)" if am not in ("btree", None) else "")
        if toast_of is not None:
            return table(toast_of).split(" (")[0] + " (TOAST)"
        return name

    return {relfilenode: table(oid) for oid, relfilenode, *_ in rows if relfilenode}


def earlier_design(arrivals: list[float], began: float) -> tuple[int, int]:
    """What the design before pieces wrote while a reply ran: (flushes, bytes).

    It saved the whole text so far, as each piece arrived, once EARLIER_FLUSH_SECONDS had passed since
    the previous save (the first counted from the stream's start): sessions_app/generation.py
    at commit 2da7eca.
    """
    last, flushes, written = began, 0, 0
    for i, at in enumerate(arrivals):
        if at - last >= EARLIER_FLUSH_SECONDS:
            last = at
            flushes += 1
            written += PIECE_WIDTH * (i + 1)
    return flushes, written


def quiet_database() -> bool:
    """Autovacuum off for this database's tables, then VACUUM ANALYZE and a checkpoint.

    Autovacuum would otherwise wake mid-measure (pieces are inserted and deleted all the time)
    and write WAL of its own. After the checkpoint, the first change to each page logs a whole
    image of it: the warm-up reply that follows takes those, and the next timed checkpoint is
    checkpoint_timeout away.
    Returns False when the role may not ask for a checkpoint (it needs pg_checkpoint or superuser).
    """
    autovacuum(on=False)
    with psycopg.connect(URL, autocommit=True) as db:
        db.execute("VACUUM ANALYZE")
        try:
            db.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            return False
    return True


@contextlib.contextmanager
def wal_kept() -> Iterator[bool]:
    """Keep the WAL written from now on, until the block ends: a temporary replication slot, gone with its connection.

    Checkpoints that other work on this server asks for (CREATE and DROP DATABASE do) would
    otherwise remove the WAL before pg_walinspect has read it. Yields False if there can be no slot.
    """
    with psycopg.connect(URL, autocommit=True) as db:
        try:
            db.execute("SELECT pg_create_physical_replication_slot(%s, true, true)", [f"chatsite_bench_{os.getpid()}"])
        except psycopg.Error:
            yield False
        else:
            yield True


def autovacuum(*, on: bool) -> None:
    with psycopg.connect(URL, autocommit=True) as db:
        tables = db.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
        ).fetchall()
        for (table,) in tables:
            if on:
                db.execute(f'ALTER TABLE "{table}" RESET (autovacuum_enabled, toast.autovacuum_enabled)')
            else:
                db.execute(f'ALTER TABLE "{table}" SET (autovacuum_enabled = off, toast.autovacuum_enabled = off)')


def walinspect() -> bool:
    """pg_walinspect in this database (PostgreSQL 15 and later, contrib), if it can be had."""
    with psycopg.connect(URL, autocommit=True) as db:
        try:
            db.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        except psycopg.Error:
            return False
    return True


# Figures.


def stop_figures(rows: list[dict]) -> dict:
    timed = [row for row in rows if not row["warm"]]
    stops = [row.get("stop_ms", math.inf) for row in timed]
    requests_ = [row.get("request_ms", math.inf) for row in timed]
    chats = [row["chat"] for row in timed]
    replies = ChatMessage.objects.filter(session_id__in=chats, message_type=ChatMessage.Type.ASSISTANT)
    return {
        "trials": len(timed),
        "stop": _summary(stops),
        "request": _summary(requests_),
        "done": dict(Counter(str(row.get("done_status") or row.get("failed")) for row in timed)),
        "answers": dict(Counter(f"{row.get('request_status')}, {row.get('stopped')} stopped" for row in timed)),
        "replies": dict(Counter(replies.values_list("status", flat=True))),
        "usage": dict(Counter(UsageEvent.objects.filter(session_id__in=chats).values_list("state", flat=True))),
        "pieces_before": _summary([row.get("pieces", 0) for row in timed]),
    }


def follow_figures(rows: list[dict]) -> dict:
    follower = [(at - stamp) * 1000 for row in rows for stamp, at in row["follower"]["pieces"]
                if stamp >= row["follower"]["opened"]]  # fmt: skip
    caught_up = sum(stamp < row["follower"]["opened"] for row in rows for stamp, _ in row["follower"]["pieces"])
    sender = [(at - stamp) * 1000 for row in rows for stamp, at in row["sender"]["pieces"]]
    return {
        "replies": len(rows),
        "follower": _summary(follower),
        "sender": _summary(sender),
        "caught_up": caught_up,
        "same_text": sum(row["follower"]["text"] == row["sender"]["text"] != "" for row in rows),
        "complete": sum(row["sender"]["done"] == row["follower"]["done"] == "complete" for row in rows),
        "full": sum(len(row["sender"]["text"]) == PIECE_WIDTH * PIECES for row in rows),
    }


def wal_figures(run: dict) -> dict:
    size = run["size"]
    records = run["records"]
    flushes, rewritten = earlier_design(run["arrivals"], run["began"])
    seen = dict(run["seen"])
    figures = {
        "pieces": run["pieces"], "size": size, "stored": run["stored"], "wal": run["wal"],
        "wal_x": run["wal"] / size, "seen_rows": len(seen), "seen_bytes": sum(seen.values()),
        "earlier_flushes": flushes, "earlier_bytes": rewritten, "earlier_x": rewritten / size,
        "ok": run["status"] == "complete" and run["usage"] == "settled" and run["pieces_left"] == 0,
    }  # fmt: skip
    figures["seen_x"] = figures["seen_bytes"] / size
    if records is not None:
        parts, fpis = records["parts"], records["fpi"]
        ours = sum(parts.values())
        fpi = sum(fpis.values())
        table = ReplyPiece._meta.db_table
        pieces = parts.get(table, 0) - fpis.get(table, 0)
        rows = records["piece_inserts"]
        figures.update(
            ours=ours, ours_x=ours / size, fpi=fpi, without_fpi_x=(ours - fpi) / size,
            pieces_wal=pieces, pieces_wal_x=pieces / size, flushes=rows,
            per_row=(pieces - figures["seen_bytes"]) / rows if rows else math.nan,
            elsewhere=run["wal"] - ours, parts=parts, fpis=fpis, checkpoints=records["checkpoints"],
            key_locks=records["key_locks"],
            catalogs=records["catalogs"],
            vacuum=sum(run["vacuum_records"]["parts"].values()) if run["vacuum_records"] else run["vacuum"],
            vacuum_fpi=sum(run["vacuum_records"]["fpi"].values()) if run["vacuum_records"] else math.nan,
        )  # fmt: skip
    return figures


def _summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50": nearest_rank(values, 0.5),
        "p95": nearest_rank(values, 0.95),
        "max": max(values, default=math.nan),
    }


# The section of BENCHMARKS.md.


def ms(value: float) -> str:
    if value != value:
        return "–"
    if value == math.inf:
        return "never"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def verdict(summary: dict, target: float) -> str:
    if summary["p95"] <= target and summary["max"] <= target:
        return f"**met**: p95 and max within {target:g} ms"
    if summary["p95"] <= target:
        return f"**met** at p95 (within {target:g} ms); the slowest took {ms(summary['max'])} ms"
    return f"**not met**: p95 {ms(summary['p95'])} ms, over {target:g} ms"


def section(store: dict) -> str:
    stop, follow, wal = store["stop"], store["follow"], store["wal"]
    lines = [
        SECTION,
        "",
        f"`make replies` (part of `make bench`), {store['written']} UTC. {store['machine']}.",
        f"1-minute load average {store['load_before']:.1f} before, {store['load_after']:.1f} after.",
        "",
        f"Command: `{store['command']}`. Two app servers, **A** and **B**, each"
        " `GUNICORN_WORKERS=1 python -m gunicorn -c gunicorn.conf.py` (one uvicorn worker, production"
        " settings: `REPLY_RECHECK_SECONDS` 1 s, so a notification that went missing would show as a second),"
        f" on one PostgreSQL database (`{urlsplit(URL).path.lstrip('/')}`), and the capacity upstream"
        f" (`bench/capacity_upstream.py`: {PIECE_WIDTH}-byte pieces {PIECE_DELAY * 1000:g} ms apart, each the"
        " wall-clock time it was written). The client is `bench/replies.py` itself, one asyncio process"
        " reading every event stream as it arrives; servers, upstream, client and PostgreSQL share the"
        " machine's 2 cores. Percentiles are nearest-rank.",
        "",
        "### A stop made on B ends a reply running on A",
        "",
        f"{stop['trials']} trials, after {WARM_TRIALS} untimed ones. Each: a streamed send on A"
        f" (`POST /api/chat-sessions/{{id}}/send/`, a chat of its own); after its {PIECES_BEFORE_STOP}rd piece"
        " (the stream's `delta` events), `POST /api/chat-sessions/{id}/stop/` on B, on a new connection."
        " Timed from just before that connection opens until A's stream delivers `done`.",
        "",
        "| | trials | p50 ms | p95 ms | max ms |",
        "|---|---:|---:|---:|---:|",
        f"| stop on B → `done` on A | {stop['stop']['n']} | {ms(stop['stop']['p50'])} | {ms(stop['stop']['p95'])}"
        f" | {ms(stop['stop']['max'])} |",
        f"| the stop request on B, to its whole answer | {stop['request']['n']} | {ms(stop['request']['p50'])}"
        f" | {ms(stop['request']['p95'])} | {ms(stop['request']['max'])} |",
        "",
        f"Target: within {TARGETS['stop_ms']:g} ms. {verdict(stop['stop'], TARGETS['stop_ms'])}.",
        f"A's streams ended with `done` {json.dumps(stop['done'])}; B answered {json.dumps(stop['answers'])};"
        f" the database holds the replies {json.dumps(stop['replies'])}, their usage {json.dumps(stop['usage'])}.",
        "",
        "### A follower on B gets each piece as A does",
        "",
        f"{follow['replies']} replies at once on A ({PIECES} pieces each, started together, so their pieces"
        f" arrive in bursts of {follow['replies']}), each followed on B"
        " (`GET /api/chat-sessions/{id}/messages/{message_id}/stream/`, opened as soon as the send's first"
        " event is in, before the first piece). A piece's delay: when it reached the client less the time"
        " the upstream stamped in it (A receives it from the upstream within about a millisecond on"
        " loopback). Pieces stamped before the follower's request opened are left out"
        f" ({follow['caught_up']} here).",
        "",
        "| stream | replies | pieces | p50 ms | p95 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
        *[
            f"| {label} | {follow['replies']} | {f['n']:,} | {ms(f['p50'])} | {ms(f['p95'])} | {ms(f['max'])} |"
            for label, f in (("follower on B", follow["follower"]), ("sender on A (its own stream)", follow["sender"]))
        ],
        "",
        f"Target: within {TARGETS['follow_ms']:g} ms of A. {verdict(follow['follower'], TARGETS['follow_ms'])}.",
        f"Replies ended `complete` on both streams: {follow['complete']} of {follow['replies']}; the follower's"
        f" text the same as the sender's: {follow['same_text']}; every piece there: {follow['full']}.",
        "",
        "### Bytes written per reply",
        "",
        "One streamed reply on A, nothing else running against the database (B idle): WAL position"
        " before the send and after the reply has ended and been settled, `pg_wal_lsn_diff` of the two."
        " The position is `pg_current_wal_insert_lsn()`: `pg_current_wal_lsn()` is how far the WAL has"
        " been written out, which lags it by what has not been yet. That is the whole cluster's WAL, so the"
        " records are also split with `pg_walinspect`: those of this database's tables (B-tree indexes"
        " with their table, TOAST and the full-text GIN index named apart) and"
        " the commits of their transactions; *elsewhere* is the rest (other databases, autovacuum on this"
        " database's system catalogs, the server's own records); a temporary replication slot keeps the WAL"
        " until it is read. The database is vacuumed and checkpointed first, then one untimed reply"
        " touches its pages, so the full-page images that follow a checkpoint are paid before the timed"
        " replies, unless other work on the server asks for a checkpoint meanwhile (CREATE and DROP"
        " DATABASE do; column *checkpoints*): the first change to a page after one logs the whole 8 kB"
        " page. *× without them* is the steady figure. *×* is a multiple of the reply's final size. The"
        " send writes the user's message, the reply row and the reservation too, so a reply's bytes"
        " include them.",
        "",
        "| reply | final size B | WAL, cluster B | elsewhere B | this database B | × | checkpoints | full-page"
        " images B | × without them | pieces' table B | × | VACUUM right after B (full-page images) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in wal:
        label = f"{run['pieces']} pieces, {run['pieces'] * PIECE_DELAY:g} s"
        if "ours" in run:
            lines.append(
                f"| {label} | {run['size']:,} | {run['wal']:,} | {run['elsewhere']:,} | {run['ours']:,}"
                f" | {run['ours_x']:.1f} | {run['checkpoints']} | {run['fpi']:,} | {run['without_fpi_x']:.1f}"
                f" | {run['pieces_wal']:,}"
                f" | {run['pieces_wal_x']:.1f} | {run['vacuum']:,} ({run['vacuum_fpi']:,}) |"
            )
        else:
            lines.append(f"| {label} | {run['size']:,} | {run['wal']:,} | – | – | – | – | – | – | – | – | – |")
    lines += [
        "",
        "*pieces' table*: its rows and their index entries, full-page images left out. *VACUUM right after*:"
        f" `VACUUM` of the tables a send writes ({', '.join(f'`{t}`' for t in REPLY_TABLES)}) at once after the"
        " reply, measured the same way, for what its deleted pieces and the old versions of its updated rows"
        " cost when they are cleaned up. Not counted in the multiples, and an upper bound: autovacuum (off for"
        " these tables while this part runs, so that it does not wake mid-measure) cleans up after many"
        " replies at a time, and pays its per-table and per-page costs once for them all.",
        "",
        "Where each reply's WAL went (bytes, this database; full-page images in brackets): "
        + "; ".join(f"{run['pieces']} pieces: {_parts(run['parts'], run['fpis'])}" for run in wal if "parts" in run)
        + ".",
        "",
        "Two costs here are not the pieces' own. The reply's final text goes into the stored tsvector"
        " column `search_vector` (TOAST) and its GIN index: every stamp is a word of its own, so both are far"
        " larger than prose of the same length would make them. And the foreign-key check of each piece row"
        " locks the reply's row (`FOR KEY SHARE`), a LOCK record in `sessions_app_chatmessage` per flush: "
        + ", ".join(f"{run['key_locks']}" for run in wal if "key_locks" in run)
        + " of them in these replies.",
        "",
        "**The text written while a reply runs, now and before.** Now the runtime appends what arrived"
        f" since its last flush as a row of `sessions_app_replypiece` every {FLUSH_SECONDS:g} s and writes"
        " the text whole once, at the end. The design before it (`sessions_app/generation.py` at commit"
        f" `2da7eca`) rewrote the reply's whole text so far (`UPDATE ... SET content`) at every flush, at most"
        f" every {EARLIER_FLUSH_SECONDS:g} s as pieces arrived; its column is computed from the piece arrival times"
        " measured on A's stream, not measured. Both write the whole text once more at the end.",
        "",
        "| reply | final size B | pieces now: rows, text B | × | before: flushes, text rewritten B | × |",
        "|---|---:|---:|---:|---:|---:|",
        *[
            f"| {run['pieces']} pieces, {run['pieces'] * PIECE_DELAY:g} s | {run['size']:,}"
            f" | {run.get('flushes', run['seen_rows'])}, {run['seen_bytes']:,} | {run['seen_x']:.2f}"
            f" | {run['earlier_flushes']}, {run['earlier_bytes']:,} | {run['earlier_x']:.1f} |"
            for run in wal
        ],
        "",
        "*pieces now*: rows inserted (from the WAL), and the text of the rows read every"
        f" {POLL_SECONDS * 1000:g} ms while the reply ran (the text after the last flush is only in the"
        " final write). Each row costs its text plus a fixed amount, its tuple header and index entries"
        " and, at the end, its deletion: here "
        + ", ".join(f"{run['per_row']:,.0f}" for run in wal if "per_row" in run)
        + " bytes of WAL a row besides its text (commits not counted), whatever the reply's length; the"
        " rewrite costs the text so far, so it grows with the square of the length. Less compression:"
        " PostgreSQL compresses a text over about 2 kB before it stores it"
        + "".join(
            f" (the {run['pieces']}-piece reply's {run['size']:,} bytes are stored in {run['stored']:,})"
            for run in wal[-1:]
        )
        + ".",
    ]
    long = [run for run in wal if run["pieces"] != PIECES and "ours" in run]
    short = [run["without_fpi_x"] for run in wal if run["pieces"] == PIECES and "ours" in run]
    if long and short:
        longest, short_x = long[-1], statistics.median(short)
        times = longest["pieces"] / PIECES
        holds = longest["without_fpi_x"] <= 1.5 * short_x
        lines += [
            "",
            f"**A reply's bytes {'stay' if holds else 'do not stay'} a multiple of its size however long it grows**"
            f" (judged without full-page images): the {longest['pieces']}-piece reply, {times:g} times as long,"
            f" wrote {longest['without_fpi_x']:.1f}× its size, the {PIECES}-piece ones {short_x:.1f}× (median);"
            f" rewriting the text at every flush would have written {longest['earlier_x']:.0f}× and"
            f" {statistics.median(run['earlier_x'] for run in wal if run['pieces'] == PIECES):.0f}× in text alone.",
        ]
    lines += ["", *[f"- {note}" for note in store["notes"]]] if store["notes"] else []
    return "\n".join(lines)


def bound_time(args) -> None:
    """End the run (its servers stopped on the way out) past a limit from what it measures, or on SIGTERM."""
    replies = args.short_repeats * PIECES + args.long_pieces + 10 * 2 + PIECES
    limit = int(120 + 15 * (args.trials + WARM_TRIALS) + 3 * replies * PIECE_DELAY)

    def overran(*_) -> None:
        raise Failed(f"the run took longer than its {limit} s")

    def terminated(*_) -> None:
        sys.exit("replies: stopped by SIGTERM")

    signal.signal(signal.SIGALRM, overran)
    signal.signal(signal.SIGTERM, terminated)
    signal.alarm(limit)


def _parts(parts: dict[str, int], fpis: dict[str, int]) -> str:
    return ", ".join(
        f"{name} {n:,}" + (f" ({fpis[name]:,})" if fpis.get(name) else "")
        for name, n in sorted(parts.items(), key=lambda part: -part[1])
    )


# The run.


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=TRIALS, help="timed stops (default %(default)s)")
    parser.add_argument("--followers", type=int, default=FOLLOWED, help="replies followed (default %(default)s)")
    parser.add_argument("--long-pieces", type=int, default=LONG_PIECES, help="the long reply (default %(default)s)")
    parser.add_argument("--short-repeats", type=int, default=SHORT_REPEATS, help="10 s replies measured")
    parser.add_argument("--no-write", action="store_true", help="print the section; leave BENCHMARKS.md as it is")
    args = parser.parse_args()
    bound_time(args)

    people = prepare(max(args.followers, 1), label="replies")
    leftovers = end_leftovers()
    notes = [f"{leftovers} replies left generating by an earlier run were ended first"] if leftovers else []
    store: dict = {"load_before": os.getloadavg()[0]}
    stop_chats = new_chats(people, [people.users[0]] * (WARM_TRIALS + args.trials))
    warm_follow = new_chats(people, people.users[:1])
    follow_chats = new_chats(people, people.users[: args.followers])
    inspect = walinspect()
    if not inspect:
        notes.append("pg_walinspect is not available: the WAL is the cluster's only, not split")
    connections.close_all()
    try:
        with Servers() as servers:
            print("replies: stops made on B ...", flush=True)
            stops = asyncio.run(stop_trials(servers, people, stop_chats, warm=WARM_TRIALS))
            store["stop"] = stop_figures(stops)
            connections.close_all()
            print(f"replies: stop p95 {ms(store['stop']['stop']['p95'])} ms; followers on B ...", flush=True)
            asyncio.run(follow_round(servers, people, people.users[:1], warm_follow, pieces=5))
            follows = asyncio.run(follow_round(servers, people, people.users[: args.followers], follow_chats))
            store["follow"] = follow_figures(follows)
            print(f"replies: follower p95 {ms(store['follow']['follower']['p95'])} ms; bytes written ...", flush=True)
            with wal_kept() as kept:
                if not kept:
                    notes.append("no replication slot could keep the WAL: checkpoints may have removed it unread")
                if not quiet_database():
                    notes.append(
                        "no checkpoint before the measure (the role lacks pg_checkpoint): the first changes to pages"
                        " since the server's last checkpoint log whole pages, which the warm-up reply may not all take"
                    )
                user = people.users[0]
                wal_chats = new_chats(people, [user] * (2 + args.short_repeats))  # their pages after the checkpoint
                connections.close_all()
                asyncio.run(wal_reply(servers, people, user, wal_chats[0], pieces=5))  # takes the full-page images
                shapes = [PIECES] * args.short_repeats + [args.long_pieces]
                runs = [
                    asyncio.run(wal_reply(servers, people, user, chat, pieces=pieces))
                    for chat, pieces in zip(wal_chats[1:], shapes, strict=True)
                ]
            store["wal"] = [wal_figures(run) for run in runs]
            STORE.write_text(json.dumps({"stops": stops, "follows": follows, "wal": runs}, default=str))
    finally:
        signal.alarm(0)
        autovacuum(on=True)
        ended = end_leftovers()
        if ended:
            notes.append(f"{ended} replies were still generating after the servers stopped, and were ended")
        Session.objects.filter(session_key__in=people.sessions.values()).delete()
        User.objects.filter(pk__in=[user.pk for user in people.users]).delete()  # their chats, replies, usage
        connection.close()
    for run in store["wal"]:
        if not run["ok"]:
            notes.append(f"the {run['pieces']}-piece reply was not complete and settled with its pieces folded in")
    store.update(
        written=f"{datetime.now(UTC):%Y-%m-%d %H:%M}", machine=common.machine(), load_after=os.getloadavg()[0],
        command=" ".join(["python", "bench/replies.py", *sys.argv[1:]]), notes=notes,
    )  # fmt: skip
    text = section(store)
    if not args.no_write:
        common.write_section(SECTION, text, before="## Endpoints under load")
    print(text)


if __name__ == "__main__":
    main()
