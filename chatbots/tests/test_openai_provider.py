"""The OpenAI-compatible adapter against a real local HTTP server (the `upstream` stub); nothing is mocked."""

import asyncio
import base64
import contextlib
import json
import time
from collections import Counter
from decimal import Decimal

import pytest

from chatbots.providers import get_provider
from chatbots.providers.base import StreamEvent, Usage
from chatbots.providers.demo import DemoProvider
from chatbots.providers.http import close_shared_client, share_client_on, upstream_client
from chatbots.providers.openai import OpenAIProvider
from chatbots.tests.factories import AIModelFactory
from chatsite.errors import UpstreamError, UpstreamTimeout
from chatsite.testing.upstream import StubUpstream, tiny_png

pytestmark = pytest.mark.django_db

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Say hello."},
]


@pytest.fixture
def model():
    return AIModelFactory(model_id="openai/gpt-4o-mini", provider="openai")


@pytest.fixture
def image_model():
    return AIModelFactory(model_id="openai/dall-e-3", provider="openai", model_type="image")


@pytest.fixture
def provider(upstream, model):
    return get_provider(model)


def sse(*payloads) -> bytes:
    """Server-sent events as an upstream writes them: dicts become chat.completion.chunk JSON."""
    out = b""
    for payload in payloads:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        out += b"data: " + data.encode() + b"\n\n"
    return out


def delta(text: str) -> dict:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]}


def finish() -> dict:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}


def texts(events) -> list[str]:
    return [event.text for event in events if event.text]


def run(coroutine):
    """Run one call of the async adapters in a loop of its own, as a management command would."""
    return asyncio.run(coroutine)


def collect(stream) -> list[StreamEvent]:
    """Read a whole stream in a loop of its own."""

    async def read():
        async with contextlib.aclosing(stream):
            return [event async for event in stream]

    return run(read())


def test_a_plain_completion_returns_the_content_usage_and_openrouter_cost(provider, model, upstream):
    upstream.enqueue_text("Hello there.", usage=(21, 3), cost=0.000123)

    completion = run(provider.complete(model=model, messages=MESSAGES))

    assert completion.content == "Hello there."
    assert (completion.prompt_tokens, completion.completion_tokens) == (21, 3)
    assert completion.cost_usd == Decimal("0.000123")


def test_the_upstream_receives_the_model_the_messages_the_stream_flag_and_the_key(provider, model, upstream):
    run(provider.complete(model=model, messages=MESSAGES))

    (request,) = upstream.requests
    assert (request["method"], request["path"]) == ("POST", "/v1/chat/completions")
    assert request["json"]["model"] == "openai/gpt-4o-mini"
    assert request["json"]["messages"] == MESSAGES
    assert request["json"]["stream"] is False
    assert request["headers"]["Authorization"] == "Bearer test-key"
    # Only OpenRouter is asked for its usage accounting; OpenAI rejects fields it does not know.
    assert "usage" not in request["json"]


def test_a_completion_without_usage_is_estimated_and_has_no_cost(provider, model, upstream):
    upstream.enqueue_text("Twelve chars", usage=None)

    completion = run(provider.complete(model=model, messages=MESSAGES))

    assert completion.prompt_tokens > 0
    assert completion.completion_tokens == 3
    assert completion.cost_usd is None


def test_no_key_means_no_authorization_header(upstream, settings):
    model = AIModelFactory(provider="openai", api_base=upstream.base_url)
    settings.AI_API_KEY = ""

    run(get_provider(model).complete(model=model, messages=MESSAGES))

    assert "Authorization" not in upstream.requests[0]["headers"]


