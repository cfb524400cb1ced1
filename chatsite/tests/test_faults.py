"""Faults (issue 6): the upstream cut off or hanging, PostgreSQL restarted, a client gone mid-send.

Each test proves that nothing is lost (the user's message, the text the upstream
produced) and nothing is charged twice: one ledger row per reply, settled or
released once, and the hourly and daily counters that quotas read agree with
the ledger to the token and the cent.
"""

import json
import logging
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from datetime import timedelta
from urllib.parse import urlsplit

import psycopg
import pytest
import requests
from django.contrib.auth.hashers import PBKDF2PasswordHasher, make_password
from django.db import OperationalError, connection
from django.db.models import Count, Sum
from django.utils import timezone

from accounts.tests.factories import PASSWORD, UserFactory
from billing.models import ChatSessionUsage, UsageBucket, UsageEvent
from billing.services import subscription_assign
from billing.tests.factories import SubscriptionTypeFactory
from chatbots.providers.base import estimate_tokens
from chatbots.tests.factories import AIModelFactory, ChatbotFactory
from chatsite.middleware import UNAVAILABLE
from chatsite.testing import appserver
from chatsite.testing.appserver import BOOT_SECONDS, AppServer, http_session, production_env, wait_connections_gone
from chatsite.testing.sse import arriving, events_only, parse_events
from sessions_app import lifecycle, runtime, selectors, streaming
from sessions_app.models import ChatMessage, ReplyPiece
from sessions_app.runtime import LiveReply, reply_wait_blocking
from sessions_app.services import message_send
from sessions_app.tests.factories import ChatSessionFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def session(upstream_chat):
    return upstream_chat


def send(client, session, text, **extra):
    return client.post(f"/api/chat-sessions/{session.pk}/send/", {"message": text, **extra}, format="json")


def wait_for(condition, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what}: not met within {timeout} s"
        time.sleep(0.02)
    return value


def assert_counters_match_ledger(user) -> None:
    """Quota counters hold exactly what the ledger charges: a reply counted twice or a release missed shows here."""
    counted = UsageEvent.objects.filter(user=user).exclude(state=UsageEvent.State.RELEASED)
    ledger = counted.aggregate(messages=Count("id"), tokens=Sum("billed_tokens"), cost=Sum("cost_usd"))
    for span in (UsageBucket.Span.HOUR, UsageBucket.Span.DAY):
        buckets = UsageBucket.objects.filter(user=user, span=span).aggregate(
            messages=Sum("messages"), tokens=Sum("tokens"), cost=Sum("cost_usd")
        )
        assert (buckets["messages"] or 0, buckets["tokens"] or 0, buckets["cost"] or 0) == (
            ledger["messages"],
            ledger["tokens"] or 0,
            ledger["cost"] or 0,
        ), span
    for usage in ChatSessionUsage.objects.filter(user=user):
        settled = counted.filter(session_id=usage.session_id, state=UsageEvent.State.SETTLED)
        assert usage.tokens_count == (settled.aggregate(total=Sum("billed_tokens"))["total"] or 0)


def kill_other_connections() -> int:
    """End every other PostgreSQL connection to the test database (this process's threads' too); how many."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def assert_user_message_kept(session, text) -> ChatMessage:
    (message,) = ChatMessage.objects.filter(session=session, message_type=ChatMessage.Type.USER)
    assert message.content == text and not message.disabled
    return message


# 1. The upstream killed mid-reply

FIRST = b'data: {"choices":[{"index":0,"delta":{"content":"The first half of"}}]}\n\n'
# Never a [DONE] or a finish_reason: however far the stub gets, the stream ends cut.
SILENCE = b": still thinking\n\n"


class FirstText:
    """Learns, without reading the database, when a reply generated in this process gets its first text."""

    def __init__(self, monkeypatch) -> None:
        self.reply_pk: int | None = None
        self._arrived = threading.Event()
        append = LiveReply.append

        def observed(generation: LiveReply, text: str) -> None:
            append(generation, text)
            if self.reply_pk is None:
                self.reply_pk = generation.pk
            self._arrived.set()

        monkeypatch.setattr(LiveReply, "append", observed)

    def wait(self, timeout: float = 10) -> int:
        """The reply's pk, once its first text arrived."""
        assert self._arrived.wait(timeout), f"no reply text arrived within {timeout} s"
        return self.reply_pk


