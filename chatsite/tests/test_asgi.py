"""The ASGI worker: its start (URLconf loaded, collector set for thousands of replies), and how it serves a request."""

import asyncio
import gc
import time

import pytest
from django.core import signals
from django.db import connection
from django.http import HttpResponse, StreamingHttpResponse
from django.urls import path

from chatsite.asgi import COLLECTOR_THRESHOLDS, RequestThreadsHandler, collector_tune
from chatsite.testing.appserver import AppServer, production_env, serving


@pytest.fixture
def collector_restored():
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_the_collector_looks_at_young_objects_less_often_and_never_at_those_of_the_start(collector_restored):
    collector_tune()

    assert gc.get_threshold() == COLLECTOR_THRESHOLDS
    assert COLLECTOR_THRESHOLDS[0] >= 10_000  # Python's default is 700
    # Everything alive now (the whole of Django, here) is out of the collector's sight.
    assert gc.get_freeze_count() > 10_000


@pytest.mark.skipif(connection.vendor != "postgresql", reason="App servers run on PostgreSQL.")
@pytest.mark.django_db(transaction=True)
def test_every_worker_sets_its_collector_as_it_starts(tmp_path):
    server = AppServer(name="collector", env=production_env(tmp_path / "media", GUNICORN_WORKERS="2"), log_dir=tmp_path)
    with serving(server):
        deadline = time.monotonic() + 10
        while len(started := _collector_lines(server)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # ready once one worker answers; the other may still be starting

    assert len(started) == 2, server.stderr()
    assert all(f"thresholds {COLLECTOR_THRESHOLDS}" in line for line in started)
    # Each worker imported its views as it started (the readiness probe, /health/, resolves no URL).
    loaded = [line for line in server.stderr_path.read_text().splitlines() if "URLconf loaded:" in line]
    assert len(loaded) == 2, server.stderr()


def _collector_lines(server: AppServer) -> list[str]:
    return [line for line in server.stderr_path.read_text().splitlines() if "garbage collector:" in line]


# ---- a request: one step in its thread --------------------------------------------------------


class Parts:
    """A streamed body that notes when it is closed."""

    def __init__(self, events: list) -> None:
        self.events = events

    async def __aiter__(self):
        for part in (b"a", b"b"):
            await asyncio.sleep(0)
            yield part

    def close(self) -> None:
        self.events.append("body closed")


EVENTS: list = []


def plain_view(request):
    return HttpResponse(b"plain")


def streamed_view(request):
    return StreamingHttpResponse(Parts(EVENTS))


urlpatterns = [path("plain/", plain_view), path("streamed/", streamed_view)]


def _serve(route: str, *, client_leaves: bool = False) -> tuple[list, int]:
    """GET `route` through a handler with one request thread: what happened, in order, and its calls to that thread."""
    handler = RequestThreadsHandler(1)
    executor = handler.executors[0]
    steps = 0
    submit = executor.submit

    def counted(*args, **kwargs):
        nonlocal steps
        steps += 1
        return submit(*args, **kwargs)

    executor.submit = counted
    EVENTS.clear()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": route, "raw_path": route.encode(), "query_string": b"", "root_path": "",
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 40000), "headers": [(b"host", b"127.0.0.1")],
    }  # fmt: skip

    async def run() -> None:
        received = []

        async def receive():
            if not received:
                received.append(True)
                return {"type": "http.request", "body": b"", "more_body": False}
            if not client_leaves:
                await asyncio.Event().wait()  # stays until the answer is sent
            return {"type": "http.disconnect"}

        async def send(message):
            EVENTS.append((message["type"], message.get("body")))

        await handler(scope, receive, send)

    started = lambda **kwargs: EVENTS.append("request_started")  # noqa: E731
    finished = lambda **kwargs: EVENTS.append("request_finished")  # noqa: E731
    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    try:
        asyncio.run(run())
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)
        executor.shutdown()
    return list(EVENTS), steps


@pytest.mark.urls(__name__)
def test_a_plain_answer_is_made_and_closed_in_one_step_of_its_thread():
    events, steps = _serve("/plain/")

    # Django's own handler goes there three times: to start the request, for the middleware and view, to close.
    assert steps == 1
    assert events[:2] == ["request_started", "request_finished"]
    assert events[2][0] == "http.response.start"
    assert b"".join(event[1] for event in events[3:] if event[0] == "http.response.body") == b"plain"


@pytest.mark.urls(__name__)
def test_a_streamed_answer_is_closed_once_it_is_sent():
    events, steps = _serve("/streamed/")

    assert steps == 2  # the answer, then its close
    assert events[0] == "request_started"
    bodies = [event[1] for event in events if event[0] == "http.response.body"]
    assert bodies == [b"a", b"b", None]
    assert events[-2:] == ["body closed", "request_finished"]


@pytest.mark.urls(__name__)
def test_a_streamed_answer_whose_client_left_is_closed_all_the_same():
    events, _ = _serve("/streamed/", client_leaves=True)

    assert events[-2:] == ["body closed", "request_finished"]
