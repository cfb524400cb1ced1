"""Every quota of SPEC 3, enforced through the real send API (and, for the ledger's size and for races, the service).

Time moves with time_machine, never with sleeps. The demo provider answers when only messages
count; the stub upstream answers when exact token counts or costs matter.
"""

import io
import math
import threading
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from billing.models import WINDOWS, SubscriptionType, UsageBucket, UsageEvent, UserSubscription
from billing.quotas import LIMITS, Usage, event_class, floor_day, floor_hour
from billing.selectors import subscription_current_get
from billing.services import (
    subscription_assign,
    subscription_current,
    usage_release,
    usage_reserve,
    usage_settle,
)
from billing.tests.factories import SubscriptionTypeFactory, UsageEventFactory
from chatbots.tests.factories import AIModelFactory, ChatbotFactory
from chatsite.errors import QuotaExceeded
from chatsite.testing.upstream import tiny_png
from sessions_app.models import ChatMessage
from sessions_app.tests.factories import ChatSessionFactory

SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
WINDOW_SPANS = [
    ("hourly", HOUR),
    ("three_hours", 3 * HOUR),
    ("twelve_hours", 12 * HOUR),
    ("daily", DAY),
    ("weekly", 7 * DAY),
    ("monthly", 30 * DAY),
]


@pytest.fixture(autouse=True)
def _sessions_outlive_the_travel(settings):
    # Set before api_client logs in: a month of travelled time must not sign the user out.
    settings.SESSION_COOKIE_AGE = 400 * 24 * 3600


@pytest.fixture
def t0(time_machine):
    """A moment two hours ahead, 34:56 into its hour, with the clock stopped there."""
    start = timezone.now().replace(minute=34, second=56, microsecond=0) + 2 * HOUR
    time_machine.move_to(start, tick=False)
    return start


@pytest.fixture
def stub_model(db):
    return AIModelFactory(provider="openai", model_id="vendor/chat")


@pytest.fixture
def free_stub_model(db):
    return AIModelFactory(provider="openai", model_id="vendor/free-chat", is_free=True)


def limits(tier: SubscriptionType, **values) -> SubscriptionType:
    for name, value in values.items():
        setattr(tier, name, value)
    tier.save()
    return tier


def chat(user, model, chatbot=None):
    # No system prompt by default: a first send's estimated prompt is its own message alone.
    return ChatSessionFactory(user=user, ai_model=model, chatbot=chatbot or ChatbotFactory(system_prompt=""))


def send(client, session, text="Hello", **extra):
    return client.post(f"/api/chat-sessions/{session.pk}/send/", {"message": text, **extra}, format="json")


def text_of(prompt_tokens: int) -> str:
    """A message whose estimated prompt, alone in a chat, is `prompt_tokens` (4 characters a token, 4 of framing)."""
    return "w" * 4 * (prompt_tokens - 4)


def refused(response, limit: str) -> dict:
    assert response.status_code == 429, response.content
    body = response.json()
    assert (body["code"], body["limit"]) == ("quota_exceeded", limit)
    return body


def created(response):
    assert response.status_code == 201, response.content
    return response


def moment(value: str) -> datetime:
    return datetime.fromisoformat(value)


# 1. Message limits, each on its own, over a rolling window.


@pytest.mark.parametrize(("window", "span"), WINDOW_SPANS, ids=[w for w, _ in WINDOW_SPANS])
def test_each_message_limit_refuses_the_next_send_until_its_window_slides_past_the_first(
    api_client, user, default_tier, chat_session, time_machine, t0, window, span
):
    name = f"{window}_max_messages"
    limits(default_tier, **{name: 3})
    created(send(api_client, chat_session))
    time_machine.move_to(t0 + 40 * MINUTE)  # into the next hour: counted from a whole bucket
    created(send(api_client, chat_session))
    created(send(api_client, chat_session))

    body = refused(send(api_client, chat_session), name)
    assert (body["limit_value"], body["used"]) == (3, 3)
    assert moment(body["resets_at"]) == t0 + span

    time_machine.move_to(t0 + span - SECOND)
    refused(send(api_client, chat_session), name)

    # The first send leaves the window; the two later ones are still in it.
    time_machine.move_to(t0 + span + SECOND)
    created(send(api_client, chat_session))
    body = refused(send(api_client, chat_session), name)
    assert body["used"] == 3
    assert moment(body["resets_at"]) == t0 + 40 * MINUTE + span


# 2. Token limits: the estimated prompt may not pass the limit; the reply may.

TOKEN_LIMITS = [
    *[pytest.param(f"{w}_max_tokens", False, span, id=f"{w}_max_tokens") for w, span in WINDOW_SPANS],
    pytest.param("max_tokens", False, None, id="max_tokens"),
    pytest.param("monthly_free_model_tokens", True, 30 * DAY, id="monthly_free_model_tokens"),
    pytest.param("max_tokens_free", True, None, id="max_tokens_free"),
]


