"""Streaming replies: the event stream, and replies that outlive their connection.

The reply runs in a thread of its own, with its own database connection, so
these tests use committed data (transaction=True). The tests that drop or add
connections go through a real socket to the live test server.
"""

import threading
import time
import uuid

import pytest
import requests
from django.db import connection

from billing.models import UsageEvent
from chatsite.testing.sse import Event, arriving, events_only, parse_events
from sessions_app import streaming
from sessions_app.lifecycle import reply_read
from sessions_app.models import ChatMessage, ReplyPiece
from sessions_app.runtime import live_get, reply_wait_blocking
from sessions_app.tests.factories import ChatSessionFactory

pytestmark = pytest.mark.django_db(transaction=True)


def stream_send(client, session, text="Hello there", **extra):
    response = client.post(
        f"/api/chat-sessions/{session.pk}/send/", {"message": text, "stream": True, **extra}, format="json"
    )
    assert response.status_code == 200, response.content
    return response


def all_events(response) -> list[Event]:
    return events_only(parse_events(response.streaming_content))


def wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_streamed_send_sends_the_user_message_then_deltas_then_the_saved_reply(api_client, chat_session, settings):
    settings.DEMO_STREAM_DELAY = 0.01  # a reader that keeps up gets one delta per upstream piece
    response = stream_send(api_client, chat_session, "Tell me about streams")

    assert response["Content-Type"].startswith("text/event-stream")
    assert response["X-Accel-Buffering"] == "no"
    # Not transformed by proxies on the way, and, as every answer to a signed-in user, never stored.
    assert set(response["Cache-Control"].split(", ")) == {"no-cache", "no-transform", "private", "no-store"}
    events = all_events(response)
    names = [e.event for e in events]
    assert names[0] == "user_message"
    assert names[-3:] == ["assistant_message", "usage", "done"]
    deltas = [e for e in events if e.event == "delta"]
    assert len(deltas) > 5  # word by word, not one lump
    assert all(e.id is not None for e in events)
    streamed = "".join(e.data["content"] for e in deltas)
    saved = events[-3].data
    assert saved["content"] == streamed
    assert saved["status"] == "complete"
    assert "<strong>Demo reply</strong>" in saved["content_html"]
    assert events[0].data["content"] == "Tell me about streams"
    assert [int(e.id) for e in deltas] == sorted(int(e.id) for e in deltas)
    assert int(deltas[-1].id) == len(streamed)
    reply = ChatMessage.objects.get(message_id=saved["message_id"])
    assert reply.content == streamed and reply.status == ChatMessage.Status.COMPLETE
    usage = events[-2].data
    event = UsageEvent.objects.get(message=reply)
    assert event.state == UsageEvent.State.SETTLED
    assert usage["completion_tokens"] == event.completion_tokens > 0


def test_accept_header_asks_for_a_stream_too(api_client, chat_session):
    response = api_client.post(
        f"/api/chat-sessions/{chat_session.pk}/send/",
        {"message": "hi"},
        format="json",
        HTTP_ACCEPT="text/event-stream",
    )

    assert response.status_code == 200
    assert [e.event for e in all_events(response)][-1] == "done"


def test_a_refused_stream_request_is_an_error_event_with_the_status(api_client, chat_session):
    response = api_client.post(
        f"/api/chat-sessions/{chat_session.pk}/send/",
        {"message": "   "},
        format="json",
        HTTP_ACCEPT="text/event-stream",
    )

    assert response.status_code == 400
    (event,) = events_only(parse_events([response.content]))
    assert event.event == "error"
    assert event.data["code"] == "blank"


def test_the_reply_is_saved_while_it_grows(api_client, chat_session, settings):
    settings.DEMO_STREAM_DELAY = 0.05
    response = stream_send(api_client, chat_session, "a slow one")
    reply_id = None
    for item in parse_events(response.streaming_content):
        if isinstance(item, Event) and item.event == "delta" and int(item.id) > 60:
            reply_id = ChatMessage.objects.get(message_type="assistant").pk
            break
    # Its pieces are written at least every FLUSH_SECONDS while it generates, not only at the end.
    wait_until(lambda: reply_read(reply_id)[1] != "")
    assert ReplyPiece.objects.filter(message_id=reply_id).exists()
    assert ChatMessage.objects.get(pk=reply_id).status == ChatMessage.Status.GENERATING
    response.close()
    reply_wait_blocking(reply_id)


