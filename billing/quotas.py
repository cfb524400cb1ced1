"""The tier's limits, what is used of each, and the check a reservation must pass.

A window's usage is the ledger rows of its first, partial hour, then the hour
buckets up to the first midnight, the day buckets of the whole days, and the
hour buckets of today. So every sum is exact (rolling to the microsecond) and
reads a few hundred bucket rows plus one hour of ledger at most (and the current
hour's, for the exact time a window's usage begins), whatever the ledger holds.
The windows overlap, so their ranges are cut into disjoint pieces, each read
once, by one index-only range scan: one query for every limit together.
"""

import math
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache
from itertools import pairwise

from django.db import connection
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
_SCOPE_LIMITS: dict[Scope, list[Limit]] = {
    scope: [limit for limit in LIMITS if (limit.window, limit.classes) == scope] for scope in SCOPES
}
Range = tuple[datetime, datetime]

# Where a piece of a window is read: hour buckets, day buckets, or the ledger itself.
HOURS, DAYS, LEDGER, IN_FLIGHT = "hour", "day", "ledger", "in_flight"
# The ledger of the current hour, read for where each class's usage in it begins (not summed): a
# rolling window whose oldest usage is in the current hour's bucket resets an exact window after it.
HOUR_FIRSTS = "hour_firsts"

# Each piece is one range of one index (the ledger's on user and time, the buckets' covering
# one), so each is a short index-only scan; {n} numbers it. Released rows count nowhere. The
# columns are named once, in the first piece. The statement stays short and names its values
# (the user once as u, each piece's ends as a{n}, b{n}), so psycopg converts it once per process
# rather than at every send: it caches statements up to 4,096 bytes and 50 values.
# A ledger row's class, as its buckets keep it: an image, or a message on a free or a paid model.
_LEDGER_CLASS = "CASE WHEN kind='image' THEN 'image' WHEN is_free_model THEN 'free' ELSE 'paid' END"
_LEDGER_SQL = (
    "SELECT {n}{piece}," + _LEDGER_CLASS + "{klass},"  # noqa: S608 (constants only)
    "1{messages},billed_tokens{tokens},cost_usd,created_at{at} FROM billing_usageevent "
    "WHERE user_id=%(u)s AND created_at>=%(a{n})s AND created_at<%(b{n})s AND state<>'released'"
)
_PIECE_SQL = {
    LEDGER: _LEDGER_SQL,
    HOUR_FIRSTS: _LEDGER_SQL,
    **{
        span: "SELECT {n}{piece},klass,messages,tokens,cost_usd,hour{at} FROM billing_usagebucket "  # noqa: S608
        f"WHERE user_id=%(u)s AND span='{span}' AND hour>=%(a{{n}})s AND hour<%(b{{n}})s"
        for span in (HOURS, DAYS)
    },
    # Reservations not yet settled: the user's replies in flight (those begun in the range).
    IN_FLIGHT: (
        "SELECT {n}{piece},'in_flight'{klass},1{messages},0{tokens},0{cost_usd},created_at{at} FROM billing_usageevent "
        "WHERE user_id=%(u)s AND created_at>=%(a{n})s AND created_at<%(b{n})s AND state='reserved'"
    ),
}
_COLUMNS = ("piece", "klass", "messages", "tokens", "cost_usd", "at")


@cache
def _sums_sql(kinds: tuple[str, ...]) -> str:
    """One statement summing each piece by class, for pieces read from `kinds`."""
    named = {column: f" AS {column}" for column in _COLUMNS}
    unnamed = dict.fromkeys(_COLUMNS, "")
    pieces = " UNION ALL ".join(
        _PIECE_SQL[kind].format(n=n, **(unnamed if n else named)) for n, kind in enumerate(kinds)
    )
    return (
        "SELECT piece,klass,SUM(messages),SUM(tokens),SUM(cost_usd),"  # noqa: S608
        f"CAST(MIN(at) FILTER (WHERE messages>0) AS TEXT) FROM ({pieces}) AS pieces GROUP BY piece,klass"
    )


