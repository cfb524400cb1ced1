"""Replies on real app servers (gunicorn with uvicorn workers) over PostgreSQL.

Across servers, stops and pieces travel by LISTEN/NOTIFY: the servers here re-read the
database only once a minute (REPLY_RECHECK_SECONDS), so what arrives sooner came by
notification. Also: a server that stops lets its replies finish or ends them at once,
connections stay few whatever the load, and one user cannot take more than their share.
Each worker runs on a CPU core of its own.
"""

import functools
import json
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests
from django.contrib.auth.hashers import PBKDF2PasswordHasher, make_password
from django.db import connection

from accounts.tests.factories import PASSWORD, UserFactory
from apikeys.tests.factories import make_key
from billing.models import UsageEvent
from billing.services import subscription_assign
from billing.tests.factories import SubscriptionTypeFactory
from chatbots.providers.base import estimate_tokens
from chatbots.tests.factories import AIModelFactory, ChatbotFactory
from chatsite.testing.appserver import (
    BOOT_SECONDS,
    AppServer,
    http_session,
    other_connections,
    production_env,
    sign_in,
    wait_connections_gone,
)
from chatsite.testing.upstream import StubUpstream
from sessions_app.models import ChatMessage, ReplyPiece
from sessions_app.tests.factories import ChatSessionFactory

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="LISTEN/NOTIFY and pooling are PostgreSQL's."),
    pytest.mark.django_db(transaction=True),
]

TIMEOUT = 20


@pytest.fixture
def stub():
    with StubUpstream() as upstream:
        yield upstream


@pytest.fixture
def start_servers(tmp_path, stub):
    """Start app servers on the test database (and the stub upstream); all stopped after the test."""
    started: list[AppServer] = []

    def start(count: int = 1, **env: str) -> list[AppServer]:
        defaults = {"GUNICORN_WORKERS": "1", "REPLY_RECHECK_SECONDS": "60", "REPLY_GRACE_SECONDS": "1"}
        settings = production_env(
            tmp_path / "media",
            AI_BASE_URL=stub.base_url,
            AI_API_KEY="test-key",
            AI_RETRY_BACKOFF="0",
            **{**defaults, **env},
        )
        servers = [AppServer(name=f"server-{len(started) + n}", env=settings, log_dir=tmp_path) for n in range(count)]
        started.extend(servers)
        for server in servers:
            server.start()
        deadline = time.monotonic() + BOOT_SECONDS
        for server in servers:
            server.wait_ready(deadline)
        return servers

    yield start
    for server in started:
        server.stop()
    wait_connections_gone()


def member(email: str):
    """A user with no limits, whose password the servers' production hasher knows."""
    user = UserFactory(email=email)
    user.password = make_password(PASSWORD, hasher=PBKDF2PasswordHasher())
    user.save(update_fields=["password"])
    subscription_assign(user=user, subscription_type=SubscriptionTypeFactory())
    return user


@pytest.fixture
def chat():
    user = member("streamer@example.com")
    model = AIModelFactory(model_id="vendor/chat", provider="openai")
    return ChatSessionFactory(user=user, chatbot=ChatbotFactory(), ai_model=model)


def signed_in(server: AppServer, email: str) -> requests.Session:
    return http_session(sign_in(server.url, email, PASSWORD))


class Reader:
    """Reads an event stream in a thread, noting when each event arrived."""

    def __init__(self, response: requests.Response) -> None:
        self.response = response
        self.events: list[tuple[float, str, object]] = []
        self.arrived = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        name = None
        try:
            for line in self.response.iter_lines(chunk_size=1, decode_unicode=True):
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: ") and name:
                    with self.arrived:
                        self.events.append((time.monotonic(), name, json.loads(line.removeprefix("data: "))))
                        self.arrived.notify_all()
        except requests.RequestException:
            pass  # the server went away mid-stream
        finally:
            with self.arrived:
                self.events.append((time.monotonic(), "closed", None))
                self.arrived.notify_all()

    def wait_for(self, name: str, timeout: float = TIMEOUT) -> tuple[float, object]:
        with self.arrived:
            found = self.arrived.wait_for(lambda: any(e[1] == name for e in self.events), timeout)
        assert found, f"no {name} event within {timeout} s: {self.events[-3:]}"
        return next((at, data) for at, event, data in self.events if event == name)

    def names(self) -> list[str]:
        return [name for _, name, _ in self.events if name != "closed"]

    def text(self) -> str:
        return "".join(data["content"] for _, name, data in self.events if name == "delta")


