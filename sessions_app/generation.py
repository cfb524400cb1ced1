"""Generating a reply: the upstream call that outlives its HTTP connection.

A reply is started in one short transaction (the reservation and an empty
assistant message with status `generating`), then run outside any
transaction: the upstream's text is saved as it grows, at most every
FLUSH_INTERVAL seconds, and settled at the end. The state lives in the
database, so any app server can follow or stop a reply; followers in the
process that runs it also get each piece as it arrives through `Generation`.
"""

import copy
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import InterfaceError, OperationalError, connection, connections, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from billing.models import UsageEvent
from billing.quotas import Headroom
from billing.services import usage_release, usage_settle
from chatbots.models import AIModel
from chatbots.providers import get_provider
from chatbots.providers.base import Cancel, Message, Usage, estimate_tokens
from chatsite.errors import ChatsiteError, UpstreamError
from sessions_app.models import DEFAULT_TITLE, ChatMessage, ChatSession
from sessions_app.titles import title_summarize

logger = logging.getLogger(__name__)

# Saved at least this often while a reply grows, and never once per chunk.
FLUSH_INTERVAL = 0.5
# A reply running in a process is marked alive in the database at least this often, even
# while its upstream sends nothing but keep-alive comments. One not marked for ORPHANED_AFTER
# has no process left to run it, and whoever waits for it ends it (reply_reap).
HEARTBEAT_SECONDS = 10.0
ORPHANED_AFTER = timedelta(seconds=90)


class Generation:
    """A reply being generated in this process: its text so far, for followers to wait on."""

    def __init__(self, message_pk: int) -> None:
        self.message_pk = message_pk
        self.content = ""
        self.image_url = ""
        self.finished = False
        # Stop: ends the upstream call, even one blocked waiting for the next byte.
        self.cancel = Cancel()
        self._changed = threading.Condition()

    def append(self, text: str) -> None:
        with self._changed:
            self.content += text
            self._changed.notify_all()

    def finish(self) -> None:
        with self._changed:
            self.finished = True
            self._changed.notify_all()

    def wait(self, offset: int, timeout: float) -> bool:
        """Wait until there is text past `offset` or the reply is finished; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self.content) > offset or self.finished, timeout)


_live: dict[int, Generation] = {}
_live_lock = threading.Lock()


def generation_live(message_pk: int) -> Generation | None:
    """The reply's generation if it runs in this process."""
    with _live_lock:
        return _live.get(message_pk)


def _register(generation: Generation) -> None:
    with _live_lock:
        _live[generation.message_pk] = generation
    _stop_watcher_ensure()


def _unregister(generation: Generation) -> None:
    with _live_lock:
        _live.pop(generation.message_pk, None)
        if not _live:
            _watcher_wakeup.set()


@dataclass(frozen=True)
class ReplyJob:
    """Everything a reply's run needs, gathered while the request still holds the session."""

    reply: ChatMessage  # as created: empty and generating
    event: UsageEvent  # the reservation as made; settling it needs no read
    session_pk: int
    model: AIModel
    messages: list[Message]
    prompt: str
    is_image: bool
    headroom: Headroom | None = None  # the tightest quota left after its reservation
    title_from: str | None = None  # the chat's first message, while the chat waits for its automatic title

    @property
    def reply_pk(self) -> int:
        return self.reply.pk


def _flush(reply_pk: int, content: str) -> bool:
    """Save the text so far; False if the reply is no longer generating (stopped elsewhere).

    A flush the database cannot take is skipped, not a failure of the reply: the text is
    still in memory, the next flush opens a new connection, and the finish waits for the
    database before it saves the whole.
    """
    try:
        return bool(
            ChatMessage.objects.filter(pk=reply_pk, status=ChatMessage.Status.GENERATING).update(
                content=content, updated_at=timezone.now()
            )
        )
    except (OperationalError, InterfaceError):
        if connection.in_atomic_block:
            raise
        logger.warning("reply %s: the database is unavailable; this flush is skipped", reply_pk)
        connection.close()
        return True


IMAGE_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


