"""The OpenAI-compatible API driven by the official `openai` package against a live app server.

The server is gunicorn with a uvicorn worker and production settings, on the test database; its
upstream is the real local stub (chatsite.testing.upstream), which each test scripts.
"""

import base64
import time
from decimal import Decimal

import openai
import pytest
import requests
from django.db import connection

from apikeys.models import ApiKey
from apikeys.services import api_keys_revoke
from apikeys.tests.factories import make_key
from billing.models import UsageEvent
from billing.services import subscription_assign
from billing.tests.factories import SubscriptionTypeFactory, UsageEventFactory
from chatbots.tests.factories import AIModelFactory
from chatsite.testing.upstream import tiny_png
from sessions_app.models import ChatMessage, ChatSession

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="The live app server runs on PostgreSQL."),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def model(db):
    return AIModelFactory(
        model_id="vendor/chat", provider="openai",
        prompt_price_per_million=Decimal("1"), completion_price_per_million=Decimal("2"),
    )  # fmt: skip


@pytest.fixture
def key(user):
    api_key, full = make_key(user)
    return api_key, full


@pytest.fixture
def client(app_server, key):
    with openai.OpenAI(base_url=f"{app_server.url}/v1", api_key=key[1], max_retries=0, timeout=20) as sdk:
        yield sdk