@pytest.fixture
def first_text(monkeypatch):
    return FirstText(monkeypatch)


def stop_when_text_arrives(upstream, first_text: FirstText) -> threading.Thread:
    """Stop the whole stub server as soon as the reply has its first text, from a thread of its own."""

    def stopper():
        first_text.wait()
        upstream.stop()

    thread = threading.Thread(target=stopper, name="stub-stopper")
    thread.start()
    return thread


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("fault", ["connection dropped", "stub server stopped"])
def test_an_upstream_killed_mid_reply_keeps_the_partial_text_and_charges_it_once(
    api_client, user, session, upstream, first_text, stream, fault
):
    stopper = None
    if fault == "connection dropped":
        upstream.enqueue_raw([FIRST, SILENCE], delay=0.05, cut=True)
    else:
        # The rest would come 30 s later: only the stop ends it.
        upstream.enqueue_raw([FIRST, SILENCE], delay=30, cut=True)
        stopper = stop_when_text_arrives(upstream, first_text)

    response = send(api_client, session, "Tell me everything", stream=stream)

    if stream:
        assert response.status_code == 200
        events = events_only(parse_events(response.streaming_content))
        names = [e.event for e in events]
        assert names[0] == "user_message"
        assert names[-4:] == ["assistant_message", "usage", "error", "done"]
        assert "".join(e.data["content"] for e in events if e.event == "delta") == "The first half of"
        assert events[-2].data["code"] == "upstream_error" and events[-2].data["partial"] is True
        assert events[-1].data["status"] == "partial"
    else:
        assert response.status_code == 201, response.content
        body = response.json()["assistant_message"]
        assert (body["status"], body["content"]) == ("partial", "The first half of")
    if stopper is not None:
        stopper.join(timeout=10)
        assert not stopper.is_alive()
    assert_user_message_kept(session, "Tell me everything")
    reply = ChatMessage.objects.get(message_type="assistant")
    assert reply.status == ChatMessage.Status.PARTIAL and not reply.disabled
    assert reply.content == "The first half of" and reply.error_code == "upstream_error"
    (event,) = UsageEvent.objects.all()
    assert event.message_id == reply.pk and event.state == UsageEvent.State.SETTLED
    # Only the 17 characters produced, estimated; no more, and once.
    assert event.completion_tokens == reply.tokens_count == estimate_tokens("The first half of") == 5
    assert_counters_match_ledger(user)


# 2. The upstream hanging, over a real socket so other requests can run meanwhile


def sign_in(base_url: str, email: str) -> dict[str, str]:
    return appserver.sign_in(base_url, email, PASSWORD)


