"""The reply runtime: async endpoints, a fair share per user, pieces instead of rewrites, one lifecycle."""

import asyncio
from types import SimpleNamespace

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import resolve

from billing.models import ChatSessionUsage, UsageBucket, UsageEvent
from chatbots.providers.base import Usage, estimate_tokens
from chatsite.errors import Interrupted, UpstreamError
from chatsite.testing.sse import Event, events_only, parse_events
from sessions_app import lifecycle, runtime, services
from sessions_app.lifecycle import Outcome, outcome_status, pieces_append
from sessions_app.models import ChatMessage, ChatSession, ReplyPiece

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


def _finished_state(job):
    """What a reply's end left in the database: the reply, its usage, its chat and its user's counters."""
    reply = ChatMessage.objects.get(pk=job.reply_pk)
    event = UsageEvent.objects.get(pk=job.event.pk)
    chat = ChatSession.objects.get(pk=job.session_pk)
    usage = ChatSessionUsage.objects.get(session_id=job.session_pk)
    buckets = sorted(
        UsageBucket.objects.filter(user_id=job.user_id).values_list("span", "klass", "messages", "tokens", "cost_usd")
    )
    return {
        "reply": (reply.status, reply.content, reply.tokens_count, reply.image_url, reply.disabled),
        "event": (event.state, event.prompt_tokens, event.completion_tokens, event.billed_tokens, event.cost_usd),
        "chat": (chat.title, chat.updated_at > job.reply.created_at),
        "chat usage": (usage.tokens_count, usage.free_model_tokens_count, usage.is_free_model),
        "buckets": buckets,
        "pieces": ReplyPiece.objects.filter(message_id=job.reply_pk).count(),
    }


@pytest.mark.django_db
def test_the_usual_end_of_a_reply_is_one_statement_that_leaves_what_the_transaction_did(
    user, other_user, chatbot, ai_model
):
    if connection.vendor != "postgresql":
        pytest.skip("the one-statement end is PostgreSQL's; SQLite ends every reply in a transaction")
    jobs = []
    for owner in (user, other_user):
        chat = ChatSession.objects.create(user=owner, chatbot=chatbot, ai_model=ai_model)
        job = services.message_send(session=chat, user=owner, content="Name this chat").job
        pieces_append([(job.reply_pk, 0, "Half of "), (job.reply_pk, 8, "it.")])
        jobs.append(job)
    outcome = Outcome(content="Half of it. All of it.", usage=Usage(40, 7, None), flushed=True)

    with CaptureQueriesContext(connection) as statements:
        lifecycle.reply_finish(job=jobs[0], outcome=outcome, touch=True, title="A named chat")
    with transaction.atomic():  # the same end as the transaction that stopped-meanwhile replies still take
        lifecycle._reply_finish(jobs[1], outcome, try_complete=True)
        lifecycle.session_touch(session_pk=jobs[1].session_pk, title="A named chat")

    assert len(statements) == 1, [q["sql"] for q in statements.captured_queries]
    at_once, in_a_transaction = _finished_state(jobs[0]), _finished_state(jobs[1])
    assert at_once == in_a_transaction
    assert at_once["reply"] == ("complete", "Half of it. All of it.", 7, "", False)
    assert at_once["event"][0] == "settled" and at_once["event"][1:3] == (40, 7)
    assert at_once["chat"] == ("A named chat", True)
    assert at_once["pieces"] == 0


@pytest.mark.django_db
def test_a_reply_stopped_while_it_ended_stays_stopped_and_is_charged_once(chat_session, user):
    job = services.message_send(session=chat_session, user=user, content="Go on").job
    assert lifecycle.reply_mark_stopped(reply_pk=job.reply_pk)  # a stop from another server, just before the end

    finished = lifecycle.reply_finish(
        job=job, outcome=Outcome(content="All of it.", usage=Usage(30, 9, None)), touch=True
    )

    reply = ChatMessage.objects.get(pk=job.reply_pk)
    assert (reply.status, reply.content) == ("stopped", "All of it.")
    assert finished.event.state == "settled"
    event = UsageEvent.objects.get(pk=job.event.pk)
    assert event.state == "settled" and event.completion_tokens == estimate_tokens("All of it.")
    buckets = UsageBucket.objects.filter(user=user, span="day")
    assert sum(b.tokens for b in buckets) == event.billed_tokens
    assert sum(b.messages for b in buckets) == 1


def test_waits_on_a_live_reply_end_with_its_text_or_their_own_time_and_share_one_timer():
    live = runtime.LiveReply(SimpleNamespace(reply_pk=1, user_id=1, event=None))

    async def scenario():
        loop = asyncio.get_running_loop()
        # Each piece ends the waits before it: a stream waits once per piece, on the same timer.
        timers = set()
        for n in range(50):
            waiting = asyncio.ensure_future(live.wait(len(live.content), 15))
            await asyncio.sleep(0)
            timers.add(id(live._timer))
            live.append(f"{n} ")
            assert await waiting is True
        assert len(timers) == 1
        # A wait with its own, shorter time gives up on time; a longer one beside it goes on.
        offset = len(live.content)
        started = loop.time()
        patient = asyncio.ensure_future(live.wait(offset, 15))
        assert await live.wait(offset, 0.05) is False
        assert 0.05 <= loop.time() - started < 1
        assert not patient.done()
        # A stream that went away leaves nothing behind; the end ends the rest and the timer with them.
        gone = asyncio.ensure_future(live.wait(offset, 0.05))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0.1)
        live.end()
        assert await patient is True
        assert live._timer is None and live._waiters == []
        assert await live.wait(offset, 15) is True  # ended: no wait at all

    asyncio.run(scenario())
