"""The soak of `make load` (and the last part of `make bench`): many clients chatting and reading at once.

Locust's Soak clients each do a request every 0.5-1.5 s: plain and streamed sends (a new chat
every 10), the chat list, a 500-message chat, search. Afterwards every message a 2xx send
answered with is looked up in the database: the user's message with its text, in its chat,
and the reply, complete, with exactly the text the client received. gunicorn's worker memory
is sampled every 2 s. `verify` is shared with chatsite/tests/test_load.py, the short run in CI.
"""

import json
import threading
import time
from pathlib import Path

from bench import common

SECTION = "## Load and soak"
QUOTA = "## Quota reservation: 0 vs 1,000,000 ledger rows"
MEMORY_GROWTH_LIMIT = 1.25  # the last third's mean worker memory over the first third's, at most


def sign_in(users, *, chatbot, model, paced_model=None) -> list[dict]:
    """A signed-in session per user (made in the database, no password hashing), with the user's
    first chat to read and the chatbot and models of the chats it creates (streamed sends go to
    chats on `paced_model`, when given)."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.utils.crypto import get_random_string

    store = import_module(settings.SESSION_ENGINE).SessionStore
    signed_in = []
    for user in users:
        session = store()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        signed_in.append(
            {
                "user_id": user.pk,
                "session": session.session_key,
                "csrf": get_random_string(32),
                "long_chat": user.chat_sessions.order_by("pk").values_list("pk", flat=True)[0],
                "chatbot": chatbot.pk,
                "model": model.pk,
                "paced_model": (paced_model or model).pk,
                "cookies": [settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME],
            }
        )
    return signed_in


def verify(records: list[dict]) -> list[str]:
    """What of the 2xx sends in `records` is not in the database as the client saw it; empty when all is."""
    from sessions_app.models import ChatMessage

    ids = [r["user_message"] for r in records] + [r["reply"] for r in records]
    found = {
        str(m.message_id): m
        for m in ChatMessage.objects.filter(message_id__in=ids).only("message_id", "session_id", "content", "status")
    }
    problems = []
    for r in records:
        user_message, reply = found.get(r["user_message"]), found.get(r["reply"])
        if user_message is None or user_message.content != r["user_text"] or user_message.session_id != r["chat"]:
            problems.append(f"user message {r['user_message']} of chat {r['chat']} missing or altered")
        if reply is None or reply.content != r["reply_text"] or reply.status != ChatMessage.Status.COMPLETE:
            problems.append(f"reply {r['reply']} of chat {r['chat']} missing, altered or not complete")
    return problems


def server_errors(errors: dict[str, int]) -> int:
    """Failed requests that were the server's fault: 5xx, a dropped connection, a broken stream."""
    return sum(n for what, n in errors.items() if not what.rsplit(": ", 1)[-1].startswith("4"))


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def soak(servers: "common.Servers", clients_file: Path, *, users: int, seconds: int) -> dict:
    print(f"bench: soak, {users} clients for {seconds} s ...", flush=True)
    record = common.WORK / "soak-records.jsonl"
    record.unlink(missing_ok=True)
    memory: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        started = time.monotonic()
        while not stop.wait(2):
            memory.append((time.monotonic() - started, servers.worker_rss()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run = common.run_locust(
            "Soak", host=servers.app.url, clients_file=clients_file, users=users, seconds=seconds, record=record
        )
    finally:
        stop.set()
        sampler.join()
    records = read_records(record)
    problems = verify(records)
    failed = server_errors(run["errors"])
    requests_done = sum(len(v) for k, v in run["samples"].items() if not k.startswith("send (streamed): upstream"))
    third = max(1, len(memory) // 3)
    first = sum(rss for _, rss in memory[:third]) / third
    last = sum(rss for _, rss in memory[-third:]) / third
    growth = last / first if first else float("nan")
    ok = failed == 0 and not problems and bool(records) and growth <= MEMORY_GROWTH_LIMIT
    summary = (
        f"{requests_done} requests, {failed} server errors, {len(records)} sends checked, "
        f"{len(problems)} missing; worker memory ×{growth:.2f}"
    )
    stats = {name: common.percentiles(times) for name, times in sorted(run["samples"].items())}
    rows = [
        f"| {name} | {len(run['samples'][name])} | {s['p50']:.1f} | {s['p95']:.1f} | {s['p99']:.1f} |"
        for name, s in stats.items()
    ]
    curve = ", ".join(f"{t:.0f} s {rss / 2**20:.0f}" for t, rss in memory[:: max(1, len(memory) // 10)])
    text = "\n".join(
        [
            SECTION,
            "",
            f"`make load`: locust, {users} clients for {seconds} s, each a request every 0.5-1.5 s (plain and",
            "streamed sends, the chat list, a 500-message chat, search), against gunicorn on the data set.",
            f"{common.machine()}.",
            "",
            f"**{'Passed' if ok else 'FAILED'}**: {summary}.",
            f"Errors: {json.dumps(run['errors']) if run['errors'] else 'none'}."
            + (f" Not in the database: {problems[:5]}" if problems else ""),
            f"Worker memory (all workers, MiB) over the run: {curve}; the last third's mean is"
            f" {growth:.2f}× the first third's (limit {MEMORY_GROWTH_LIMIT}×).",
            "",
            "| request | samples | p50 ms | p95 ms | p99 ms |",
            "|---|---:|---:|---:|---:|",
            *rows,
        ]
    )
    common.write_section(SECTION, text, before=QUOTA)
    print(text, flush=True)
    return {"ok": ok, "summary": summary}