HANG_TIMEOUT = 2.0


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_hanging_upstream_times_out_charges_nothing_and_holds_up_no_one_else(
    live_server, user, session, upstream, settings, stream
):
    settings.AI_TIMEOUT = HANG_TIMEOUT
    settings.AI_MAX_RETRIES = 0
    upstream.enqueue_hang(30)
    other_chat = ChatSessionFactory(user=user, chatbot=session.chatbot, ai_model=session.ai_model)
    cookies = sign_in(live_server.url, user.email)
    outcome = {}

    def hanging_send():
        with http_session(cookies) as http:
            url = f"{live_server.url}/api/chat-sessions/{session.pk}/send/"
            with http.post(url, json={"message": "Anyone there?", "stream": stream}, stream=True, timeout=30) as r:
                outcome["status"] = r.status_code
                outcome["events" if stream else "body"] = events_only(parse_events(arriving(r))) if stream else r.json()

    hanging = threading.Thread(target=hanging_send)
    hanging.start()
    upstream.wait_for_requests(1)
    started = time.monotonic()

    # Meanwhile the app answers everyone else, a send by the same user included.
    with http_session(cookies) as http:
        assert http.get(f"{live_server.url}/health/ready/", timeout=10).status_code == 200
        assert http.get(f"{live_server.url}/api/chat-sessions/", timeout=10).status_code == 200
        upstream.enqueue_text("Still here.")
        other = http.post(
            f"{live_server.url}/api/chat-sessions/{other_chat.pk}/send/", json={"message": "And you?"}, timeout=10
        )
    assert other.status_code == 201, other.text
    assert other.json()["assistant_message"]["content"] == "Still here."
    assert hanging.is_alive() and time.monotonic() - started < HANG_TIMEOUT

    hanging.join(timeout=HANG_TIMEOUT + 10)
    assert not hanging.is_alive()
    if stream:
        assert outcome["status"] == 200
        assert [e.event for e in outcome["events"]] == ["user_message", "error"]
        assert outcome["events"][-1].data["code"] == "upstream_timeout"
    else:
        assert outcome["status"] == 504
        assert outcome["body"]["code"] == "upstream_timeout"
    assert_user_message_kept(session, "Anyone there?")
    reply = ChatMessage.objects.get(session=session, message_type="assistant")
    assert reply.status == ChatMessage.Status.FAILED and reply.disabled and reply.error_code == "upstream_timeout"
    event = UsageEvent.objects.get(session=session)
    assert event.state == UsageEvent.State.RELEASED
    assert (event.billed_tokens, event.cost_usd) == (0, 0)
    assert UsageEvent.objects.get(session=other_chat).state == UsageEvent.State.SETTLED
    assert_counters_match_ledger(user)


# 4. A client that hangs up in the middle of its send, through a real socket


def raw_post(base_url: str, path: str, body: dict, cookies: dict[str, str]) -> socket.socket:
    """Send a POST on a plain socket, so the test decides exactly when the client goes away."""
    where = urlsplit(base_url)
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {where.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nX-CSRFToken: {cookies['csrftoken']}\r\n"
        f"Cookie: {'; '.join(f'{k}={v}' for k, v in cookies.items())}\r\nConnection: close\r\n\r\n"
    )
    client = socket.create_connection((where.hostname, where.port), timeout=10)
    client.sendall(head.encode() + payload)
    return client


REPLY_CHUNKS = ["One ", "two ", "three ", "four ", "five ", "six."]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_client_gone_mid_send_leaves_one_complete_reply_charged_once(
    live_server, user, session, upstream, first_text, stream
):
    upstream.enqueue_text("".join(REPLY_CHUNKS), chunks=REPLY_CHUNKS, usage=(20, 6), delay=0.1)
    cookies = sign_in(live_server.url, user.email)
    key = str(uuid.uuid4())
    body = {"message": "Count to six", "client_message_id": key, "stream": stream}
    path = f"/api/chat-sessions/{session.pk}/send/"

    client = raw_post(live_server.url, path, body, cookies)
    reply_pk = first_text.wait()
    if stream:
        received = b""
        while b"event: delta" not in received:
            piece = client.recv(65536)
            assert piece, f"the stream ended early: {received!r}"
            received += piece
    client.close()  # mid-reply: the JSON answer is not written yet, the stream has more to come

    reply_wait_blocking(reply_pk)
    reply = ChatMessage.objects.get(pk=reply_pk)
    assert (reply.status, reply.content) == (ChatMessage.Status.COMPLETE, "One two three four five six.")
    event = UsageEvent.objects.get()
    assert (event.message_id, event.state) == (reply.pk, UsageEvent.State.SETTLED)
    assert (event.prompt_tokens, event.completion_tokens) == (20, 6)

    # The client retries with the same key: it gets the first result, and nothing more is made or charged.
    with http_session(cookies) as http:
        retry = http.post(f"{live_server.url}{path}", json=body, stream=stream, timeout=10)
    if stream:
        events = events_only(parse_events(arriving(retry)))
        assert events[0].event == "user_message"
        assert [e.event for e in events][-3:] == ["assistant_message", "usage", "done"]
        assert events[-3].data["message_id"] == str(reply.message_id)
        assert events[-3].data["content"] == reply.content
    else:
        assert retry.status_code == 201, retry.text
        assert retry.headers["Idempotent-Replayed"] == "true"
        assert retry.json()["assistant_message"]["message_id"] == str(reply.message_id)
    assert_user_message_kept(session, "Count to six")
    assert ChatMessage.objects.filter(session=session).count() == 2
    assert UsageEvent.objects.count() == 1
    assert len(upstream.wait_for_requests(1)) == 1  # the upstream was asked once
    assert_counters_match_ledger(user)