def test_a_streamed_reply_yields_the_deltas_in_order_then_the_usage(provider, model, upstream):
    upstream.enqueue_text("Hello there, friend.", chunks=["Hello", " there,", " friend."], usage=(9, 4), cost="0.5")

    events = collect(provider.stream(model=model, messages=MESSAGES))

    assert events == [
        StreamEvent(text="Hello"),
        StreamEvent(text=" there,"),
        StreamEvent(text=" friend."),
        StreamEvent(usage=Usage(prompt_tokens=9, completion_tokens=4, cost_usd=Decimal("0.5"))),
    ]
    request = upstream.requests[0]["json"]
    assert request["stream"] is True
    assert request["stream_options"] == {"include_usage": True}


def test_a_streamed_reply_without_usage_yields_only_text(provider, model, upstream):
    upstream.enqueue_text("Hi.", chunks=["H", "i."], usage=None)

    events = collect(provider.stream(model=model, messages=MESSAGES))

    assert events == [StreamEvent(text="H"), StreamEvent(text="i.")]


def test_multibyte_characters_split_across_network_chunks_decode_exactly(provider, model, upstream):
    text = "héllo wörld 你好 🎉"
    body = sse(delta("héllo "), delta("wörld "), delta("你好 "), delta("🎉"), finish(), "[DONE]")
    # Three bytes per network chunk: every multi-byte character above is cut somewhere.
    upstream.enqueue_raw([body[i : i + 3] for i in range(0, len(body), 3)])

    events = collect(provider.stream(model=model, messages=MESSAGES))

    assert "".join(texts(events)) == text
    assert texts(events) == ["héllo ", "wörld ", "你好 ", "🎉"]


def test_comment_lines_crlf_and_blank_keep_alives_are_ignored(provider, model, upstream):
    upstream.enqueue_raw(
        [
            b": OPENROUTER PROCESSING\n\n",
            b"\n\n",
            sse(delta("One")).replace(b"\n", b"\r\n"),
            b": OPENROUTER PROCESSING\r\n\r\n",
            b"event: message\nid: 7\ndata: " + json.dumps(delta(" two")).encode() + b"\n\n",
            sse(finish(), "[DONE]"),
        ]
    )

    assert texts(collect(provider.stream(model=model, messages=MESSAGES))) == ["One", " two"]


def test_keep_alives_after_an_event_with_an_id_are_not_events(provider, model, upstream):
    # Once an id was seen, httpx-sse turns every blank line into an event without data.
    upstream.enqueue_raw(
        [
            b"id: 1\ndata: " + json.dumps(delta("One")).encode() + b"\n\n",
            b"\n\n",
            b": OPENROUTER PROCESSING\n\n",
            sse(delta(" two"), finish(), "[DONE]"),
        ]
    )

    assert texts(collect(provider.stream(model=model, messages=MESSAGES))) == ["One", " two"]


@pytest.mark.parametrize("ending", [b"", b"\n", b"\r\n"], ids=["no-newline", "one-newline", "one-crlf"])
def test_a_last_event_without_its_closing_blank_line_is_still_read(provider, model, upstream, ending):
    usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
    upstream.enqueue_raw([sse(delta("Last words."), finish()), b"data: " + json.dumps(usage).encode() + ending])

    events = collect(provider.stream(model=model, messages=MESSAGES))

    assert events == [StreamEvent(text="Last words."), StreamEvent(usage=Usage(prompt_tokens=3, completion_tokens=2))]


def test_usage_reported_on_several_chunks_counts_the_last(provider, model, upstream):
    def usage(completion_tokens: int) -> dict:
        return {"choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": completion_tokens}}

    upstream.enqueue_raw([sse(delta("Counting"), usage(1), delta(" on."), usage(2), finish(), usage(3), "[DONE]")])

    events = collect(provider.stream(model=model, messages=MESSAGES))

    assert events == [
        StreamEvent(text="Counting"),
        StreamEvent(text=" on."),
        StreamEvent(usage=Usage(prompt_tokens=8, completion_tokens=3)),
    ]