@pytest.mark.parametrize(("name", "is_free", "span"), TOKEN_LIMITS)
def test_each_token_limit_refuses_a_send_whose_estimated_prompt_would_pass_it(
    api_client, user, default_tier, upstream, time_machine, t0, name, is_free, span
):
    # A 60-day period: a period limit still refuses after every 30-day window has slid by.
    limits(default_tier, duration_days=60, **{name: 100})
    subscription_assign(user=user, subscription_type=default_tier)
    model = AIModelFactory(provider="openai", is_free=is_free)

    upstream.enqueue_text("First.", usage=(5, 85))
    created(send(api_client, chat(user, model), text_of(5)))

    body = refused(send(api_client, chat(user, model), text_of(11)), name)  # 90 + 11 > 100
    assert (body["limit_value"], body["used"]) == (100, 90)

    upstream.enqueue_text("Second.", usage=(10, 30))
    created(send(api_client, chat(user, model), text_of(10)))  # 90 + 10 = 100: allowed

    # The reply took the total past the limit: 90 + 40.
    body = refused(send(api_client, chat(user, model), text_of(5)), name)
    assert body["used"] == 130

    if span is None:
        time_machine.move_to(t0 + 31 * DAY)
        refused(send(api_client, chat(user, model), text_of(5)), name)
        time_machine.move_to(t0 + 60 * DAY)  # the period's end: a new period starts
    else:
        time_machine.move_to(t0 + span - SECOND)
        refused(send(api_client, chat(user, model), text_of(5)), name)
        time_machine.move_to(t0 + span + SECOND)
    upstream.enqueue_text("Again.", usage=(5, 5))
    created(send(api_client, chat(user, model), text_of(5)))


# 3. Free and paid models are counted apart.


def test_a_free_model_counts_only_in_the_free_limits(
    api_client, user, default_tier, upstream, stub_model, free_stub_model, t0
):
    paid_limits = {f"{w}_max_messages": 1 for w, _ in WINDOW_SPANS} | {f"{w}_max_tokens": 100 for w, _ in WINDOW_SPANS}
    limits(
        default_tier,
        **paid_limits,
        max_tokens=100,
        max_openrouter_cost_usd=Decimal("0.10"),
        monthly_free_model_messages=2,
        monthly_free_model_tokens=1000,
        max_tokens_free=1000,
    )
    for _ in range(2):
        upstream.enqueue_text("Free.", usage=(5, 200), cost="0.50")
        created(send(api_client, chat(user, free_stub_model), text_of(5)))
    refused(send(api_client, chat(user, free_stub_model), text_of(5)), "monthly_free_model_messages")

    # 2 free messages and 410 free tokens later, every paid limit is still untouched.
    upstream.enqueue_text("Paid.", usage=(5, 10))
    created(send(api_client, chat(user, stub_model), text_of(5)))

    used = {item["name"]: item["used"] for item in api_client.get("/api/users/usage/").json()["limits"]}
    for name in paid_limits:
        assert used[name] == (1 if name.endswith("messages") else 15), name
    assert used["max_tokens"] == 15
    assert Decimal(used["max_openrouter_cost_usd"]) == 0
    free = (used["monthly_free_model_messages"], used["monthly_free_model_tokens"], used["max_tokens_free"])
    assert free == (2, 410, 410)


def test_a_paid_model_never_counts_in_the_free_limits(
    api_client, user, default_tier, upstream, stub_model, free_stub_model, t0
):
    limits(default_tier, monthly_free_model_messages=1, monthly_free_model_tokens=100, max_tokens_free=100)
    for _ in range(3):
        upstream.enqueue_text("Paid.", usage=(5, 200))
        created(send(api_client, chat(user, stub_model), text_of(5)))

    upstream.enqueue_text("Free.", usage=(5, 10))
    created(send(api_client, chat(user, free_stub_model), text_of(5)))
    body = refused(send(api_client, chat(user, free_stub_model), text_of(5)), "monthly_free_model_messages")
    assert body["used"] == 1

    used = {item["name"]: item["used"] for item in api_client.get("/api/users/usage/").json()["limits"]}
    assert (used["monthly_free_model_tokens"], used["max_tokens_free"]) == (15, 15)
    assert (used["hourly_max_messages"], used["max_tokens"]) == (3, 615)


# 4. The model's token multiplier.


@pytest.mark.parametrize(
    ("multiplier", "usage", "billed"),
    [("1.50", (7, 4), 17), ("2.00", (10, 5), 30), ("0.33", (10, 1), 4), ("1.00", (12, 5), 17)],
)
def test_billed_tokens_are_the_tokens_times_the_multiplier_rounded_up(
    api_client, user, upstream, multiplier, usage, billed
):
    model = AIModelFactory(provider="openai", token_cost_multiplier=Decimal(multiplier))
    upstream.enqueue_text("Reply.", usage=usage)

    created(send(api_client, chat(user, model), text_of(5)))

    event = UsageEvent.objects.get()
    assert (event.prompt_tokens, event.completion_tokens, event.billed_tokens) == (*usage, billed)