# 3. PostgreSQL restarted under a real app server. First what a view answers while it is away.


def database_gone(*args, **kwargs):
    raise OperationalError("server closed the connection unexpectedly")


@pytest.mark.parametrize("path", ["/api/chat-sessions/", "/chat/"])
def test_a_database_outage_in_a_view_is_503_with_retry_after(client, user, monkeypatch, path):
    client.force_login(user)
    monkeypatch.setattr(selectors, "session_list", database_gone)

    response = client.get(path)

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    if path.startswith("/api/"):
        assert response.json() == UNAVAILABLE
    else:
        assert response["Content-Type"].startswith("text/html")
        assert b"Back in a moment" in response.content


def cluster_control() -> tuple[list[str], str, str]:
    """How to run pg_ctlcluster on the test database's cluster (the command prefix, version, name), or skip."""
    if connection.vendor != "postgresql":
        pytest.skip("Restarting the database is a PostgreSQL test.")
    host = connection.settings_dict["HOST"] or "localhost"
    if host not in ("localhost", "127.0.0.1", "::1") and not host.startswith("/"):
        pytest.skip(f"PostgreSQL runs on {host}, not on this machine: the test cannot restart it.")
    if not (shutil.which("pg_lsclusters") and shutil.which("pg_ctlcluster")):
        pytest.skip("pg_lsclusters / pg_ctlcluster (Debian's postgresql-common) are not installed.")
    port = str(connection.settings_dict["PORT"] or 5432)
    listing = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, timeout=30).stdout
    for line in listing.splitlines():
        version, name, cluster_port, status, owner, *_ = line.split()
        if cluster_port == port and status.startswith("online"):
            break
    else:
        pytest.skip(f"pg_lsclusters shows no online cluster on port {port}.")
    if os.geteuid() == 0:
        return ["runuser", "-u", owner, "--", "pg_ctlcluster"], version, name
    if pwd.getpwuid(os.geteuid()).pw_name == owner:
        return ["pg_ctlcluster"], version, name
    pytest.skip(f"Restarting cluster {version}/{name} needs root or its owner {owner}; the tests run as another user.")


# Where the database goes away as a reply ends: before its finish starts, or once its end is
# written but before that is known. On PostgreSQL, where the usual end is one statement, that
# is after the statement ran (its answer lost with the connection: the end stands); on SQLite,
# after the finish settled its usage but before it commits (rolled back). Either way the finish
# is tried again.
OUTAGES = {
    "before-the-finish": {
        "postgresql": (lifecycle, "_reply_complete_at_once", 2, "before"),
        "sqlite": (lifecycle, "_reply_complete", 2, "before"),
    },
    "after-the-write": {
        "postgresql": (lifecycle, "_reply_complete_at_once", 1, "after"),
        "sqlite": (lifecycle, "session_touch", 1, "before"),
    },
}


