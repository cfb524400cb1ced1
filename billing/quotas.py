"""The tier's limits, what is used of each, and the check a reservation must pass.

A window's usage is the hourly buckets that lie wholly inside it plus the
ledger rows of its first, partial hour. So every sum is exact (rolling to the
microsecond) and reads at most one bucket per hour and class plus one hour of
ledger, whatever the ledger holds: two queries for every limit together.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Count, Min, Q, Sum
from django.utils import timezone

from billing.models import WINDOWS, SubscriptionType, UsageBucket, UsageEvent, UserSubscription

HOUR = timedelta(hours=1)
COST_PRECISION = Decimal("0.00000001")
PAID, FREE, IMAGE = UsageBucket.Klass.PAID, UsageBucket.Klass.FREE, UsageBucket.Klass.IMAGE


@dataclass(frozen=True)
class Limit:
    """One quota of a tier: what it counts, of which classes, over which span."""

    name: str  # the SubscriptionType field
    window: str  # a key of WINDOWS, or "period" for the subscription period
    classes: tuple[str, ...]
    measure: str  # "messages", "tokens" or "cost"


def _limits() -> list[Limit]:
    limits = []
    for window in WINDOWS:
        limits.append(Limit(f"{window}_max_messages", window, (PAID,), "messages"))
        limits.append(Limit(f"{window}_max_tokens", window, (PAID,), "tokens"))
    limits += [
        Limit("monthly_free_model_messages", "monthly", (FREE,), "messages"),
        Limit("monthly_free_model_tokens", "monthly", (FREE,), "tokens"),
        Limit("max_tokens", "period", (PAID,), "tokens"),
        Limit("max_tokens_free", "period", (FREE,), "tokens"),
        # A free model's cost is zero by definition; paid messages and images cost.
        Limit("max_openrouter_cost_usd", "period", (PAID, IMAGE), "cost"),
        Limit("daily_image_generation_limit", "daily", (IMAGE,), "messages"),
        Limit("weekly_image_generation_limit", "weekly", (IMAGE,), "messages"),
        Limit("monthly_image_generation_limit", "monthly", (IMAGE,), "messages"),
    ]
    return limits


LIMITS = _limits()


def event_class(*, kind: str, is_free_model: bool) -> str:
    if kind == UsageEvent.Kind.IMAGE:
        return IMAGE
    return FREE if is_free_model else PAID


def floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: datetime) -> datetime:
    floored = floor_hour(moment)
    return floored if floored == moment else floored + HOUR


@dataclass(frozen=True)
class LimitUsage:
    name: str
    window: str
    limit: int | Decimal  # 0 means unlimited
    used: int | Decimal
    remaining: int | Decimal | None  # None when unlimited
    resets_at: datetime | None


class Usage:
    """What is used of every limit of one subscription, at one moment."""

    def __init__(self, subscription: UserSubscription, now: datetime) -> None:
        self.subscription = subscription
        self.now = now
        self.used: dict[str, int | Decimal] = {}
        self._first_bucket: dict[str, datetime | None] = {}
        self._first_edge: dict[str, datetime | None] = {}

    def start(self, limit: Limit) -> datetime:
        if limit.window == "period":
            return self.subscription.start_date
        return self.now - WINDOWS[limit.window]

    def load(self) -> "Usage":
        """Sum every limit: one query over the buckets, one over the ledger's edge hours."""
        user_id = self.subscription.user_id
        earliest = min(self.start(limit) for limit in LIMITS)
        buckets, edges = {}, {}
        edge_ranges = Q(pk__in=[])
        for limit in LIMITS:
            start = self.start(limit)
            in_window = Q(klass__in=limit.classes, hour__gte=ceil_hour(start))
            if limit.measure == "messages":
                buckets[limit.name] = Sum("messages", filter=in_window)
            else:
                buckets[limit.name] = Sum("cost_usd" if limit.measure == "cost" else "tokens", filter=in_window)
            buckets[f"{limit.name}__first"] = Min("hour", filter=in_window & Q(messages__gt=0))

            edge = Q(created_at__gte=start, created_at__lt=ceil_hour(start))
            edge_ranges |= edge
            counted = edge & _classes_q(limit.classes)
            if limit.measure == "messages":
                edges[limit.name] = Count("id", filter=counted)
            else:
                edges[limit.name] = Sum("cost_usd" if limit.measure == "cost" else "billed_tokens", filter=counted)
            edges[f"{limit.name}__first"] = Min("created_at", filter=counted)

        bucket_totals = UsageBucket.objects.filter(user_id=user_id, hour__gte=floor_hour(earliest)).aggregate(**buckets)
        edge_totals = (
            UsageEvent.objects.filter(edge_ranges, user_id=user_id)
            .exclude(state=UsageEvent.State.RELEASED)
            .aggregate(**edges)
        )
        for limit in LIMITS:
            used = (bucket_totals[limit.name] or 0) + (edge_totals[limit.name] or 0)
            if limit.measure == "cost":
                used = Decimal(used).quantize(COST_PRECISION)
            self.used[limit.name] = used
            self._first_bucket[limit.name] = bucket_totals[f"{limit.name}__first"]
            self._first_edge[limit.name] = edge_totals[f"{limit.name}__first"]
        return self

    def add(self, *, klass: str, messages: int = 0, tokens: int = 0, cost: Decimal = Decimal(0)) -> None:
        """Count a reservation just made into the loaded totals."""
        for limit in LIMITS:
            if klass in limit.classes:
                self.used[limit.name] += {"messages": messages, "tokens": tokens, "cost": cost}[limit.measure]
                if self._first_edge[limit.name] is None and self._first_bucket[limit.name] is None:
                    self._first_edge[limit.name] = self.now

    def resets_at(self, limit: Limit) -> datetime | None:
        """When the oldest usage counted by a rolling limit leaves its window (the period's end for period limits)."""
        return self._resets([limit])[limit.name]

    def _resets(self, limits: list[Limit]) -> dict[str, datetime | None]:
        resets: dict[str, datetime | None] = {}
        oldest: dict[str, datetime | None] = {}
        lookups, ranges = {}, Q(pk__in=[])
        for limit in limits:
            if limit.window == "period":
                resets[limit.name] = self.subscription.end_date
            elif not self.used[limit.name]:
                resets[limit.name] = None
            elif self._first_edge[limit.name] is not None or self._first_bucket[limit.name] is None:
                oldest[limit.name] = self._first_edge[limit.name]
            else:
                # The oldest usage sits in a whole bucket: find its exact time within that hour.
                hour = self._first_bucket[limit.name]
                span = Q(created_at__gte=max(hour, self.start(limit)), created_at__lt=hour + HOUR)
                ranges |= span
                lookups[limit.name] = Min("created_at", filter=span & _classes_q(limit.classes))
        if lookups:
            found = (
                UsageEvent.objects.filter(ranges, user_id=self.subscription.user_id)
                .exclude(state=UsageEvent.State.RELEASED)
                .aggregate(**lookups)
            )
            for name, first in found.items():
                # Pruned from the ledger: the bucket's hour is the best we know.
                oldest[name] = first or self._first_bucket[name]
        for limit in limits:
            if limit.name in oldest:
                first = oldest[limit.name]
                resets[limit.name] = first + WINDOWS[limit.window] if first is not None else None
        return resets

    def report(self, tier: SubscriptionType) -> list[LimitUsage]:
        resets = self._resets(LIMITS)
        result = []
        for limit in LIMITS:
            value = getattr(tier, limit.name)
            used = self.used[limit.name]
            result.append(
                LimitUsage(
                    name=limit.name,
                    window=limit.window,
                    limit=value,
                    used=used,
                    remaining=max(value - used, 0) if value else None,
                    resets_at=resets[limit.name],
                )
            )
        return result


