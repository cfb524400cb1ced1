"""The stub upstream itself: what it answers by default, what it records, and that it stops at once."""

import base64
import json
import threading
import time

import pytest
import requests

from chatsite.testing.upstream import DEFAULT_TEXT, StubUpstream, tiny_png


@pytest.fixture
def stub():
    with StubUpstream() as server:
        yield server


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


def test_the_default_completion_is_one_json_answer_with_usage(stub, http):
    response = http.post(f"{stub.base_url}/chat/completions", json={"model": "m", "messages": []}, timeout=5)

    body = response.json()
    assert response.status_code == 200
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": DEFAULT_TEXT}
    assert body["usage"]["prompt_tokens"] > 0


def test_the_default_streamed_reply_is_chunked_sse_that_ends_with_done(stub, http):
    response = http.post(f"{stub.base_url}/chat/completions", json={"model": "m", "stream": True}, timeout=5)

    assert response.headers["Transfer-Encoding"] == "chunked"
    assert response.headers["Content-Type"] == "text/event-stream"
    events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == DEFAULT_TEXT
    assert chunks[-1]["usage"]["completion_tokens"] > 0


def test_the_default_image_and_catalogue(stub, http):
    image = http.post(f"{stub.base_url}/images/generations", json={"prompt": "p"}, timeout=5).json()
    models = http.get(f"{stub.base_url}/models", timeout=5).json()

    assert base64.b64decode(image["data"][0]["b64_json"]) == tiny_png()
    assert models["data"][0]["id"] == "stub/chat"


def test_requests_are_recorded_and_scripted_replies_are_taken_in_order(stub, http):
    stub.enqueue_status(500)
    stub.enqueue_text("Second.")

    first = http.post(f"{stub.base_url}/chat/completions", json={"n": 1}, headers={"X-Test": "yes"}, timeout=5)
    second = http.post(f"{stub.base_url}/chat/completions", json={"n": 2}, timeout=5)

    assert first.status_code == 500
    assert second.json()["choices"][0]["message"]["content"] == "Second."
    assert stub.queued == 0
    records = stub.wait_for_requests(2)
    assert [r["json"] for r in records] == [{"n": 1}, {"n": 2}]
    assert records[0]["headers"]["x-test"] == records[0]["headers"]["X-Test"] == "yes"
    assert records[0]["method"] == "POST"
    assert records[0]["path"] == "/v1/chat/completions"


def test_an_unknown_route_is_404_and_takes_no_scripted_reply(stub, http):
    stub.enqueue_text("Kept for later.")

    assert http.get(f"{stub.base_url}/nothing-here", timeout=5).status_code == 404
    assert stub.queued == 1


def test_wait_for_requests_fails_when_they_do_not_come(stub):
    with pytest.raises(AssertionError, match="got 0 requests, not 1"):
        stub.wait_for_requests(1, timeout=0.1)


def test_stopping_does_not_wait_out_a_hang_or_a_kept_alive_connection(http):
    stub = StubUpstream().start()
    http.get(f"{stub.base_url}/models", timeout=5)  # leaves a kept-alive connection open
    stub.enqueue_hang(30)
    outcome = {}

    def call():
        try:
            requests.post(f"{stub.base_url}/chat/completions", json={}, timeout=30)
        except requests.ConnectionError as exc:
            outcome["error"] = exc

    caller = threading.Thread(target=call)
    caller.start()
    stub.wait_for_requests(2)
    started = time.monotonic()
    stub.stop()
    caller.join(timeout=5)

    assert time.monotonic() - started < 2
    assert not caller.is_alive()
    assert "error" in outcome
