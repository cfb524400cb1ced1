"""Writes of chat sessions and messages, including the reply pipeline."""

import hashlib
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from billing.models import UsageEvent
from billing.quotas import Headroom
from billing.services import quota_headroom, usage_reserve
from chatbots.models import AIModel, Chatbot, ContentType
from chatbots.providers.base import Message, estimate_prompt_tokens, estimate_tokens
from chatsite.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from chatsite.rows import Inserted
from chatsite.text import is_blank
from sessions_app import selectors
from sessions_app.lifecycle import ORPHANED_AFTER, ReplyJob, reply_mark_stopped, reply_reap
from sessions_app.models import DEFAULT_TITLE, ChatMessage, ChatSession
from sessions_app.runtime import notify, reply_stop_local
from sessions_app.titles import TITLE_MAX_CHARS

# Room kept free in the model's context window for the reply itself.
REPLY_RESERVE_TOKENS = 1024


def message_content_clean(value: str) -> str:
    """Validate a message body: 1..MAX_MESSAGE_CHARS characters, some of them visible."""
    if is_blank(value):
        raise InvalidInput("The message is empty.", code="blank")
    if len(value) > settings.MAX_MESSAGE_CHARS:
        raise InvalidInput(f"The message is longer than {settings.MAX_MESSAGE_CHARS} characters.", code="too_long")
    return value


def title_clean(value: str) -> str:
    value = value.strip()
    if is_blank(value):
        raise InvalidInput("The title is empty.", code="blank")
    if len(value) > TITLE_MAX_CHARS:
        raise InvalidInput(f"The title is longer than {TITLE_MAX_CHARS} characters.", code="too_long")
    return value


def chatbot_resolve(chatbot_ref: int | str) -> Chatbot:
    """Find an active chatbot by primary key, or raise InvalidInput."""
    try:
        return Chatbot.objects.get(pk=int(chatbot_ref), is_active=True)
    except (Chatbot.DoesNotExist, ValueError, TypeError, OverflowError):
        raise InvalidInput("Unknown or inactive chatbot.", code="unknown_chatbot") from None


def ai_model_resolve(model_ref: int | str) -> AIModel:
    """Find an active model by its upstream `model_id`, or by primary key."""
    active = AIModel.objects.filter(is_active=True)
    model = active.filter(model_id=str(model_ref)).first()
    # isdecimal, not isdigit: "²" is a digit that int() refuses.
    if model is None and str(model_ref).isdecimal() and len(str(model_ref)) < 19:
        model = active.filter(pk=int(model_ref)).first()
    if model is None:
        raise InvalidInput("Unknown or inactive AI model.", code="unknown_model")
    return model


def _check_pairing(chatbot: Chatbot, model: AIModel) -> None:
    if chatbot.chatbot_type != model.model_type:
        raise InvalidInput(
            f"The {chatbot.chatbot_type} chatbot needs a {chatbot.chatbot_type} model, not a {model.model_type} one.",
            code="type_mismatch",
        )


def session_create(*, user, chatbot_id: int | str, ai_model_id: int | str, title: str | None = None) -> ChatSession:
    """Start a chat with a chatbot on a model."""
    chatbot = chatbot_resolve(chatbot_id)
    model = ai_model_resolve(ai_model_id)
    _check_pairing(chatbot, model)
    return ChatSession.objects.create(
        user=user, chatbot=chatbot, ai_model=model, title=title_clean(title) if title else DEFAULT_TITLE
    )


def session_update(
    *,
    session: ChatSession,
    title: str | None = None,
    auto_generate_title: bool | None = None,
    ai_model_id: int | str | None = None,
    pinned: bool | None = None,
) -> ChatSession:
    """Change a chat's title, auto-title flag, model or pin; only the given fields change."""
    if pinned is not None:
        session_pin(session=session, pinned=pinned)
    fields = ["updated_at"]
    if title is not None:
        session.title = title_clean(title)
        fields.append("title")
    if auto_generate_title is not None:
        session.auto_generate_title = auto_generate_title
        fields.append("auto_generate_title")
    if ai_model_id is not None:
        model = ai_model_resolve(ai_model_id)
        _check_pairing(session.chatbot, model)
        session.ai_model = model
        fields.append("ai_model")
    if len(fields) == 1 and pinned is not None:
        return session  # only the pin changed
    session.save(update_fields=fields)
    return session


