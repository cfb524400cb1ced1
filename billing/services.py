"""Writes of billing: subscriptions and the reserve → settle → release cycle of the usage ledger."""

import copy
import math
from datetime import datetime, timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from billing.models import WINDOWS, SubscriptionType, UsageEvent, UserSubscription
from billing.quotas import (
    FREE,
    Headroom,
    Refusal,
    Usage,
    event_class,
    floor_day,
    floor_hour,
    quota_check,
    rate_limit_headers,
    tightest,
)
from billing.selectors import subscription_current_get
from chatsite.errors import NoSubscription, QuotaExceeded, TooManyStreams


@transaction.atomic
def subscription_assign(
    *,
    user,
    subscription_type: SubscriptionType,
    start: datetime | None = None,
    end: datetime | None = None,
    **fields,
) -> UserSubscription:
    """Make `subscription_type` the user's current tier from `start` (default now) to `end` (default
    after its duration_days); `fields` are the new subscription's others (a bought plan's Stripe link)."""
    start = start or timezone.now()
    UserSubscription.objects.filter(user=user, is_active=True).update(is_active=False)
    return UserSubscription.objects.create(
        user=user,
        subscription_type=subscription_type,
        start_date=start,
        end_date=end or start + timedelta(days=subscription_type.duration_days),
        **fields,
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
    current = subscription_current_get(user=user, now=now)
    if current is not None:
        return current
    with transaction.atomic():
        # Lock the user so two first requests do not both start a period.
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        current = subscription_current_get(user=user, now=now)
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
    *,
    user,
    session,
    ai_model,
    kind: str = UsageEvent.Kind.MESSAGE,
    prompt_tokens: int = 0,
    message=None,
    max_in_flight: int = 0,
    in_flight_window: timedelta = timedelta(seconds=90),
    api_key=None,
) -> UsageEvent:
    """Reserve one message (or image) and its estimated prompt tokens, or raise QuotaExceeded.

    With `max_in_flight`, also refuse (TooManyStreams) while the user already has that many
    reservations begun within `in_flight_window` and not yet settled: replies still running.
    The event returned carries `headroom`, the tightest limit left after it. `api_key`: the
    personal API key the call came with (None for the chat pages).
    """
    with transaction.atomic(savepoint=False):
        # Lock the subscription row: concurrent reservations of one user, from any process
        # or server, queue here, and each one checks the usage the previous one committed.
        # The sums below run on PostgreSQL's generic plan (billing.quotas.GENERIC_PLAN), set with the lock.
        subscription = subscription_current_get(user=user, lock=True, generic_plan=True)
        if subscription is None:
            started = subscription_current(user=user).start_date
            subscription = subscription_current_get(user=user, now=started, lock=True, generic_plan=True)
        tier = subscription.subscription_type
        now = timezone.now()
        klass = event_class(kind=kind, is_free_model=ai_model.is_free)
        tokens = billed_tokens(
            prompt_tokens=prompt_tokens, completion_tokens=0, multiplier=ai_model.token_cost_multiplier
        )
        cost = ai_model.price_usd(prompt_tokens, 0) if klass != FREE else Decimal(0)
        in_flight_since = now - in_flight_window if max_in_flight else None
        usage = Usage(subscription, now, in_flight_since=in_flight_since).load()
        if max_in_flight and usage.in_flight >= max_in_flight:
            raise TooManyStreams(f"You have {max_in_flight} replies being generated already; wait for one to finish.")
        refusal = quota_check(usage=usage, tier=tier, klass=klass, tokens=tokens, cost=cost)
        if refusal is not None:
            raise _quota_exceeded(refusal)
        event = UsageEvent(
            user=user,
            session=session,
            message=message,
            api_key=api_key,
            ai_model=ai_model,
            kind=kind,
            is_free_model=ai_model.is_free,
            prompt_tokens=prompt_tokens,
            billed_tokens=tokens,
            state=UsageEvent.State.RESERVED,
            created_at=now,
        )
        if connection.vendor == "postgresql":
            _reserve_counted(event, klass=klass)
        else:
            event.save(force_insert=True)
            _bucket_add(user_id=user.pk, at=now, klass=klass, messages=1, tokens=tokens)
        usage.add(klass=klass, messages=1, tokens=tokens)
        event.headroom = tightest(usage=usage, tier=tier, klass=klass)
        return event


