"""Server-sent events for replies: the send stream, and following a reply from any server."""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator

from django.core.handlers.asgi import ASGIRequest
from django.core.serializers.json import DjangoJSONEncoder
from django.http import StreamingHttpResponse

from billing.models import UsageEvent
from chatsite.middleware import DATABASE_ERRORS
from sessions_app import runtime
from sessions_app.lifecycle import reply_read
from sessions_app.models import ChatMessage, ChatSession
from sessions_app.rendering import message_html
from sessions_app.runtime import LiveReply, db
from sessions_app.serializers import ChatMessageSerializer

logger = logging.getLogger(__name__)
DATABASE_UNAVAILABLE = {
    "detail": "The database is unavailable for a moment; the reply goes on. Follow it again shortly.",
    "code": "database_unavailable",
}
KEEPALIVE_SECONDS = 15.0
KEEPALIVE = b": keep-alive\n\n"


def sse(event: str, data, event_id: int | str | None = None) -> bytes:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    payload = json.dumps(data, cls=DjangoJSONEncoder, ensure_ascii=False)
    lines.append(f"data: {payload}")
    return ("\n".join(lines) + "\n\n").encode()


# A delta goes out for every piece of every stream: its JSON is made by one encoder made once,
# not by json.dumps making an encoder per call (the same bytes as sse("delta", {"content": text}, end)).
_json_text = json.JSONEncoder(ensure_ascii=False).encode


def _delta(text: str, end: int) -> bytes:
    return f'id: {end}\nevent: delta\ndata: {{"content": {_json_text(text)}}}\n\n'.encode()


async def _follow_local(live: LiveReply, offset: int) -> AsyncIterator[bytes]:
    while True:
        content = live.content
        if len(content) > offset:
            yield _delta(content[offset:], len(content))
            offset = len(content)
        elif live.finished:
            return
        elif not await live.wait(offset, KEEPALIVE_SECONDS):
            yield KEEPALIVE


def _usage_data(event: UsageEvent | None) -> dict | None:
    if event is None:
        return None
    return {
        "prompt_tokens": event.prompt_tokens,
        "completion_tokens": event.completion_tokens,
        "billed_tokens": event.billed_tokens,
        "cost_usd": format(event.cost_usd, "f"),
        "state": event.state,
    }


def _ending_read(reply_pk: int) -> tuple[ChatMessage | None, UsageEvent | None, str | None]:
    reply, _ = reply_read(reply_pk)
    if reply is None:
        return None, None, None
    event = UsageEvent.objects.filter(message_id=reply_pk).order_by("-id").first()
    title = ChatSession.objects.filter(pk=reply.session_id).values_list("title", flat=True).first()
    return reply, event, title


def ending_events(reply: ChatMessage | None, event: UsageEvent | None, title: str | None) -> Iterator[bytes]:
    """How a reply ended: the saved reply, its usage and `done`; or an `error`."""
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
    usage = _usage_data(event)
    if usage is not None:
        yield sse("usage", usage, end)
    if reply.status == ChatMessage.Status.PARTIAL and reply.error_code:
        # The upstream failed after some text: that text is kept, and the client learns why it ends there.
        yield sse("error", {"detail": reply.error_detail, "code": reply.error_code, "partial": True}, end)
    yield sse("done", {"status": reply.status, "title": title}, end)


async def reply_events(reply_pk: int, offset: int = 0) -> AsyncIterator[bytes]:
    """The deltas of a reply past `offset` characters as they arrive, then how it ended.

    If the database goes away meanwhile the stream ends with an `error` event, not a cut: the
    reply itself runs on and is saved once the database is back, so following it again finds it.
    """
    try:
        async for chunk in _reply_events(reply_pk, offset):
            yield chunk
    except DATABASE_ERRORS:
        logger.warning("reply %s: the database is unavailable; its stream ends here", reply_pk)
        yield sse("error", DATABASE_UNAVAILABLE)


