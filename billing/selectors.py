"""Reads of billing: the user's per-session usage and where they stand against every limit."""

from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone

from billing.models import ChatSessionUsage, UserSubscription
from billing.quotas import LimitUsage, Usage


def session_usage_list(*, user) -> QuerySet[ChatSessionUsage]:
    return ChatSessionUsage.objects.filter(user=user).order_by("-updated_at", "-id")


def usage_summary(*, subscription: UserSubscription, now: datetime | None = None) -> list[LimitUsage]:
    """Every limit of the subscription's tier with what is used of it and when it resets."""
    usage = Usage(subscription, now or timezone.now()).load()
    return usage.report(subscription.subscription_type)