def session_update_title(*, session: ChatSession, title: str) -> ChatSession:
    """Rename a chat by hand, which stops automatic titles."""
    return session_update(session=session, title=title, auto_generate_title=False)


def session_delete(*, session: ChatSession) -> None:
    """Delete a chat and its messages; its usage rows stay (their session becomes null)."""
    session.delete()


def session_cleanup_empty(*, user=None, older_than: timedelta | None = None, dry_run: bool = False) -> int:
    """Delete chats that have no messages; return how many (would) go."""
    sessions = ChatSession.objects.filter(messages__isnull=True)
    if user is not None:
        sessions = sessions.filter(user=user)
    if older_than is not None:
        sessions = sessions.filter(updated_at__lt=timezone.now() - older_than)
    ids = list(sessions.values_list("pk", flat=True))
    if not dry_run and ids:
        ChatSession.objects.filter(pk__in=ids, messages__isnull=True).delete()
    return len(ids)


def _check_may_send(user, session: ChatSession) -> None:
    if settings.REQUIRE_VERIFIED and not user.is_verified:
        raise PermissionDenied("Verify your email address before sending messages.", code="unverified")
    if not session.ai_model.is_active:
        raise InvalidInput("This chat's AI model is no longer available; pick another one.", code="inactive_model")
    if not session.chatbot.is_active:
        raise InvalidInput("This chat's chatbot is no longer available.", code="inactive_chatbot")


def _history_rows(session: ChatSession) -> list[tuple[str, str, uuid.UUID]]:
    """The chat's shown messages, oldest first: (type, content, message_id); read by every send."""
    with connection.cursor() as cursor:
        cursor.execute(_HISTORY, [session.pk, ChatMessage.Status.GENERATING])
        rows = cursor.fetchall()
    # SQLite keeps a UUID as its hex digits.
    return [(kind, content, key if isinstance(key, uuid.UUID) else uuid.UUID(key)) for kind, content, key in rows]


# Written once: a queryset would be compiled at every send.
_HISTORY = (
    "SELECT message_type, content, message_id FROM sessions_app_chatmessage"
    " WHERE session_id = %s AND NOT disabled AND status <> %s"
    " ORDER BY created_at, id"
)


# The messages of a send, inserted as create() would (no signal listens to them).
_MESSAGE = Inserted(ChatMessage)


def _history(session: ChatSession) -> list[tuple[str, str]]:
    return [(kind, content) for kind, content, _ in _history_rows(session)]


def context_build(*, session: ChatSession, history: list[tuple[str, str]] | None = None) -> list[Message]:
    """The messages sent upstream: system prompt, then the newest history that fits the context."""
    if history is None:
        history = _history(session)
    system = [{"role": "system", "content": session.chatbot.system_prompt}] if session.chatbot.system_prompt else []
    budget = max(session.ai_model.context_length - REPLY_RESERVE_TOKENS, 0) - estimate_prompt_tokens(system)
    kept: list[Message] = []
    for message_type, content in reversed(history):
        cost = estimate_prompt_tokens([{"role": message_type, "content": content}])
        if kept and cost > budget:
            break  # oldest messages go first; the newest one is always sent
        budget -= cost
        kept.append({"role": message_type, "content": content})
    return system + kept[::-1]