def test_keep_alive_comments_flow_while_the_upstream_is_silent(api_client, chat_session, settings, monkeypatch):
    settings.DEMO_STREAM_DELAY = 0.25
    monkeypatch.setattr(streaming, "KEEPALIVE_SECONDS", 0.05)

    items = list(parse_events(stream_send(api_client, chat_session, "one two").streaming_content))

    assert "keep-alive" in items
    assert events_only(items)[-1].event == "done"


# Over a real socket


@pytest.fixture
def live_session(live_server, user, chat_session):
    """A requests session signed in as `user` on the live server, with its CSRF token."""
    http = requests.Session()
    token = http.get(f"{live_server.url}/api/auth/csrf/").json()["csrfToken"]
    response = http.post(
        f"{live_server.url}/api/auth/login/",
        json={"email": user.email, "password": "correct horse battery staple"},
        headers={"X-CSRFToken": token},
    )
    assert response.status_code == 200
    http.headers["X-CSRFToken"] = http.cookies["csrftoken"]
    http.headers["Referer"] = live_server.url
    yield http
    http.close()


def test_a_client_that_disconnects_leaves_a_complete_reply(live_server, live_session, chat_session, settings):
    settings.DEMO_STREAM_DELAY = 0.02
    url = f"{live_server.url}/api/chat-sessions/{chat_session.pk}/send/"
    with live_session.post(url, json={"message": "go on without me", "stream": True}, stream=True) as response:
        assert response.status_code == 200
        first = next(parse_events(arriving(response)))
        assert first.event == "user_message"
    # The connection is closed; the reply goes on to the end and is charged once.
    reply = ChatMessage.objects.get(message_type="assistant")
    reply_wait_blocking(reply.pk)
    reply.refresh_from_db()
    assert reply.status == ChatMessage.Status.COMPLETE
    assert "go on without me" in reply.content
    assert reply.content.endswith("to talk to a real model.")
    assert UsageEvent.objects.get(message=reply).state == UsageEvent.State.SETTLED


def test_stop_from_a_second_client_keeps_the_partial_text(live_server, live_session, chat_session, settings, user):
    settings.DEMO_STREAM_DELAY = 0.05
    url = f"{live_server.url}/api/chat-sessions/{chat_session.pk}/send/"
    with live_session.post(url, json={"message": "a long answer please", "stream": True}, stream=True) as response:
        events = parse_events(arriving(response))
        for item in events:
            if isinstance(item, Event) and item.event == "delta" and int(item.id) > 40:
                break
        other = requests.Session()
        other.cookies.update(live_session.cookies)
        stop = other.post(
            f"{live_server.url}/api/chat-sessions/{chat_session.pk}/stop/", headers=dict(live_session.headers)
        )
        assert stop.status_code == 200, stop.text
        assert len(stop.json()["stopped_message_ids"]) == 1
        rest = events_only(events)

    assert [e.event for e in rest][-3:] == ["assistant_message", "usage", "done"]
    assert rest[-1].data == {"status": "stopped", "title": "a long answer please"}
    reply = ChatMessage.objects.get(message_type="assistant")
    assert reply.status == ChatMessage.Status.STOPPED
    assert len(reply.content) > 40 and not reply.content.endswith("to talk to a real model.")
    assert rest[-3].data["content"] == reply.content
    event = UsageEvent.objects.get(message=reply)
    assert event.state == UsageEvent.State.SETTLED
    # Only what was produced is charged.
    assert 0 < event.completion_tokens <= (len(reply.content) + 3) // 4