def test_an_error_event_without_data_is_still_an_error(provider, model, upstream):
    upstream.enqueue_raw([sse(delta("Partial")), b"event: error\n\n"])

    with pytest.raises(UpstreamError, match="failed mid-reply: no detail given"):
        collect(provider.stream(model=model, messages=MESSAGES))


def test_a_delta_is_yielded_as_soon_as_its_bytes_arrive(provider, model, upstream):
    upstream.enqueue_text("first second", chunks=["first", " second"], delay=0.8)

    async def scenario():
        started = time.monotonic()
        async with contextlib.aclosing(provider.stream(model=model, messages=MESSAGES)) as events:
            first = await anext(events)
            first_at = time.monotonic() - started
            return first, first_at, [event async for event in events]

    first, first_at, rest = run(scenario())

    assert first.text == "first"
    assert first_at < 0.4
    assert texts(rest) == [" second"]


def test_a_reply_streamed_as_one_json_answer_still_streams(provider, model, upstream):
    body = {"choices": [{"message": {"role": "assistant", "content": "All at once."}}], "usage": {"prompt_tokens": 5}}
    upstream.enqueue_raw([json.dumps(body).encode()], content_type="application/json")

    events = collect(provider.stream(model=model, messages=MESSAGES))

    assert texts(events) == ["All at once."]
    assert events[-1].usage.prompt_tokens == 5


def test_a_silent_upstream_times_out_quickly(provider, model, upstream, settings):
    settings.AI_TIMEOUT = 0.3
    settings.AI_MAX_RETRIES = 0
    upstream.enqueue_hang(2)

    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match=r"did not answer within 0\.3 s"):
        run(provider.complete(model=model, messages=MESSAGES))

    assert time.monotonic() - started < 1.5


def test_a_timeout_before_any_byte_is_retried(provider, model, upstream, settings):
    settings.AI_TIMEOUT = 0.3
    upstream.enqueue_hang(2)
    upstream.enqueue_text("Second time lucky.")

    events = collect(provider.stream(model=model, messages=MESSAGES))

    assert "".join(texts(events)) == "Second time lucky."
    assert len(upstream.requests) == 2


def test_a_stream_that_stalls_mid_reply_ends_with_a_timeout(provider, model, upstream, settings):
    settings.AI_TIMEOUT = 0.3
    upstream.enqueue_text("Hello, then nothing.", chunks=["Hello,", " then nothing."], delay=2)

    async def scenario():
        async with contextlib.aclosing(provider.stream(model=model, messages=MESSAGES)) as events:
            started = time.monotonic()
            assert (await anext(events)).text == "Hello,"
            with pytest.raises(UpstreamTimeout, match="went silent"):
                await anext(events)
            return started

    started = run(scenario())

    assert time.monotonic() - started < 1.5
    assert len(upstream.requests) == 1


def test_a_rate_limited_request_is_retried_and_succeeds(provider, model, upstream):
    upstream.enqueue_status(429, headers={"Retry-After": "0"})
    upstream.enqueue_text("Made it.")

    assert run(provider.complete(model=model, messages=MESSAGES)).content == "Made it."
    assert len(upstream.requests) == 2


def test_retry_after_is_honoured(provider, model, upstream):
    upstream.enqueue_status(429, headers={"Retry-After": "0.4"})

    started = time.monotonic()
    run(provider.complete(model=model, messages=MESSAGES))

    assert time.monotonic() - started >= 0.4


@pytest.mark.parametrize("streamed", [False, True])
def test_server_errors_are_retried_then_reported(provider, model, upstream, settings, streamed, caplog):
    settings.AI_MAX_RETRIES = 2
    for _ in range(3):
        upstream.enqueue_status(500, body={"error": {"message": "The model is overloaded on 10.1.2.3."}})

    with pytest.raises(UpstreamError, match=r"^The AI provider failed \(HTTP 500\)\.$") as raised:
        if streamed:
            collect(provider.stream(model=model, messages=MESSAGES))
        else:
            run(provider.complete(model=model, messages=MESSAGES))

    assert type(raised.value) is UpstreamError
    assert raised.value.status == 502
    assert len(upstream.requests) == 3
    # The server's own words and its address are for the operator's log, not for the user.
    host = upstream.base_url.split("//")[1].split("/")[0]
    assert (
        f"AI provider at {host}: The AI provider failed (HTTP 500): The model is overloaded on 10.1.2.3." in caplog.text
    )


