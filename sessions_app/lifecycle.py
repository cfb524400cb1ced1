"""A reply's lifecycle: its states, what each outcome charges, and the one function that ends it.

    generating ──> complete   the upstream finished; its reported usage is charged
               ├─> partial    an error after some text (or the server stopped); what was produced is charged
               ├─> stopped    the user stopped it; what was produced is charged
               └─> failed     nothing was produced; the reservation is released, nothing is charged

Every end goes through `reply_finish`: the normal end, a stop, an upstream failure, a
database outage (the finish is retried), a server shutting down, the reaping of a reply
whose server died, and the replies with no message: the staff debug call and the calls of
the OpenAI-compatible API (apikeys/). Callers say what happened as an `Outcome`; this
module decides what it costs. These are plain functions over the ORM: the runtime that
runs replies on an event loop lives in `runtime.py`.
"""

import copy
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Case, F, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from billing.models import UsageEvent
from billing.quotas import Headroom
from billing.services import usage_release, usage_settle, usage_settle_sql
from chatbots.models import AIModel
from chatbots.providers.base import Message, Usage, estimate_tokens
from chatsite.errors import ChatsiteError, Interrupted
from sessions_app.models import DEFAULT_TITLE, ChatMessage, ReplyPiece

logger = logging.getLogger(__name__)
Status = ChatMessage.Status

# The only moves a reply makes. A reply stopped by the user is still running until its
# server sees the stop, so `stopped` may end once more, as `stopped`.
TRANSITIONS: dict[str, set[str]] = {
    Status.GENERATING: {Status.COMPLETE, Status.PARTIAL, Status.STOPPED, Status.FAILED},
    Status.STOPPED: {Status.STOPPED},
}
# A reply that no server has marked alive for this long has no server left to run it.
ORPHANED_AFTER = timedelta(seconds=90)


@dataclass(frozen=True)
class ReplyJob:
    """Everything a reply's run needs, gathered while the request still holds the session."""

    reply: ChatMessage | None  # as created: empty and generating (None: a call with no message)
    event: UsageEvent  # the reservation as made; settling it needs no read
    session_pk: int | None
    user_id: int
    model: AIModel
    messages: list[Message]
    prompt: str
    is_image: bool
    headroom: Headroom | None = None  # the tightest quota left after its reservation
    title_from: str | None = None  # the chat's first message, while the chat waits for its automatic title
    options: dict | None = None  # sampling options for the upstream (max_tokens, temperature, top_p, stop)

    @property
    def reply_pk(self) -> int | None:
        return self.reply.pk if self.reply is not None else None


@dataclass(frozen=True)
class Outcome:
    """What happened to a reply, as its runner saw it."""

    content: str = ""
    image_url: str = ""
    usage: Usage | None = None  # as the upstream reported it, if it did
    stopped: bool = False
    error: ChatsiteError | None = None
    flushed: bool = False  # pieces of it reached the database while it ran

    @property
    def produced(self) -> bool:
        return bool(self.content or self.image_url)


@dataclass(frozen=True)
class Finished:
    reply: ChatMessage | None  # None if its chat was deleted meanwhile, or there was no message
    event: UsageEvent = field(repr=False)


def outcome_status(outcome: Outcome, *, stopped_elsewhere: bool = False) -> str:
    """The state an outcome leads to."""
    if outcome.error is not None and not outcome.produced:
        return Status.FAILED
    if outcome.stopped or stopped_elsewhere:
        return Status.STOPPED
    if outcome.error is not None:
        return Status.PARTIAL
    return Status.COMPLETE


def _usage_produced(job: ReplyJob, outcome: Outcome, *, partial: bool) -> Usage:
    """What to charge: the upstream's report, unless the reply was cut short or it reported nothing."""
    if outcome.usage is not None and not partial:
        return outcome.usage
    # Only what was produced is charged; the upstream's count may be missing or cover more.
    completion = estimate_tokens(outcome.content) if not job.is_image else 0
    if outcome.usage is None:
        return Usage(job.event.prompt_tokens, completion, None)
    return Usage(outcome.usage.prompt_tokens, min(completion, outcome.usage.completion_tokens), None)


def _charge(job: ReplyJob, outcome: Outcome, status: str) -> tuple[UsageEvent, Usage | None]:
    if status == Status.FAILED:
        return usage_release(event=job.event), None
    usage = _usage_produced(job, outcome, partial=status != Status.COMPLETE)
    event = usage_settle(
        event=job.event,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost_usd=usage.cost_usd,
    )
    return event, usage