# Prepared on its connection, the sums statement would still be planned at each call for its
# values: PostgreSQL prices the generic plan of a dozen ranges above those it makes for the
# values, and keeps making them. Under load (pg_stat_statements, 400 sends over 2 s) that was
# 0.92 ms of planning and 1.21 ms of execution a call; with the generic plan 0.22 ms (the runs
# before a connection prepares it) and 0.36 ms. So a reservation sets the generic plan for the rest
# of its transaction, in the statement that locks its subscription (billing.selectors): is_local
# ends it with the transaction (SET LOCAL), behind PgBouncer too.
GENERIC_PLAN = "set_config('plan_cache_mode', 'force_generic_plan', true)"


def _sums_statement(user_id: int, pieces: list["_Piece"]) -> tuple[str, dict]:
    """The statement summing `pieces` of the user's usage, with its values."""
    adapt = connection.ops.adapt_datetimefield_value
    params: dict = {"u": user_id}
    for n, piece in enumerate(pieces):
        params[f"a{n}"], params[f"b{n}"] = adapt(piece.lo), adapt(piece.hi)
    return _sums_sql(tuple(piece.kind for piece in pieces)), params


@dataclass(frozen=True)
class _Piece:
    """A range no window boundary cuts: read once, it counts in every window it lies in."""

    kind: str  # HOURS, DAYS or LEDGER
    lo: datetime
    hi: datetime
    windows: tuple[str, ...]


def _cut(ranges: dict[str, list[tuple[str, Range]]]) -> list[_Piece]:
    """Cut the windows' ranges (where each is read, and when) into disjoint pieces: no row is read twice."""
    pieces = []
    for kind in (HOURS, DAYS, LEDGER):
        of_kind = [(window, span) for window, spans in ranges.items() for k, span in spans if k == kind]
        bounds = sorted({moment for _, span in of_kind for moment in span})
        windows: list[list[str]] = [[] for _ in bounds[1:]]
        for window, (lo, hi) in of_kind:
            for index in range(bisect_left(bounds, lo), bisect_left(bounds, hi)):
                windows[index].append(window)
        pieces += [
            _Piece(kind, lo, hi, tuple(inside))
            for (lo, hi), inside in zip(pairwise(bounds), windows, strict=True)
            if inside
        ]
    return pieces


@dataclass(slots=True)
class _Sum:
    """What one window holds of one class, and where its oldest usage may be."""

    messages: int = 0
    tokens: int = 0
    cost: Decimal = Decimal(0)
    # The first bucket with a message, and the first ledger row, of each piece: as text,
    # parsed only if a reset time is asked for.
    first_buckets: list = field(default_factory=list)
    first_edges: list = field(default_factory=list)


