"""The tier's limits, what is used of each, and the check a reservation must pass.

A window's usage is the ledger rows of its first, partial hour, then the hour
buckets up to the first midnight, the day buckets of the whole days, and the
hour buckets of today. So every sum is exact (rolling to the microsecond) and
reads a few dozen bucket rows plus one hour of ledger, whatever the ledger
holds: two queries for every limit together.
"""

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import connection
from django.db.models import Min, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from billing.models import WINDOWS, SubscriptionType, UsageBucket, UsageEvent, UserSubscription

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
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
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: datetime) -> datetime:
    floored = floor_hour(moment)
    return floored if floored == moment else floored + HOUR


def floor_day(moment: datetime) -> datetime:
    return floor_hour(moment).replace(hour=0)


def ceil_day(moment: datetime) -> datetime:
    floored = floor_day(moment)
    return floored if floored == moment else floored + DAY


@dataclass(frozen=True)
class LimitUsage:
    name: str
    window: str
    limit: int | Decimal  # 0 means unlimited
    used: int | Decimal
    remaining: int | Decimal | None  # None when unlimited
    resets_at: datetime | None


# A scope is what a sum covers: a window and the classes it counts. Limits of one
# scope (its messages, its tokens, its cost) share one set of sums.
Scope = tuple[str, tuple[str, ...]]
SCOPES: list[Scope] = sorted({(limit.window, limit.classes) for limit in LIMITS})

_BUCKET_CLASSES = {PAID: "'paid'", FREE: "'free'", IMAGE: "'image'"}
_LEDGER_CLASSES = {
    PAID: "(kind = 'message' AND NOT is_free_model)",
    FREE: "(kind = 'message' AND is_free_model)",
    IMAGE: "(kind = 'image')",
}


def _bucket_sql() -> str:
    """One scan of the user's buckets summing every scope: hour buckets at both ends of a window, days between."""
    columns = []
    for _, classes in SCOPES:
        in_scope = (
            f"klass IN ({', '.join(_BUCKET_CLASSES[c] for c in classes)}) AND ("
            "(span = 'hour' AND hour >= %s AND hour < %s) OR "
            "(span = 'day' AND hour >= %s AND hour < %s) OR "
            "(span = 'hour' AND hour >= %s AND hour < %s))"
        )
        for column in ("messages", "tokens", "cost_usd"):
            columns.append(f"SUM({column}) FILTER (WHERE {in_scope})")
        columns.append(f"MIN(hour) FILTER (WHERE messages > 0 AND {in_scope})")
    # Only the rows some scope reads: every day bucket since the earliest window, and the
    # hour buckets at both ends of each window (the index turns these into range scans).
    hour_ranges = " OR ".join(["(span = 'hour' AND hour >= %s AND hour < %s)"] * (2 * len(SCOPES)))
    table = UsageBucket._meta.db_table
    return (
        f"SELECT {', '.join(columns)} FROM {table} "  # noqa: S608 - constants only; values are parameters
        f"WHERE user_id = %s AND ((span = 'day' AND hour >= %s) OR {hour_ranges})"
    )


def _ledger_sql() -> str:
    """One scan of the ledger rows in every scope's partial first hour."""
    columns = []
    for _, classes in SCOPES:
        counted = f"({' OR '.join(_LEDGER_CLASSES[c] for c in classes)}) AND created_at >= %s AND created_at < %s"
        columns += [
            f"COUNT(*) FILTER (WHERE {counted})",
            f"SUM(billed_tokens) FILTER (WHERE {counted})",
            f"SUM(cost_usd) FILTER (WHERE {counted})",
            f"MIN(created_at) FILTER (WHERE {counted})",
        ]
    edges = " OR ".join(["(created_at >= %s AND created_at < %s)"] * len(SCOPES))
    table = UsageEvent._meta.db_table
    return (
        f"SELECT {', '.join(columns)} FROM {table} "  # noqa: S608 - constants only; values are parameters
        f"WHERE user_id = %s AND state <> 'released' AND ({edges})"
    )