@pytest.mark.parametrize("outage", OUTAGES)
def test_a_reply_that_ends_while_the_database_is_away_is_saved_and_charged_once_when_it_is_back(
    api_client, user, session, upstream, monkeypatch, outage, caplog
):
    upstream.enqueue_text("Made it.", usage=(9, 3))
    module, name, failures, when = OUTAGES[outage][connection.vendor]
    real = getattr(module, name)
    attempts = []

    def after_an_outage(*args, **kwargs):
        attempts.append(1)
        failing = len(attempts) <= failures
        if failing and when == "before":
            database_gone()
        result = real(*args, **kwargs)
        if failing:
            database_gone()
        return result

    monkeypatch.setattr(module, name, after_an_outage)

    response = send(api_client, session, "Still there?")

    assert response.status_code == 201, response.content
    assert len(attempts) == failures + 1
    reply = ChatMessage.objects.get(message_type="assistant")
    assert (reply.status, reply.content) == (ChatMessage.Status.COMPLETE, "Made it.")
    (event,) = UsageEvent.objects.all()
    assert (event.state, event.prompt_tokens, event.completion_tokens) == (UsageEvent.State.SETTLED, 9, 3)
    assert_counters_match_ledger(user)
    # The finish that was tried again ended well, not left to the reaper.
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_reply_whose_connection_is_killed_while_it_streams_goes_on_and_is_saved_whole(
    api_client, user, session, upstream, monkeypatch
):
    if connection.vendor != "postgresql":
        pytest.skip("Killing another connection is a PostgreSQL test.")
    monkeypatch.setattr(runtime, "FLUSH_SECONDS", 0.05)  # every piece is flushed
    pieces = ["One ", "two ", "three ", "four ", "five ", "six."]
    upstream.enqueue_text("".join(pieces), chunks=pieces, usage=(9, 6), delay=0.3)

    events, killed = [], 0
    for item in parse_events(send(api_client, session, "Count for me", stream=True).streaming_content):
        events.extend(events_only([item]))
        if not killed and events and events[-1].event == "delta":
            wait_for(lambda: ReplyPiece.objects.exists(), what="the first flush")
            # The reply's own connection dies between two flushes, as in a database failover.
            killed = kill_other_connections()

    assert killed >= 1
    assert [e.event for e in events][-1] == "done", events[-3:]
    reply = ChatMessage.objects.get(message_type="assistant")
    assert (reply.status, reply.content, reply.error_code) == (ChatMessage.Status.COMPLETE, "".join(pieces), "")
    (event,) = UsageEvent.objects.all()
    assert (event.state, event.completion_tokens) == (UsageEvent.State.SETTLED, 6)
    assert_user_message_kept(session, "Count for me")
    assert_counters_match_ledger(user)


def test_a_stream_whose_database_goes_away_ends_with_an_error_event_and_the_reply_is_kept(
    api_client, user, session, upstream, monkeypatch
):
    upstream.enqueue_text("All of it.", usage=(9, 3))
    # The reply's own end is saved; then the stream's last reads find the database gone.
    monkeypatch.setattr(streaming, "_usage_data", lambda event: database_gone())

    response = send(api_client, session, "Are you there?", stream=True)
    events = events_only(parse_events(response.streaming_content))

    assert [e.event for e in events][-2:] == ["assistant_message", "error"]
    assert events[-1].data["code"] == "database_unavailable"
    reply = ChatMessage.objects.get(message_type="assistant")
    assert (reply.status, reply.content) == (ChatMessage.Status.COMPLETE, "All of it.")
    assert_user_message_kept(session, "Are you there?")
    assert_counters_match_ledger(user)


def database_accepts(timeout: float) -> bool:
    """Wait until PostgreSQL accepts connections to the test database again."""
    db = connection.settings_dict
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(
                host=db["HOST"] or None, port=db["PORT"] or None, dbname=db["NAME"],
                user=db["USER"], password=db["PASSWORD"], connect_timeout=2,
            ) as probe:  # fmt: skip
                probe.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            time.sleep(0.1)
    return False