def test_a_refused_request_is_not_retried_and_carries_the_upstreams_message(provider, model, upstream):
    upstream.enqueue_status(400, body={"error": {"message": "This model's maximum context length is 8192 tokens."}})

    with pytest.raises(UpstreamError, match=r"refused the request \(HTTP 400\): This model's maximum context length"):
        run(provider.complete(model=model, messages=MESSAGES))

    assert len(upstream.requests) == 1


def test_the_api_key_never_appears_in_an_error(provider, model, upstream, caplog):
    upstream.enqueue_status(401, body={"error": {"message": "Incorrect API key provided: test-key."}})

    with pytest.raises(UpstreamError) as raised:
        run(provider.complete(model=model, messages=MESSAGES))

    # Users see the status; what the upstream said about our key goes to the log, redacted there too.
    assert raised.value.detail == "The AI provider refused the request (HTTP 401)."
    assert "Incorrect API key provided: [redacted]." in caplog.text
    assert "test-key" not in caplog.text


def test_malformed_json_is_an_upstream_error(provider, model, upstream):
    upstream.enqueue_malformed()

    with pytest.raises(UpstreamError, match="malformed response"):
        run(provider.complete(model=model, messages=MESSAGES))

    assert len(upstream.requests) == 1


@pytest.mark.parametrize(
    "error_event",
    [
        sse({"error": {"code": 502, "message": "Provider returned error"}}),
        b'event: error\ndata: {"error": {"message": "Provider returned error"}}\n\n',
    ],
    ids=["error-payload", "error-event"],
)
def test_an_error_mid_stream_comes_after_the_deltas_before_it(provider, model, upstream, error_event):
    upstream.enqueue_raw([sse(delta("Partial")), sse(delta(" answer")), error_event])

    async def scenario():
        async with contextlib.aclosing(provider.stream(model=model, messages=MESSAGES)) as events:
            assert [(await anext(events)).text, (await anext(events)).text] == ["Partial", " answer"]
            with pytest.raises(UpstreamError, match="Provider returned error"):
                await anext(events)

    run(scenario())


@pytest.mark.parametrize("cut", [False, True], ids=["response-ends", "connection-drops"])
def test_a_stream_closed_early_yields_its_deltas_then_an_upstream_error(provider, model, upstream, cut):
    upstream.enqueue_raw([sse(delta("Half")), sse(delta(" a reply"))], cut=cut)

    async def scenario():
        async with contextlib.aclosing(provider.stream(model=model, messages=MESSAGES)) as events:
            assert [(await anext(events)).text, (await anext(events)).text] == ["Half", " a reply"]
            with pytest.raises(UpstreamError, match="closed the stream early, mid-reply"):
                await anext(events)

    run(scenario())
    # Never retried once text was yielded: the reply must not arrive twice.
    assert len(upstream.requests) == 1


def test_a_stream_with_a_finish_reason_may_end_without_done(provider, model, upstream):
    upstream.enqueue_raw([sse(delta("Complete.")), sse(finish())])

    assert texts(collect(provider.stream(model=model, messages=MESSAGES))) == ["Complete."]


def test_an_error_status_before_the_first_token_is_retried_for_streams(provider, model, upstream):
    upstream.enqueue_status(503)
    upstream.enqueue_text("Back again.", chunks=["Back", " again."])

    assert texts(collect(provider.stream(model=model, messages=MESSAGES))) == ["Back", " again."]
    assert len(upstream.requests) == 2