@dataclass(frozen=True)
class _Spans:
    """Where a window's usage is read: the ledger edge, hour buckets, day buckets, hour buckets."""

    edge: Range
    first_hours: Range
    days: Range
    last_hours: Range

    def ranges(self) -> list[tuple[str, Range]]:
        """The non-empty ones, with where each is read."""
        ranges = [(LEDGER, self.edge), (HOURS, self.first_hours), (DAYS, self.days), (HOURS, self.last_hours)]
        return [(kind, (lo, hi)) for kind, (lo, hi) in ranges if lo < hi]


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

    def __init__(
        self, subscription: UserSubscription, now: datetime, *, in_flight_since: datetime | None = None
    ) -> None:
        self.subscription = subscription
        self.now = now
        # Also count the reservations begun since then and not yet settled (read in the same statement).
        self.in_flight_since = in_flight_since
        self.in_flight = 0
        self._hour_firsts: dict[str, str] = {}  # class: its first ledger row in the current hour, as text
        self.used: dict[str, int | Decimal] = {}
        self._sums: dict[Scope, list[_Sum]] = {}
        self._spans: dict[Scope, _Spans] = {}

    def start(self, window: str) -> datetime:
        if window == "period":
            return self.subscription.start_date
        return self.now - WINDOWS[window]

    def _pieces(self) -> tuple[dict[str, _Spans], list[_Piece]]:
        """Each window's spans, and the disjoint pieces the statement reads."""
        spans = {window: _spans(self.start(window), self.now) for window in {window for window, _ in SCOPES}}
        pieces = _cut({window: window_spans.ranges() for window, window_spans in spans.items()})
        if self.in_flight_since is not None:
            pieces.append(_Piece(IN_FLIGHT, self.in_flight_since, self.now + timedelta(seconds=1), ()))
        pieces.append(_Piece(HOUR_FIRSTS, floor_hour(self.now), floor_hour(self.now) + HOUR, ()))
        return spans, pieces

    def statement(self) -> tuple[str, dict]:
        """The one statement `load` runs, with its values."""
        return _sums_statement(self.subscription.user_id, self._pieces()[1])

    def load(self) -> "Usage":
        """Sum every limit in one query: the windows cut into disjoint pieces, each summed once per class."""
        spans, pieces = self._pieces()
        with connection.cursor() as cursor:
            cursor.execute(*_sums_statement(self.subscription.user_id, pieces))
            rows = cursor.fetchall()

        sums: dict[tuple[str, str], _Sum] = {}
        for index, klass, messages, tokens, cost, first in rows:
            piece = pieces[index]
            if piece.kind == IN_FLIGHT:
                self.in_flight = int(messages)
                continue
            if piece.kind == HOUR_FIRSTS:
                if first is not None:
                    self._hour_firsts[klass] = first
                continue
            cost = _decimal(cost)
            for window in piece.windows:
                total = sums.get((window, klass))
                if total is None:
                    total = sums[window, klass] = _Sum()
                total.messages += messages
                total.tokens += tokens
                total.cost += cost
                if first is not None:
                    (total.first_edges if piece.kind == LEDGER else total.first_buckets).append(first)
        for scope in SCOPES:
            window, classes = scope
            self._spans[scope] = spans[window]
            found = self._sums[scope] = [sums[window, klass] for klass in classes if (window, klass) in sums]
            totals = {
                # PostgreSQL sums integers as numeric: counts come back as Decimal.
                "messages": int(sum(total.messages for total in found)),
                "tokens": int(sum(total.tokens for total in found)),
                "cost": sum((total.cost for total in found), Decimal(0)).quantize(COST_PRECISION),
            }
            for limit in _SCOPE_LIMITS[scope]:
                self.used[limit.name] = totals[limit.measure]
        return self

    def _first(self, scope: Scope, *, in_ledger: bool) -> datetime | None:
        """The oldest ledger row the scope reads (`in_ledger`), or its oldest bucket with a message."""
        found = (total.first_edges if in_ledger else total.first_buckets for total in self._sums[scope])
        return min((_datetime(first) for firsts in found for first in firsts), default=None)

    def add(self, *, klass: str, messages: int = 0, tokens: int = 0, cost: Decimal = Decimal(0)) -> None:
        """Count a reservation just made into the loaded totals."""
        for limit in LIMITS:
            if klass in limit.classes:
                self.used[limit.name] += {"messages": messages, "tokens": tokens, "cost": cost}[limit.measure]
        for scope in SCOPES:
            if klass in scope[1] and not any(total.first_edges or total.first_buckets for total in self._sums[scope]):
                self._sums[scope].append(_Sum(first_edges=[self.now]))

    def resets_at(self, limit: Limit) -> datetime | None:
        """When the oldest usage counted by a rolling limit leaves its window (the period's end for period limits)."""
        return self._resets([limit])[limit.name]

    def _oldest(self, scopes: set[Scope]) -> dict[Scope, datetime | None]:
        """The exact time of the oldest usage each scope counts: at most two small queries for all of them."""
        oldest: dict[Scope, datetime | None] = {}
        in_day: dict[Scope, datetime] = {}
        in_hour: dict[Scope, datetime] = {}
        for scope in scopes:
            first_edge = self._first(scope, in_ledger=True)
            # A ledger row of the partial first hour comes before every bucket: then no bucket is looked at.
            first = first_edge or self._first(scope, in_ledger=False)
            if first_edge is not None or first is None:
                oldest[scope] = first
            elif self._spans[scope].days[0] <= first < self._spans[scope].days[1]:
                in_day[scope] = first
            else:
                in_hour[scope] = first
        current_hour = floor_hour(self.now)
        for scope, hour in list(in_hour.items()):
            # Begun in the current hour: its first ledger row came with the sums, so no query.
            if hour == current_hour and self.start(scope[0]) <= hour:
                firsts = [_datetime(self._hour_firsts[klass]) for klass in scope[1] if klass in self._hour_firsts]
                oldest[scope] = min(firsts, default=None) or hour
                del in_hour[scope]
        user_id = self.subscription.user_id
        if in_day:
            # A day bucket: its first hour with usage, from the hour buckets.
            found = _firsts(
                "hour",
                "FROM billing_usagebucket WHERE user_id = %s AND span = 'hour' AND messages > 0",
                user_id,
                [(day, day + DAY, _classes_sql("klass", scope[1])) for scope, day in in_day.items()],
            )
            for (scope, day), first in zip(in_day.items(), found, strict=True):
                in_hour[scope] = _datetime(first) or day
        if in_hour:
            found = _firsts(
                "created_at",
                "FROM billing_usageevent WHERE user_id = %s AND state <> 'released'",
                user_id,
                [
                    (max(hour, self.start(scope[0])), hour + HOUR, _classes_sql(_LEDGER_CLASS, scope[1]))
                    for scope, hour in in_hour.items()
                ],
            )
            for (scope, hour), first in zip(in_hour.items(), found, strict=True):
                # Pruned from the ledger: the bucket's hour is the best we know.
                oldest[scope] = _datetime(first) or hour
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
    if isinstance(value, Decimal):
        return value
    # SQLite adds decimals as floats: its str() is the shortest exact-looking form, and every
    # stored cost has 8 places, so a piece's sum rounded to them is exact.
    return Decimal(str(value)).quantize(COST_PRECISION) if value is not None else Decimal(0)


