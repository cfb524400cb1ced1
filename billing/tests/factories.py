from datetime import timedelta

import factory
from django.utils import timezone

from billing.models import SubscriptionType, UsageEvent, UserSubscription


class SubscriptionTypeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SubscriptionType

    name = factory.Sequence(lambda n: f"Tier {n}")
    sku = factory.Sequence(lambda n: f"TIER-{n:03d}")
    duration_days = 30


class UserSubscriptionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UserSubscription

    user = factory.SubFactory("accounts.tests.factories.UserFactory")
    subscription_type = factory.SubFactory(SubscriptionTypeFactory)
    start_date = factory.LazyFunction(timezone.now)
    end_date = factory.LazyAttribute(lambda o: o.start_date + timedelta(days=o.subscription_type.duration_days))


class UsageEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UsageEvent

    user = factory.SubFactory("accounts.tests.factories.UserFactory")
    kind = UsageEvent.Kind.MESSAGE
    state = UsageEvent.State.SETTLED
    prompt_tokens = 10
    completion_tokens = 20
    billed_tokens = 30