FINISH_FIELDS = ["content", "image_url", "tokens_count", "status", "disabled", "error_code", "error_detail"]


def reply_finish(*, job: ReplyJob, outcome: Outcome, touch: bool = False, title: str | None = None) -> Finished:
    """End a reply: save its text and state, and settle or release its usage, in one transaction
    (one statement for the usual end on PostgreSQL).

    With `touch`, its chat is marked active too (and named `title` if it still waits for one).
    Safe to run again after a rollback: the reservation is settled or released only once.
    """
    complete = job.reply is not None and outcome_status(outcome) == Status.COMPLETE
    if complete and connection.vendor == "postgresql":
        # The usual end is one statement, atomic by itself: no transaction to begin and commit.
        finished = _reply_complete_at_once(job, outcome, touch=touch and job.session_pk is not None, title=title)
        if finished is not None:
            return finished
        complete = False  # stopped or disabled meanwhile: the reply is read and ended below
    with transaction.atomic():
        finished = _reply_finish(job, outcome, try_complete=complete)
        if touch and finished.reply is not None and job.session_pk is not None:
            session_touch(session_pk=job.session_pk, title=title)
    return finished


def _content(job: ReplyJob, outcome: Outcome) -> str:
    """The text a reply keeps: an image reply's prompt once it has its image, else what was produced."""
    return job.prompt if job.is_image and outcome.image_url else outcome.content


def _reply_finish(job: ReplyJob, outcome: Outcome, *, try_complete: bool) -> Finished:
    if job.reply is None:
        event, _ = _charge(job, outcome, outcome_status(outcome))
        return Finished(reply=None, event=event)
    if try_complete:
        finished = _reply_complete(job, outcome)
        if finished is not None:
            return finished
    reply = ChatMessage.objects.select_for_update().filter(pk=job.reply_pk).first()
    if reply is not None and reply.status not in TRANSITIONS:
        # Ended already: by an earlier try whose answer was lost with its connection (the end
        # had committed), or by the reaper. It stays as it is, and nothing more is charged.
        if reply.status != outcome_status(outcome):
            logger.warning("reply %s had ended already, as %s", reply.pk, reply.status)
        reply.ai_model = job.model  # the model it was begun with, so serializing it reads nothing more
        return Finished(reply=reply, event=UsageEvent.objects.get(pk=job.event.pk))
    # Stopped from another server, or the chat deleted, while this one ran.
    status = outcome_status(outcome, stopped_elsewhere=reply is None or reply.status == Status.STOPPED)
    event, usage = _charge(job, outcome, status)
    if reply is None:
        return Finished(reply=None, event=event)  # the chat is gone; what was produced is still charged, once
    _check_transition(reply, status)
    reply.ai_model = job.model  # the model it was begun with, so serializing it reads nothing more
    reply.status = status
    if status == Status.FAILED:
        reply.disabled = True
    else:
        reply.tokens_count = usage.completion_tokens
    if outcome.error is not None:
        reply.error_code, reply.error_detail = outcome.error.code, str(outcome.error.detail)[:300]
    reply.content = _content(job, outcome)
    reply.image_url = outcome.image_url
    reply.updated_at = timezone.now()
    reply.save(update_fields=[*FINISH_FIELDS, "updated_at"])
    if outcome.flushed:
        _pieces_delete(reply.pk)
    return Finished(reply=reply, event=event)


def _completed(job: ReplyJob, outcome: Outcome) -> tuple[ChatMessage, Usage]:
    """The reply as the usual end leaves it, and the usage it charges."""
    usage = _usage_produced(job, outcome, partial=False)
    reply = copy.copy(job.reply)
    reply.content = _content(job, outcome)
    reply.image_url = outcome.image_url
    reply.tokens_count = usage.completion_tokens
    reply.status = Status.COMPLETE
    reply.updated_at = timezone.now()
    return reply, usage


def _complete_params(reply: ChatMessage) -> list:
    """The parameters of _COMPLETE for `reply` as `_completed` left it."""
    values = [reply.content, reply.image_url, reply.tokens_count, reply.status, _stamp(reply.updated_at)]
    return [*values, reply.pk, Status.GENERATING]


def _reply_complete(job: ReplyJob, outcome: Outcome) -> Finished | None:
    """The usual end in one write, or None if the reply was stopped or disabled meanwhile (the caller then looks)."""
    reply, usage = _completed(job, outcome)
    # Only a reply still generating and enabled: then the row holds nothing this copy lacks.
    with connection.cursor() as cursor:
        cursor.execute(_COMPLETE, _complete_params(reply))
        written = cursor.rowcount
    if not written:
        return None
    event = usage_settle(
        event=job.event,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost_usd=usage.cost_usd,
    )
    if outcome.flushed:
        _pieces_delete(reply.pk)
    return Finished(reply=reply, event=event)