def test_billed_tokens_count_toward_token_limits(api_client, user, default_tier, upstream, t0):
    limits(default_tier, hourly_max_tokens=40)
    model = AIModelFactory(provider="openai", token_cost_multiplier=Decimal("1.50"))
    upstream.enqueue_text("Reply.", usage=(7, 4))
    created(send(api_client, chat(user, model), text_of(5)))

    # The estimate is billed too: 17 + ceil(16 x 1.5) = 41 > 40 (unmultiplied, 11 + 16 would pass).
    body = refused(send(api_client, chat(user, model), text_of(16)), "hourly_max_tokens")
    assert body["used"] == 17
    upstream.enqueue_text("Reply.", usage=(15, 0))
    created(send(api_client, chat(user, model), text_of(15)))  # 17 + ceil(15 x 1.5) = 40

    body = refused(send(api_client, chat(user, model), text_of(5)), "hourly_max_tokens")
    assert body["used"] == 17 + 23  # ceil(15 x 1.5)


# 5. The cost cap over the subscription period.


@pytest.mark.parametrize(
    ("prices", "replies"),
    [
        pytest.param(("0", "0"), [((10, 10), "0.03"), ((10, 5), "0.02")], id="reported-by-the-upstream"),
        # 10 x $1000/M + 10 x $2000/M = $0.03, then 10 x $1000/M + 5 x $2000/M = $0.02.
        pytest.param(("1000", "2000"), [((10, 10), None), ((10, 5), None)], id="priced-from-the-model"),
    ],
)
def test_the_cost_cap_refuses_once_the_recorded_cost_reaches_it(
    api_client, user, default_tier, upstream, t0, prices, replies
):
    limits(default_tier, max_openrouter_cost_usd=Decimal("0.05"))
    model = AIModelFactory(
        provider="openai", prompt_price_per_million=Decimal(prices[0]), completion_price_per_million=Decimal(prices[1])
    )
    for usage, cost in replies:
        upstream.enqueue_text("Reply.", usage=usage, cost=cost)
        created(send(api_client, chat(user, model), text_of(5)))
    assert sum(UsageEvent.objects.values_list("cost_usd", flat=True)) == Decimal("0.05")

    body = refused(send(api_client, chat(user, model), text_of(5)), "max_openrouter_cost_usd")
    assert (body["limit_value"], body["used"]) == ("0.05", "0.05000000")
    assert moment(body["resets_at"]) == subscription_current(user=user).end_date


def test_an_image_counts_in_the_cost_cap_and_a_free_model_does_not(
    api_client, user, default_tier, upstream, stub_model, free_stub_model, settings, t0
):
    settings.AI_IMAGE_API = "chat"
    limits(default_tier, max_openrouter_cost_usd=Decimal("0.05"))
    painter = AIModelFactory(provider="openai", model_type="image")
    images = chat(user, painter, ChatbotFactory(chatbot_type="image"))
    upstream.enqueue_image(tiny_png(), via="chat", cost="0.05")
    created(send(api_client, images, "a red square"))

    refused(send(api_client, images, "a blue square"), "max_openrouter_cost_usd")
    refused(send(api_client, chat(user, stub_model)), "max_openrouter_cost_usd")
    upstream.enqueue_text("Free.", usage=(5, 5), cost="0.01")
    created(send(api_client, chat(user, free_stub_model)))


# 6. Image limits.

IMAGE_SPANS = [("daily", DAY), ("weekly", 7 * DAY), ("monthly", 30 * DAY)]


@pytest.fixture
def image_session(user):
    return chat(user, AIModelFactory(model_type="image"), ChatbotFactory(chatbot_type="image"))


@pytest.mark.parametrize(("window", "span"), IMAGE_SPANS, ids=[w for w, _ in IMAGE_SPANS])
def test_each_image_limit_refuses_the_next_image_until_its_window_slides_past_the_first(
    api_client, user, default_tier, image_session, time_machine, t0, window, span
):
    name = f"{window}_image_generation_limit"
    limits(default_tier, **{name: 2})
    created(send(api_client, image_session, "a red square"))
    time_machine.move_to(t0 + 40 * MINUTE)
    created(send(api_client, image_session, "a green square"))

    body = refused(send(api_client, image_session, "a blue square"), name)
    assert (body["limit_value"], body["used"], moment(body["resets_at"])) == (2, 2, t0 + span)

    time_machine.move_to(t0 + span - SECOND)
    refused(send(api_client, image_session, "a blue square"), name)
    time_machine.move_to(t0 + span + SECOND)
    created(send(api_client, image_session, "a blue square"))
    refused(send(api_client, image_session, "a black square"), name)


