"""Reads of billing: the user's per-session usage and where they stand against every limit."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import Count, Min, Q, QuerySet, Sum
from django.utils import timezone

from billing.models import WINDOWS, ChatSessionUsage, UsageEvent, UserSubscription

PAID = Q(kind=UsageEvent.Kind.MESSAGE, is_free_model=False)
FREE = Q(kind=UsageEvent.Kind.MESSAGE, is_free_model=True)
IMAGE = Q(kind=UsageEvent.Kind.IMAGE)
ANY = Q()
COST_PRECISION = Decimal("0.00000001")


@dataclass(frozen=True)
class Limit:
    """One quota of a tier: which events it counts, how, and over which span."""

    name: str
    window: str  # a key of WINDOWS, or "period" for the subscription period
    events: Q
    measure: str  # "messages", "tokens" or "cost"


def _limits() -> list[Limit]:
    limits = []
    for window in WINDOWS:
        limits.append(Limit(f"{window}_max_messages", window, PAID, "messages"))
        limits.append(Limit(f"{window}_max_tokens", window, PAID, "tokens"))
    limits += [
        Limit("monthly_free_model_messages", "monthly", FREE, "messages"),
        Limit("monthly_free_model_tokens", "monthly", FREE, "tokens"),
        Limit("max_tokens", "period", PAID, "tokens"),
        Limit("max_tokens_free", "period", FREE, "tokens"),
        Limit("max_openrouter_cost_usd", "period", ANY, "cost"),
        Limit("daily_image_generation_limit", "daily", IMAGE, "messages"),
        Limit("weekly_image_generation_limit", "weekly", IMAGE, "messages"),
        Limit("monthly_image_generation_limit", "monthly", IMAGE, "messages"),
    ]
    return limits


LIMITS = _limits()


@dataclass(frozen=True)
class LimitUsage:
    name: str
    window: str
    limit: int | Decimal  # 0 means unlimited
    used: int | Decimal
    remaining: int | Decimal | None  # None when unlimited
    resets_at: datetime | None


def session_usage_list(*, user) -> QuerySet[ChatSessionUsage]:
    return ChatSessionUsage.objects.filter(user=user).order_by("-updated_at", "-id")


def usage_summary(*, subscription: UserSubscription, now: datetime | None = None) -> list[LimitUsage]:
    """Every limit of the subscription's tier with what is used of it, in one query."""
    now = now or timezone.now()
    tier = subscription.subscription_type

    def since(limit: Limit) -> datetime:
        return subscription.start_date if limit.window == "period" else now - WINDOWS[limit.window]

    aggregates = {}
    for limit in LIMITS:
        scope = limit.events & Q(created_at__gte=since(limit))
        if limit.measure == "messages":
            aggregates[limit.name] = Count("id", filter=scope)
        else:
            aggregates[limit.name] = Sum("cost_usd" if limit.measure == "cost" else "billed_tokens", filter=scope)
        aggregates[f"{limit.name}__oldest"] = Min("created_at", filter=scope)
    earliest = min(subscription.start_date, now - max(WINDOWS.values()))
    totals = (
        UsageEvent.objects.filter(user_id=subscription.user_id, created_at__gte=earliest)
        .exclude(state=UsageEvent.State.RELEASED)
        .aggregate(**aggregates)
    )

    result = []
    for limit in LIMITS:
        value = getattr(tier, limit.name)
        used = totals[limit.name] or 0
        if limit.measure == "cost":
            # The ledger's precision, whatever the database's Decimal arithmetic returns.
            used = Decimal(used).quantize(COST_PRECISION)
        oldest = totals[f"{limit.name}__oldest"]
        if limit.window == "period":
            resets_at = subscription.end_date
        else:
            resets_at = oldest + WINDOWS[limit.window] if oldest else None
        result.append(
            LimitUsage(
                name=limit.name,
                window=limit.window,
                limit=value,
                used=used,
                remaining=max(value - used, 0) if value else None,
                resets_at=resets_at,
            )
        )
    return result