def test_resume_with_last_event_id_replays_only_what_was_missed(live_server, live_session, chat_session, settings):
    settings.DEMO_STREAM_DELAY = 0.01
    url = f"{live_server.url}/api/chat-sessions/{chat_session.pk}/send/"
    with live_session.post(url, json={"message": "resume me", "stream": True}, stream=True) as response:
        events = events_only(parse_events(arriving(response)))
    reply = events[-3].data
    deltas = [e for e in events if e.event == "delta"]
    seen = deltas[2]

    follow = live_session.get(
        f"{live_server.url}/api/chat-sessions/{chat_session.pk}/messages/{reply['message_id']}/stream/",
        headers={"Last-Event-ID": seen.id},
    )

    resumed = events_only(parse_events([follow.content]))
    assert resumed[0].event == "delta"
    assert resumed[0].data["content"] == reply["content"][int(seen.id) :]
    assert [e.event for e in resumed][-3:] == ["assistant_message", "usage", "done"]


def test_a_reload_follows_a_reply_still_being_generated(live_server, live_session, chat_session, settings):
    settings.DEMO_STREAM_DELAY = 0.03
    url = f"{live_server.url}/api/chat-sessions/{chat_session.pk}/send/"
    with live_session.post(url, json={"message": "follow me", "stream": True}, stream=True) as response:
        next(parse_events(arriving(response)))
    reply = ChatMessage.objects.get(message_type="assistant")

    follow = live_session.get(
        f"{live_server.url}/api/chat-sessions/{chat_session.pk}/messages/{reply.message_id}/stream/"
    )

    events = events_only(parse_events([follow.content]))
    streamed = "".join(e.data["content"] for e in events if e.event == "delta")
    reply.refresh_from_db()
    assert streamed == reply.content
    assert reply.status == ChatMessage.Status.COMPLETE


def test_following_a_reply_generated_on_another_server_reads_the_database(api_client, chat_session):
    # Another server's reply: generating in the database, not running in this process.
    reply = ChatMessage.objects.create(
        session=chat_session, message_type="assistant", content="Hel", status=ChatMessage.Status.GENERATING
    )
    assert live_get(reply.pk) is None

    def other_server():
        try:
            time.sleep(0.3)
            ChatMessage.objects.filter(pk=reply.pk).update(content="Hello, world")
            time.sleep(0.3)
            ChatMessage.objects.filter(pk=reply.pk).update(status=ChatMessage.Status.COMPLETE)
        finally:
            connection.close()

    writer = threading.Thread(target=other_server)
    writer.start()
    response = api_client.get(f"/api/chat-sessions/{chat_session.pk}/messages/{reply.message_id}/stream/")
    events = all_events(response)
    writer.join()

    assert [e.data["content"] for e in events if e.event == "delta"] == ["Hel", "lo, world"]
    assert events[-1].event == "done" and events[-1].data["status"] == "complete"


def test_stop_marks_a_reply_running_elsewhere_as_stopped(api_client, chat_session):
    reply = ChatMessage.objects.create(
        session=chat_session, message_type="assistant", content="Half", status=ChatMessage.Status.GENERATING
    )

    response = api_client.post(f"/api/chat-sessions/{chat_session.pk}/stop/")

    assert response.json() == {"success": True, "stopped_message_ids": [str(reply.message_id)]}
    reply.refresh_from_db()
    assert reply.status == ChatMessage.Status.STOPPED and reply.content == "Half"


def test_stop_with_nothing_generating_stops_nothing(api_client, chat_session):
    assert api_client.post(f"/api/chat-sessions/{chat_session.pk}/stop/").json() == {
        "success": True,
        "stopped_message_ids": [],
    }


def test_following_another_users_reply_is_404(other_client, chat_session, api_client):
    reply = stream_send(api_client, chat_session)
    message_id = all_events(reply)[-3].data["message_id"]

    response = other_client.get(f"/api/chat-sessions/{chat_session.pk}/messages/{message_id}/stream/")

    assert response.status_code == 404


# Idempotent sends