def test_connection_refused_is_an_upstream_error(model, refused_base_url, settings, caplog):
    settings.AI_BASE_URL = refused_base_url
    settings.AI_API_KEY = "test-key"
    settings.AI_RETRY_BACKOFF = 0

    with pytest.raises(UpstreamError, match=r"^Could not reach the AI provider\.$") as raised:
        run(get_provider(model).complete(model=model, messages=MESSAGES))

    assert type(raised.value) is UpstreamError
    assert "127.0.0.1" not in raised.value.detail
    assert f"AI provider at {refused_base_url.split('//')[1].split('/')[0]}: Could not reach" in caplog.text
    with pytest.raises(UpstreamError):
        collect(get_provider(model).stream(model=model, messages=MESSAGES))


@pytest.mark.parametrize("shared", [True, False], ids=["shared-client", "client-per-call"])
def test_closing_the_stream_ends_the_upstream_request(provider, model, upstream, shared):
    upstream.enqueue_text("x" * 40, chunks=["x"] * 40, delay=0.05)

    async def scenario():
        if shared:
            # A shared client outlives the call: only the adapter's own hang-up closes the connection.
            share_client_on(asyncio.get_running_loop())
        try:
            events = provider.stream(model=model, messages=MESSAGES)
            assert (await anext(events)).text == "x"
            started = time.monotonic()
            await events.aclose()
            # Waited for inside the loop, so nothing but the aclose() can have hung up.
            assert await asyncio.to_thread(upstream.wait_for_disconnect, timeout=1.5)
        finally:
            await close_shared_client()
        return started

    # The whole reply would take two seconds; the stub sees the hang-up within a few chunks.
    started = run(scenario())
    assert time.monotonic() - started < 1.5
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("shared", [True, False], ids=["shared-client", "client-per-call"])
def test_cancelling_a_reply_waiting_on_a_silent_upstream_hangs_up_at_once(provider, model, upstream, shared):
    # After the first delta the upstream is silent for 0.5 s before each further chunk.
    pieces = [sse(delta("Thinking")), sse(delta(" it")), sse(delta(" over")), sse(finish(), "[DONE]")]
    upstream.enqueue_raw(pieces, delay=0.5)

    async def scenario():
        if shared:
            # A shared client outlives the call: only the adapter's own hang-up closes the connection.
            share_client_on(asyncio.get_running_loop())
        received = []
        first = asyncio.Event()

        async def reply():
            async with contextlib.aclosing(provider.stream(model=model, messages=MESSAGES)) as events:
                async for event in events:
                    received.append(event.text)
                    first.set()

        try:
            task = asyncio.create_task(reply())
            await asyncio.wait_for(first.wait(), timeout=5)
            await asyncio.sleep(0.05)  # now blocked reading the next chunk
            started = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            ended_after = time.monotonic() - started
            # The stub learns of a hang-up when its next writes fail: at most two gaps later.
            hung_up = await asyncio.to_thread(upstream.wait_for_disconnect, timeout=3)
        finally:
            await close_shared_client()
        return received, ended_after, hung_up

    received, ended_after, hung_up = run(scenario())

    assert received == ["Thinking"]
    assert ended_after < 0.2
    assert hung_up


def test_replies_stream_side_by_side_without_blocking_the_loop(provider, model, upstream):
    for _ in range(3):
        upstream.enqueue_text("one two three", chunks=["one", " two", " three"], delay=0.4)

    async def scenario():
        started = time.monotonic()
        replies = await asyncio.gather(*(read(provider.stream(model=model, messages=MESSAGES)) for _ in range(3)))
        return replies, time.monotonic() - started

    async def read(stream):
        async with contextlib.aclosing(stream):
            return [event async for event in stream]

    replies, took = run(scenario())

    assert [texts(events) for events in replies] == [["one", " two", " three"]] * 3
    # Each reply takes 0.8 s; one after the other they would take 2.4 s.
    assert took < 1.5