def _classes_q(classes: tuple[str, ...]) -> Q:
    q = Q(pk__in=[])
    for klass in classes:
        if klass == IMAGE:
            q |= Q(kind=UsageEvent.Kind.IMAGE)
        else:
            q |= Q(kind=UsageEvent.Kind.MESSAGE, is_free_model=klass == FREE)
    return q


@dataclass(frozen=True)
class Refusal:
    limit: Limit
    limit_value: int | Decimal
    used: int | Decimal
    resets_at: datetime | None

    @property
    def retry_after(self) -> int:
        if self.resets_at is None:
            return 60
        return max(1, math.ceil((self.resets_at - timezone.now()).total_seconds()))


def quota_check(*, usage: Usage, tier: SubscriptionType, klass: str, tokens: int, cost: Decimal) -> Refusal | None:
    """The first limit this request would pass (one more message, `tokens` and `cost` more), if any."""
    for limit in LIMITS:
        value = getattr(tier, limit.name)
        if not value or klass not in limit.classes:
            continue
        used = usage.used[limit.name]
        adding = {"messages": 1, "tokens": tokens, "cost": cost}[limit.measure]
        # A limit is reached when usage is already at it, or this request's own part would pass it.
        if used >= value or used + adding > value:
            return Refusal(limit=limit, limit_value=value, used=used, resets_at=usage.resets_at(limit))
    return None


@dataclass(frozen=True)
class Headroom:
    """The tightest limit after a request: for X-RateLimit-* headers."""

    limit: int | Decimal
    remaining: int | Decimal
    resets_at: datetime | None


def tightest(*, usage: Usage, tier: SubscriptionType, klass: str) -> Headroom | None:
    best = None
    for limit in LIMITS:
        value = getattr(tier, limit.name)
        if not value or klass not in limit.classes:
            continue
        remaining = max(value - usage.used[limit.name], 0)
        if best is None or remaining / value < best[0]:
            best = (remaining / value, limit, value, remaining)
    if best is None:
        return None
    _, limit, value, remaining = best
    return Headroom(limit=value, remaining=remaining, resets_at=usage.resets_at(limit))


def rate_limit_headers(headroom: Headroom | None) -> dict[str, str]:
    """X-RateLimit-Limit/Remaining/Reset for the tightest limit; Reset is a Unix time in seconds."""
    if headroom is None:
        return {}
    headers = {"X-RateLimit-Limit": str(headroom.limit), "X-RateLimit-Remaining": str(headroom.remaining)}
    if headroom.resets_at is not None:
        headers["X-RateLimit-Reset"] = str(math.ceil(headroom.resets_at.timestamp()))
    return headers
