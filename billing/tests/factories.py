from datetime import timedelta

import factory
from django.utils import timezone

from billing.models import SubscriptionType, UsageEvent, UserSubscription
from billing.quotas import event_class
from billing.services import _bucket_add


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
    """A ledger row, counted in its hourly bucket as the billing services would."""

    class Meta:
        model = UsageEvent
        skip_postgeneration_save = True

    user = factory.SubFactory("accounts.tests.factories.UserFactory")
    kind = UsageEvent.Kind.MESSAGE
    state = UsageEvent.State.SETTLED
    prompt_tokens = 10
    completion_tokens = 20
    billed_tokens = 30

    @factory.post_generation
    def bucket(obj, create, extracted, **kwargs):
        if create and obj.state != UsageEvent.State.RELEASED:
            _bucket_add(
                user_id=obj.user_id,
                at=obj.created_at,
                klass=event_class(kind=obj.kind, is_free_model=obj.is_free_model),
                messages=1,
                tokens=obj.billed_tokens,
                cost=obj.cost_usd,
            )
