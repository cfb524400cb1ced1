"""The reply runtime: async endpoints, a fair share per user, pieces instead of rewrites, one lifecycle."""

import asyncio

import pytest
from django.urls import resolve

from billing.models import UsageEvent
from chatsite.errors import Interrupted, UpstreamError
from chatsite.testing.sse import Event, events_only, parse_events
from sessions_app import runtime, services
from sessions_app.lifecycle import Outcome, outcome_status, pieces_append
from sessions_app.models import ChatMessage, ReplyPiece

SEND = "/api/chat-sessions/{}/send/"


def follow_url(session, reply) -> str:
    return f"/api/chat-sessions/{session.pk}/messages/{reply.message_id}/stream/"


def test_the_reply_endpoints_are_async_views():
    message = "00000000-0000-0000-0000-000000000000"
    for path in [
        "/api/chat-sessions/1/send/",
        "/api/chat-sessions/1/regenerate/",
        f"/api/chat-sessions/1/messages/{message}/edit/",
        f"/api/chat-sessions/1/messages/{message}/stream/",
    ]:
        assert asyncio.iscoroutinefunction(resolve(path).func), path
    assert not asyncio.iscoroutinefunction(resolve("/api/chat-sessions/").func)


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (Outcome(content="All of it."), "complete"),
        (Outcome(content="Some", stopped=True), "stopped"),
        (Outcome(stopped=True), "stopped"),
        (Outcome(content="Some", error=UpstreamError()), "partial"),
        (Outcome(content="Some", error=Interrupted()), "partial"),
        (Outcome(error=UpstreamError()), "failed"),
        (Outcome(error=Interrupted()), "failed"),
    ],
)
def test_each_outcome_leads_to_one_state(outcome, status):
    assert outcome_status(outcome) == status


def test_a_reply_stopped_elsewhere_ends_stopped_whatever_its_run_saw():
    assert outcome_status(Outcome(content="All of it."), stopped_elsewhere=True) == "stopped"


@pytest.mark.django_db
def test_a_send_past_the_users_share_of_replies_in_flight_is_429_and_saves_nothing(
    api_client, chat_session, user, settings
):
    settings.MAX_ACTIVE_REPLIES_PER_USER = 1
    first = services.message_send(session=chat_session, user=user, content="first")  # begun, still running

    response = api_client.post(SEND.format(chat_session.pk), {"message": "second"}, format="json")

    assert response.status_code == 429, response.content
    assert response.json()["code"] == "too_many_streams"
    assert int(response["Retry-After"]) > 0
    assert not ChatMessage.objects.filter(content="second").exists()
    assert UsageEvent.objects.count() == 1
    # Once the first has ended, the next send passes.
    runtime.reply_complete_blocking(reply=first.reply, job=first.job)
    assert api_client.post(SEND.format(chat_session.pk), {"message": "second"}, format="json").status_code == 201


@pytest.mark.django_db(transaction=True)
def test_a_follow_stream_past_the_users_share_is_429_until_one_closes(api_client, chat_session, user, settings):
    settings.MAX_FOLLOW_STREAMS_PER_USER = 1
    done = services.message_send(session=chat_session, user=user, content="hello")
    reply = runtime.reply_complete_blocking(reply=done.reply, job=done.job)

    held = api_client.get(follow_url(chat_session, reply))
    refused = api_client.get(follow_url(chat_session, reply))
    held.close()  # closed unread: its place is free again
    again = api_client.get(follow_url(chat_session, reply))

    assert held.status_code == 200
    assert refused.status_code == 429 and refused.json()["code"] == "too_many_streams"
    assert int(refused["Retry-After"]) > 0
    assert [e.event for e in events_only(parse_events(again.streaming_content))][-1] == "done"


@pytest.mark.django_db
def test_the_pieces_of_many_replies_go_in_at_once_and_those_of_a_deleted_reply_go_nowhere(chat_session):
    first = ChatMessage.objects.create(session=chat_session, message_type="assistant", status="generating")
    second = ChatMessage.objects.create(session=chat_session, message_type="assistant", status="generating")
    gone = ChatMessage.objects.create(session=chat_session, message_type="assistant", status="generating")
    gone_pk = gone.pk
    gone.delete()

    pieces_append([(first.pk, 0, "Hello"), (second.pk, 0, "Ünïcode 🙂"), (gone_pk, 0, "lost"), (first.pk, 5, ", you")])

    saved = sorted(ReplyPiece.objects.values_list("message_id", "offset", "text"))
    assert saved == sorted([(first.pk, 0, "Hello"), (first.pk, 5, ", you"), (second.pk, 0, "Ünïcode 🙂")])


@pytest.mark.django_db(transaction=True)
def test_a_growing_reply_appends_pieces_and_writes_its_text_once(api_client, chat_session, settings, monkeypatch):
    monkeypatch.setattr(runtime, "FLUSH_SECONDS", 0.02)
    settings.DEMO_STREAM_DELAY = 0.02
    response = api_client.post(
        SEND.format(chat_session.pk), {"message": "Write a long one " * 5, "stream": True}, format="json"
    )
    contents, layouts = set(), []
    for item in parse_events(response.streaming_content):
        if isinstance(item, Event) and item.event == "delta":
            reply = ChatMessage.objects.get(message_type="assistant")
            if reply.status == ChatMessage.Status.GENERATING:
                contents.add(reply.content)
                layouts.append(list(ReplyPiece.objects.filter(message=reply).values_list("offset", "text")))

    # While it grew, its row was never rewritten; its text went into pieces, each appended after the last.
    assert contents == {""}
    last = layouts[-1]
    assert len(last) >= 3, layouts
    assert [offset for offset, _ in last] == [sum(len(text) for _, text in last[:n]) for n in range(len(last))]
    reply = ChatMessage.objects.get(message_type="assistant")
    assert reply.content.startswith("".join(text for _, text in last))
    assert reply.status == ChatMessage.Status.COMPLETE and not ReplyPiece.objects.exists()