def _store_image(session_pk: int, data: bytes, content_type: str) -> str:
    extension = IMAGE_EXTENSIONS.get(content_type, "png")
    name = default_storage.save(f"generated/{session_pk}/{time.time_ns():x}.{extension}", ContentFile(data))
    return default_storage.url(name)


def _run_image(job: ReplyJob, generation: Generation) -> tuple[str, Usage]:
    image = get_provider(job.model).generate_image(model=job.model, prompt=job.prompt)
    generation.image_url = _store_image(job.session_pk, image.png, image.content_type)
    return generation.image_url, Usage(image.prompt_tokens, 0, image.cost_usd)


def _run_text(job: ReplyJob, generation: Generation) -> tuple[Usage | None, bool]:
    """Stream the reply into `generation`; return the reported usage and whether it was stopped."""
    usage = None
    last_flush = time.monotonic()
    stream = get_provider(job.model).stream(model=job.model, messages=job.messages, cancel=generation.cancel)
    try:
        for event in stream:
            if event.usage is not None:
                usage = event.usage
            if event.text:
                generation.append(event.text)
            if generation.cancel.cancelled:
                return usage, True
            if time.monotonic() - last_flush >= FLUSH_INTERVAL:
                last_flush = time.monotonic()
                if not _flush(job.reply_pk, generation.content):
                    return usage, True
    except UpstreamError:
        if generation.cancel.cancelled:
            return usage, True  # the hang-up of a stop, not a failure
        raise
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return usage, generation.cancel.cancelled


def reply_run(job: ReplyJob, generation: Generation) -> ChatMessage | None:
    """Run a started reply to its end: call the upstream, save the text, settle or release the usage.

    Return the finished reply, or None if its chat was deleted meanwhile.
    """
    _register(generation)
    error: ChatsiteError | None = None
    stopped = False
    usage: Usage | None = None
    try:
        if job.is_image:
            _, usage = _run_image(job, generation)
        else:
            usage, stopped = _run_text(job, generation)
    except ChatsiteError as exc:
        error = exc
    except Exception as exc:
        logger.exception("reply %s failed", job.reply_pk)
        error = UpstreamError()
        error.__cause__ = exc
    try:
        reply = _reply_finish_retrying(job, generation, usage=usage, stopped=stopped, error=error)
        if reply is not None:
            # Before `done`, so the event can carry the chat's new title.
            named = job.title_from is not None and (error is None or bool(generation.content))
            _session_touch(job.session_pk, title=title_summarize(job.title_from) if named else None)
        return reply
    finally:
        generation.finish()
        _unregister(generation)


def _session_touch(session_pk: int, *, title: str | None) -> None:
    """Mark the chat as just active and, if given, name it (unless it was named meanwhile)."""
    fields = {"updated_at": timezone.now()}
    if title is not None:
        unnamed = When(auto_generate_title=True, title=DEFAULT_TITLE, then=Value(title))
        fields["title"] = Case(unnamed, default=F("title"))
    ChatSession.objects.filter(pk=session_pk).update(**fields)


# A database restart while a reply ends must not strand it "generating" with its usage reserved.
FINISH_RETRY_SECONDS = 30.0


def _reply_finish_retrying(job: ReplyJob, generation: Generation, **outcome) -> ChatMessage | None:
    """Finish the reply, waiting for the database if it is away; the finish is safe to run twice."""
    deadline = time.monotonic() + FINISH_RETRY_SECONDS
    pause = 0.1
    while True:
        try:
            return _reply_finish(job, generation, **outcome)
        except (OperationalError, InterfaceError):
            if connection.in_atomic_block or time.monotonic() + pause > deadline:
                raise
            logger.warning("reply %s: the database is unavailable; finishing again in %.1f s", job.reply_pk, pause)
        connection.close()  # the next attempt opens a new one
        time.sleep(pause)
        pause = min(pause * 2, 2.0)


FINISH_FIELDS = [
    "content",
    "image_url",
    "tokens_count",
    "status",
    "disabled",
    "error_code",
    "error_detail",
    "updated_at",
]
COMPLETE_FIELDS = ["content", "image_url", "tokens_count", "status", "updated_at"]