def test_the_demo_provider_streams_without_blocking_the_loop(settings):
    settings.DEMO_STREAM_DELAY = 0.02
    model = AIModelFactory(provider="demo")
    messages = [{"role": "user", "content": "Tell me something."}]
    provider = DemoProvider()

    async def scenario():
        started = time.monotonic()
        replies = await asyncio.gather(*(read() for _ in range(5)))
        return replies, time.monotonic() - started

    async def read():
        async with contextlib.aclosing(provider.stream(model=model, messages=messages)) as events:
            return [event async for event in events]

    replies, took = run(scenario())

    words = len(texts(replies[0]))
    assert words > 20
    assert all(events == replies[0] for events in replies)
    assert replies[0][-1].usage is not None
    # Five replies side by side take about as long as one.
    assert took < 2 * words * 0.02 + 0.3


def test_outside_a_long_lived_loop_each_call_gets_a_client_closed_after_it():
    async def scenario():
        async with upstream_client() as first:
            assert not first.is_closed
        async with upstream_client() as second:
            pass
        return first, second

    first, second = run(scenario())

    assert first is not second
    assert first.is_closed and second.is_closed


def test_calls_in_a_loop_marked_long_lived_share_one_client_until_it_is_closed():
    async def scenario():
        share_client_on(asyncio.get_running_loop())
        try:
            async with upstream_client() as first:
                pass
            async with upstream_client() as second:
                pass
            assert first is second
            assert not first.is_closed
        finally:
            await close_shared_client()
        assert first.is_closed
        # The loop is forgotten: calls after the shutdown get a client of their own again.
        async with upstream_client() as after:
            assert after is not first
        assert after.is_closed

    run(scenario())


def test_a_long_lived_loops_client_serves_many_calls_over_one_pool(provider, model, upstream):
    async def scenario():
        share_client_on(asyncio.get_running_loop())
        try:
            completions = await asyncio.gather(*(provider.complete(model=model, messages=MESSAGES) for _ in range(4)))
            streamed = await read(provider.stream(model=model, messages=MESSAGES))
        finally:
            await close_shared_client()
        return completions, streamed

    async def read(stream):
        async with contextlib.aclosing(stream):
            return [event async for event in stream]

    completions, streamed = run(scenario())

    assert [c.content for c in completions] == ["Hello from the stub."] * 4
    assert "".join(texts(streamed)) == "Hello from the stub."
    assert len(upstream.requests) == 5


def test_a_long_lived_loops_pool_keeps_a_connection_for_every_reply_that_ran_at_once(provider, model, upstream):
    # More replies at once than httpx keeps alive by default (20), and than requests pooled (10): a pool
    # sized to the concurrency (AI_MAX_CONNECTIONS, AI_MAX_KEEPALIVE) opens no new connection for the
    # next burst, where a default one would drop the extra connections and open (and handshake) them again.
    at_once = 30
    for _ in range(2 * at_once):
        upstream.enqueue_text("one two", chunks=["one", " two"], delay=0.3)

    async def burst():
        async def read(stream):
            async with contextlib.aclosing(stream):
                return [event async for event in stream]

        return await asyncio.gather(*(read(provider.stream(model=model, messages=MESSAGES)) for _ in range(at_once)))

    async def scenario():
        share_client_on(asyncio.get_running_loop())
        try:
            first = await burst()
            opened_by_first = upstream.connections_opened
            second = await burst()
        finally:
            await close_shared_client()
        return first + second, opened_by_first

    replies, opened_by_first = run(scenario())

    assert [texts(events) for events in replies] == [["one", " two"]] * (2 * at_once)
    assert opened_by_first == at_once
    # Split in shards (AI_CLIENT_SHARDS, 32), each call on the one with the fewest calls in flight:
    # the second burst found every connection the first one left.
    assert upstream.connections_opened == at_once