def test_image_limits_count_only_images_and_message_limits_only_messages(
    api_client, user, default_tier, image_session, chat_session, t0
):
    limits(default_tier, hourly_max_messages=1, daily_image_generation_limit=1)

    created(send(api_client, image_session, "a red square"))
    created(send(api_client, chat_session))

    refused(send(api_client, image_session, "a blue square"), "daily_image_generation_limit")
    refused(send(api_client, chat_session), "hourly_max_messages")
    assert UsageEvent.objects.filter(kind=UsageEvent.Kind.IMAGE).count() == 1
    assert UsageEvent.objects.filter(kind=UsageEvent.Kind.MESSAGE).count() == 1


# 7. Zero means unlimited.


def test_a_tier_of_all_zeros_is_unlimited(api_client, user, default_tier, chat_session):
    assert all(not getattr(default_tier, limit.name) for limit in LIMITS)

    for _ in range(50):
        response = created(send(api_client, chat_session))

    assert UsageEvent.objects.filter(user=user).count() == 50
    assert "X-RateLimit-Limit" not in response.headers


# 8-10. What is charged when a send fails, is retried, or its chat goes.


def test_an_upstream_failure_before_any_token_charges_nothing(
    api_client, user, default_tier, upstream, stub_model, settings, time_machine, t0
):
    settings.AI_MAX_RETRIES = 0
    limits(default_tier, hourly_max_messages=1, hourly_max_tokens=1000)
    session = chat(user, stub_model)
    upstream.enqueue_status(500)

    assert send(api_client, session).status_code == 502

    event = UsageEvent.objects.get()
    assert (event.state, event.billed_tokens, event.cost_usd) == (UsageEvent.State.RELEASED, 0, 0)

    def hourly_used():
        report = {item["name"]: item for item in api_client.get("/api/users/usage/").json()["limits"]}
        return report["hourly_max_messages"]["used"], report["hourly_max_tokens"]["used"]

    assert hourly_used() == (0, 0)  # read from the failed send's hourly bucket
    time_machine.move_to(t0 + 30 * MINUTE)
    assert hourly_used() == (0, 0)  # read from the ledger: the window now starts inside that hour
    upstream.enqueue_text("Back.", usage=(5, 5))
    created(send(api_client, session))
    refused(send(api_client, session), "hourly_max_messages")


def test_an_idempotent_replay_is_charged_once(api_client, user, default_tier, chat_session, t0):
    limits(default_tier, hourly_max_messages=1)
    key = str(uuid.uuid4())

    first = created(send(api_client, chat_session, "Once", client_message_id=key))
    again = created(send(api_client, chat_session, "Once", client_message_id=key))

    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert UsageEvent.objects.filter(user=user).count() == 1
    refused(send(api_client, chat_session, "Something else"), "hourly_max_messages")


def test_deleting_a_chat_keeps_its_usage(api_client, user, default_tier, ai_model, chat_session, t0):
    limits(default_tier, hourly_max_messages=2)
    created(send(api_client, chat_session))
    created(send(api_client, chat_session))

    assert api_client.delete(f"/api/chat-sessions/{chat_session.pk}/").json() == {"success": True}

    assert UsageEvent.objects.filter(user=user, session=None).count() == 2
    refused(send(api_client, chat(user, ai_model)), "hourly_max_messages")


# 11. The refusal and the rate-limit headers.


def test_a_refusal_is_429_with_the_limit_its_usage_and_when_it_resets(
    api_client, user, default_tier, chat_session, time_machine, t0
):
    limits(default_tier, hourly_max_messages=2, daily_max_messages=50)
    created(send(api_client, chat_session))
    time_machine.move_to(t0 + 20 * MINUTE)
    created(send(api_client, chat_session))
    time_machine.move_to(t0 + 30 * MINUTE)
    messages, events = ChatMessage.objects.count(), UsageEvent.objects.count()

    response = send(api_client, chat_session, "One too many")

    assert response.status_code == 429
    body = response.json()
    assert set(body) == {"detail", "code", "limit", "limit_value", "used", "resets_at"}
    assert body["detail"]
    assert (body["code"], body["limit"], body["limit_value"], body["used"]) == (
        "quota_exceeded",
        "hourly_max_messages",
        2,
        2,
    )
    assert moment(body["resets_at"]) == t0 + HOUR  # the oldest counted send + the window
    assert response.headers["Retry-After"] == "1800"
    assert response.headers["X-RateLimit-Limit"] == "2"
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert response.headers["X-RateLimit-Reset"] == str(math.ceil((t0 + HOUR).timestamp()))
    assert (ChatMessage.objects.count(), UsageEvent.objects.count()) == (messages, events)

    # Retry-After rounds up and never says 0.
    time_machine.move_to(t0 + HOUR - timedelta(milliseconds=300))
    assert send(api_client, chat_session).headers["Retry-After"] == "1"


