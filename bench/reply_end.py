"""Benchmark: a reply's usual end as one PostgreSQL statement against the same end in a transaction.

    .venv/bin/python bench/reply_end.py [--ends 300] [--rounds 3]

Works in the capacity run's database (chatsite_bench_capacity on BENCH_DATABASE_URL's server,
or CAPACITY_DATABASE_URL). Each round begins `--ends` replies of 1,000 characters written
as pieces meanwhile (a send each, on 50 users), then ends them all one way, then as many the
other: `lifecycle.reply_finish`, which is one statement on PostgreSQL, against the transaction
that a reply stopped meanwhile still takes (its complete path, then the chat's touch). It
prints, per end, the CPU of this process and of its PostgreSQL backend (from /proc, so
PostgreSQL must run on this machine) and the time from start to end. Printed, not stored.
"""
# ruff: noqa: E402

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import common

common.setup(common.own_database_url("chatsite_bench_capacity", override="CAPACITY_DATABASE_URL"))

from django.conf import settings
from django.db import connection, transaction

from bench.fixtures import new_chats, prepare
from chatbots.providers.base import Usage
from sessions_app import lifecycle, services
from sessions_app.lifecycle import Outcome, pieces_append
from sessions_app.models import ChatSession

USERS = 50
OUTCOME = Outcome(content="x" * 1000, usage=Usage(40, 200, None), flushed=True)


def backend_cpu() -> float:
    """CPU seconds of this connection's PostgreSQL backend so far."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def begun(people, count: int) -> list:
    """`count` replies begun by sends, each with pieces written while it ran."""
    chats = ChatSession.objects.filter(pk__in=new_chats(people, [people.users[i % USERS] for i in range(count)]))
    jobs = [services.message_send(session=chat, user=chat.user, content="hello").job for chat in chats]
    pieces_append([(job.reply_pk, 0, "x" * 500) for job in jobs])
    return jobs


def at_once(job) -> None:
    lifecycle.reply_finish(job=job, outcome=OUTCOME, touch=True, title="Named")


def in_a_transaction(job) -> None:
    with transaction.atomic():
        lifecycle._reply_finish(job, OUTCOME, try_complete=True)
        lifecycle.session_touch(session_pk=job.session_pk, title="Named")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ends", type=int, default=300, help="replies ended each way in a round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("reply_end: PostgreSQL only (the one-statement end is PostgreSQL's)")
    settings.MAX_ACTIVE_REPLIES_PER_USER = 10**6  # every reply of a round is begun before any ends
    people = prepare(USERS, label="reply-end")
    for end in (at_once, in_a_transaction):  # warm: statements prepared on the connection
        for job in begun(people, 30):
            end(job)
    print(f"reply_end: {args.ends} ends each way, {args.rounds} rounds;"
          " per end: PostgreSQL backend, this process, start to end")  # fmt: skip
    for _ in range(args.rounds):
        for end in (at_once, in_a_transaction):
            jobs = begun(people, args.ends)
            backend, process, wall = backend_cpu(), time.process_time(), time.perf_counter()
            for job in jobs:
                end(job)
            backend, process = backend_cpu() - backend, time.process_time() - process
            wall = time.perf_counter() - wall
            each = 1000 / len(jobs)
            print(f"  {end.__name__:16s} PostgreSQL {backend * each:.2f} ms, process {process * each:.2f} ms,"
                  f" {wall * each:.2f} ms", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