def _quota_exceeded(refusal: Refusal) -> QuotaExceeded:
    limit = refusal.limit
    when = refusal.resets_at.strftime("%Y-%m-%d %H:%M UTC") if refusal.resets_at else "later"
    label = limit.name.replace("_", " ")
    error = QuotaExceeded(
        f"You have reached a usage limit ({label}: {refusal.used} of {refusal.limit_value}). It resets at {when}.",
        limit=limit.name,
        limit_value=_json_number(refusal.limit_value),
        used=_json_number(refusal.used),
        resets_at=refusal.resets_at.isoformat().replace("+00:00", "Z") if refusal.resets_at else None,
    )
    error.headers["Retry-After"] = str(refusal.retry_after)
    error.headers.update(
        rate_limit_headers(Headroom(limit=refusal.limit_value, remaining=0, resets_at=refusal.resets_at))
    )
    return error


def quota_headroom(*, user, ai_model, kind: str = UsageEvent.Kind.MESSAGE) -> Headroom | None:
    """The tightest limit the user has left for this kind of request (no reservation made)."""
    subscription = subscription_current(user=user)
    usage = Usage(subscription, timezone.now()).load()
    klass = event_class(kind=kind, is_free_model=ai_model.is_free)
    return tightest(usage=usage, tier=subscription.subscription_type, klass=klass)


def _json_number(value):
    return str(value) if isinstance(value, Decimal) else value


_BUCKET_UPSERT = """
    INSERT INTO billing_usagebucket (user_id, span, hour, klass, messages, tokens, cost_usd)
    VALUES (%s, 'hour', %s, %s, %s, %s, %s), (%s, 'day', %s, %s, %s, %s, %s)
    ON CONFLICT (user_id, span, hour, klass) DO UPDATE SET
        messages = billing_usagebucket.messages + excluded.messages,
        tokens = billing_usagebucket.tokens + excluded.tokens,
        cost_usd = billing_usagebucket.cost_usd + excluded.cost_usd
"""


def _bucket_add(*, user_id: int, at: datetime, klass: str, messages: int = 0, tokens: int = 0, cost=0) -> None:
    """Count usage made at `at` into its hour bucket and its day bucket, in one statement."""
    adapt = connection.ops.adapt_datetimefield_value
    row = [klass, messages, tokens, Decimal(cost)]
    with connection.cursor() as cursor:
        cursor.execute(_BUCKET_UPSERT, [user_id, adapt(floor_hour(at)), *row, user_id, adapt(floor_day(at)), *row])


def _reserve_counted(event: UsageEvent, *, klass: str) -> None:
    """Insert the reservation `event` and count it into its buckets, in one statement (one round trip, not two)."""
    fields = [field for field in UsageEvent._meta.concrete_fields if not field.primary_key]
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    values = [field.get_db_prep_save(getattr(event, field.attname), connection) for field in fields]
    adapt = connection.ops.adapt_datetimefield_value
    row = [klass, 1, event.billed_tokens, Decimal(0)]
    buckets = [event.user_id, adapt(floor_hour(event.created_at)), *row, event.user_id]
    buckets += [adapt(floor_day(event.created_at)), *row]
    # Every data-modifying part of a WITH runs to its end, read or not.
    sql = (
        f"WITH event AS (INSERT INTO {UsageEvent._meta.db_table} ({columns}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(fields))}) RETURNING id), "
        f"buckets AS ({_BUCKET_UPSERT}) SELECT id FROM event"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, *buckets])
        event.pk = cursor.fetchone()[0]
    event._state.adding = False
    event._state.db = connection.alias


def _event_bucket(event: UsageEvent) -> dict:
    return {
        "user_id": event.user_id,
        "at": event.created_at,
        "klass": event_class(kind=event.kind, is_free_model=event.is_free_model),
    }