def _reply_complete_at_once(job: ReplyJob, outcome: Outcome, *, touch: bool, title: str | None) -> Finished | None:
    """`_reply_complete` (and the chat's touch) as one PostgreSQL statement; None if the reply had stopped meanwhile.

    Every part after the reply's own update holds only if that update took the row, so a
    reply stopped or disabled meanwhile is left as it is, its reservation too, for the caller.
    """
    reply, usage = _completed(job, outcome)
    event, settle, settle_params = usage_settle_sql(
        event=job.event,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost_usd=usage.cost_usd,
        only_if="EXISTS (SELECT FROM completed)",
    )
    params = [*_complete_params(reply), *settle_params]
    statement = f"WITH completed AS ({_COMPLETE} RETURNING id), {settle}"
    if touch:
        touch_sql, touch_params = _touch(job.session_pk, title)
        statement += f", touched AS ({touch_sql} AND EXISTS (SELECT FROM completed))"
        params += touch_params
    if outcome.flushed:
        statement += f", pieces AS ({_PIECES_DELETE} AND EXISTS (SELECT FROM completed))"
        params += [reply.pk]
    statement += " SELECT (SELECT count(*) FROM completed), (SELECT count(*) FROM settled)"
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        written, settled = cursor.fetchone()
    if not written:
        return None
    if not settled:
        event = UsageEvent.objects.get(pk=event.pk)  # settled or released already
    return Finished(reply=reply, event=event)


def _check_transition(reply: ChatMessage, status: str) -> None:
    if status not in TRANSITIONS.get(reply.status, set()):
        raise ValueError(f"reply {reply.pk} cannot go from {reply.status} to {status}")


def reply_mark_stopped(*, reply_pk: int) -> bool:
    """Mark a generating reply stopped; its server ends it (and charges what it produced). False if it had ended."""
    return bool(
        ChatMessage.objects.filter(pk=reply_pk, status=Status.GENERATING).update(
            status=Status.STOPPED, updated_at=timezone.now()
        )
    )


def session_touch(*, session_pk: int, title: str | None) -> None:
    """Mark the chat as just active and, if given, name it (unless it was named meanwhile)."""
    with connection.cursor() as cursor:
        cursor.execute(*_touch(session_pk, title))


def _touch(session_pk: int, title: str | None) -> tuple[str, list]:
    """The statement marking the chat active (and naming it `title`, if given), with its parameters."""
    if title is None:
        return _TOUCH, [_stamp(timezone.now()), session_pk]
    return _TOUCH_NAMING, [_stamp(timezone.now()), DEFAULT_TITLE, title, session_pk]


# The statements every reply's end makes, written once: a queryset would be compiled at every
# end (SQLite and PostgreSQL both run them as they are).
_COMPLETE = (
    "UPDATE sessions_app_chatmessage SET content = %s, image_url = %s, tokens_count = %s, status = %s,"
    " updated_at = %s WHERE id = %s AND status = %s AND NOT disabled"
)
_TOUCH = "UPDATE sessions_app_chatsession SET updated_at = %s WHERE id = %s"
_TOUCH_NAMING = (
    "UPDATE sessions_app_chatsession SET updated_at = %s,"
    " title = CASE WHEN auto_generate_title AND title = %s THEN %s ELSE title END WHERE id = %s"
)


_PIECES_DELETE = "DELETE FROM sessions_app_replypiece WHERE message_id = %s"


def _stamp(moment):
    return connection.ops.adapt_datetimefield_value(moment)


def _pieces_delete(reply_pk: int) -> None:
    """Drop a reply's pieces once its whole text is in its row."""
    with connection.cursor() as cursor:
        cursor.execute(_PIECES_DELETE, [reply_pk])


# The text of replies: a generating reply's text is in its pieces until it ends.