def _reply_begin(
    *, session: ChatSession, user, reply_to: ChatMessage, history: list[tuple[str, str]] | None = None,
    messages: list[Message] | None = None, api_key=None, options: dict | None = None,
) -> tuple[ChatMessage, ReplyJob]:  # fmt: skip
    """Inside the caller's transaction: reserve the usage and create the empty reply (and `reply_to`, if new).

    `history`: the chat's messages as the version shown, when the caller read them already.
    `messages`: what to send upstream instead of the chat's context (an API call stored as a chat).
    """
    model = session.ai_model
    is_image = session.chatbot.chatbot_type == ContentType.IMAGE
    if messages is None:
        if history is None:
            history = _history(session)
        messages = context_build(session=session, history=history)
    else:
        history = []
    prompt = reply_to.content
    title_from = None
    if session.auto_generate_title and session.title == DEFAULT_TITLE:
        # The chat's first user message, which no edit ever disables.
        title_from = next((content for kind, content in history if kind == ChatMessage.Type.USER), None)
    reply = ChatMessage(
        session=session, message_type=ChatMessage.Type.ASSISTANT, ai_model=model,
        status=ChatMessage.Status.GENERATING, reply_to=reply_to, parent_message_id=reply_to.message_id,
    )  # fmt: skip
    if reply_to.pk is None:
        _MESSAGE.save_linked(reply_to, reply, "reply_to")  # a new message and its reply
    else:
        _MESSAGE.save(reply)
    event = usage_reserve(
        user=user, session=session, ai_model=model, message=reply,
        kind=UsageEvent.Kind.IMAGE if is_image else UsageEvent.Kind.MESSAGE,
        prompt_tokens=estimate_tokens(prompt) if is_image else estimate_prompt_tokens(messages),
        # Counted under the reservation's lock, so racing sends from any server cannot both take the
        # last place; a reply whose server died stops counting when it would be reaped.
        max_in_flight=settings.MAX_ACTIVE_REPLIES_PER_USER, in_flight_window=ORPHANED_AFTER, api_key=api_key,
    )  # fmt: skip
    job = ReplyJob(
        reply=reply, event=event, session_pk=session.pk, user_id=user.pk, model=model, messages=messages,
        prompt=prompt, is_image=is_image, headroom=event.headroom, title_from=title_from, options=options,
    )  # fmt: skip
    return reply, job


def _request_hash(content: str) -> str:
    return hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class SendResult:
    user_message: ChatMessage
    reply: ChatMessage
    job: ReplyJob | None  # None when this is the replay of an earlier send
    replayed: bool = False


def _send_replay(*, session: ChatSession, client_message_id: uuid.UUID, content: str) -> SendResult | None:
    earlier = session.messages.filter(client_message_id=client_message_id).first()
    if earlier is None:
        return None
    if earlier.request_hash != _request_hash(content):
        raise Conflict("This idempotency key was already used for a different message.", code="idempotency_conflict")
    reply = earlier.replies.select_related("ai_model").order_by("created_at", "id").first()
    if reply is None:
        raise Conflict("The first request with this idempotency key has no reply.", code="idempotency_conflict")
    return SendResult(user_message=earlier, reply=reply, job=None, replayed=True)


def message_send(*, session: ChatSession, user, content: str, client_message_id: uuid.UUID | None = None) -> SendResult:
    """Save the user's message and begin its reply, or return the first result of a retried send.

    The caller runs the returned job (`reply_execute`); the user's message stays
    whatever then happens upstream.
    """
    content = message_content_clean(content)
    if client_message_id is not None:
        replay = _send_replay(session=session, client_message_id=client_message_id, content=content)
        if replay is not None:
            return replay
    _check_may_send(user, session)
    try:
        with transaction.atomic():
            # The history read once: the new message follows its last message, and the reply sees it all.
            rows = _history_rows(session)
            # Saved with its reply, in one statement (_reply_begin).
            user_message = ChatMessage(
                session=session, message_type=ChatMessage.Type.USER, content=content,
                tokens_count=estimate_tokens(content), client_message_id=client_message_id,
                request_hash=_request_hash(content) if client_message_id else "",
                parent_message_id=rows[-1][2] if rows else None,
            )  # fmt: skip
            history = [(kind, text) for kind, text, _ in rows] + [(ChatMessage.Type.USER, content)]
            reply, job = _reply_begin(session=session, user=user, reply_to=user_message, history=history)
    except IntegrityError:
        # The same key raced in twice: the other request won; answer as its replay.
        replay = _send_replay(session=session, client_message_id=client_message_id, content=content)
        if replay is None:
            raise
        return replay
    return SendResult(user_message=user_message, reply=reply, job=job)