def test_a_send_reports_the_tightest_limit_in_its_rate_limit_headers(
    api_client, user, default_tier, chat_session, time_machine, t0
):
    limits(default_tier, hourly_max_messages=10, daily_max_messages=100)
    created(send(api_client, chat_session))
    time_machine.move_to(t0 + 5 * MINUTE)
    created(send(api_client, chat_session))

    response = created(send(api_client, chat_session))

    assert response.headers["X-RateLimit-Limit"] == "10"
    assert response.headers["X-RateLimit-Remaining"] == "7"
    assert response.headers["X-RateLimit-Reset"] == str(math.ceil((t0 + HOUR).timestamp()))


# 12. Subscriptions.


def test_without_a_subscription_or_a_default_tier_a_send_is_403(api_client, user, default_tier, chat_session):
    limits(default_tier, is_default=False)
    UserSubscription.objects.filter(user=user).delete()

    response = send(api_client, chat_session)

    assert response.status_code == 403
    assert response.json()["code"] == "no_subscription"
    assert not ChatMessage.objects.exists()
    assert not UsageEvent.objects.exists()


def test_an_expired_paid_subscription_falls_back_to_the_default_tiers_limits(
    api_client, user, default_tier, chat_session, time_machine, t0
):
    limits(default_tier, hourly_max_messages=1)
    paid = subscription_assign(
        user=user, subscription_type=SubscriptionTypeFactory(price=Decimal("9.99"), hourly_max_messages=5)
    )
    for _ in range(3):
        created(send(api_client, chat_session))

    time_machine.move_to(paid.end_date + SECOND)
    created(send(api_client, chat_session))
    body = refused(send(api_client, chat_session), "hourly_max_messages")

    assert body["limit_value"] == 1
    assert subscription_current(user=user).subscription_type == default_tier


def test_expire_subscriptions_marks_ended_subscriptions_inactive(user, default_tier, time_machine, t0):
    paid = subscription_assign(user=user, subscription_type=SubscriptionTypeFactory(duration_days=30))
    out = io.StringIO()

    time_machine.move_to(paid.end_date - SECOND)
    call_command("expire_subscriptions", stdout=out)
    paid.refresh_from_db()
    assert paid.is_active

    time_machine.move_to(paid.end_date)
    call_command("expire_subscriptions", stdout=out)
    paid.refresh_from_db()
    assert not paid.is_active
    assert out.getvalue().split("\n")[:2] == ["Expired 0 subscriptions", "Expired 1 subscriptions"]


# 13. What the usage endpoint reports.


def test_the_usage_endpoint_reports_what_was_sent(
    api_client, user, default_tier, upstream, stub_model, time_machine, t0
):
    limits(default_tier, hourly_max_messages=5, daily_max_tokens=1000)
    upstream.enqueue_text("One.", usage=(5, 20))
    created(send(api_client, chat(user, stub_model), text_of(5)))
    time_machine.move_to(t0 + 10 * MINUTE)
    upstream.enqueue_text("Two.", usage=(5, 30))
    created(send(api_client, chat(user, stub_model), text_of(5)))
    time_machine.move_to(t0 + 20 * MINUTE)

    body = api_client.get("/api/users/usage/").json()

    report = {item["name"]: item for item in body["limits"]}
    assert {item["name"] for item in body["limits"]} == {limit.name for limit in LIMITS}

    def seen(name):
        item = report[name]
        resets_at = moment(item["resets_at"]) if item["resets_at"] else None
        return item["limit"], item["used"], item["remaining"], resets_at

    end = subscription_current(user=user).end_date
    assert seen("hourly_max_messages") == (5, 2, 3, t0 + HOUR)
    assert seen("daily_max_tokens") == (1000, 60, 940, t0 + DAY)
    assert seen("weekly_max_messages") == (0, 2, None, t0 + 7 * DAY)
    assert seen("max_tokens") == (0, 60, None, end)
    assert seen("monthly_free_model_messages") == (0, 0, None, None)


# 14. The cost of a check does not grow with the ledger.