def cluster_restore(control: list[str], version: str, name: str) -> None:
    """However the restart went, leave the cluster running for everyone else."""
    if database_accepts(30):
        return
    subprocess.run([*control, version, name, "start"], cwd="/", capture_output=True, timeout=120)
    assert database_accepts(60), f"PostgreSQL {version}/{name} did not come back"


class Traffic:
    """Clients that keep an app server busy, each with one kind of request, and record every answer.

    A send that is refused is sent again with the same client_message_id until it
    passes, as a well-behaved client retries: so every message must end up saved once.
    """

    KINDS = ("send", "list", "ready", "page")

    def __init__(self, server: AppServer, cookies: dict[str, str], chat_pk: int) -> None:
        self.server = server
        self.cookies = cookies
        self.chat_pk = chat_pk
        self.answers: list[dict] = []
        self.keys_sent: set[str] = set()
        self.keys_created: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stopped_at = 0.0
        self._threads = [
            threading.Thread(target=self._run, args=(kind,), name=f"traffic-{kind}") for kind in self.KINDS
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stopped_at = time.monotonic()
            self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def ok_since(self, kind: str, since: float) -> bool:
        with self._lock:
            return any(a["kind"] == kind and a["started"] >= since and a["status"] in (200, 201) for a in self.answers)

    def _run(self, kind: str) -> None:
        key = None
        with http_session(self.cookies) as http:
            # A send in progress finishes even after the stop (within reason): its message must not be left behind.
            while not self._stop.is_set() or (key is not None and time.monotonic() < self._stopped_at + 30):
                if kind == "send" and key is None:
                    key = str(uuid.uuid4())
                    with self._lock:
                        self.keys_sent.add(key)
                answer = self._request(http, kind, key)
                if kind == "send" and answer["status"] == 201:
                    with self._lock:
                        self.keys_created[key] += 1
                    key = None
                time.sleep(0.01)

    def _request(self, http: requests.Session, kind: str, key: str | None) -> dict:
        url = self.server.url
        started = time.monotonic()
        try:
            if kind == "send":
                payload = {"message": f"message {key}", "client_message_id": key}
                response = http.post(f"{url}/api/chat-sessions/{self.chat_pk}/send/", json=payload, timeout=60)
            elif kind == "list":
                response = http.get(f"{url}/api/chat-sessions/", timeout=60)
            elif kind == "ready":
                response = http.get(f"{url}/health/ready/", timeout=60)
            else:
                response = http.get(f"{url}/chat/", timeout=60)
            answer = {
                "status": response.status_code,
                "type": response.headers.get("Content-Type", ""),
                "retry_after": response.headers.get("Retry-After"),
                "text": response.text[:500],
            }
        except requests.RequestException as exc:
            answer = {"status": None, "type": "", "retry_after": None, "text": repr(exc)}
        answer |= {"kind": kind, "started": started, "ended": time.monotonic()}
        with self._lock:
            self.answers.append(answer)
        return answer


def wait_every_kind_ok(traffic: Traffic, since: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(traffic.ok_since(kind, since) for kind in Traffic.KINDS):
        if time.monotonic() > deadline:
            late = [kind for kind in Traffic.KINDS if not traffic.ok_since(kind, since)]
            pytest.fail(f"no success within {timeout} s for {late}: {traffic.answers[-8:]}")
        time.sleep(0.05)


def test_a_postgresql_restart_answers_503_meanwhile_and_the_same_server_recovers(tmp_path):
    control, version, name = cluster_control()
    tier = SubscriptionTypeFactory()  # no limits: every send may pass
    user = UserFactory()
    # The server runs production settings, which do not know the tests' fast MD5 hasher.
    user.password = make_password(PASSWORD, hasher=PBKDF2PasswordHasher())
    user.save(update_fields=["password"])
    subscription_assign(user=user, subscription_type=tier)
    chat = ChatSessionFactory(user=user, chatbot=ChatbotFactory(), ai_model=AIModelFactory(provider="demo"))
    # Pooled connections: the restart kills them all, and the pool's checks must notice.
    env = production_env(tmp_path / "media", GUNICORN_WORKERS="2")
    server = AppServer(name="gunicorn", env=env, log_dir=tmp_path)
    traffic = None
    try:
        server.start()
        server.wait_ready(time.monotonic() + BOOT_SECONDS)
        traffic = Traffic(server, sign_in(server.url, user.email), chat.pk)
        traffic.start()
        wait_every_kind_ok(traffic, since=0, timeout=20)

        restart_began = time.monotonic()
        try:
            restarted = subprocess.run(
                [*control, version, name, "restart", "-m", "fast"], cwd="/", capture_output=True, text=True, timeout=120
            )
        finally:
            cluster_restore(control, version, name)
        back = time.monotonic()
        assert restarted.returncode == 0, restarted.stderr

        wait_every_kind_ok(traffic, since=back, timeout=30)
        time.sleep(0.5)  # a little more traffic with the database back
        traffic.stop()
        still_running = server.process.poll() is None
    finally:
        if traffic is not None:
            traffic.stop()
        server.stop()
        connection.close()  # this process's own connection died in the restart too
        wait_connections_gone()

    answers = traffic.answers
    assert still_running, f"the app server exited:\n{server.stderr()}"
    unexpected = [a for a in answers if a["status"] not in (200, 201, 503)]
    assert not unexpected, (unexpected[:5], server.stderr())
    outage = [a for a in answers if a["status"] == 503]
    assert any(a["kind"] == "ready" for a in outage), (
        f"the readiness check never saw the outage ({back - restart_began:.2f} s)",
        Counter(a["status"] for a in answers),
    )
    for answer in outage:
        assert restart_began <= answer["ended"] and answer["started"] <= back, answer
        if answer["kind"] == "page":
            assert answer["type"].startswith("text/html") and "Back in a moment" in answer["text"], answer
        else:
            assert answer["type"] == "application/json", answer
            body = json.loads(answer["text"])
            assert body["code"] == "database_unavailable" and body["detail"], answer
        if answer["kind"] != "ready":
            assert answer["retry_after"] == "5", answer
    # Once PostgreSQL is back, the same server (its connections renewed) answers every request.
    assert all(a["status"] in (200, 201) for a in answers if a["started"] >= back), [
        a for a in answers if a["started"] >= back and a["status"] == 503
    ][:5]

    # Nothing lost: every message a client sent was saved, once, with its reply.
    wait_for(
        lambda: not ChatMessage.objects.filter(status=ChatMessage.Status.GENERATING).exists(),
        timeout=40,
        what="every reply ended",
    )
    assert set(traffic.keys_created) == traffic.keys_sent and set(traffic.keys_created.values()) == {1}
    saved = ChatMessage.objects.filter(session=chat, message_type=ChatMessage.Type.USER)
    assert sorted(str(k) for k in saved.values_list("client_message_id", flat=True)) == sorted(traffic.keys_sent)
    replies = ChatMessage.objects.filter(session=chat, message_type=ChatMessage.Type.ASSISTANT)
    assert Counter(replies.values_list("status", flat=True)) == {ChatMessage.Status.COMPLETE: len(traffic.keys_sent)}
    # Nothing charged twice: one settled ledger row per reply, and the counters agree.
    assert Counter(UsageEvent.objects.filter(user=user).values_list("message_id", "state")) == {
        (pk, UsageEvent.State.SETTLED): 1 for pk in replies.values_list("pk", flat=True)
    }
    assert_counters_match_ledger(user)


# 5. A server that dies with a reply in flight. The send below commits its start and is never
# run, as when the process is killed right after; its last write is then ORPHANED_AFTER old.


def orphan(user, session, key: uuid.UUID, *, flushed: str) -> ChatMessage:
    started = message_send(session=session, user=user, content="Anyone there?", client_message_id=key)
    stale = timezone.now() - lifecycle.ORPHANED_AFTER - timedelta(seconds=1)
    if flushed:
        ReplyPiece.objects.create(message=started.reply, offset=0, text=flushed)
    ChatMessage.objects.filter(pk=started.reply.pk).update(updated_at=stale)
    return started.reply


@pytest.mark.parametrize("flushed", ["Half an answer", ""], ids=["with-text", "empty"])
def test_a_send_retried_after_its_server_died_ends_the_orphaned_reply_at_once(api_client, user, session, flushed):
    key = uuid.uuid4()
    reply = orphan(user, session, key, flushed=flushed)

    response = send(api_client, session, "Anyone there?", client_message_id=str(key))

    (event,) = UsageEvent.objects.filter(message=reply)
    reply.refresh_from_db()
    if flushed:
        assert response.status_code == 201, response.content
        assert response["Idempotent-Replayed"] == "true"
        body = response.json()["assistant_message"]
        assert (body["status"], body["content"]) == ("partial", flushed)
        assert (reply.status, reply.error_code) == (ChatMessage.Status.PARTIAL, "interrupted")
        assert (event.state, event.completion_tokens) == (UsageEvent.State.SETTLED, estimate_tokens(flushed))
    else:
        assert response.status_code == 502, response.content
        assert response.json()["code"] == "upstream_error"
        assert (reply.status, reply.disabled) == (ChatMessage.Status.FAILED, True)
        assert event.state == UsageEvent.State.RELEASED
    assert_user_message_kept(session, "Anyone there?")
    assert_counters_match_ledger(user)


def test_following_a_reply_whose_server_died_ends_it_and_the_stream(api_client, user, session):
    reply = orphan(user, session, uuid.uuid4(), flushed="Half an answer")

    response = api_client.get(f"/api/chat-sessions/{session.pk}/messages/{reply.message_id}/stream/")
    events = events_only(parse_events(response.streaming_content))

    assert events[0].event == "delta" and events[0].data["content"] == "Half an answer"
    assert events[-1].event == "done" and events[-1].data["status"] == "partial", events
    assert UsageEvent.objects.get(message=reply).state == UsageEvent.State.SETTLED
    assert_counters_match_ledger(user)


def test_a_reply_waiting_on_a_silent_upstream_is_marked_alive_and_never_taken_for_orphaned(
    api_client, user, session, upstream, monkeypatch
):
    monkeypatch.setattr(runtime, "HEARTBEAT_SECONDS", 0.2)
    upstream.enqueue_hang(3)
    response = send(api_client, session, "Think hard", stream=True)
    items = parse_events(response.streaming_content)
    assert next(item for item in items if not isinstance(item, str)).event == "user_message"
    reply = ChatMessage.objects.get(message_type="assistant")

    def marked_after(moment):
        return wait_for(
            lambda: ChatMessage.objects.filter(pk=reply.pk, updated_at__gt=moment, content="").exists(),
            timeout=3,
            what="a heartbeat",
        )

    marked_after(reply.updated_at)
    if connection.vendor == "postgresql":
        # The watcher's own connection dies: it opens another and goes on marking the reply.
        kill_other_connections()
    marked_after(timezone.now())
    assert not lifecycle.reply_orphaned(ChatMessage.objects.get(pk=reply.pk))
    assert not lifecycle.reply_reap(reply.pk)  # a reaper anywhere leaves it alone

    # The upstream hangs up without an answer; the call is tried again and answered.
    assert [e.event for e in events_only(items)][-1] == "done"
    reply.refresh_from_db()
    assert (reply.status, reply.error_code) == (ChatMessage.Status.COMPLETE, "")
    assert UsageEvent.objects.get(message=reply).state == UsageEvent.State.SETTLED
    assert_counters_match_ledger(user)