def settled_event(**filters) -> UsageEvent:
    """The call's ledger row once its reply has ended (the server ends it just after the answer)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        event = UsageEvent.objects.filter(**filters).exclude(state=UsageEvent.State.RESERVED).first()
        if event is not None:
            return event
        time.sleep(0.05)
    raise AssertionError(f"no ended usage event among {list(UsageEvent.objects.values('state', 'api_key'))}")


def test_the_sdk_gets_a_completion_charged_to_its_key_with_no_chat(client, key, model, stub, api_client):
    stub.enqueue_text("Hi from upstream.", usage=(12, 5), cost="0.0021")

    raw = client.chat.completions.with_raw_response.create(
        model="vendor/chat",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        max_tokens=50, temperature=0.5, top_p=0.9, stop=["\n\n"],
    )  # fmt: skip
    completion = raw.parse()

    assert completion.object == "chat.completion"
    assert completion.model == "vendor/chat"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "Hi from upstream."
    assert completion.choices[0].finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (12, 5)
    assert completion.usage.total_tokens == 17
    # The same headers as a send: the tightest limit (the default tier has none here, so none).
    event = UsageEvent.objects.get()
    assert event.api_key_id == key[0].pk
    assert event.session_id is None and event.message_id is None
    assert (event.state, event.billed_tokens, event.cost_usd) == ("settled", 17, Decimal("0.0021"))
    assert not ChatSession.objects.exists() and not ChatMessage.objects.exists()
    (sent,) = stub.requests
    assert sent["json"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
    ]
    assert {k: sent["json"][k] for k in ("max_tokens", "temperature", "top_p", "stop")} == {
        "max_tokens": 50, "temperature": 0.5, "top_p": 0.9, "stop": ["\n\n"],
    }  # fmt: skip
    assert sent["headers"]["Authorization"] == "Bearer test-key"  # the site's upstream key, never the user's
    # The account's usage counts the call like a message of the pages.
    usage = {row["name"]: row for row in api_client.get("/api/users/usage/").json()["limits"]}
    assert usage["hourly_max_messages"]["used"] == 1
    assert usage["hourly_max_tokens"]["used"] == 17
    key[0].refresh_from_db()
    assert key[0].last_used_at is not None


def test_the_sdk_streams_a_completion_ending_in_usage_and_done(client, app_server, key, model, stub):
    stub.enqueue_text("One two three four.", chunks=["One", " two", " three", " four."], usage=(9, 4))

    stream = client.chat.completions.create(
        model="vendor/chat", messages=[{"role": "user", "content": "Count"}], stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)

    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "One two three four."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (9, 4)
    event = settled_event(api_key=key[0])
    assert (event.billed_tokens, event.session_id) == (13, None)

    # On the wire: server-sent events, each `data: {json}`, the last `data: [DONE]`.
    stub.enqueue_text("Short.", usage=(3, 1))
    response = requests.post(
        f"{app_server.url}/v1/chat/completions",
        json={"model": "vendor/chat", "messages": [{"role": "user", "content": "Hi"}], "stream": True},
        headers={"Authorization": f"Bearer {key[1]}"}, timeout=20,
    )  # fmt: skip
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = [line for line in response.text.split("\n\n") if line.strip()]
    assert events[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in events)
    assert '"usage"' not in response.text  # only when stream_options.include_usage asks


def test_the_sdk_lists_the_active_text_models(client, model):
    AIModelFactory(model_id="vendor/off", is_active=False)
    AIModelFactory(model_id="vendor/painter", model_type="image")

    listed = client.models.list()

    assert [m.id for m in listed.data] == ["vendor/chat"]
    assert listed.data[0].object == "model"
    assert listed.data[0].owned_by == "vendor"
    assert listed.data[0].created == 0


def test_a_revoked_key_is_refused_at_once(client, key, model, stub):
    client.chat.completions.create(model="vendor/chat", messages=[{"role": "user", "content": "Hi"}])

    api_keys_revoke(keys=ApiKey.objects.filter(pk=key[0].pk))  # as DELETE does, from any server

    with pytest.raises(openai.AuthenticationError) as raised:
        client.chat.completions.create(model="vendor/chat", messages=[{"role": "user", "content": "Hi"}])
    assert raised.value.status_code == 401
    assert raised.value.body["code"] == "invalid_api_key"
    assert raised.value.response.headers["WWW-Authenticate"].startswith("Bearer")
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_a_key_that_never_was_and_no_key_are_401_in_openais_shape(app_server, model):
    wrong = openai.OpenAI(base_url=f"{app_server.url}/v1", api_key="cs-not-a-key", max_retries=0)
    with wrong, pytest.raises(openai.AuthenticationError) as raised:
        wrong.models.list()
    assert raised.value.body == {
        "message": "The API key is not valid, or it was revoked.",
        "type": "authentication_error", "param": None, "code": "invalid_api_key",
    }  # fmt: skip
    response = requests.get(f"{app_server.url}/v1/models", timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"


def test_the_429_body_as_the_sdk_raises_it_names_the_limit(client, user, model, stub):
    tier = SubscriptionTypeFactory(hourly_max_messages=2)
    subscription_assign(user=user, subscription_type=tier)
    UsageEventFactory(user=user, ai_model=model)

    raw = client.chat.completions.with_raw_response.create(
        model="vendor/chat", messages=[{"role": "user", "content": "Hi"}]
    )
    assert (raw.headers["X-RateLimit-Limit"], raw.headers["X-RateLimit-Remaining"]) == ("2", "0")
    assert int(raw.headers["X-RateLimit-Reset"]) > time.time()
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="vendor/chat", messages=[{"role": "user", "content": "Again"}])

    error = raised.value
    assert error.status_code == 429
    assert error.code == "quota_exceeded"
    assert error.type == "insufficient_quota"
    assert error.body["limit"] == "hourly_max_messages"
    assert (error.body["limit_value"], error.body["used"]) == (2, 2)
    assert error.body["resets_at"].endswith("Z")
    assert "hourly max messages" in error.message
    assert int(error.response.headers["Retry-After"]) > 0
    assert error.response.headers["X-RateLimit-Remaining"] == "0"
    assert len(stub.requests) == 1  # the refused call never reached the upstream


def test_an_unknown_model_and_invalid_input_are_404_and_400(client, model, stub):
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="vendor/nope", messages=[{"role": "user", "content": "Hi"}])
    assert raised.value.code == "model_not_found"
    assert raised.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="vendor/chat", messages=[{"role": "user", "content": "Hi"}], temperature=7)
    assert raised.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="vendor/chat", messages=[])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="vendor/chat", messages=[{"role": "wizard", "content": "Hi"}])
    assert not stub.requests and not UsageEvent.objects.exists()


@pytest.mark.parametrize(
    ("script", "status", "code"),
    [
        (lambda stub: [stub.enqueue_status(500) for _ in range(3)], 502, "upstream_error"),
        (lambda stub: [stub.enqueue_hang(3) for _ in range(3)], 504, "upstream_timeout"),
    ],
    ids=["500", "timeout"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_upstream_failure_is_502_or_504_and_charges_nothing(client, key, model, stub, script, status, code, stream):
    script(stub)

    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="vendor/chat", messages=[{"role": "user", "content": "Hi"}], stream=stream)

    assert raised.value.status_code == status
    assert raised.value.code == code
    assert raised.value.type == "api_error"
    assert "127.0.0.1" not in raised.value.message
    # Retried before any token, as a send is: three attempts, then the reservation is given back.
    assert len(stub.requests) == 3
    assert settled_event(api_key=key[0]).state == UsageEvent.State.RELEASED


def test_a_client_that_disconnects_mid_stream_stops_the_reply_and_pays_for_what_came(client, key, model, stub):
    pieces = ["First piece. ", *[f"piece {n} " for n in range(20)]]
    stub.enqueue_text("".join(pieces), chunks=pieces, usage=(10, 200), delay=0.3)

    stream = client.chat.completions.create(
        model="vendor/chat", messages=[{"role": "user", "content": "Talk"}], stream=True
    )
    received = ""
    for chunk in stream:
        received += chunk.choices[0].delta.content or ""
        if received:
            break
    stream.close()

    assert stub.wait_for_disconnect(timeout=10), "the upstream call went on after the client left"
    event = settled_event(api_key=key[0])
    assert event.state == UsageEvent.State.SETTLED
    # Charged for what was produced before the stop (an estimate), not the 200 tokens of the whole reply.
    assert 0 < event.completion_tokens < 20


def test_store_true_keeps_the_call_as_a_chat_and_the_key_can_opt_in(client, user, key, model, stub):
    stub.enqueue_text("Stored answer.", usage=(5, 2))
    client.chat.completions.create(model="vendor/chat", messages=[{"role": "user", "content": "Keep this"}], store=True)

    chat = ChatSession.objects.get(user=user)
    assert chat.title == "Keep this"
    assert list(chat.messages.values_list("message_type", "content", "status")) == [
        ("user", "Keep this", "complete"), ("assistant", "Stored answer.", "complete"),
    ]  # fmt: skip
    event = settled_event(api_key=key[0])
    assert (event.session_id, event.message.content) == (chat.pk, "Stored answer.")

    key[0].store_chats = True
    key[0].save(update_fields=["store_chats"])
    client.chat.completions.create(model="vendor/chat", messages=[{"role": "user", "content": "By default"}])
    client.chat.completions.create(
        model="vendor/chat", messages=[{"role": "user", "content": "Not this one"}], store=False
    )
    assert list(ChatSession.objects.order_by("id").values_list("title", flat=True)) == ["Keep this", "By default"]


@pytest.mark.parametrize("response_format", ["b64_json", "url"])
def test_an_image_model_answers_images_generations(client, key, stub, response_format):
    AIModelFactory(model_id="vendor/painter", model_type="image", provider="openai")
    png = tiny_png()
    stub.enqueue_image(png, via="images")

    result = client.images.generate(model="vendor/painter", prompt="A blue pixel", response_format=response_format)

    if response_format == "b64_json":
        assert base64.b64decode(result.data[0].b64_json) == png
    else:
        assert requests.get(result.data[0].url, timeout=10).status_code in (200, 404)  # media is served by a proxy
        assert "/media/generated/api/" in result.data[0].url
    event = settled_event(api_key=key[0])
    assert (event.kind, event.session_id) == ("image", None)
    with pytest.raises(openai.NotFoundError):
        client.images.generate(model="vendor/chat-not-image", prompt="x")


def test_replies_in_flight_are_capped_per_user_across_pages_and_api(client, app_server, user, key, model, stub):
    from django.contrib.auth.hashers import PBKDF2PasswordHasher, make_password

    from accounts.tests.factories import PASSWORD
    from chatbots.tests.factories import ChatbotFactory
    from chatsite.testing.appserver import http_session, sign_in
    from sessions_app.tests.factories import ChatSessionFactory

    user.password = make_password(PASSWORD, hasher=PBKDF2PasswordHasher())  # production settings' hasher
    user.save(update_fields=["password"])
    chat = ChatSessionFactory(user=user, chatbot=ChatbotFactory(), ai_model=model)
    for _ in range(3):  # MAX_ACTIVE_REPLIES_PER_USER is 3: a page reply and two API calls fill it
        # Long enough to still run when the fourth call comes; each gap well inside the server's AI_TIMEOUT (1 s).
        pieces = ["a", " slow", " reply", " in", " many", " pieces", " here"]
        stub.enqueue_text("".join(pieces), chunks=pieces, usage=(3, 7), delay=0.4)
    page = http_session(sign_in(app_server.url, user.email, PASSWORD))
    page_stream = page.post(
        f"{app_server.url}/api/chat-sessions/{chat.pk}/send/", json={"message": "Hi", "stream": True},
        stream=True, timeout=20,
    )  # fmt: skip
    streams = [
        client.chat.completions.create(model="vendor/chat", messages=[{"role": "user", "content": "Hi"}], stream=True)
        for _ in range(2)
    ]
    try:
        assert page_stream.status_code == 200
        with pytest.raises(openai.RateLimitError) as raised:
            client.chat.completions.create(model="vendor/chat", messages=[{"role": "user", "content": "One more"}])
        assert raised.value.code == "too_many_streams"
        assert int(raised.value.response.headers["Retry-After"]) > 0
    finally:
        for stream in streams:
            list(stream)  # read to the end: these replies finish and are charged
        page_stream.close()
        page.close()
    deadline = time.monotonic() + 10
    while UsageEvent.objects.filter(state=UsageEvent.State.RESERVED).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert UsageEvent.objects.filter(api_key=key[0], state=UsageEvent.State.SETTLED).count() == 2
    assert UsageEvent.objects.filter(session=chat).count() == 1


def test_free_models_and_the_cost_cap_count_as_they_do_for_sends(client, user, key, stub, api_client):
    tier = SubscriptionTypeFactory(
        hourly_max_messages=5, monthly_free_model_messages=5, max_openrouter_cost_usd=Decimal("0.01")
    )
    subscription_assign(user=user, subscription_type=tier)
    AIModelFactory(model_id="vendor/free", provider="openai", is_free=True)
    AIModelFactory(model_id="vendor/paid", provider="openai")
    stub.enqueue_text("Free answer.", usage=(10, 5), cost="0.5")
    stub.enqueue_text("Paid answer.", usage=(10, 5), cost="0.02")

    free = client.chat.completions.with_raw_response.create(
        model="vendor/free", messages=[{"role": "user", "content": "Hi"}]
    )
    client.chat.completions.create(model="vendor/paid", messages=[{"role": "user", "content": "Hi"}])

    assert free.headers["X-RateLimit-Limit"] == "5"  # the free model's tightest limit: its monthly messages
    assert free.headers["X-RateLimit-Remaining"] == "4"
    usage = {row["name"]: row["used"] for row in api_client.get("/api/users/usage/").json()["limits"]}
    assert (usage["monthly_free_model_messages"], usage["hourly_max_messages"]) == (1, 1)
    assert usage["max_openrouter_cost_usd"] == "0.02000000"  # a free model costs nothing, whatever it reports
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="vendor/paid", messages=[{"role": "user", "content": "Again"}])
    assert raised.value.body["limit"] == "max_openrouter_cost_usd"
    # The free model is still open, the cost cap does not count it; a stream carries the same headers.
    streamed = client.chat.completions.with_raw_response.create(
        model="vendor/free", messages=[{"role": "user", "content": "Still free?"}], stream=True
    )
    assert (streamed.headers["X-RateLimit-Limit"], streamed.headers["X-RateLimit-Remaining"]) == ("5", "3")
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed.parse() if chunk.choices)