# The reserve/settle/release functions run in their caller's transaction when there is one,
# without a savepoint of their own (two round trips each): nothing catches their errors
# inside that transaction, so it is always rolled back whole.
@transaction.atomic(savepoint=False)
def usage_settle(
    *, event: UsageEvent, prompt_tokens: int, completion_tokens: int, cost_usd: Decimal | None = None
) -> UsageEvent:
    """Charge the real token counts and cost of a reply against its reservation.

    `event` is the reservation as it was made: its reserved amounts never change while it
    is reserved, and the update takes the row only while it still is, so a reply is
    never charged twice and no read is needed first. It is left as it is and the settled
    event is returned, so a settle rolled back and tried again counts the difference again.
    """
    event, change = _settled(event, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost_usd=cost_usd)
    if connection.vendor == "postgresql":
        items, params = _settle_items(event, **change)
        with connection.cursor() as cursor:
            cursor.execute(f"WITH {items} SELECT count(*) FROM settled", params)  # noqa: S608 (SQL of this module)
            settled = cursor.fetchone()[0]
    else:
        settled = UsageEvent.objects.filter(pk=event.pk, state=UsageEvent.State.RESERVED).update(
            prompt_tokens=event.prompt_tokens,
            completion_tokens=event.completion_tokens,
            billed_tokens=event.billed_tokens,
            cost_usd=event.cost_usd,
            state=UsageEvent.State.SETTLED,
        )
        if settled:
            _bucket_add(**_event_bucket(event), **change)
            if event.session_id:
                _session_usage_add(event)
    if not settled:
        return UsageEvent.objects.get(pk=event.pk)  # settled or released already
    return event


def usage_settle_sql(
    *, event: UsageEvent, prompt_tokens: int, completion_tokens: int, cost_usd: Decimal | None = None, only_if: str
) -> tuple[UsageEvent, str, list]:
    """`usage_settle` as WITH items of a caller's PostgreSQL statement, which then does more in the same round trip.

    Returns the event as settled, the items and their parameters. The item `settled` holds the
    event's id if the reservation was taken (none if it was settled or released already: the
    caller then reads it). `only_if` is one more condition of the settle, such as whether an
    earlier item of the statement changed a row; nothing is counted unless it holds.
    """
    event, change = _settled(event, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost_usd=cost_usd)
    items, params = _settle_items(event, **change, only_if=only_if)
    return event, items, params


def _settled(
    event: UsageEvent, *, prompt_tokens: int, completion_tokens: int, cost_usd: Decimal | None
) -> tuple[UsageEvent, dict]:
    """A copy of the reservation holding its settled amounts, and what they add to the counters."""
    model = event.ai_model
    multiplier = model.token_cost_multiplier if model else Decimal(1)
    tokens = billed_tokens(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, multiplier=multiplier)
    if cost_usd is None:
        cost_usd = model.price_usd(prompt_tokens, completion_tokens) if model else Decimal(0)
    reserved_tokens, reserved_cost = event.billed_tokens, event.cost_usd
    event = copy.copy(event)
    event.prompt_tokens, event.completion_tokens = prompt_tokens, completion_tokens
    event.billed_tokens, event.cost_usd, event.state = tokens, cost_usd, UsageEvent.State.SETTLED
    return event, {"tokens": tokens - reserved_tokens, "cost": Decimal(cost_usd) - reserved_cost}


# The settle, its buckets and its chat's totals as the WITH items of one statement (one round
# trip, not three): the counters change only if the update took the reservation. The chat's
# totals as in _SESSION_USAGE_UPSERT.
_SETTLE_ITEMS = """settled AS (
        UPDATE billing_usageevent
        SET prompt_tokens = %s, completion_tokens = %s, billed_tokens = %s, cost_usd = %s, state = 'settled'
        WHERE id = %s AND state = 'reserved'{only_if}
        RETURNING id
    ), buckets AS (
        INSERT INTO billing_usagebucket (user_id, span, hour, klass, messages, tokens, cost_usd)
        SELECT %s, spans.span, spans.hour, %s, 0, %s, %s
        FROM settled, (VALUES ('hour', %s::timestamptz), ('day', %s::timestamptz)) AS spans (span, hour)
        ON CONFLICT (user_id, span, hour, klass) DO UPDATE SET
            messages = billing_usagebucket.messages + excluded.messages,
            tokens = billing_usagebucket.tokens + excluded.tokens,
            cost_usd = billing_usagebucket.cost_usd + excluded.cost_usd
    ){session_usage}"""
_SETTLE_SESSION_USAGE = """, session_usage AS (
        INSERT INTO billing_chatsessionusage
            (user_id, session_id, tokens_count, free_model_tokens_count, is_free_model, created_at, updated_at)
        SELECT %s, chat.id, %s, %s, %s, %s, %s FROM settled, sessions_app_chatsession AS chat WHERE chat.id = %s
        ON CONFLICT (session_id) DO UPDATE SET
            tokens_count = billing_chatsessionusage.tokens_count + excluded.tokens_count,
            free_model_tokens_count = billing_chatsessionusage.free_model_tokens_count
                + excluded.free_model_tokens_count,
            is_free_model = excluded.is_free_model,
            updated_at = excluded.updated_at
    )"""


