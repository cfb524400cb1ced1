"""Server-sent events for replies: the send stream, and following a reply from any server."""

import json
import logging
import time
from collections.abc import Iterator

from django.core.serializers.json import DjangoJSONEncoder
from django.db import InterfaceError, OperationalError
from django.http import StreamingHttpResponse

from billing.models import UsageEvent
from sessions_app.generation import generation_live, reply_orphaned, reply_reap
from sessions_app.models import ChatMessage, ChatSession
from sessions_app.rendering import message_html
from sessions_app.serializers import ChatMessageSerializer

logger = logging.getLogger(__name__)
DATABASE_UNAVAILABLE = {
    "detail": "The database is unavailable for a moment; the reply goes on. Follow it again shortly.",
    "code": "database_unavailable",
}
KEEPALIVE_SECONDS = 15.0
# How often a follower on another server than the generating one reads the database.
POLL_SECONDS = 0.25


def sse(event: str, data, event_id: int | str | None = None) -> bytes:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    payload = json.dumps(data, cls=DjangoJSONEncoder, ensure_ascii=False)
    lines.append(f"data: {payload}")
    return ("\n".join(lines) + "\n\n").encode()


KEEPALIVE = b": keep-alive\n\n"


def _follow_local(generation, offset: int) -> Iterator[bytes]:
    while True:
        arrived = generation.wait(offset, KEEPALIVE_SECONDS)
        content = generation.content
        if len(content) > offset:
            yield sse("delta", {"content": content[offset:]}, len(content))
            offset = len(content)
        elif generation.finished:
            return
        elif not arrived:
            yield KEEPALIVE


def _follow_database(reply_pk: int, offset: int) -> Iterator[bytes]:
    silent_since = time.monotonic()
    while True:
        row = ChatMessage.objects.filter(pk=reply_pk).values("content", "status", "updated_at").first()
        if row is None:
            return
        if len(row["content"]) > offset:
            yield sse("delta", {"content": row["content"][offset:]}, len(row["content"]))
            offset = len(row["content"])
            silent_since = time.monotonic()
        if row["status"] != ChatMessage.Status.GENERATING:
            return
        if generation_live(reply_pk) is not None:
            # It started running in this process meanwhile (or we raced its registration).
            yield from _follow_local(generation_live(reply_pk), offset)
            return
        if reply_orphaned(reply_pk, row["updated_at"]) and reply_reap(reply_pk):
            continue  # read how it ended
        if time.monotonic() - silent_since >= KEEPALIVE_SECONDS:
            yield KEEPALIVE
            silent_since = time.monotonic()
        time.sleep(POLL_SECONDS)


def _usage_data(reply_pk: int) -> dict | None:
    event = UsageEvent.objects.filter(message_id=reply_pk).order_by("-id").first()
    if event is None:
        return None
    return {
        "prompt_tokens": event.prompt_tokens,
        "completion_tokens": event.completion_tokens,
        "billed_tokens": event.billed_tokens,
        "cost_usd": format(event.cost_usd, "f"),
        "state": event.state,
    }


def reply_events(reply_pk: int, offset: int = 0) -> Iterator[bytes]:
    """The deltas of a reply past `offset` characters as they arrive, then how it ended.

    If the database goes away meanwhile the stream ends with an `error` event, not a cut: the
    reply itself runs on and is saved once the database is back, so following it again finds it.
    """
    try:
        yield from _reply_events(reply_pk, offset)
    except (OperationalError, InterfaceError):
        logger.warning("reply %s: the database is unavailable; its stream ends here", reply_pk)
        yield sse("error", DATABASE_UNAVAILABLE)


def _reply_events(reply_pk: int, offset: int) -> Iterator[bytes]:
    generation = generation_live(reply_pk)
    if generation is not None:
        yield from _follow_local(generation, offset)
    else:
        yield from _follow_database(reply_pk, offset)
    reply = ChatMessage.objects.select_related("ai_model").filter(pk=reply_pk).first()
    if reply is None:
        yield sse("error", {"detail": "The reply was deleted.", "code": "not_found"})
        return
    end = len(reply.content)
    if reply.status == ChatMessage.Status.FAILED:
        detail = reply.error_detail or "The AI provider failed to answer. Try again."
        yield sse("error", {"detail": detail, "code": reply.error_code or "upstream_error"}, end)
        return
    data = {**ChatMessageSerializer(reply).data, "content_html": message_html(reply.content)}
    yield sse("assistant_message", data, end)
    usage = _usage_data(reply_pk)
    if usage is not None:
        yield sse("usage", usage, end)
    if reply.status == ChatMessage.Status.PARTIAL and reply.error_code:
        # The upstream failed after some text: that text is kept, and the client learns why it ends there.
        yield sse("error", {"detail": reply.error_detail, "code": reply.error_code, "partial": True}, end)
    title = ChatSession.objects.filter(pk=reply.session_id).values_list("title", flat=True).first()
    yield sse("done", {"status": reply.status, "title": title}, end)


def event_stream_response(
    events: Iterator[bytes], status: int = 200, headers: dict[str, str] | None = None
) -> StreamingHttpResponse:
    response = StreamingHttpResponse(
        events, content_type="text/event-stream; charset=utf-8", status=status, headers=headers
    )
    response["Cache-Control"] = "no-cache, no-transform"
    # Tell nginx and similar proxies to pass each event on at once.
    response["X-Accel-Buffering"] = "no"
    return response