def test_a_retried_send_returns_the_first_result_and_charges_once(api_client, chat_session):
    key = str(uuid.uuid4())
    first = api_client.post(
        f"/api/chat-sessions/{chat_session.pk}/send/", {"message": "once", "client_message_id": key}, format="json"
    )
    again = api_client.post(
        f"/api/chat-sessions/{chat_session.pk}/send/", {"message": "once", "client_message_id": key}, format="json"
    )

    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert ChatMessage.objects.count() == 2
    assert UsageEvent.objects.count() == 1


def test_the_idempotency_key_header_works_like_client_message_id(api_client, chat_session):
    for _ in range(2):
        response = api_client.post(
            f"/api/chat-sessions/{chat_session.pk}/send/",
            {"message": "once"},
            format="json",
            HTTP_IDEMPOTENCY_KEY="order-42",
        )
        assert response.status_code == 201

    assert ChatMessage.objects.filter(message_type="user").count() == 1
    assert UsageEvent.objects.count() == 1


def test_the_same_key_with_a_different_message_is_409(api_client, chat_session):
    key = str(uuid.uuid4())
    api_client.post(
        f"/api/chat-sessions/{chat_session.pk}/send/", {"message": "first", "client_message_id": key}, format="json"
    )

    response = api_client.post(
        f"/api/chat-sessions/{chat_session.pk}/send/", {"message": "second", "client_message_id": key}, format="json"
    )

    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_conflict"
    assert ChatMessage.objects.filter(message_type="user").count() == 1


def test_a_streamed_retry_replays_the_same_messages(api_client, chat_session):
    key = str(uuid.uuid4())
    first = all_events(stream_send(api_client, chat_session, "stream once", client_message_id=key))
    again = all_events(stream_send(api_client, chat_session, "stream once", client_message_id=key))

    assert again[0].data["message_id"] == first[0].data["message_id"]
    assert again[-3].data["message_id"] == first[-3].data["message_id"]
    assert again[-3].data["content"] == first[-3].data["content"]
    assert UsageEvent.objects.count() == 1


def test_the_same_key_in_another_chat_is_a_new_send(api_client, chat_session, user):
    key = str(uuid.uuid4())
    other = ChatSessionFactory(user=user, chatbot=chat_session.chatbot, ai_model=chat_session.ai_model)
    for session in (chat_session, other):
        response = api_client.post(
            f"/api/chat-sessions/{session.pk}/send/", {"message": "hi", "client_message_id": key}, format="json"
        )
        assert response.status_code == 201
    assert UsageEvent.objects.count() == 2


def test_deleting_a_chat_while_its_reply_streams_still_charges_what_was_produced(api_client, chat_session, settings):
    settings.DEMO_STREAM_DELAY = 0.02
    response = stream_send(api_client, chat_session, "delete me midway")
    items = parse_events(response.streaming_content)
    for item in items:
        if isinstance(item, Event) and item.event == "delta":
            break
    reply_pk = ChatMessage.objects.get(message_type="assistant").pk

    assert api_client.delete(f"/api/chat-sessions/{chat_session.pk}/").status_code == 200
    response.close()
    reply_wait_blocking(reply_pk)

    event = UsageEvent.objects.get()
    assert event.session_id is None and event.message_id is None
    assert event.state == UsageEvent.State.SETTLED
    assert event.completion_tokens > 0


@pytest.mark.django_db(transaction=False)
@pytest.mark.parametrize("text", ["Hello ", 'a "quote", a \\ and a\nline', "é ✓ 中文 \u2028", "", "{}"])
def test_a_delta_is_the_event_sse_would_make_of_its_text(text):
    made = streaming._delta(text, 42)
    assert made == streaming.sse("delta", {"content": text}, 42)
    (event,) = events_only(parse_events([made]))
    assert (event.event, event.id, event.data) == ("delta", "42", {"content": text})


def test_how_a_reply_ended_is_one_chunk_one_write_to_the_socket(api_client, chat_session):
    chunks = list(stream_send(api_client, chat_session).streaming_content)

    assert [event.event for event in events_only(parse_events(chunks[-1:]))] == ["assistant_message", "usage", "done"]
    assert all(len(events_only(parse_events([chunk]))) == 1 for chunk in chunks[:-1])