def _active_tail(session: ChatSession) -> ChatMessage | None:
    return session.messages.filter(disabled=False).order_by("-created_at", "-id").first()


def message_regenerate(
    *, session: ChatSession, user, message_id: uuid.UUID | None = None
) -> tuple[ChatMessage, ReplyJob]:
    """Answer again: the last reply, or the shown reply `message_id`; the old one stays as a version.

    Everything shown after the message being answered becomes disabled; the caller runs the job.
    """
    _check_may_send(user, session)
    with transaction.atomic():
        # Lock the chat so two regenerates of one reply cannot both run.
        ChatSession.objects.select_for_update().filter(pk=session.pk).first()
        if message_id is not None:
            return _regenerate_at(session=session, user=user, message_id=message_id)
        last = _active_tail(session)
        if last is not None and last.message_type == ChatMessage.Type.ASSISTANT:
            if last.status == ChatMessage.Status.GENERATING:
                raise InvalidInput("A reply is still being generated.", code="reply_in_progress")
            last.disabled = True
            last.save(update_fields=["disabled"])
            last = _active_tail(session)
        if last is None or last.message_type != ChatMessage.Type.USER:
            raise InvalidInput("There is no message to answer.", code="nothing_to_regenerate")
        return _reply_begin(session=session, user=user, reply_to=last)


def _regenerate_at(*, session: ChatSession, user, message_id: uuid.UUID) -> tuple[ChatMessage, ReplyJob]:
    reply = session.messages.filter(message_id=message_id).first()
    if reply is None:
        raise NotFound("Message not found.")
    if reply.message_type != ChatMessage.Type.ASSISTANT:
        raise InvalidInput("Only replies can be regenerated.", code="not_a_reply")
    if reply.disabled:
        raise InvalidInput("This reply is not in the version shown; switch to it first.", code="message_disabled")
    if session.messages.filter(status=ChatMessage.Status.GENERATING).exists():
        raise InvalidInput("A reply is still being generated.", code="reply_in_progress")
    question = session.messages.filter(message_id=reply.parent_message_id, disabled=False).first()
    if question is None or question.message_type != ChatMessage.Type.USER:
        raise InvalidInput("There is no message to answer.", code="nothing_to_regenerate")
    session.messages.filter(disabled=False).filter(
        Q(created_at__gt=question.created_at) | Q(created_at=question.created_at, id__gt=question.id)
    ).update(disabled=True)
    return _reply_begin(session=session, user=user, reply_to=question)


def message_edit(
    *, session: ChatSession, user, message_id: uuid.UUID, content: str, regenerate: bool = True
) -> tuple[list[ChatMessage], ChatMessage | None, ReplyJob | None]:
    """Change a user message, disable everything after it, and begin its new reply."""
    content = message_content_clean(content)
    message = session.messages.filter(message_id=message_id).first()
    if message is None:
        raise NotFound("Message not found.")
    if message.message_type != ChatMessage.Type.USER:
        raise InvalidInput("Only your own messages can be edited.", code="not_editable")
    if message.disabled:
        raise InvalidInput("This message was replaced by a later edit.", code="message_disabled")
    if regenerate:
        _check_may_send(user, session)
    with transaction.atomic():
        _version_keep(message)
        message.content = content
        message.tokens_count = estimate_tokens(content)
        message.edited_at = timezone.now()
        message.save(update_fields=["content", "tokens_count", "edited_at"])
        later = session.messages.filter(disabled=False).filter(
            Q(created_at__gt=message.created_at) | Q(created_at=message.created_at, id__gt=message.id)
        )
        disabled = list(later.order_by("created_at", "id"))
        later.update(disabled=True)
        if not regenerate:
            return disabled, None, None
        reply, job = _reply_begin(session=session, user=user, reply_to=message)
    return disabled, reply, job


