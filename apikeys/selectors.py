from django.db.models import Count, Q, QuerySet, Sum

from apikeys.models import ApiKey
from billing.models import UsageEvent


def api_key_list(*, user) -> QuerySet[ApiKey]:
    """The user's keys not revoked, newest first, each with what was charged through it (one query)."""
    counted = Q(usage_events__isnull=False) & ~Q(usage_events__state=UsageEvent.State.RELEASED)
    return (
        ApiKey.objects.filter(user=user, revoked_at=None)
        .annotate(
            used_messages=Count("usage_events", filter=counted),
            used_tokens=Sum("usage_events__billed_tokens", filter=counted),
            used_cost=Sum("usage_events__cost_usd", filter=counted),
        )
        .order_by("-created_at", "-id")
    )
