"""Writes of apikeys: personal API keys, and beginning the calls of the OpenAI-compatible API.

A call is a reply like any other: it reserves through billing.services.usage_reserve under the
same lock and limits as a send, and runs and ends in sessions_app's runtime and lifecycle.
Unless it is stored as a chat it has no message: its ledger row carries the key, no session.
"""

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apikeys.models import KEY_PREFIX, SHOWN_CHARS, ApiKey, key_hash
from billing.models import UsageEvent
from billing.services import usage_reserve
from chatbots.models import AIModel, Chatbot, ContentType
from chatbots.providers.base import Message, estimate_prompt_tokens, estimate_tokens
from chatsite.errors import ChatsiteError, InvalidInput, PermissionDenied
from chatsite.text import is_blank
from sessions_app.lifecycle import ORPHANED_AFTER, ReplyJob
from sessions_app.models import ChatMessage, ChatSession
from sessions_app.services import REPLY_RESERVE_TOKENS, _reply_begin
from sessions_app.titles import TITLE_MAX_CHARS

# last_used_at is written at most this often per key, not on every call.
LAST_USED_EVERY = timedelta(seconds=60)
# The chatbot that chats stored from the API belong to: no system prompt, not offered on the pages.
API_CHATBOT_NAME = "API"


class TooManyKeys(ChatsiteError):
    status = 400
    code = "too_many_keys"


class ModelNotFound(ChatsiteError):
    status = 404
    code = "model_not_found"


@transaction.atomic
def api_key_create(*, user, name: str, store_chats: bool = False) -> tuple[ApiKey, str]:
    """Make a key for `user`; return it and the full key, which is never available again."""
    name = name.strip()
    if is_blank(name):
        raise InvalidInput("Give the key a name.", code="blank")
    # Lock the user: two racing creations cannot both take the last place.
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()
    held = ApiKey.objects.filter(user=user, revoked_at=None).count()
    if held >= settings.MAX_API_KEYS_PER_USER:
        raise TooManyKeys(
            f"You hold {held} API keys, the most allowed ({settings.MAX_API_KEYS_PER_USER}); revoke one first."
        )
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        user=user, name=name, prefix=key[:SHOWN_CHARS], key_hash=key_hash(key), store_chats=store_chats
    )
    return api_key, key


def api_key_update(*, api_key: ApiKey, name: str | None = None, store_chats: bool | None = None) -> ApiKey:
    """Rename a key, or change whether its calls are kept as chats."""
    fields = []
    if name is not None:
        if is_blank(name):
            raise InvalidInput("Give the key a name.", code="blank")
        api_key.name = name.strip()
        fields.append("name")
    if store_chats is not None:
        api_key.store_chats = store_chats
        fields.append("store_chats")
    if fields:
        api_key.save(update_fields=fields)
    return api_key


def api_keys_revoke(*, keys) -> int:
    """Revoke keys at once: the next call with one, on any app server, is refused (keys are read on every call)."""
    return keys.filter(revoked_at=None).update(revoked_at=timezone.now())


