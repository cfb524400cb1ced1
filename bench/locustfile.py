"""Locust users for `make bench` and `make load`; bench/run.py and bench/load.py start locust with them.

Each simulated client is one signed-in user of the data set (BENCH_CLIENTS: a JSON list of
session cookie, CSRF token and long chat per user). The user class picks the scenario:

    ListSessions, ListMessages, Search, SendPlain, SendStream   one endpoint each (bench)
    Soak                                                        all of them mixed (load)

BENCH_PACE=s makes each client wait 0.5-1.5 s between requests (0: back to back).
At the end every response time is written to BENCH_SAMPLES (JSON, name -> [ms]), and, for
Soak, every message a 2xx send answered with to BENCH_RECORD (JSON lines), which
bench/load.py then looks up in the database.
"""

import itertools
import json
import os
import random
import re
import time
from collections import defaultdict
from pathlib import Path

from locust import FastHttpUser, HttpUser, between, constant, events, task

CLIENTS = json.loads(Path(os.environ["BENCH_CLIENTS"]).read_text()) if os.environ.get("BENCH_CLIENTS") else []
PACE = float(os.environ.get("BENCH_PACE", "0"))
SEARCH_WORD = os.environ.get("BENCH_SEARCH_WORD", "zanzibar")
SENDS_PER_CHAT = 10
STAMP = re.compile(r"\[(\d+\.\d+)\] ")

_next_client = itertools.count()
_samples: dict[str, list[float]] = defaultdict(list)
_errors: dict[str, int] = defaultdict(int)
_records: list[dict] = []


@events.request.add_listener
def _sample(request_type, name, response_time, exception, response=None, **kwargs):
    if exception is None:
        _samples[name].append(response_time)
    else:
        status = getattr(response, "status_code", None) or type(exception).__name__
        _errors[f"{name}: {status}"] += 1


@events.quitting.add_listener
def _write(environment, **kwargs):
    if path := os.environ.get("BENCH_SAMPLES"):
        with open(path, "w") as out:
            json.dump({"samples": _samples, "errors": _errors}, out)
    if path := os.environ.get("BENCH_RECORD"):
        with open(path, "w") as out:
            out.writelines(json.dumps(record) + "\n" for record in _records)


def _wait():
    # Paced clients wait 0.5-1.5 pace between requests, so they do not all fire in step.
    return between(PACE / 2, PACE * 1.5) if PACE else constant(0)


class Client:
    """What every scenario shares: one user's cookies and headers, and a fresh chat every few sends."""

    def on_start(self):
        me = CLIENTS[next(_next_client) % len(CLIENTS)]
        self.long_chat = me["long_chat"]
        self.models = {"plain": me["model"], "streamed": me["paced_model"]}
        self.chatbot = me["chatbot"]
        session_cookie, csrf_cookie = me["cookies"]
        self.headers = {
            "Cookie": f"{session_cookie}={me['session']}; {csrf_cookie}={me['csrf']}",
            "X-CSRFToken": me["csrf"],
            "Accept": "application/json",
        }
        self.chats = {}  # kind of send -> [chat id, sends in it]

    def current_chat(self, kind: str) -> int | None:
        """The chat for this kind of send; a new one every SENDS_PER_CHAT sends."""
        chat = self.chats.get(kind)
        if chat is None or chat[1] >= SENDS_PER_CHAT:
            body = {"chatbot_id": self.chatbot, "ai_model_id": self.models[kind]}
            response = self.client.post("/api/chat-sessions/", json=body, headers=self.headers, name="create chat")
            if response.status_code != 201:
                return None
            chat = self.chats[kind] = [response.json()["id"], 0]
        chat[1] += 1
        return chat[0]

    def send_plain(self):
        chat = self.current_chat("plain")
        if chat is None:
            return
        text = f"Plain question {random.randrange(10**9)}"
        response = self.client.post(
            f"/api/chat-sessions/{chat}/send/", json={"message": text}, headers=self.headers, name="send (plain)"
        )
        if response.status_code == 201 and os.environ.get("BENCH_RECORD"):
            body = response.json()
            _records.append(
                {"chat": chat, "user_text": text, "user_message": body["user_message"]["message_id"],
                 "reply": body["assistant_message"]["message_id"], "reply_text": body["assistant_message"]["content"]}
            )  # fmt: skip

    def list_sessions(self):
        self.client.get("/api/chat-sessions/", headers=self.headers, name="list sessions")

    def list_messages(self):
        self.client.get(f"/api/chat-sessions/{self.long_chat}/messages/", headers=self.headers, name="list messages")

    def search(self):
        self.client.get(f"/api/chat-sessions/search/?q={SEARCH_WORD}", headers=self.headers, name="search")