def _settle_items(event: UsageEvent, *, tokens: int, cost: Decimal, only_if: str = "") -> tuple[str, list]:
    """The WITH items settling `event` (holding its settled amounts), counting `tokens` and `cost` more."""
    adapt = connection.ops.adapt_datetimefield_value
    bucket = _event_bucket(event)
    params = [event.prompt_tokens, event.completion_tokens, event.billed_tokens, event.cost_usd, event.pk]
    params += [event.user_id, bucket["klass"], tokens, cost, adapt(floor_hour(event.created_at))]
    params += [adapt(floor_day(event.created_at))]
    session_usage = ""
    if event.session_id:
        session_usage = _SETTLE_SESSION_USAGE
        paid, free = (0, event.billed_tokens) if event.is_free_model else (event.billed_tokens, 0)
        now = adapt(timezone.now())
        params += [event.user_id, paid, free, event.is_free_model, now, now, event.session_id]
    condition = f" AND {only_if}" if only_if else ""
    return _SETTLE_ITEMS.format(only_if=condition, session_usage=session_usage), params


@transaction.atomic(savepoint=False)
def usage_release(*, event: UsageEvent) -> UsageEvent:
    """Give a reservation back: the upstream produced nothing, so nothing is charged."""
    event = UsageEvent.objects.select_for_update().get(pk=event.pk)
    if event.state != UsageEvent.State.RESERVED:
        return event
    _bucket_add(**_event_bucket(event), messages=-1, tokens=-event.billed_tokens, cost=-event.cost_usd)
    event.state = UsageEvent.State.RELEASED
    event.billed_tokens = 0
    event.cost_usd = Decimal(0)
    event.save(update_fields=["state", "billed_tokens", "cost_usd"])
    return event


_SESSION_USAGE_UPSERT = """
    INSERT INTO billing_chatsessionusage
        (user_id, session_id, tokens_count, free_model_tokens_count, is_free_model, created_at, updated_at)
    SELECT %s, id, %s, %s, %s, %s, %s FROM sessions_app_chatsession WHERE id = %s
    ON CONFLICT (session_id) DO UPDATE SET
        tokens_count = billing_chatsessionusage.tokens_count + excluded.tokens_count,
        free_model_tokens_count = billing_chatsessionusage.free_model_tokens_count + excluded.free_model_tokens_count,
        is_free_model = excluded.is_free_model,
        updated_at = excluded.updated_at
"""


def _session_usage_add(event: UsageEvent) -> None:
    """Add a settled event to its chat's running totals, creating them on the first, in one statement.

    Nothing is added if the chat has been deleted since the reservation (its usage stays in the ledger).
    """
    tokens, free = (0, event.billed_tokens) if event.is_free_model else (event.billed_tokens, 0)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(
            _SESSION_USAGE_UPSERT, [event.user_id, tokens, free, event.is_free_model, now, now, event.session_id]
        )


# Rolling windows read ledger rows only in their first, partial hour, never older than this.
LEDGER_KEPT = max(WINDOWS.values()) + timedelta(hours=1)


def usage_prune(*, before: datetime, now: datetime | None = None) -> int:
    """Delete ledger rows older than `before` that no current quota answer reads; return how many.

    Their usage stays counted: the hourly buckets hold every total. Rows are kept
    when a rolling window may still read them (the last 30 days and an hour), when
    they lie in the first, partial hour of their user's current subscription period,
    or while they are still reserved.
    """
    now = now or timezone.now()
    cutoff = min(before, now - LEDGER_KEPT)
    period_edge = UserSubscription.objects.filter(
        user_id=OuterRef("user_id"),
        is_active=True,
        end_date__gt=now,
        start_date__lte=OuterRef("created_at"),
        start_date__gt=OuterRef("created_at") - timedelta(hours=1),
    )
    old = (
        UsageEvent.objects.filter(created_at__lt=cutoff)
        .exclude(state=UsageEvent.State.RESERVED)
        .exclude(Exists(period_edge))
    )
    deleted, _ = old.delete()
    return deleted