def _datetime(value) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    parsed = parse_datetime(value)  # SQLite returns text
    return parsed.replace(tzinfo=UTC) if parsed is not None and parsed.tzinfo is None else parsed


def _classes_sql(klass: str, classes: tuple[str, ...]) -> str:
    """`klass` (a column, or _LEDGER_CLASS) is one of `classes`, as SQL (the classes are this module's constants)."""
    return "{} IN ({})".format(klass, ", ".join(f"'{name}'" for name in classes))


def _firsts(column: str, source: str, user_id: int, ranges: list[tuple[datetime, datetime, str]]) -> list:
    """The first `column` of each range (from, until, condition), in one statement reading only the ranges."""
    spans = [f"{column} >= %s AND {column} < %s" for _ in ranges]
    firsts = ", ".join(
        f"MIN({column}) FILTER (WHERE {span} AND {condition})"
        for span, (_, _, condition) in zip(spans, ranges, strict=True)
    )
    anywhere = " OR ".join(f"({span})" for span in spans)
    adapt = connection.ops.adapt_datetimefield_value
    bounds = [value for start, end, _ in ranges for value in (adapt(start), adapt(end))]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {firsts} {source} AND ({anywhere})", [*bounds, user_id, *bounds])
        return list(cursor.fetchone())


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
    limit_name: str = ""  # the SubscriptionType field, for pages that say which limit it is


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
    return Headroom(limit=value, remaining=remaining, resets_at=usage.resets_at(limit), limit_name=limit.name)


def rate_limit_headers(headroom: Headroom | None) -> dict[str, str]:
    """X-RateLimit-Limit/Remaining/Reset for the tightest limit; Reset is a Unix time in seconds."""
    if headroom is None:
        return {}
    headers = {"X-RateLimit-Limit": str(headroom.limit), "X-RateLimit-Remaining": str(headroom.remaining)}
    if headroom.resets_at is not None:
        headers["X-RateLimit-Reset"] = str(math.ceil(headroom.resets_at.timestamp()))
    return headers