_SQL: dict[str, str] = {}


def _sql(name: str) -> str:
    # Built once per process: composing ~50 filtered aggregates per call cost far more than running them.
    if name not in _SQL:
        _SQL[name] = _bucket_sql() if name == "buckets" else _ledger_sql()
    return _SQL[name]


@dataclass(frozen=True)
class _Spans:
    """Where a window's usage is read: the ledger edge, hour buckets, day buckets, hour buckets."""

    edge: tuple[datetime, datetime]
    first_hours: tuple[datetime, datetime]
    days: tuple[datetime, datetime]
    last_hours: tuple[datetime, datetime]


def _spans(start: datetime, now: datetime) -> _Spans:
    whole = ceil_hour(start)
    end = floor_hour(now) + HOUR
    first_day, last_day = ceil_day(whole), floor_day(now)
    if first_day < last_day:
        first_hours, days, last_hours = (whole, first_day), (first_day, last_day), (last_day, end)
    else:
        first_hours, days, last_hours = (whole, end), (end, end), (end, end)
    return _Spans(edge=(start, whole), first_hours=first_hours, days=days, last_hours=last_hours)


class Usage:
    """What is used of every limit of one subscription, at one moment."""

    def __init__(self, subscription: UserSubscription, now: datetime) -> None:
        self.subscription = subscription
        self.now = now
        self.used: dict[str, int | Decimal] = {}
        self._first_bucket: dict[Scope, datetime | None] = {}
        self._first_edge: dict[Scope, datetime | None] = {}
        self._spans: dict[Scope, _Spans] = {}

    def start(self, window: str) -> datetime:
        if window == "period":
            return self.subscription.start_date
        return self.now - WINDOWS[window]

    def load(self) -> "Usage":
        """Sum every limit: one query over the buckets, one over the ledger's edge hours."""
        adapt = connection.ops.adapt_datetimefield_value
        for scope in SCOPES:
            self._spans[scope] = _spans(self.start(scope[0]), self.now)
        bucket_params, hour_params, ledger_params, edge_params = [], [], [], []
        for scope in SCOPES:
            spans = self._spans[scope]
            ranges = [adapt(t) for t in (*spans.first_hours, *spans.days, *spans.last_hours)]
            bucket_params += ranges * 4  # messages, tokens, cost and first, each filtered alike
            hour_params += [adapt(t) for t in (*spans.first_hours, *spans.last_hours)]
            edge = [adapt(t) for t in spans.edge]
            ledger_params += edge * 4
            edge_params += edge
        earliest_day = min(spans.days[0] for spans in self._spans.values())
        user_id = self.subscription.user_id
        with connection.cursor() as cursor:
            cursor.execute(_sql("buckets"), [*bucket_params, user_id, adapt(earliest_day), *hour_params])
            buckets = cursor.fetchone()
            cursor.execute(_sql("ledger"), [*ledger_params, user_id, *edge_params])
            edges = cursor.fetchone()

        totals: dict[Scope, dict[str, int | Decimal]] = {}
        for index, scope in enumerate(SCOPES):
            in_buckets, in_edge = buckets[index * 4 : index * 4 + 4], edges[index * 4 : index * 4 + 4]
            totals[scope] = {
                # PostgreSQL sums integers as numeric: counts come back as Decimal.
                "messages": int(in_buckets[0] or 0) + int(in_edge[0] or 0),
                "tokens": int(in_buckets[1] or 0) + int(in_edge[1] or 0),
                "cost": (_decimal(in_buckets[2]) + _decimal(in_edge[2])).quantize(COST_PRECISION),
            }
            self._first_bucket[scope] = _datetime(in_buckets[3])
            self._first_edge[scope] = _datetime(in_edge[3])
        for limit in LIMITS:
            self.used[limit.name] = totals[(limit.window, limit.classes)][limit.measure]
        return self

    def add(self, *, klass: str, messages: int = 0, tokens: int = 0, cost: Decimal = Decimal(0)) -> None:
        """Count a reservation just made into the loaded totals."""
        for limit in LIMITS:
            if klass in limit.classes:
                self.used[limit.name] += {"messages": messages, "tokens": tokens, "cost": cost}[limit.measure]
        for scope in SCOPES:
            if klass in scope[1] and self._first_edge[scope] is None and self._first_bucket[scope] is None:
                self._first_edge[scope] = self.now

    def resets_at(self, limit: Limit) -> datetime | None:
        """When the oldest usage counted by a rolling limit leaves its window (the period's end for period limits)."""
        return self._resets([limit])[limit.name]

    def _oldest(self, scopes: set[Scope]) -> dict[Scope, datetime | None]:
        """The exact time of the oldest usage each scope counts: at most two small queries for all of them."""
        oldest: dict[Scope, datetime | None] = {}
        in_day: dict[Scope, datetime] = {}
        in_hour: dict[Scope, datetime] = {}
        for scope in scopes:
            first = self._first_bucket[scope]
            if self._first_edge[scope] is not None or first is None:
                oldest[scope] = self._first_edge[scope]
            elif self._spans[scope].days[0] <= first < self._spans[scope].days[1]:
                in_day[scope] = first
            else:
                in_hour[scope] = first
        user_id = self.subscription.user_id
        if in_day:
            # A day bucket: its first hour with usage, from the hour buckets.
            ranges, firsts = Q(pk__in=[]), {}
            for index, (scope, day) in enumerate(in_day.items()):
                span = Q(hour__gte=day, hour__lt=day + DAY)
                ranges |= span
                firsts[f"s{index}"] = Min("hour", filter=span & Q(klass__in=scope[1]))
            found = UsageBucket.objects.filter(
                ranges, user_id=user_id, span=UsageBucket.Span.HOUR, messages__gt=0
            ).aggregate(**firsts)
            for index, (scope, day) in enumerate(in_day.items()):
                in_hour[scope] = _datetime(found[f"s{index}"]) or day
        if in_hour:
            ranges, firsts = Q(pk__in=[]), {}
            for index, (scope, hour) in enumerate(in_hour.items()):
                span = Q(created_at__gte=max(hour, self.start(scope[0])), created_at__lt=hour + HOUR)
                ranges |= span
                firsts[f"s{index}"] = Min("created_at", filter=span & _classes_q(scope[1]))
            found = (
                UsageEvent.objects.filter(ranges, user_id=user_id)
                .exclude(state=UsageEvent.State.RELEASED)
                .aggregate(**firsts)
            )
            for index, (scope, hour) in enumerate(in_hour.items()):
                # Pruned from the ledger: the bucket's hour is the best we know.
                oldest[scope] = found[f"s{index}"] or hour
        return oldest

    def _resets(self, limits: list[Limit]) -> dict[str, datetime | None]:
        rolling = [limit for limit in limits if limit.window != "period" and self.used[limit.name]]
        oldest = self._oldest({(limit.window, limit.classes) for limit in rolling})
        resets: dict[str, datetime | None] = dict.fromkeys((limit.name for limit in limits), None)
        for limit in limits:
            if limit.window == "period":
                resets[limit.name] = self.subscription.end_date
        for limit in rolling:
            first = oldest[(limit.window, limit.classes)]
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


def _decimal(value) -> Decimal:
    # SQLite adds decimals as floats; its str() is the shortest exact-looking form.
    return Decimal(str(value)) if value is not None else Decimal(0)


def _datetime(value) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    parsed = parse_datetime(value)  # SQLite returns text
    return parsed.replace(tzinfo=UTC) if parsed is not None and parsed.tzinfo is None else parsed


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
