from datetime import timedelta
from decimal import Decimal

import time_machine
from django.utils import timezone

from billing.models import UsageEvent, UserSubscription
from billing.tests.factories import SubscriptionTypeFactory, UsageEventFactory, UserSubscriptionFactory
from chatbots.tests.factories import AIModelFactory
from chatsite.tests.shapes import SESSION_USAGE_KEYS, SUBSCRIPTION_KEYS, SUBSCRIPTION_TYPE_KEYS
from sessions_app.tests.factories import ChatSessionFactory


def test_subscription_in_seed_shape(api_client, user, default_tier):
    response = api_client.get("/api/users/subscription/")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == SUBSCRIPTION_KEYS
    assert set(body["subscription_type"]) == SUBSCRIPTION_TYPE_KEYS
    assert body["subscription_type"]["sku"] == "FREE"
    assert body["subscription_type"]["price"] == "0.00"
    assert body["is_active"] is True


def test_assigned_paid_tier_is_the_current_subscription(api_client, user):
    premium = SubscriptionTypeFactory(
        name="Premium", sku="PREMIUM-001", price=Decimal("99.99"), hourly_max_messages=100
    )
    UserSubscription.objects.filter(user=user).update(is_active=False)
    UserSubscriptionFactory(user=user, subscription_type=premium)

    body = api_client.get("/api/users/subscription/").json()

    assert body["subscription_type"]["name"] == "Premium"
    assert body["subscription_type"]["hourly_max_messages"] == 100


def test_expired_subscription_falls_back_to_the_default_tier(api_client, user, default_tier):
    premium = SubscriptionTypeFactory(sku="PREMIUM", duration_days=30)
    UserSubscription.objects.filter(user=user).delete()
    UserSubscriptionFactory(user=user, subscription_type=premium, start_date=timezone.now() - timedelta(days=31))

    body = api_client.get("/api/users/subscription/").json()

    assert body["subscription_type"]["sku"] == "FREE"


def test_no_subscription_and_no_default_tier_is_403(api_client, user, default_tier):
    default_tier.is_default = False
    default_tier.save()
    UserSubscription.objects.filter(user=user).delete()

    response = api_client.get("/api/users/subscription/")

    assert response.status_code == 403
    assert response.json()["code"] == "no_subscription"


def test_usage_reports_every_limit_with_used_and_reset(api_client, user, default_tier):
    default_tier.hourly_max_messages = 10
    default_tier.daily_max_tokens = 1000
    default_tier.max_openrouter_cost_usd = Decimal("5.00")
    default_tier.save()
    now = timezone.now()
    UsageEventFactory(user=user, billed_tokens=50, state=UsageEvent.State.RELEASED)
    with time_machine.travel(now + timedelta(minutes=30), tick=False):
        UsageEventFactory(user=user, billed_tokens=100, cost_usd=Decimal("0.25"))
    with time_machine.travel(now + timedelta(hours=2), tick=False):
        UsageEventFactory(user=user, billed_tokens=40)
        # Two hours on: the first event has left the hourly window, not the daily one.
        body = api_client.get("/api/users/usage/").json()

    limits = {limit["name"]: limit for limit in body["limits"]}
    assert len(limits) == 20  # 6 windows x (messages, tokens), 2 free-model, 3 period, 3 image
    hourly = limits["hourly_max_messages"]
    assert (hourly["limit"], hourly["used"], hourly["remaining"]) == (10, 1, 9)
    assert hourly["resets_at"].startswith((now + timedelta(hours=3)).isoformat()[:16])
    daily = limits["daily_max_tokens"]
    assert (daily["limit"], daily["used"], daily["remaining"]) == (1000, 140, 860)
    cost = limits["max_openrouter_cost_usd"]
    assert (cost["limit"], cost["remaining"]) == ("5.00", "4.75000000")
    unlimited = limits["weekly_max_messages"]
    assert (unlimited["limit"], unlimited["used"], unlimited["remaining"]) == (0, 2, None)


def test_session_usages_list_in_seed_shape(api_client, chat_session):
    api_client.post(f"/api/chat-sessions/{chat_session.pk}/send/", {"message": "hi"}, format="json")
    ChatSessionFactory()  # someone else's chat

    response = api_client.get("/api/chat-session-usages/")

    assert response.status_code == 200
    body = response.json()
    assert len(body) == 1
    assert set(body[0]) == SESSION_USAGE_KEYS
    assert body[0]["tokens_count"] > 0
    assert body[0]["session"] == chat_session.pk


def test_debug_model_usage_call_records_usage(staff_client, staff, ai_model):
    response = staff_client.post("/api/debug/test-model-usage/?model_name=openai/gpt-4")

    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["message"] == "Model usage tracking test completed"
    assert body["response"]
    recorded = body["usage_recorded"]
    event = UsageEvent.objects.get(pk=recorded["usage_id"])
    assert event.user == staff and event.session is None and event.state == UsageEvent.State.SETTLED
    assert recorded["model_name"] == "openai/gpt-4"
    assert recorded["tokens"] == event.prompt_tokens + event.completion_tokens > 0


def test_debug_model_usage_with_unknown_model_is_400(staff_client):
    response = staff_client.post("/api/debug/test-model-usage/?model_name=nope/none")

    assert response.status_code == 400
    assert response.json()["code"] == "unknown_model"


def test_debug_model_usage_makes_a_real_upstream_call(staff_client, staff, upstream):
    AIModelFactory(model_id="vendor/chat", provider="openai")
    upstream.enqueue_text("Test received.", usage=(21, 4), cost="0.00005")

    body = staff_client.post("/api/debug/test-model-usage/?model_name=vendor/chat").json()

    assert body["response"] == "Test received."
    assert body["usage_recorded"]["tokens"] == 25
    assert body["usage_recorded"]["cost"] == 0.00005
    assert upstream.requests[-1]["json"]["model"] == "vendor/chat"
    assert UsageEvent.objects.get(pk=body["usage_recorded"]["usage_id"]).state == UsageEvent.State.SETTLED


def test_debug_model_usage_reports_an_upstream_failure_and_charges_nothing(staff_client, upstream, settings):
    settings.AI_MAX_RETRIES = 0
    AIModelFactory(model_id="vendor/chat", provider="openai")
    upstream.enqueue_status(500)

    response = staff_client.post("/api/debug/test-model-usage/?model_name=vendor/chat")

    assert response.status_code == 502
    assert response.json()["code"] == "upstream_error"
    assert UsageEvent.objects.get().state == UsageEvent.State.RELEASED