def _ledger_fill(user, models, now, rows=2000):
    """`rows` settled, released, paid, free and image events over the last 40 days, with their hourly buckets."""
    span = 40 * DAY
    events = []
    for i in range(rows - 2):
        klass = i % 3
        released = i % 10 == 9
        events.append(
            UsageEvent(
                user=user,
                ai_model=models[klass],
                kind=UsageEvent.Kind.IMAGE if klass == 2 else UsageEvent.Kind.MESSAGE,
                is_free_model=klass == 1,
                prompt_tokens=10,
                completion_tokens=i % 50,
                billed_tokens=0 if released else 10 + i % 50,
                cost_usd=Decimal(0) if released or klass == 1 else Decimal(i % 7) / 1000,
                state=UsageEvent.State.RELEASED if released else UsageEvent.State.SETTLED,
                created_at=now - span * (i + 0.5) / rows,
            )
        )
    # One paid event exactly at the daily window's start (counted), one a microsecond before (not).
    for created_at in (now - DAY, now - DAY - timedelta(microseconds=1)):
        events.append(
            UsageEvent(
                user=user, ai_model=models[0], billed_tokens=1000, state=UsageEvent.State.SETTLED, created_at=created_at
            )
        )
    UsageEvent.objects.bulk_create(events)

    buckets = {}
    for event in events:
        if event.state == UsageEvent.State.RELEASED:
            continue
        klass = event_class(kind=event.kind, is_free_model=event.is_free_model)
        for span, start in (("hour", floor_hour(event.created_at)), ("day", floor_day(event.created_at))):
            bucket = buckets.setdefault(
                (span, start, klass),
                UsageBucket(user=user, span=span, hour=start, klass=klass, cost_usd=Decimal(0)),
            )
            bucket.messages += 1
            bucket.tokens += event.billed_tokens
            bucket.cost_usd += event.cost_usd
    UsageBucket.objects.bulk_create(buckets.values())


def test_a_quota_check_costs_the_same_queries_with_an_empty_or_a_long_ledger(
    user, other_user, default_tier, django_assert_max_num_queries, time_machine
):
    now = timezone.now().replace(minute=17, second=3, microsecond=250000)
    time_machine.move_to(now, tick=False)
    # Every limit on, and the three-hour one the tightest, so the check and the headroom do all their work.
    tier = SubscriptionTypeFactory(
        duration_days=365, **({limit.name: 10**9 for limit in LIMITS} | {"three_hours_max_messages": 10})
    )
    subscription = subscription_assign(user=user, subscription_type=tier, start=now - 35 * DAY)
    subscription_assign(user=other_user, subscription_type=tier)
    paid, free, image = AIModelFactory(), AIModelFactory(is_free=True), AIModelFactory(model_type="image")
    _ledger_fill(user, [paid, free, image], now)
    assert UsageEvent.objects.filter(user=user).count() == 2000

    # Queries, 7 at most either way: savepoint; the current subscription, locked FOR UPDATE;
    # every limit's sums (buckets and the ledger's partial first hours, one statement); the new
    # ledger row; the upsert of its hour and day buckets; with a long ledger, the exact time of
    # the oldest send the tightest limit counts (here inside a whole hour bucket); release savepoint.
    with django_assert_max_num_queries(7):
        usage_reserve(user=other_user, session=None, ai_model=paid)
    with django_assert_max_num_queries(7):
        event = usage_reserve(user=user, session=None, ai_model=paid)

    # Paid sends 14 and 100 minutes ago, and this one: 3 of 10; the older of the two leaves first.
    assert (event.headroom.limit, event.headroom.remaining) == (10, 7)
    assert event.headroom.resets_at == now - 100.8 * MINUTE + 3 * HOUR

    # And the buckets' totals are exactly the ledger's.
    used = Usage(subscription, now).load().used
    counted = UsageEvent.objects.filter(user=user).exclude(state=UsageEvent.State.RELEASED)
    paid_rows = counted.filter(kind=UsageEvent.Kind.MESSAGE, is_free_model=False)
    free_rows = counted.filter(kind=UsageEvent.Kind.MESSAGE, is_free_model=True)
    images = counted.filter(kind=UsageEvent.Kind.IMAGE)
    daily_tokens = paid_rows.filter(created_at__gte=now - DAY).aggregate(t=Sum("billed_tokens"))["t"]
    assert used["daily_max_tokens"] == daily_tokens
    assert used["three_hours_max_messages"] == paid_rows.filter(created_at__gte=now - 3 * HOUR).count()
    assert used["weekly_max_messages"] == paid_rows.filter(created_at__gte=now - 7 * DAY).count()
    assert (
        used["monthly_free_model_tokens"]
        == free_rows.filter(created_at__gte=now - 30 * DAY).aggregate(t=Sum("billed_tokens"))["t"]
    )
    assert used["monthly_image_generation_limit"] == images.filter(created_at__gte=now - 30 * DAY).count()
    period = counted.filter(created_at__gte=subscription.start_date)
    # Summed in Python: SQLite sums decimals as floats.
    costs = period.filter(Q(kind=UsageEvent.Kind.IMAGE) | Q(is_free_model=False)).values_list("cost_usd", flat=True)
    assert used["max_openrouter_cost_usd"] == sum(costs)
    assert (
        used["max_tokens"]
        == paid_rows.filter(created_at__gte=subscription.start_date).aggregate(t=Sum("billed_tokens"))["t"]
    )