def test_a_long_lived_loops_calls_spread_over_its_shards(settings):
    # httpcore looks over every connection of a pool at each request and each close, so a
    # worker's thousand streams are spread over small pools, not held in one.
    settings.AI_CLIENT_SHARDS = 4

    async def scenario():
        share_client_on(asyncio.get_running_loop())
        seen = []

        async def call():
            async with upstream_client() as client:
                seen.append(client)
                await asyncio.sleep(0.1)

        try:
            await asyncio.gather(*(call() for _ in range(8)))
        finally:
            await close_shared_client()
        return seen

    seen = run(scenario())

    # Four clients, two calls on each.
    assert sorted(Counter(map(id, seen)).values()) == [2, 2, 2, 2]


def test_an_image_comes_from_the_images_endpoint(image_model, upstream):
    png = tiny_png()
    upstream.enqueue_image(png, via="images")

    result = run(get_provider(image_model).generate_image(model=image_model, prompt="A lighthouse at dusk"))

    assert result.png == png
    assert result.content_type == "image/png"
    assert result.prompt_tokens > 0
    request = upstream.requests[0]
    assert request["path"] == "/v1/images/generations"
    assert request["json"] == {
        "model": "openai/dall-e-3",
        "prompt": "A lighthouse at dusk",
        "n": 1,
        "response_format": "b64_json",
    }


def test_gpt_image_models_are_not_sent_a_response_format_they_reject(upstream):
    model = AIModelFactory(model_id="gpt-image-1", provider="openai", model_type="image")

    run(get_provider(model).generate_image(model=model, prompt="A lighthouse"))

    assert "response_format" not in upstream.requests[0]["json"]


def test_an_image_given_as_a_url_is_downloaded(image_model, upstream):
    png = tiny_png()
    upstream.enqueue_image(png, via="url")

    result = run(get_provider(image_model).generate_image(model=image_model, prompt="A lighthouse"))

    assert result.png == png
    assert [r["method"] for r in upstream.requests] == ["POST", "GET"]


def test_an_image_comes_from_chat_completions_with_image_output(image_model, upstream, settings):
    settings.AI_IMAGE_API = "chat"
    png = tiny_png()
    upstream.enqueue_image(png, via="chat", cost=0.04)

    result = run(get_provider(image_model).generate_image(model=image_model, prompt="A lighthouse"))

    assert result.png == png
    assert result.cost_usd == Decimal("0.04")
    assert result.prompt_tokens == 7
    request = upstream.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["json"]["modalities"] == ["image", "text"]
    assert request["json"]["messages"] == [{"role": "user", "content": "A lighthouse"}]


def test_auto_image_api_uses_chat_for_openrouter_and_the_images_endpoint_elsewhere():
    assert OpenAIProvider("https://openrouter.ai/api/v1", "k").is_openrouter
    assert not OpenAIProvider("http://127.0.0.1:11434/v1", "k").is_openrouter


@pytest.mark.parametrize(
    "body",
    [
        {"data": [{"b64_json": "not base64 at all!"}]},
        {"data": []},
        {"data": [{"revised_prompt": "no image here"}]},
    ],
    ids=["bad-base64", "no-data", "no-image"],
)
def test_a_missing_or_broken_image_is_an_upstream_error(image_model, upstream, body):
    upstream.enqueue_status(200, body=body)

    with pytest.raises(UpstreamError):
        run(get_provider(image_model).generate_image(model=image_model, prompt="A lighthouse"))


def test_a_chat_answer_without_an_image_is_an_upstream_error(image_model, upstream, settings):
    settings.AI_IMAGE_API = "chat"
    upstream.enqueue_text("I cannot draw.")

    with pytest.raises(UpstreamError, match="returned no image"):
        run(get_provider(image_model).generate_image(model=image_model, prompt="A lighthouse"))