def _version_keep(message: ChatMessage) -> None:
    """Before `message` is changed in place, keep what it says now as an earlier version beside it.

    The copy takes over the old continuation (the replies that answered the old text), so switching
    back to it shows them again; the edited message keeps its id, as the API promises.
    """
    earlier = ChatMessage.objects.create(
        session_id=message.session_id, message_type=message.message_type, content=message.content,
        tokens_count=message.tokens_count, parent_message_id=message.parent_message_id, disabled=True,
        edited_at=message.edited_at, status=message.status,
    )  # fmt: skip
    # Same place in the chat's order as the message it was (created_at is set on insert).
    ChatMessage.objects.filter(pk=earlier.pk).update(created_at=message.created_at)
    ChatMessage.objects.filter(session_id=message.session_id, parent_message_id=message.message_id).update(
        parent_message_id=earlier.message_id
    )


def version_switch(*, session: ChatSession, message_id: uuid.UUID) -> list[ChatMessage]:
    """Show the version of the chat that goes through `message_id`: its ancestors, it, and its newest continuation.

    Every other message becomes `disabled`. Returns the messages now shown, oldest first.
    """
    with transaction.atomic():
        # Lock the chat: a switch must not interleave with a send, an edit or a regenerate.
        ChatSession.objects.select_for_update().filter(pk=session.pk).first()
        messages = list(session.messages.order_by("created_at", "id"))
        by_id = {m.message_id: m for m in messages}
        target = by_id.get(message_id)
        if target is None:
            raise NotFound("Message not found.")
        if not selectors.is_version(target):
            raise InvalidInput("A reply that failed is no version to show.", code="not_a_version")
        if any(m.status == ChatMessage.Status.GENERATING for m in messages):
            raise InvalidInput("A reply is still being generated.", code="reply_in_progress")
        children = selectors.versions_tree(messages)
        path = [target]
        while path[0].parent_message_id in by_id:
            path.insert(0, by_id[path[0].parent_message_id])
        while children.get(path[-1].message_id):
            path.append(children[path[-1].message_id][-1])
        shown = {m.pk for m in path}
        session.messages.exclude(pk__in=shown).filter(disabled=False).update(disabled=True)
        session.messages.filter(pk__in=shown, disabled=True).update(disabled=False)
    for message in path:
        message.disabled = False
    return path


def session_pin(*, session: ChatSession, pinned: bool) -> ChatSession:
    """Keep a chat at the top of the list, or let it go back to its place."""
    session.pinned = pinned
    # Not updated_at: pinning is no activity, the chat keeps its place among the days.
    ChatSession.objects.filter(pk=session.pk).update(pinned=pinned)
    return session


def reply_stop(*, session: ChatSession) -> list[ChatMessage]:
    """Stop the replies being generated in a chat, on whichever server runs them."""
    generating = list(session.messages.filter(status=ChatMessage.Status.GENERATING))
    with transaction.atomic():
        for reply in generating:
            # The database flag is the truth for every server; the notification, sent at commit,
            # wakes the one that runs it.
            if reply_mark_stopped(reply_pk=reply.pk):
                notify(f"stop:{reply.pk}")
    for reply in generating:
        reply_stop_local(reply.pk)
    return generating


def replies_reap_stale(*, older_than: timedelta) -> int:
    """End replies left "generating" by a process that died: keep their text, settle or release their usage."""
    stale = ChatMessage.objects.filter(
        status=ChatMessage.Status.GENERATING, updated_at__lt=timezone.now() - older_than
    ).values_list("pk", flat=True)
    return sum(reply_reap(pk, older_than=older_than) for pk in stale)


def send_headroom(*, session: ChatSession, user, job: ReplyJob | None) -> Headroom | None:
    """The tightest quota left after a send: from its reservation, or looked up for a replay."""
    if job is not None:
        return job.headroom
    is_image = session.chatbot.chatbot_type == ContentType.IMAGE
    kind = UsageEvent.Kind.IMAGE if is_image else UsageEvent.Kind.MESSAGE
    return quota_headroom(user=user, ai_model=session.ai_model, kind=kind)