class ListSessions(Client, FastHttpUser):
    wait_time = _wait()

    @task
    def scenario(self):
        self.list_sessions()


class ListMessages(Client, FastHttpUser):
    wait_time = _wait()

    @task
    def scenario(self):
        self.list_messages()


class Search(Client, FastHttpUser):
    wait_time = _wait()

    @task
    def scenario(self):
        self.search()


class SendPlain(Client, FastHttpUser):
    wait_time = _wait()

    @task
    def scenario(self):
        self.send_plain()


class Streaming(Client, HttpUser):
    """Streams through `requests`, which hands over each chunk of the response as it arrives."""

    abstract = True

    def send_stream(self):
        chat = self.current_chat("streamed")
        if chat is None:
            return
        text = f"Streamed question {random.randrange(10**9)}"
        headers = {**self.headers, "Accept": "text/event-stream"}
        # Locust times this request to its response headers, which leave with the first event.
        with self.client.post(
            f"/api/chat-sessions/{chat}/send/", json={"message": text, "stream": True}, headers=headers,
            name="send (streamed): first byte", stream=True, catch_response=True,
        ) as response:  # fmt: skip
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")
                return
            started = time.perf_counter()
            events_seen, reply, user_message, reply_id, buffer = [], "", None, None, b""
            for chunk in response.iter_content(chunk_size=None):
                arrived = time.time()
                buffer += chunk
                while b"\n\n" in buffer:
                    raw, buffer = buffer.split(b"\n\n", 1)
                    event, data = _parse_event(raw)
                    if event is None:
                        continue
                    events_seen.append(event)
                    if event == "delta":
                        reply += data["content"]
                        for sent in STAMP.findall(data["content"]):
                            _fire(self, "send (streamed): upstream chunk to client", (arrived - float(sent)) * 1000)
                    elif event == "user_message":
                        user_message = data["message_id"]
                    elif event == "assistant_message":
                        reply_id = data["message_id"]
            if events_seen[-1:] != ["done"] or "error" in events_seen:
                response.failure(f"stream ended with {events_seen[-2:]}")
                return
            _fire(self, "send (streamed): rest of the stream", (time.perf_counter() - started) * 1000)
            if os.environ.get("BENCH_RECORD"):
                _records.append(
                    {"chat": chat, "user_text": text, "user_message": user_message, "reply": reply_id,
                     "reply_text": reply}
                )  # fmt: skip


class SendStream(Streaming):
    wait_time = _wait()

    @task
    def scenario(self):
        self.send_stream()


class Soak(Streaming):
    """What `make load` runs: people reading and chatting, a request every second or so each."""

    wait_time = between(0.5, 1.5)

    @task(3)
    def plain(self):
        self.send_plain()

    @task(3)
    def streamed(self):
        self.send_stream()

    @task(2)
    def sessions(self):
        self.list_sessions()

    @task(1)
    def messages(self):
        self.list_messages()

    @task(1)
    def find(self):
        self.search()


def _parse_event(raw: bytes) -> tuple[str | None, dict | None]:
    event, data = None, None
    for line in raw.decode().splitlines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data = json.loads(line[5:])
    return event, data


def _fire(user, name: str, ms: float) -> None:
    user.environment.events.request.fire(
        request_type="SSE", name=name, response_time=ms, response_length=0, exception=None, context={}
    )