def test_a_data_url_keeps_its_content_type(image_model, upstream, settings):
    settings.AI_IMAGE_API = "chat"
    jpeg = b"\xff\xd8\xff\xe0fake-jpeg"
    url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    message = {"role": "assistant", "content": "", "images": [{"type": "image_url", "image_url": {"url": url}}]}
    upstream.enqueue_status(200, body={"choices": [{"message": message}]})

    result = run(get_provider(image_model).generate_image(model=image_model, prompt="A lighthouse"))

    assert (result.png, result.content_type) == (jpeg, "image/jpeg")


# Which adapter answers.


def test_demo_models_always_get_the_demo_provider(settings):
    settings.AI_API_KEY = "a-key"
    model = AIModelFactory(provider="demo", api_base="http://127.0.0.1:9/v1")

    assert isinstance(get_provider(model), DemoProvider)


def test_without_a_key_or_an_api_base_every_model_gets_the_demo_provider(settings):
    settings.AI_API_KEY = ""

    assert isinstance(get_provider(AIModelFactory(provider="openai")), DemoProvider)


def test_with_a_key_openai_models_go_to_ai_base_url(settings):
    settings.AI_API_KEY = "a-key"
    settings.AI_BASE_URL = "https://openrouter.ai/api/v1/"

    provider = get_provider(AIModelFactory(provider="openai"))

    assert isinstance(provider, OpenAIProvider)
    assert (provider.base_url, provider.api_key) == ("https://openrouter.ai/api/v1", "a-key")


def test_a_per_model_api_base_sends_the_request_to_that_base(upstream, settings):
    with StubUpstream() as local:
        model = AIModelFactory(provider="openai", api_base=local.base_url)
        local.enqueue_text("From the model's own upstream.")

        completion = run(get_provider(model).complete(model=model, messages=MESSAGES))

    assert completion.content == "From the model's own upstream."
    assert len(local.requests) == 1
    assert upstream.requests == []


def test_a_per_model_api_base_works_without_a_key(settings):
    settings.AI_API_KEY = ""
    with StubUpstream() as local:
        model = AIModelFactory(provider="openai", api_base=local.base_url)

        assert run(get_provider(model).complete(model=model, messages=MESSAGES)).content == "Hello from the stub."


def test_the_api_key_is_not_sent_to_a_model_on_another_host(settings, upstream):
    settings.AI_BASE_URL = "https://openrouter.ai/api/v1"
    settings.AI_API_KEY = "secret-key"
    model = AIModelFactory(provider="openai", api_base=upstream.base_url)

    run(get_provider(model).complete(model=model, messages=[{"role": "user", "content": "hi"}]))

    assert "Authorization" not in upstream.requests[-1]["headers"]


@pytest.mark.parametrize("how", ["silent", "cut", "error-event"])
def test_a_stream_that_fails_before_its_first_token_is_retried(provider, model, upstream, settings, how):
    settings.AI_TIMEOUT = 0.3
    if how == "silent":
        upstream.enqueue_silent(3)  # the headers, then nothing
    elif how == "cut":
        upstream.enqueue_raw([b": warming up\n\n"], cut=True)
    else:
        upstream.enqueue_raw([b'event: error\ndata: {"error": {"message": "overloaded"}}\n\n'])
    upstream.enqueue_text("Second try.", chunks=["Second", " try."])

    assert texts(collect(provider.stream(model=model, messages=MESSAGES))) == ["Second", " try."]
    assert len(upstream.requests) == 2


def test_a_stream_silent_on_every_attempt_is_a_timeout_before_its_first_token(provider, model, upstream, settings):
    settings.AI_TIMEOUT = 0.2
    settings.AI_MAX_RETRIES = 1
    for _ in range(2):
        upstream.enqueue_silent(3)

    with pytest.raises(UpstreamTimeout, match=r"went silent for more than 0\.2 s before its first token"):
        collect(provider.stream(model=model, messages=MESSAGES))
    assert len(upstream.requests) == 2