def stream_send(server: AppServer, http: requests.Session, chat_pk: int, text: str = "Go on") -> Reader:
    response = http.post(
        f"{server.url}/api/chat-sessions/{chat_pk}/send/",
        json={"message": text, "stream": True},
        stream=True,
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    return Reader(response)


SILENT_AFTER_ONE_CHUNK = [
    b'data: {"choices":[{"index":0,"delta":{"content":"Thinking about it"}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{"content":" at length"}}]}\n\ndata: [DONE]\n\n',
]


def test_a_stop_made_on_one_server_ends_a_reply_running_on_another(start_servers, stub, chat):
    a, b = start_servers(2)
    stub.enqueue_raw(SILENT_AFTER_ONE_CHUNK, delay=60)  # after its first piece, the upstream is silent for a minute
    reader = stream_send(a, signed_in(a, chat.user.email), chat.pk)
    reader.wait_for("delta")

    stopped = signed_in(b, chat.user.email).post(f"{b.url}/api/chat-sessions/{chat.pk}/stop/", timeout=TIMEOUT)

    assert stopped.status_code == 200 and len(stopped.json()["stopped_message_ids"]) == 1
    _, done = reader.wait_for("done", timeout=10)  # neither the upstream (60 s) nor a re-read (60 s) ended it
    assert done["status"] == "stopped"
    reply = ChatMessage.objects.get(message_type="assistant")
    assert (reply.status, reply.content) == (ChatMessage.Status.STOPPED, "Thinking about it")
    event = UsageEvent.objects.get(message=reply)
    assert (event.state, event.completion_tokens) == (UsageEvent.State.SETTLED, estimate_tokens("Thinking about it"))


def test_a_follower_on_another_server_gets_each_piece_as_it_arrives(start_servers, stub, chat):
    a, b = start_servers(2)
    pieces = [f"piece {n}. " for n in range(8)]
    stub.enqueue_text("".join(pieces), chunks=pieces, usage=(10, 16), delay=0.4)
    sender = stream_send(a, signed_in(a, chat.user.email), chat.pk)
    sender.wait_for("delta")
    reply = ChatMessage.objects.get(message_type="assistant")

    response = signed_in(b, chat.user.email).get(
        f"{b.url}/api/chat-sessions/{chat.pk}/messages/{reply.message_id}/stream/", stream=True, timeout=TIMEOUT
    )
    assert response.status_code == 200
    follower = Reader(response)
    follower.wait_for("done")

    assert follower.text() == "".join(pieces) == sender.text()
    # Piece by piece while the reply ran on A: the database was read only when the follow began.
    deltas = [name for name in follower.names() if name == "delta"]
    assert len(deltas) >= 5, follower.names()
    assert follower.names()[-3:] == ["assistant_message", "usage", "done"]
    assert not ReplyPiece.objects.exists()  # folded into the reply at its end


def test_a_stopping_server_lets_short_replies_finish_and_ends_long_ones_at_once(start_servers, stub, chat):
    # Streams get half of the graceful timeout (2 s), then the replies left running 1 s more.
    (server,) = start_servers(1, GUNICORN_GRACEFUL_TIMEOUT="4", REPLY_GRACE_SECONDS="1")
    http = signed_in(server, chat.user.email)
    short = [f"s{n} " for n in range(3)]
    stub.enqueue_text("".join(short), chunks=short, usage=(5, 3), delay=0.3)
    short_reader = stream_send(server, http, chat.pk, "short")
    short_reader.wait_for("delta")
    long_chunks = [f"l{n} " for n in range(100)]
    stub.enqueue_text("".join(long_chunks), chunks=long_chunks, usage=(5, 100), delay=0.5)
    long_reader = stream_send(server, http, chat.pk, "long")
    long_reader.wait_for("delta")

    began = time.monotonic()
    server.stop()  # SIGTERM, as a deploy does
    stopped_after = time.monotonic() - began

    assert server.process.returncode == 0, server.stderr()
    assert stopped_after < 10, stopped_after  # ended at once after the grace, not killed after gunicorn's timeout
    replies = {m.content.split(" ")[0][:1]: m for m in ChatMessage.objects.filter(message_type="assistant")}
    assert (replies["s"].status, replies["s"].content) == (ChatMessage.Status.COMPLETE, "".join(short))
    cut = replies["l"]
    assert (cut.status, cut.error_code) == (ChatMessage.Status.PARTIAL, "interrupted")
    assert 0 < len(cut.content) < len("".join(long_chunks)) and "".join(long_chunks).startswith(cut.content)
    events = {e.message_id: e for e in UsageEvent.objects.all()}
    assert events[replies["s"].pk].state == events[cut.pk].state == UsageEvent.State.SETTLED
    assert events[cut.pk].completion_tokens == estimate_tokens(cut.content)  # what was produced, no more
    assert not ChatMessage.objects.filter(status=ChatMessage.Status.GENERATING).exists()


def test_connections_stay_few_however_many_replies_stream(start_servers, stub, chat):
    stub.stamped = (10, 0.3)  # every reply: ten pieces, 3 s in all
    before = other_connections()  # this process's own, besides the test's
    (server,) = start_servers(1, GUNICORN_WORKERS="2", DB_POOL_MAX_SIZE="3", MAX_ACTIVE_REPLIES_PER_USER="0")
    http = signed_in(server, chat.user.email)
    cookies, token = http.cookies.get_dict(), http.headers["X-CSRFToken"]
    chats = [ChatSessionFactory(user=chat.user, chatbot=chat.chatbot, ai_model=chat.ai_model) for _ in range(60)]
    most, sampling = [0], threading.Event()

    def sample() -> None:
        try:
            while not sampling.is_set():
                most[0] = max(most[0], other_connections() - before - 1)  # less the test's own
                time.sleep(0.05)
        finally:
            connection.close()

    def one(chat_pk: int) -> str:
        with requests.Session() as client:
            client.cookies.update(cookies)
            response = client.post(
                f"{server.url}/api/chat-sessions/{chat_pk}/send/",
                json={"message": "Count", "stream": True},
                headers={"X-CSRFToken": token},
                timeout=TIMEOUT,
            )
            return response.text

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with ThreadPoolExecutor(max_workers=len(chats)) as pool:
        bodies = list(pool.map(one, [c.pk for c in chats]))
    sampling.set()
    sampler.join()

    assert all("event: done" in body for body in bodies)
    assert Counter(ChatMessage.objects.filter(message_type="assistant").values_list("status", flat=True)) == {
        ChatMessage.Status.COMPLETE: len(chats)
    }
    # Per worker: its pool (3) and its listener; never one per reply (60), as threads held them.
    assert most[0] <= 2 * (3 + 1), most[0]


def test_one_user_holding_a_hundred_streams_slows_no_one_else(start_servers, stub, chat):
    (server,) = start_servers(1)
    for _ in range(3):  # the user's share of replies in flight, each waiting on a silent upstream
        stub.enqueue_raw(SILENT_AFTER_ONE_CHUNK, delay=60)
    greedy = signed_in(server, chat.user.email)
    running = stream_send(server, greedy, chat.pk, "take your time")
    running.wait_for("delta")
    reply = ChatMessage.objects.get(message_type="assistant")
    cookies = greedy.cookies.get_dict()
    follow_url = f"{server.url}/api/chat-sessions/{chat.pk}/messages/{reply.message_id}/stream/"
    held: list[requests.Response] = []
    lock = threading.Lock()

    def follow(_: int) -> tuple[int, dict, str | None]:
        client = requests.Session()
        client.cookies.update(cookies)
        response = client.get(follow_url, stream=True, timeout=TIMEOUT)
        if response.status_code == 200:
            with lock:
                held.append(response)  # kept open
            return 200, {}, None
        return response.status_code, response.json(), response.headers.get("Retry-After")

    with ThreadPoolExecutor(max_workers=100) as pool:
        answers = list(pool.map(follow, range(100)))
    more = [stream_send(server, greedy, chat.pk, "and this") for _ in range(2)]
    for reader in more:
        reader.wait_for("delta")
    refused = greedy.post(f"{server.url}/api/chat-sessions/{chat.pk}/send/", json={"message": "one more"}, timeout=5)

    # Someone else meanwhile: a streamed send and the health check answer as usual.
    other = member("patient@example.com")
    other_chat = ChatSessionFactory(user=other, chatbot=chat.chatbot, ai_model=chat.ai_model)
    reader = stream_send(server, signed_in(server, other.email), other_chat.pk, "Hello")
    reader.wait_for("done", timeout=5)
    health = requests.get(f"{server.url}/health/", timeout=2)

    assert Counter(status for status, _, _ in answers) == {200: 10, 429: 90}
    assert all(body["code"] == "too_many_streams" and retry for status, body, retry in answers if status == 429)
    # The user's share of replies in flight is 3: a fourth is refused, and nothing of it saved.
    assert (refused.status_code, refused.json()["code"]) == (429, "too_many_streams"), refused.text
    assert refused.headers["Retry-After"]
    assert not ChatMessage.objects.filter(content="one more").exists()
    assert reader.text() == "Hello from the stub." and health.status_code == 200
    for response in held:
        response.close()


@pytest.mark.parametrize("via", ["send", "v1"])
def test_a_reply_awaited_as_json_holds_no_request_thread(start_servers, stub, chat, via):
    (server,) = start_servers(1, REQUEST_THREADS="1")
    stub.enqueue_raw(SILENT_AFTER_ONE_CHUNK, delay=8)  # the JSON answer comes once the reply ends, 8 s on
    http = signed_in(server, chat.user.email)
    if via == "send":
        post = functools.partial(http.post, f"{server.url}/api/chat-sessions/{chat.pk}/send/", json={"message": "Hi"})
    else:
        body = {"model": chat.ai_model.model_id, "messages": [{"role": "user", "content": "Hi"}]}
        key = make_key(chat.user)[1]
        post = functools.partial(
            requests.post, f"{server.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        )
    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(post, timeout=TIMEOUT)
        stub.wait_for_requests(1)
        # The worker's only request thread answers someone else meanwhile.
        listed = http.get(f"{server.url}/api/chat-sessions/", timeout=TIMEOUT)
        still_waiting = not waiting.done()
        answer = waiting.result(timeout=TIMEOUT)

    assert listed.status_code == 200 and still_waiting
    assert answer.status_code == (201 if via == "send" else 200), answer.text
    if via == "send":
        assert answer.json()["assistant_message"]["content"] == "Thinking about it at length"
    else:
        assert answer.json()["choices"][0]["message"]["content"] == "Thinking about it at length"
    assert answer.headers["Content-Type"] == "application/json"
    assert int(answer.headers["Content-Length"]) == len(answer.content)
    assert answer.headers["X-Frame-Options"] == "DENY"  # the middleware's headers, kept


# The cores this process may run on (Linux only), which the servers it starts inherit.
CORES = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()


def worker_pids(server: AppServer) -> set[int]:
    """The gunicorn master's children: its workers."""
    return {child.pid for child in psutil.Process(server.process.pid).children()}


def workers_logged(server: AppServer, count: int, line: str, *, other_than: set[int] = frozenset()) -> set[int]:
    """The master's `count` workers once each has logged `line` (with its pid for {pid})."""
    deadline = time.monotonic() + BOOT_SECONDS
    while time.monotonic() < deadline:
        pids = worker_pids(server) - other_than
        log = server.stderr_path.read_text(errors="replace")
        if len(pids) == count and all(line.format(pid=pid) in log for pid in pids):
            return pids
        time.sleep(0.1)
    raise AssertionError(f"{count} workers did not log {line!r}:\n{server.stderr()}")


@pytest.mark.skipif(len(CORES) < 2, reason="needs Linux and two cores")
def test_each_worker_runs_on_a_core_of_its_own_and_a_recycled_one_takes_the_freed_core(start_servers):
    (server,) = start_servers(1, GUNICORN_WORKERS="2")
    first = workers_logged(server, 2, "Worker {pid} pinned to CPU core")
    cores = {pid: os.sched_getaffinity(pid) for pid in first}
    assert [len(held) for held in cores.values()] == [1, 1]
    assert len(set.union(*cores.values())) == 2

    recycled = min(first)
    os.kill(recycled, signal.SIGTERM)  # as max_requests would; the master starts another
    (new,) = workers_logged(server, 1, "Worker {pid} pinned to CPU core", other_than=first)

    assert os.sched_getaffinity(new) == cores[recycled]


@pytest.mark.skipif(not CORES, reason="needs Linux")
def test_workers_are_not_pinned_when_told_not_to(start_servers):
    (server,) = start_servers(1, GUNICORN_WORKERS="2", GUNICORN_PIN_WORKERS="0")
    workers = workers_logged(server, 2, "Booting worker with pid: {pid}")

    assert all(os.sched_getaffinity(pid) == os.sched_getaffinity(server.process.pid) for pid in workers)
    assert "pinned" not in server.stderr_path.read_text()
