"""Reads of billing: the user's per-session usage and where they stand against every limit."""

from datetime import UTC, date, datetime, timedelta

from django.db import connection
from django.db.models import QuerySet, Sum
from django.utils import timezone

from billing.models import ChatSessionUsage, UsageBucket, UsageEvent, UserSubscription
from billing.quotas import GENERIC_PLAN, LimitUsage, Usage, floor_day
from chatsite.rows import Joined


def session_usage_list(*, user) -> QuerySet[ChatSessionUsage]:
    return ChatSessionUsage.objects.filter(user=user).order_by("-updated_at", "-id")


def subscription_current_get(
    *, user, now: datetime | None = None, lock: bool = False, generic_plan: bool = False
) -> UserSubscription | None:
    """The user's current subscription with its tier, or None: unlike subscription_current, never starts one.

    `user` is a user or a user's id. With `lock`, the row is locked (SELECT ... FOR UPDATE) for
    the caller's transaction. Every reservation begins here, so on PostgreSQL it is one
    statement written once per process rather than a queryset compiled at every call. With
    `generic_plan` (a reservation's), that statement also sets PostgreSQL's generic plans for
    the rest of the transaction (billing.quotas.GENERIC_PLAN), when a subscription is found.
    """
    now = now or timezone.now()
    if connection.vendor == "postgresql":
        return _subscription_current_sql(user=user, now=now, lock=lock, generic_plan=generic_plan)
    subscriptions = UserSubscription.objects.select_related("subscription_type", "user")
    if lock:
        subscriptions = subscriptions.select_for_update(of=("self",))
    return (
        subscriptions.filter(user=user, is_active=True, start_date__lte=now, end_date__gt=now)
        .order_by("-start_date", "-id")
        .first()
    )


_CURRENT = Joined(UserSubscription, "subscription_type")


def _subscription_current_sql(*, user, now: datetime, lock: bool, generic_plan: bool) -> UserSubscription | None:
    is_user = hasattr(user, "pk")
    where = (
        "WHERE m.user_id = %s AND m.is_active AND m.start_date <= %s AND m.end_date > %s "
        "ORDER BY m.start_date DESC, m.id DESC LIMIT 1"
    )
    params = [user.pk if is_user else user, now, now]
    also = GENERIC_PLAN if generic_plan and connection.in_atomic_block else ""
    subscription = _CURRENT.first(where + (" FOR UPDATE OF m" if lock else ""), params, also=also)
    if subscription is not None and is_user:
        subscription.user = user
    return subscription


def usage_summary(*, subscription: UserSubscription, now: datetime | None = None) -> list[LimitUsage]:
    """Every limit of the subscription's tier with what is used of it and when it resets."""
    usage = Usage(subscription, now or timezone.now()).load()
    return usage.report(subscription.subscription_type)


def usage_event_recent(*, user, limit: int = 20) -> list[UsageEvent]:
    """The user's newest ledger rows with their model, newest first."""
    events = UsageEvent.objects.filter(user=user).select_related("ai_model").order_by("-created_at", "-id")
    return list(events[:limit])


def usage_per_day(*, user, days: int = 30, now: datetime | None = None) -> list[tuple[date, int]]:
    """Messages and images charged on each of the last `days` UTC days, oldest first, read from the day buckets."""
    today = floor_day(now or timezone.now())
    first = today - timedelta(days=days - 1)
    totals = (
        UsageBucket.objects.filter(user=user, span=UsageBucket.Span.DAY, hour__gte=first, hour__lte=today)
        .values("hour")
        .annotate(messages=Sum("messages"))
        .order_by()
    )
    by_day = {row["hour"].astimezone(UTC).date(): row["messages"] for row in totals}
    return [(day, int(by_day.get(day, 0))) for day in ((first + timedelta(days=n)).date() for n in range(days))]