def _counted(user, limit, start):
    """What `limit` counts from `start` on, and its oldest row, straight from the ledger."""
    rows = UsageEvent.objects.filter(user=user, created_at__gte=start).exclude(state=UsageEvent.State.RELEASED)
    rows = rows.filter(
        (Q(kind=UsageEvent.Kind.IMAGE) if "image" in limit.classes else Q(pk__in=[]))
        | (Q(kind=UsageEvent.Kind.MESSAGE, is_free_model=False) if "paid" in limit.classes else Q(pk__in=[]))
        | (Q(kind=UsageEvent.Kind.MESSAGE, is_free_model=True) if "free" in limit.classes else Q(pk__in=[]))
    )
    values = list(rows.values_list("billed_tokens", "cost_usd", "created_at"))
    # Summed in Python: SQLite sums decimals as floats.
    used = {"messages": len(values), "tokens": sum(v[0] for v in values), "cost": sum(v[1] for v in values)}
    return used[limit.measure], min((v[2] for v in values), default=None)


# Moments after the newest row (so "now" is really now): early and late in an hour (long and
# short partial first hours), on and around hour and day boundaries.
MOMENTS = {
    "early in the hour": lambda base: base,
    "late in the hour": lambda base: base + 30 * MINUTE,
    "on the hour": lambda base: floor_hour(base) + HOUR,
    "a microsecond before the hour": lambda base: floor_hour(base) + HOUR - timedelta(microseconds=1),
    "a microsecond past midnight": lambda base: floor_day(base) + DAY + timedelta(microseconds=1),
    "a day later": lambda base: base + DAY + 11 * MINUTE,
}


@pytest.mark.parametrize(
    "period_start",
    [
        # The period's partial first hour is the weekly window's, a few minutes earlier: their ledger reads overlap.
        pytest.param(lambda now: now - 7 * DAY - 5 * MINUTE, id="in-the-weekly-windows-first-hour"),
        pytest.param(lambda now: now - 7 * DAY, id="with-the-weekly-window"),
        pytest.param(lambda now: floor_day(now) - 9 * DAY, id="at-a-midnight"),
        pytest.param(lambda now: now - 35 * DAY, id="before-the-monthly-window"),
        pytest.param(lambda now: now - 20 * MINUTE, id="twenty-minutes-ago"),
    ],
)
def test_every_limit_counts_exactly_its_window_of_the_ledger_and_resets_with_its_oldest_row(
    user, default_tier, django_assert_num_queries, period_start
):
    base = timezone.now().replace(minute=17, second=3, microsecond=250000)
    paid, free, image = AIModelFactory(), AIModelFactory(is_free=True), AIModelFactory(model_type="image")
    _ledger_fill(user, [paid, free, image], base)

    for name, moment in MOMENTS.items():
        now = moment(base)
        subscription = UserSubscription(user=user, subscription_type=default_tier, start_date=period_start(now))
        with django_assert_num_queries(1):  # every limit's sums, in one statement
            usage = Usage(subscription, now).load()
        for limit in LIMITS:
            used, oldest = _counted(user, limit, usage.start(limit.window))
            assert usage.used[limit.name] == used, (name, limit.name)
            if limit.window != "period":
                assert usage.resets_at(limit) == (oldest + WINDOWS[limit.window] if used else None), (name, limit.name)


@pytest.mark.parametrize("minute", [17, 47], ids=["early-in-the-hour", "late-in-the-hour"])
def test_a_reset_time_needs_no_more_queries_when_the_oldest_usage_is_in_the_first_hour(
    user, default_tier, django_assert_num_queries, minute
):
    now = timezone.now().replace(minute=minute, second=3, microsecond=250000)
    models = {
        "paid": AIModelFactory(),
        "free": AIModelFactory(is_free=True),
        "image": AIModelFactory(model_type="image"),
    }
    # Of every class, a row a minute into each rolling window, and one a minute before it.
    for span in WINDOWS.values():
        for klass, model in models.items():
            for at in (now - span + MINUTE, now - span - MINUTE):
                kind = UsageEvent.Kind.IMAGE if klass == "image" else UsageEvent.Kind.MESSAGE
                UsageEventFactory(user=user, ai_model=model, kind=kind, is_free_model=klass == "free", created_at=at)
    subscription = UserSubscription(user=user, subscription_type=default_tier, start_date=now - 40 * DAY)

    with django_assert_num_queries(1):
        usage = Usage(subscription, now).load()
        for limit in LIMITS:
            if limit.window != "period":
                assert usage.resets_at(limit) == now + MINUTE, limit.name
    for limit in LIMITS:
        assert usage.used[limit.name] == _counted(user, limit, usage.start(limit.window))[0], limit.name


def test_a_released_send_is_never_the_oldest_usage(user, default_tier, time_machine, t0):
    paid = AIModelFactory()
    usage_release(event=usage_reserve(user=user, session=None, ai_model=paid))  # its hour's buckets back to zero
    time_machine.move_to(t0 + 2 * HOUR)
    usage_reserve(user=user, session=None, ai_model=paid)
    now = t0 + 5 * HOUR

    usage = Usage(subscription_current(user=user), now).load()

    daily = next(limit for limit in LIMITS if limit.name == "daily_max_messages")
    assert (usage.used[daily.name], usage.resets_at(daily)) == (1, t0 + 2 * HOUR + DAY)