def pieces_append(pieces: list[tuple[int, int, str]]) -> None:
    """Save (reply pk, offset, text) pieces of replies in flight, in one insert; those of deleted replies go nowhere."""
    if connection.vendor == "postgresql":
        # One statement and no model instances: a worker writes the pieces of all its replies at once.
        quote = connection.ops.quote_name
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {quote(ReplyPiece._meta.db_table)} (message_id, {quote('offset')}, text) "  # noqa: S608
                "SELECT p.pk, p.start, p.text"
                " FROM unnest(%s::bigint[], %s::integer[], %s::text[]) AS p(pk, start, text)"
                f" JOIN {quote(ChatMessage._meta.db_table)} AS m ON m.id = p.pk",
                [[pk for pk, _, _ in pieces], [offset for _, offset, _ in pieces], [text for _, _, text in pieces]],
            )
        return
    pks = {pk for pk, _, _ in pieces}
    there = set(ChatMessage.objects.filter(pk__in=pks).values_list("pk", flat=True))
    ReplyPiece.objects.bulk_create(
        [ReplyPiece(message_id=pk, offset=offset, text=text) for pk, offset, text in pieces if pk in there]
    )


def _pieces_text(message_pk) -> str:
    return "".join(ReplyPiece.objects.filter(message_id=message_pk).order_by("offset").values_list("text", flat=True))


def live_content():
    """An expression for a message's text so far: its content, or its saved pieces while it generates."""
    from django.contrib.postgres.aggregates import StringAgg
    from django.db import connection
    from django.db.models import OuterRef, Subquery, TextField
    from django.db.models.functions import Concat

    if connection.vendor != "postgresql":
        return None  # read with reply_text() one by one: SQLite holds few replies in flight
    pieces = (
        ReplyPiece.objects.filter(message_id=OuterRef("pk"))
        .order_by()
        .values("message_id")
        .annotate(text=StringAgg("text", delimiter="", order_by="offset"))
        .values("text")
    )
    saved = Coalesce(Subquery(pieces, output_field=TextField()), Value(""), output_field=TextField())
    so_far = Concat(F("content"), saved, output_field=TextField())
    return Case(When(status=Status.GENERATING, then=so_far), default=F("content"), output_field=TextField())


def reply_text(reply: ChatMessage) -> str:
    """A reply's text as the database holds it now."""
    if reply.status != Status.GENERATING:
        return reply.content
    return reply.content + _pieces_text(reply.pk)


def reply_read(reply_pk: int) -> tuple[ChatMessage | None, str]:
    """A reply and its text so far, in one query on PostgreSQL."""
    expression = live_content()
    if expression is None:
        reply = ChatMessage.objects.select_related("ai_model").filter(pk=reply_pk).first()
        return reply, reply_text(reply) if reply is not None else ""
    reply = ChatMessage.objects.select_related("ai_model").annotate(text_so_far=expression).filter(pk=reply_pk).first()
    return reply, reply.text_so_far if reply is not None else ""


def reply_orphaned(reply: ChatMessage) -> bool:
    """Whether a reply read as generating has gone ORPHANED_AFTER without a mark from its server."""
    return reply.status == Status.GENERATING and reply.updated_at < timezone.now() - ORPHANED_AFTER


def reply_reap(reply_pk: int, *, older_than: timedelta | None = None) -> bool:
    """End a reply still generating without a mark for `older_than` (ORPHANED_AFTER by default).

    Its saved text is kept and charged (`partial`), or nothing is charged if it has none
    (`failed`). False if the reply is not (or no longer) such a reply.
    """
    cutoff = timezone.now() - (ORPHANED_AFTER if older_than is None else older_than)
    with transaction.atomic():
        stale = ChatMessage.objects.filter(pk=reply_pk, status=Status.GENERATING, updated_at__lt=cutoff)
        reply = stale.select_for_update().first()
        if reply is None:
            return False  # it moved on meanwhile
        event = (
            UsageEvent.objects.select_related("ai_model").filter(message=reply, state=UsageEvent.State.RESERVED).first()
        )
        content = reply_text(reply)
        job = ReplyJob(
            reply=reply, event=event or UsageEvent(state=UsageEvent.State.SETTLED), session_pk=reply.session_id,
            user_id=0, model=reply.ai_model, messages=[], prompt="", is_image=False,
        )  # fmt: skip
        outcome = Outcome(content=content, error=Interrupted(), flushed=True)
        if event is None:
            # Nothing reserved to settle (charged already): only the message is ended.
            reply.status = outcome_status(outcome)
            reply.error_code, reply.error_detail = outcome.error.code, outcome.error.default_detail
            reply.content = content
            reply.save(update_fields=["status", "content", "error_code", "error_detail", "updated_at"])
            ReplyPiece.objects.filter(message_id=reply.pk).delete()
        else:
            reply_finish(job=job, outcome=outcome)
    logger.warning("reply %s: ended, its server stopped before it finished", reply_pk)
    return True