@transaction.atomic
def _reply_finish(
    job: ReplyJob, generation: Generation, *, usage: Usage | None, stopped: bool, error: ChatsiteError | None
) -> ChatMessage | None:
    event = job.event
    content = generation.content
    if error is None and not stopped:
        completed = _reply_complete(job, generation, usage)
        if completed is not None:
            return completed
    reply = ChatMessage.objects.select_for_update().filter(pk=job.reply_pk).first()
    produced = bool(content) or bool(generation.image_url)
    if reply is None or reply.status == ChatMessage.Status.STOPPED:
        stopped = True  # stopped from another server, or the chat was deleted, while this one ran

    if error is not None and not produced:
        # Nothing arrived: charge nothing; keep the user's message, mark this reply failed.
        usage_release(event=event)
        if reply is None:
            return None
        reply.status = ChatMessage.Status.FAILED
        reply.disabled = True
    else:
        usage = _usage_produced(job, event, usage, content, partial=error is not None or stopped)
        usage_settle(
            event=event,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=usage.cost_usd,
        )
        if reply is None:
            return None  # the chat is gone; what the upstream produced is still charged, once
        reply.tokens_count = usage.completion_tokens
        if stopped:
            reply.status = ChatMessage.Status.STOPPED
        elif error is not None:
            reply.status = ChatMessage.Status.PARTIAL
        else:
            reply.status = ChatMessage.Status.COMPLETE
    if error is not None:
        reply.error_code, reply.error_detail = error.code, str(error.detail)[:300]
    reply.content = job.prompt if job.is_image and produced else content
    reply.image_url = generation.image_url
    reply.save(update_fields=FINISH_FIELDS)
    return reply


def _reply_complete(job: ReplyJob, generation: Generation, usage: Usage | None) -> ChatMessage | None:
    """The usual end in one write, or None if the reply was stopped or disabled meanwhile (the caller then looks)."""
    usage = _usage_produced(job, job.event, usage, generation.content, partial=False)
    reply = copy.copy(job.reply)
    reply.content = job.prompt if job.is_image and generation.image_url else generation.content
    reply.image_url = generation.image_url
    reply.tokens_count = usage.completion_tokens
    reply.status = ChatMessage.Status.COMPLETE
    reply.updated_at = timezone.now()
    # Only a reply still generating and enabled: then the row holds nothing this copy lacks.
    written = ChatMessage.objects.filter(pk=reply.pk, status=ChatMessage.Status.GENERATING, disabled=False).update(
        **{name: getattr(reply, name) for name in COMPLETE_FIELDS}
    )
    if not written:
        return None
    usage_settle(
        event=job.event,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost_usd=usage.cost_usd,
    )
    return reply


def _usage_produced(job: ReplyJob, event: UsageEvent, usage: Usage | None, content: str, *, partial: bool) -> Usage:
    """What to charge: the upstream's report, unless the reply was cut short or it reported nothing."""
    if usage is not None and not partial:
        return usage
    # Only what was produced is charged; the upstream's count may be missing or cover more.
    completion = estimate_tokens(content) if not job.is_image else 0
    if usage is None:
        return Usage(event.prompt_tokens, completion, None)
    return Usage(usage.prompt_tokens, min(completion, usage.completion_tokens), None)


def reply_run_in_background(job: ReplyJob, generation: Generation) -> threading.Thread:
    """Run the reply in its own thread, so it finishes even if the client goes away."""

    def target() -> None:
        try:
            reply_run(job, generation)
        finally:
            # This thread's own database connections.
            for connection in connections.all(initialized_only=True):
                connection.close()

    _register(generation)
    thread = threading.Thread(target=target, name=f"reply-{job.reply_pk}", daemon=True)
    thread.start()
    return thread


def reply_wait(*, reply_pk: int, poll: float = 0.25) -> None:
    """Wait until a reply, run here or on another server, is no longer generating.

    A reply whose process died is ended here, once it has gone ORPHANED_AFTER without a mark.
    """
    generation = generation_live(reply_pk)
    if generation is not None:
        while not generation.finished:
            generation.wait(len(generation.content), timeout=60)
        return
    while True:
        row = ChatMessage.objects.filter(pk=reply_pk).values("status", "updated_at").first()
        if row is None or row["status"] != ChatMessage.Status.GENERATING:
            return
        if reply_orphaned(reply_pk, row["updated_at"]) and reply_reap(reply_pk):
            continue
        time.sleep(poll)


