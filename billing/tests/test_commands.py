from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from billing.models import UserSubscription
from billing.tests.factories import UserSubscriptionFactory

pytestmark = pytest.mark.django_db


def test_expire_subscriptions_deactivates_only_ended_subscriptions(default_tier):
    now = timezone.now()
    ended = UserSubscriptionFactory(start_date=now - timedelta(days=31), end_date=now - timedelta(days=1))
    current = UserSubscriptionFactory(start_date=now - timedelta(days=1), end_date=now + timedelta(days=29))
    future = UserSubscriptionFactory(start_date=now + timedelta(days=1), end_date=now + timedelta(days=31))
    already_off = UserSubscriptionFactory(
        is_active=False, start_date=now - timedelta(days=31), end_date=now - timedelta(days=1)
    )
    out = StringIO()

    call_command("expire_subscriptions", stdout=out)

    assert out.getvalue().strip() == "Expired 1 subscriptions"
    assert set(UserSubscription.objects.filter(is_active=True)) == {current, future}
    assert set(UserSubscription.objects.filter(is_active=False)) == {ended, already_off}


def test_expire_subscriptions_twice_expires_nothing_the_second_time(default_tier):
    now = timezone.now()
    UserSubscriptionFactory(start_date=now - timedelta(days=31), end_date=now - timedelta(days=1))
    call_command("expire_subscriptions", stdout=StringIO())
    out = StringIO()

    call_command("expire_subscriptions", stdout=out)

    assert out.getvalue().strip() == "Expired 0 subscriptions"
