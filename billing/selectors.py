"""Reads of billing: the user's per-session usage and where they stand against every limit."""

from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone

from billing.models import ChatSessionUsage, UserSubscription
from billing.quotas import LimitUsage, Usage


def session_usage_list(*, user) -> QuerySet[ChatSessionUsage]:
    return ChatSessionUsage.objects.filter(user=user).order_by("-updated_at", "-id")


def subscription_current_get(*, user, now: datetime | None = None) -> UserSubscription | None:
    """The user's current subscription, or None: unlike subscription_current, never starts one."""
    now = now or timezone.now()
    return (
        UserSubscription.objects.select_related("subscription_type", "user")
        .filter(user=user, is_active=True, start_date__lte=now, end_date__gt=now)
        .order_by("-start_date", "-id")
        .first()
    )


def usage_summary(*, subscription: UserSubscription, now: datetime | None = None) -> list[LimitUsage]:
    """Every limit of the subscription's tier with what is used of it and when it resets."""
    usage = Usage(subscription, now or timezone.now()).load()
    return usage.report(subscription.subscription_type)