def reply_orphaned(reply_pk: int, updated_at: datetime) -> bool:
    """Whether a reply read as generating has no process left to run it (see HEARTBEAT_SECONDS)."""
    return updated_at < timezone.now() - ORPHANED_AFTER and generation_live(reply_pk) is None


def reply_reap(reply_pk: int, *, older_than: timedelta | None = None) -> bool:
    """End a reply still generating without a write for `older_than` (ORPHANED_AFTER by default):
    keep its text, settle or release its usage. False if the reply is not (or no longer) such a reply.
    """
    cutoff = timezone.now() - (ORPHANED_AFTER if older_than is None else older_than)
    with transaction.atomic():
        stale = ChatMessage.objects.filter(pk=reply_pk, status=ChatMessage.Status.GENERATING, updated_at__lt=cutoff)
        reply = stale.select_for_update().first()
        if reply is None:
            return False  # it moved on meanwhile
        event = (
            UsageEvent.objects.select_related("ai_model").filter(message=reply, state=UsageEvent.State.RESERVED).first()
        )
        reply.error_code = "interrupted"
        reply.error_detail = "The server generating this reply stopped before it finished."
        if reply.content:
            reply.status = ChatMessage.Status.PARTIAL
            reply.tokens_count = estimate_tokens(reply.content)
            if event is not None:
                usage_settle(event=event, prompt_tokens=event.prompt_tokens, completion_tokens=reply.tokens_count)
        else:
            reply.status = ChatMessage.Status.FAILED
            reply.disabled = True
            if event is not None:
                usage_release(event=event)
        reply.save(update_fields=["status", "disabled", "tokens_count", "error_code", "error_detail", "updated_at"])
    logger.warning("reply %s: ended, its process stopped before it finished", reply_pk)
    return True


def reply_stop_local(message_pk: int) -> bool:
    """Ask this process's generation of the reply to stop; False if it does not run here."""
    generation = generation_live(message_pk)
    if generation is None:
        return False
    generation.cancel.cancel()
    return True


# Stops made on other servers only reach the database; while this process runs
# replies, one thread looks there for them, so even a reply waiting on a silent
# upstream stops within STOP_POLL_SECONDS.
STOP_POLL_SECONDS = 0.5
_watcher: threading.Thread | None = None
_watcher_wakeup = threading.Event()


def _stop_watcher_ensure() -> None:
    global _watcher
    with _live_lock:
        if _watcher is not None:
            return
        _watcher = threading.Thread(target=_stop_watch, name="reply-stop-watcher", daemon=True)
        _watcher.start()


def _stop_watch() -> None:
    """Look for stops made elsewhere, and mark this process's replies alive (HEARTBEAT_SECONDS)."""
    global _watcher
    next_heartbeat = time.monotonic() + HEARTBEAT_SECONDS
    try:
        while True:
            _watcher_wakeup.wait(STOP_POLL_SECONDS)
            with _live_lock:
                _watcher_wakeup.clear()
                if not _live:
                    _watcher = None  # the next reply starts another
                    return
                live = list(_live)
                running = {pk: g for pk, g in _live.items() if not g.cancel.cancelled}
            try:
                if running:
                    stopped = ChatMessage.objects.filter(pk__in=running, status=ChatMessage.Status.STOPPED)
                    for pk in stopped.values_list("pk", flat=True):
                        running[pk].cancel.cancel()
                if time.monotonic() >= next_heartbeat:
                    generating = ChatMessage.objects.filter(pk__in=live, status=ChatMessage.Status.GENERATING)
                    generating.update(updated_at=timezone.now())
                    next_heartbeat = time.monotonic() + HEARTBEAT_SECONDS
            except (OperationalError, InterfaceError):
                logger.warning("the stop watcher cannot reach the database; it tries again")
                connection.close()
    except Exception:
        logger.exception("the stop watcher failed; stops from other servers wait for the next chunk")
        with _live_lock:
            _watcher = None
    finally:
        for opened in connections.all(initialized_only=True):
            opened.close()
