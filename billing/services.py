"""Writes of billing: subscriptions and the reserve → settle → release cycle of the usage ledger."""

import math
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from billing.models import ChatSessionUsage, SubscriptionType, UsageEvent, UserSubscription
from chatsite.errors import NoSubscription


@transaction.atomic
def subscription_assign(
    *, user, subscription_type: SubscriptionType, start: datetime | None = None
) -> UserSubscription:
    """Make `subscription_type` the user's current tier from `start` (default now)."""
    start = start or timezone.now()
    UserSubscription.objects.filter(user=user, is_active=True).update(is_active=False)
    return UserSubscription.objects.create(
        user=user,
        subscription_type=subscription_type,
        start_date=start,
        end_date=start + timedelta(days=subscription_type.duration_days),
    )


def subscription_extend(*, subscription: UserSubscription, days: int) -> UserSubscription:
    """Push the end of `subscription` back by `days`."""
    subscription.end_date = F("end_date") + timedelta(days=days)
    subscription.save(update_fields=["end_date"])
    subscription.refresh_from_db(fields=["end_date"])
    return subscription


def subscription_current(*, user) -> UserSubscription:
    """Return the user's current subscription, starting a default-tier period when none is current."""
    now = timezone.now()
    current = (
        UserSubscription.objects.select_related("subscription_type")
        .filter(user=user, is_active=True, start_date__lte=now, end_date__gt=now)
        .order_by("-start_date", "-id")
        .first()
    )
    if current is not None:
        return current
    default = SubscriptionType.objects.filter(is_default=True, is_active=True).first()
    if default is None:
        raise NoSubscription("You have no active subscription and there is no default tier.")
    return subscription_assign(user=user, subscription_type=default, start=now)


def subscriptions_expire(*, now: datetime | None = None) -> int:
    """Mark subscriptions whose period has ended as inactive; return how many."""
    now = now or timezone.now()
    return UserSubscription.objects.filter(is_active=True, end_date__lte=now).update(is_active=False)


def billed_tokens(*, prompt_tokens: int, completion_tokens: int, multiplier: Decimal) -> int:
    return math.ceil((prompt_tokens + completion_tokens) * multiplier)


def usage_reserve(
    *, user, session, ai_model, kind: str = UsageEvent.Kind.MESSAGE, prompt_tokens: int = 0, message=None
) -> UsageEvent:
    """Reserve one message (or image) and its estimated prompt tokens before the upstream is called."""
    with transaction.atomic():
        subscription = subscription_current(user=user)
        # Lock the subscription row so concurrent reservations of one user queue here,
        # across processes and servers, and each sees the ledger the previous one left.
        UserSubscription.objects.select_for_update().filter(pk=subscription.pk).first()
        return UsageEvent.objects.create(
            user=user,
            session=session,
            message=message,
            ai_model=ai_model,
            kind=kind,
            is_free_model=ai_model.is_free,
            prompt_tokens=prompt_tokens,
            billed_tokens=billed_tokens(
                prompt_tokens=prompt_tokens, completion_tokens=0, multiplier=ai_model.token_cost_multiplier
            ),
            state=UsageEvent.State.RESERVED,
        )


@transaction.atomic
def usage_settle(
    *, event: UsageEvent, prompt_tokens: int, completion_tokens: int, cost_usd: Decimal | None = None
) -> UsageEvent:
    """Charge the real token counts and cost of a reply against its reservation."""
    model = event.ai_model
    multiplier = model.token_cost_multiplier if model else Decimal(1)
    event.prompt_tokens = prompt_tokens
    event.completion_tokens = completion_tokens
    event.billed_tokens = billed_tokens(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, multiplier=multiplier
    )
    if cost_usd is None:
        cost_usd = model.price_usd(prompt_tokens, completion_tokens) if model else Decimal(0)
    event.cost_usd = cost_usd
    event.state = UsageEvent.State.SETTLED
    event.save(update_fields=["prompt_tokens", "completion_tokens", "billed_tokens", "cost_usd", "state"])
    if event.session_id:
        _session_usage_add(event)
    return event


def usage_release(*, event: UsageEvent) -> UsageEvent:
    """Give a reservation back: the upstream produced nothing, so nothing is charged."""
    event.state = UsageEvent.State.RELEASED
    event.billed_tokens = 0
    event.cost_usd = Decimal(0)
    event.save(update_fields=["state", "billed_tokens", "cost_usd"])
    return event


def _session_usage_add(event: UsageEvent) -> None:
    usage, _ = ChatSessionUsage.objects.get_or_create(session_id=event.session_id, defaults={"user_id": event.user_id})
    field = "free_model_tokens_count" if event.is_free_model else "tokens_count"
    ChatSessionUsage.objects.filter(pk=usage.pk).update(
        **{field: F(field) + event.billed_tokens}, is_free_model=event.is_free_model, updated_at=timezone.now()
    )
