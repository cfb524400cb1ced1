from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.utils import timezone

from billing.models import UsageEvent, UserSubscription
from billing.quotas import Usage
from billing.services import usage_prune
from billing.tests.factories import SubscriptionTypeFactory, UsageEventFactory, UserSubscriptionFactory


def _used(user) -> dict:
    subscription = UserSubscription.objects.select_related("subscription_type").get(user=user, is_active=True)
    return Usage(subscription, timezone.now()).load().used


NOW = datetime(2026, 6, 15, 12, 45, tzinfo=UTC)


@pytest.fixture
def long_period_user(user):
    """A user on a yearly tier that started 100 days ago, with usage spread over those days.

    The period starts at 12:15, so its first row (12:16) lies in the partial first hour
    that the period's sum reads from the ledger.
    """
    traveller = time_machine.travel(NOW, tick=False)
    traveller.start()
    UserSubscription.objects.filter(user=user).update(is_active=False)
    start = timezone.now() - timedelta(days=100, minutes=30)
    UserSubscriptionFactory(user=user, subscription_type=SubscriptionTypeFactory(duration_days=365), start_date=start)
    for days_ago in (100, 99, 80, 45, 31, 20, 5, 0):
        with time_machine.travel(timezone.now() - timedelta(days=days_ago) + timedelta(minutes=1), tick=False):
            UsageEventFactory(user=user, billed_tokens=10 + days_ago)
    yield user
    traveller.stop()


def test_pruning_keeps_every_current_answer(long_period_user):
    before = _used(long_period_user)

    deleted = usage_prune(before=timezone.now())

    assert deleted == 4  # 99, 80, 45 and 31 days ago; the last 31 days and the period's first hour stay
    assert _used(long_period_user) == before
    assert UsageEvent.objects.count() == 4


def test_pruning_keeps_rows_still_reserved(user):
    with time_machine.travel(timezone.now() - timedelta(days=60), tick=False):
        UsageEventFactory(user=user, state=UsageEvent.State.RESERVED)
        UsageEventFactory(user=user)

    assert usage_prune(before=timezone.now()) == 1
    assert UsageEvent.objects.get().state == UsageEvent.State.RESERVED


def test_pruning_respects_the_date_given(long_period_user):
    assert usage_prune(before=timezone.now() - timedelta(days=90)) == 1


def test_prune_usage_command(long_period_user):
    out = StringIO()

    call_command("prune_usage", "--before", timezone.now().date().isoformat(), stdout=out)

    assert "Pruned 4 ledger rows" in out.getvalue()
    assert "are kept" in out.getvalue()


def test_prune_usage_refuses_a_bad_date(db):
    with pytest.raises(CommandError, match="--before"):
        call_command("prune_usage", "--before", "last tuesday")
