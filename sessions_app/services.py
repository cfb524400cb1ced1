"""Writes of chat sessions and messages, including the reply pipeline."""

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from billing.models import UsageEvent
from billing.services import usage_release, usage_reserve, usage_settle
from chatbots.models import AIModel, Chatbot, ContentType
from chatbots.providers import get_provider
from chatbots.providers.base import Message, estimate_prompt_tokens, estimate_tokens
from chatsite.errors import ChatsiteError, InvalidInput, NotFound, PermissionDenied, UpstreamError
from sessions_app.models import DEFAULT_TITLE, ChatMessage, ChatSession

logger = logging.getLogger(__name__)

TITLE_MAX_CHARS = 200
AUTO_TITLE_WORDS = 8
# Room kept free in the model's context window for the reply itself.
REPLY_RESERVE_TOKENS = 1024


def message_content_clean(value: str) -> str:
    """Validate a message body: 1..MAX_MESSAGE_CHARS characters, not only whitespace."""
    if not value.strip():
        raise InvalidInput("The message is empty.", code="blank")
    if len(value) > settings.MAX_MESSAGE_CHARS:
        raise InvalidInput(f"The message is longer than {settings.MAX_MESSAGE_CHARS} characters.", code="too_long")
    return value


def title_clean(value: str) -> str:
    value = value.strip()
    if not value:
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
) -> ChatSession:
    """Change a chat's title, auto-title flag or model; only the given fields change."""
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


def context_build(*, session: ChatSession) -> list[Message]:
    """The messages sent upstream: system prompt, then the newest history that fits the context."""
    history = list(
        session.messages.filter(disabled=False)
        .exclude(status=ChatMessage.Status.GENERATING)
        .order_by("created_at", "id")
        .values_list("message_type", "content")
    )
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


def _title_from(content: str) -> str:
    words = content.split()
    title = " ".join(words[:AUTO_TITLE_WORDS]) + ("…" if len(words) > AUTO_TITLE_WORDS else "")
    return title[:TITLE_MAX_CHARS] or DEFAULT_TITLE


def _title_auto(session: ChatSession) -> None:
    if not session.auto_generate_title or session.title != DEFAULT_TITLE:
        return
    first = session.messages.filter(message_type=ChatMessage.Type.USER).order_by("created_at", "id").first()
    if first is not None:
        ChatSession.objects.filter(pk=session.pk, title=DEFAULT_TITLE).update(title=_title_from(first.content))
        session.refresh_from_db(fields=["title"])


def _store_image(session: ChatSession, png: bytes) -> str:
    name = default_storage.save(f"generated/{session.pk}/{uuid.uuid4().hex}.png", ContentFile(png))
    return default_storage.url(name)


def reply_generate(*, session: ChatSession, user) -> ChatMessage:
    """Generate the assistant's reply to the session's history: reserve, call upstream, settle."""
    model = session.ai_model
    is_image = session.chatbot.chatbot_type == ContentType.IMAGE
    messages = context_build(session=session)
    prompt = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    with transaction.atomic():
        event = usage_reserve(
            user=user,
            session=session,
            ai_model=model,
            kind=UsageEvent.Kind.IMAGE if is_image else UsageEvent.Kind.MESSAGE,
            prompt_tokens=estimate_tokens(prompt) if is_image else estimate_prompt_tokens(messages),
        )
        reply = ChatMessage.objects.create(
            session=session,
            message_type=ChatMessage.Type.ASSISTANT,
            ai_model=model,
            status=ChatMessage.Status.GENERATING,
        )
    # The upstream is called outside any transaction: a slow model must not hold locks.
    provider = get_provider(model)
    try:
        if is_image:
            image = provider.generate_image(model=model, prompt=prompt)
            image_url = _store_image(session, image.png)
            content, prompt_tokens, completion_tokens, cost = prompt, image.prompt_tokens, 0, image.cost_usd
        else:
            completion = provider.complete(model=model, messages=messages)
            image_url = ""
            content, prompt_tokens = completion.content, completion.prompt_tokens
            completion_tokens, cost = completion.completion_tokens, completion.cost_usd
    except Exception as exc:
        # Nothing arrived: keep the user's message, charge nothing, drop the empty reply.
        usage_release(event=event)
        reply.delete()
        if isinstance(exc, ChatsiteError):
            raise
        logger.exception("upstream call failed for model %s", model.model_id)
        raise UpstreamError() from exc

    with transaction.atomic():
        usage_settle(event=event, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost_usd=cost)
        reply.content = content
        reply.image_url = image_url
        reply.tokens_count = completion_tokens
        reply.status = ChatMessage.Status.COMPLETE
        reply.save(update_fields=["content", "image_url", "tokens_count", "status"])
        ChatSession.objects.filter(pk=session.pk).update(updated_at=timezone.now())
    _title_auto(session)
    return reply


def message_send(*, session: ChatSession, user, content: str) -> tuple[ChatMessage, ChatMessage]:
    """Save the user's message and answer it; the user's message stays even if the reply fails."""
    content = message_content_clean(content)
    _check_may_send(user, session)
    user_message = ChatMessage.objects.create(
        session=session,
        message_type=ChatMessage.Type.USER,
        content=content,
        tokens_count=estimate_tokens(content),
    )
    return user_message, reply_generate(session=session, user=user)


def _active_tail(session: ChatSession) -> ChatMessage | None:
    return session.messages.filter(disabled=False).order_by("-created_at", "-id").first()


def message_regenerate(*, session: ChatSession, user) -> ChatMessage:
    """Disable the last reply and generate a new one."""
    _check_may_send(user, session)
    replaced = _active_tail(session)
    last = replaced
    if replaced is not None and replaced.message_type == ChatMessage.Type.ASSISTANT:
        if replaced.status == ChatMessage.Status.GENERATING:
            raise InvalidInput("A reply is still being generated.", code="reply_in_progress")
        # Disabled first, so the new reply is generated from the history without it.
        ChatMessage.objects.filter(pk=replaced.pk).update(disabled=True)
        last = _active_tail(session)
    else:
        replaced = None
    if last is None or last.message_type != ChatMessage.Type.USER:
        raise InvalidInput("There is no message to answer.", code="nothing_to_regenerate")
    try:
        return reply_generate(session=session, user=user)
    except ChatsiteError:
        # No new reply (quota, upstream): the old one comes back rather than leaving none.
        if replaced is not None:
            ChatMessage.objects.filter(pk=replaced.pk).update(disabled=False)
        raise


@transaction.atomic
def _edit_apply(*, message: ChatMessage, content: str) -> list[ChatMessage]:
    message.content = content
    message.tokens_count = estimate_tokens(content)
    message.edited_at = timezone.now()
    message.save(update_fields=["content", "tokens_count", "edited_at"])
    later = message.session.messages.filter(disabled=False).filter(
        Q(created_at__gt=message.created_at) | Q(created_at=message.created_at, id__gt=message.id)
    )
    disabled = list(later.order_by("created_at", "id"))
    later.update(disabled=True)
    return disabled


def message_edit(
    *, session: ChatSession, user, message_id: uuid.UUID, content: str, regenerate: bool = True
) -> tuple[list[ChatMessage], ChatMessage | None]:
    """Change a user message, disable everything after it, and answer it again."""
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
    disabled = _edit_apply(message=message, content=content)
    reply = reply_generate(session=session, user=user) if regenerate else None
    return disabled, reply