def api_key_authenticate(*, key: str) -> ApiKey | None:
    """The active key this is, with its user; None for a malformed, unknown or revoked key."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    digest = key_hash(key)
    api_key = ApiKey.objects.select_related("user").filter(key_hash=digest, revoked_at=None).first()
    # The lookup is by hash; comparing again in constant time costs nothing and leaks nothing.
    if api_key is None or not hmac.compare_digest(api_key.key_hash, digest) or not api_key.user.is_active:
        return None
    now = timezone.now()
    if api_key.last_used_at is None or api_key.last_used_at < now - LAST_USED_EVERY:
        ApiKey.objects.filter(pk=api_key.pk).filter(
            Q(last_used_at=None) | Q(last_used_at__lt=now - LAST_USED_EVERY)
        ).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key


# Calls.


def api_model_resolve(*, model_id: str, model_type: str) -> AIModel:
    """The active model of this type with this `model_id`, or ModelNotFound."""
    model = AIModel.objects.filter(model_id=model_id, is_active=True, model_type=model_type).first()
    if model is None:
        raise ModelNotFound(f"The model `{model_id}` does not exist or is not available to you.")
    return model


def _check_may_call(user) -> None:
    if settings.REQUIRE_VERIFIED and not user.is_verified:
        raise PermissionDenied("Verify your email address before using the API.", code="unverified")


def _reserve(*, user, api_key: ApiKey, model: AIModel, kind: str, prompt_tokens: int) -> UsageEvent:
    # As a send reserves (sessions_app.services._reply_begin): the same limits, lock and cap on replies in flight.
    return usage_reserve(
        user=user, session=None, ai_model=model, kind=kind, prompt_tokens=prompt_tokens, api_key=api_key,
        max_in_flight=settings.MAX_ACTIVE_REPLIES_PER_USER, in_flight_window=ORPHANED_AFTER,
    )  # fmt: skip


@dataclass(frozen=True)
class Call:
    job: ReplyJob
    stored: bool


def completion_begin(
    *, api_key: ApiKey, model: AIModel, messages: list[Message], options: dict, store: bool | None
) -> Call:
    """Reserve a chat completion's usage and return its job; stored as a chat if asked (or if the key says so)."""
    user = api_key.user
    _check_may_call(user)
    prompt_tokens = estimate_prompt_tokens(messages)
    if prompt_tokens + min(options.get("max_tokens") or 0, REPLY_RESERVE_TOKENS) > model.context_length:
        raise InvalidInput(
            f"The messages come to about {prompt_tokens} tokens; `{model.model_id}` takes {model.context_length}.",
            code="context_length_exceeded",
        )
    last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), messages[-1]["content"])
    if store if store is not None else api_key.store_chats:
        return Call(job=_stored_begin(user=user, api_key=api_key, model=model, messages=messages,
                                      options=options, last_user=last_user), stored=True)  # fmt: skip
    with transaction.atomic():
        event = _reserve(
            user=user, api_key=api_key, model=model, kind=UsageEvent.Kind.MESSAGE, prompt_tokens=prompt_tokens
        )
    job = ReplyJob(
        reply=None, event=event, session_pk=None, user_id=user.pk, model=model, messages=messages,
        prompt=last_user, is_image=False, headroom=event.headroom, options=options,
    )  # fmt: skip
    return Call(job=job, stored=False)


@transaction.atomic
def _stored_begin(*, user, api_key, model, messages, options, last_user) -> ReplyJob:
    """The call as a chat: its user and assistant messages saved, its reply a message that grows like a page's."""
    chatbot, _ = Chatbot.objects.get_or_create(
        name=API_CHATBOT_NAME, chatbot_type=ContentType.TEXT, is_active=False,
        defaults={"description": "Chats kept from the OpenAI-compatible API.", "system_prompt": ""},
    )  # fmt: skip
    title = " ".join(last_user.split())[:TITLE_MAX_CHARS] or "API call"
    session = ChatSession.objects.create(
        user=user, chatbot=chatbot, ai_model=model, title=title, auto_generate_title=False
    )
    kinds = {"user": ChatMessage.Type.USER, "assistant": ChatMessage.Type.ASSISTANT}
    saved = [
        ChatMessage(
            session=session,
            content=m["content"],
            tokens_count=estimate_tokens(m["content"]),
            message_type=kinds[m["role"]],
        )
        for m in messages
        if m["role"] in kinds
    ]
    saved = ChatMessage.objects.bulk_create(saved)
    reply_to = next((m for m in reversed(saved) if m.message_type == ChatMessage.Type.USER), None)
    _, job = _reply_begin(
        session=session, user=user, reply_to=reply_to, messages=messages, api_key=api_key, options=options
    )
    return job


def image_begin(*, api_key: ApiKey, model: AIModel, prompt: str) -> ReplyJob:
    """Reserve an image's usage and return its job (an image call is never stored as a chat)."""
    user = api_key.user
    _check_may_call(user)
    with transaction.atomic():
        event = _reserve(
            user=user, api_key=api_key, model=model, kind=UsageEvent.Kind.IMAGE, prompt_tokens=estimate_tokens(prompt)
        )
    return ReplyJob(
        reply=None, event=event, session_pk=None, user_id=user.pk, model=model,
        messages=[{"role": "user", "content": prompt}], prompt=prompt, is_image=True, headroom=event.headroom,
    )  # fmt: skip