async def _reply_events(reply_pk: int, offset: int) -> AsyncIterator[bytes]:
    live = runtime.live_on_this_loop(reply_pk)
    if live is None:
        started = time.monotonic()
        async for kind, value in runtime.follow_remote(reply_pk, offset):
            if kind == "text":
                offset += len(value)
                started = time.monotonic()
                yield _delta(value, offset)
            elif kind == "local":
                live = value
                break
            elif time.monotonic() - started >= KEEPALIVE_SECONDS:  # idle, and long enough
                started = time.monotonic()
                yield KEEPALIVE
    if live is not None:
        async for chunk in _follow_local(live, offset):
            yield chunk
        if live.result is not None and live.result.reply is not None:
            # Ran here: how it ended is in memory, no read needed.
            async for chunk in _together(ending_events(live.result.reply, live.result.event, await _title(live))):
                yield chunk
            return
    async for chunk in _together(ending_events(*await db(_ending_read, reply_pk))):
        yield chunk


async def _together(events: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Events ready at the same moment as one chunk: one write to the client's socket, not one each.

    Those made before one fails are sent all the same, before the failure goes on.
    """
    made: list[bytes] = []
    try:
        made.extend(events)
    except Exception:
        if made:
            yield b"".join(made)
        raise
    yield b"".join(made)


async def _title(live: LiveReply) -> str | None:
    if live.title is not None:
        return live.title
    session_pk = live.job.session_pk
    return await db(lambda: ChatSession.objects.filter(pk=session_pk).values_list("title", flat=True).first())


class _AsyncBody:
    """A response body for an ASGI server: iterated on the runtime's loop, fetched from it if served on another."""

    def __init__(self, chunks: AsyncIterator[bytes], on_close) -> None:
        self.chunks = chunks
        self.on_close = on_close

    def __aiter__(self) -> AsyncIterator[bytes]:
        loop = runtime.runtime().ensure_loop()
        if asyncio.get_running_loop() is loop:
            return self.chunks
        return self._bridged(loop)

    async def _bridged(self, loop) -> AsyncIterator[bytes]:
        while True:
            try:
                yield await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_next(self.chunks), loop))
            except StopAsyncIteration:
                return

    def close(self) -> None:  # Django calls it when the response ends, or the client went away
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            on_close()


class _SyncBody:
    """A response body for WSGI (and the test client): each chunk fetched from the runtime's loop."""

    def __init__(self, chunks: AsyncIterator[bytes], on_close) -> None:
        self.chunks = chunks
        self.on_close = on_close
        self.loop = runtime.runtime().ensure_loop()

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            return asyncio.run_coroutine_threadsafe(_next(self.chunks), self.loop).result()
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:  # Django calls it when the response ends, read or not
        try:
            asyncio.run_coroutine_threadsafe(self.chunks.aclose(), self.loop).result(timeout=10)
        finally:
            on_close, self.on_close = self.on_close, None
            if on_close is not None:
                on_close()


async def _next(chunks: AsyncIterator[bytes]) -> bytes:
    return await chunks.__anext__()


async def _prefixed(head: list[bytes], chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in head:
        yield chunk
    async for chunk in chunks:
        yield chunk


def event_stream_response(
    request,
    events: AsyncIterator[bytes],
    *,
    head: list[bytes] | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
    on_close=None,
) -> StreamingHttpResponse:
    chunks = _prefixed(head or [], events)
    # An ASGI server streams the async body; a WSGI one (or the test client) the bridged one.
    body = _AsyncBody(chunks, on_close) if isinstance(request, ASGIRequest) else _SyncBody(chunks, on_close)
    response = StreamingHttpResponse(
        body, content_type="text/event-stream; charset=utf-8", status=status, headers=headers
    )
    response["Cache-Control"] = "no-cache, no-transform"
    # Tell nginx and similar proxies to pass each event on at once.
    response["X-Accel-Buffering"] = "no"
    return response