def test_a_settle_rolled_back_and_tried_again_counts_its_tokens_and_cost_once(user, default_tier, t0):
    paid = AIModelFactory(prompt_price_per_million=Decimal(1), completion_price_per_million=Decimal(2))
    event = usage_reserve(user=user, session=None, ai_model=paid, prompt_tokens=5)
    with pytest.raises(RuntimeError), transaction.atomic():
        usage_settle(event=event, prompt_tokens=9, completion_tokens=30)
        raise RuntimeError("the connection died before the commit")

    settled = usage_settle(event=event, prompt_tokens=9, completion_tokens=30)

    assert (event.state, event.billed_tokens) == (UsageEvent.State.RESERVED, 5)  # the reservation, unchanged
    assert (settled.state, settled.billed_tokens, settled.cost_usd) == (
        UsageEvent.State.SETTLED,
        39,
        paid.price_usd(9, 30),
    )
    for span in (UsageBucket.Span.HOUR, UsageBucket.Span.DAY):
        counted = UsageBucket.objects.filter(user=user, span=span).aggregate(
            messages=Sum("messages"), tokens=Sum("tokens"), cost=Sum("cost_usd")
        )
        assert counted == {"messages": 1, "tokens": 39, "cost": paid.price_usd(9, 30)}, span


# 15. Races between concurrent sends.


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks between connections need PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_concurrent_reservations_never_pass_the_limit(user, default_tier, ai_model):
    limits(default_tier, hourly_max_messages=5)
    threads_count = 20
    start = threading.Barrier(threads_count)
    outcomes: list[str] = []
    outcomes_lock = threading.Lock()

    def reserve():
        try:
            start.wait()
            try:
                usage_reserve(user=user, session=None, ai_model=ai_model)
                outcome = "reserved"
            except QuotaExceeded:
                outcome = "refused"
            except Exception as exc:
                outcome = repr(exc)
            with outcomes_lock:
                outcomes.append(outcome)
        finally:
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=reserve) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(outcomes) == ["refused"] * 15 + ["reserved"] * 5
    assert UsageEvent.objects.filter(user=user).count() == 5
    assert UsageBucket.objects.filter(user=user, span="hour").aggregate(n=Sum("messages"))["n"] == 5


def test_the_usage_statement_stays_within_what_psycopg_converts_once(user, default_tier):
    # psycopg turns %(name)s into $n by parsing the statement; it keeps the result only for
    # statements of at most MAX_CACHED_STATEMENT_LENGTH bytes and MAX_CACHED_STATEMENT_PARAMS
    # values, and parses anything longer again at every send. The most pieces a statement can
    # have come from a period that begins mid-hour, mid-week, with replies in flight.
    from psycopg._queries import MAX_CACHED_STATEMENT_LENGTH, MAX_CACHED_STATEMENT_PARAMS

    subscription = subscription_current(user=user)
    base = datetime(2026, 3, 4, 0, 0, 7, tzinfo=UTC)
    most = (0, 0, 0)
    for minutes in range(0, 3 * 24 * 60, 23):
        now = base + minutes * MINUTE
        for period in (20 * MINUTE, 5 * HOUR + 3 * MINUTE, 2 * DAY + 7 * MINUTE, 9 * DAY + 41 * MINUTE, 40 * DAY):
            subscription.start_date = now - period
            sql, params = Usage(subscription, now, in_flight_since=now - 5 * MINUTE).statement()
            most = max(most, (sql.count(" UNION ALL ") + 1, len(sql.encode()), len(params)))
    pieces, size, values = most
    assert pieces >= 20  # the worst case was reached
    assert size <= MAX_CACHED_STATEMENT_LENGTH
    assert values <= MAX_CACHED_STATEMENT_PARAMS


@pytest.mark.django_db(transaction=True)  # a read outside any transaction, as a page's
def test_the_sums_of_a_reservation_run_on_the_generic_plan_and_no_other_read_changes_it(user):
    if connection.vendor != "postgresql":
        pytest.skip("plan_cache_mode is PostgreSQL's")

    def mode() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SHOW plan_cache_mode")
            return cursor.fetchone()[0]

    subscription_current_get(user=user, generic_plan=True)  # outside any transaction: nothing to set
    assert mode() == "auto"
    with transaction.atomic():
        subscription = subscription_current_get(user=user, lock=True)  # a purchase's
        Usage(subscription, timezone.now()).load()  # a page's read
        assert mode() == "auto"
        found = subscription_current_get(user=user, lock=True, generic_plan=True)  # a reservation's
        assert found == subscription and found.subscription_type == subscription.subscription_type
        assert mode() == "force_generic_plan"
        usage = Usage(subscription, timezone.now()).load()
    assert mode() == "auto"  # set for the transaction only
    assert usage.used == Usage(subscription, timezone.now()).load().used
