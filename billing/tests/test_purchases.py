"""Selling plans: checkout, webhooks, the portal and payments, against a local Stripe-compatible server."""

import io
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from billing.models import Payment, UsageEvent, UserSubscription, WebhookEvent
from billing.purchases import subscription_end_now
from billing.selectors import subscription_current_get
from billing.tests.factories import SubscriptionTypeFactory, UsageEventFactory
from chatbots.tests.factories import AIModelFactory
from chatsite.testing.stripe_stub import event, signed_event

pytestmark = pytest.mark.django_db

WEBHOOK = "/billing/stripe/webhook/"


@pytest.fixture
def owner_page(user):
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def pro(default_tier):
    return SubscriptionTypeFactory(
        name="Pro", sku="PRO", price=Decimal("12.00"), duration_days=30, hourly_max_messages=100,
        max_openrouter_cost_usd=Decimal("10"), max_tokens=50_000,
    )  # fmt: skip


def post_event(payload: dict, *, at: float | None = None, secret: str | None = None):
    body, signature = signed_event(payload, at=at, **({"secret": secret} if secret else {}))
    return Client().post(WEBHOOK, body, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature)


def checkout_completed(user, tier, *, subscription: str = "", session_id: str = "cs_test_1", amount: int = 1200):
    return event(
        "checkout.session.completed",
        {
            "id": session_id, "object": "checkout.session", "client_reference_id": str(user.pk),
            "metadata": {"subscription_type_id": str(tier.pk)}, "amount_total": amount, "currency": "usd",
            "customer": "cus_1", "subscription": subscription or None, "payment_status": "paid",
            "payment_intent": None if subscription else "pi_1", "mode": "subscription" if subscription else "payment",
        },
    )  # fmt: skip


def invoice_paid(subscription: str, *, period_end: int, invoice_id: str = "in_2", reason: str = "subscription_cycle"):
    return event(
        "invoice.paid",
        {
            "id": invoice_id, "object": "invoice", "amount_paid": 1200, "currency": "usd", "billing_reason": reason,
            "parent": {"subscription_details": {"subscription": subscription}},
            "lines": {"data": [{"period": {"start": period_end - 30 * 86400, "end": period_end}}]},
            "payment_intent": f"pi_{invoice_id}",
        },
    )  # fmt: skip


# Checkout.


def test_checkout_answers_the_stripe_checkout_url_with_who_and_what(api_client, user, pro, stripe_stub):
    response = api_client.post("/api/billing/checkout/", {"subscription_type_id": pro.pk}, format="json")

    assert response.status_code == 201
    (call,) = stripe_stub.calls("POST", "/v1/checkout/sessions")
    assert response.json()["url"] == f"{stripe_stub.base_url}/checkout/{next(iter(stripe_stub.objects))}"
    form = call["form"]
    assert form["client_reference_id"] == str(user.pk)
    assert form["metadata[subscription_type_id]"] == str(pro.pk)
    assert form["mode"] == "subscription"
    assert form["line_items[0][price_data][unit_amount]"] == "1200"
    assert form["line_items[0][price_data][recurring][interval]"] == "month"
    assert form["success_url"] == "http://testserver/account/?checkout=success"
    assert form["cancel_url"] == "http://testserver/pricing/"
    assert form["customer_email"] == user.email


@pytest.mark.parametrize("which", ["free", "inactive", "unknown"])
def test_checkout_of_a_plan_that_cannot_be_bought_is_400(api_client, pro, default_tier, stripe_stub, which):
    tier_id = {"free": default_tier.pk, "unknown": 999_999}.get(which, pro.pk)
    if which == "inactive":
        pro.is_active = False
        pro.save()
    response = api_client.post("/api/billing/checkout/", {"subscription_type_id": tier_id}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] in ("free_plan", "unknown_plan")
    assert not stripe_stub.calls("POST", "/v1/checkout/sessions")


def test_without_keys_everything_explains_itself(api_client, pro, settings):
    settings.STRIPE_SECRET_KEY = settings.STRIPE_WEBHOOK_SECRET = ""
    for path in ("/api/billing/checkout/", "/api/billing/portal/"):
        response = api_client.post(path, {"subscription_type_id": pro.pk}, format="json")
        assert response.status_code == 503
        assert response.json()["code"] == "payments_not_configured"
    body, signature = signed_event(event("checkout.session.completed", {}))
    hook = Client().post(WEBHOOK, body, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature)
    assert hook.status_code == 503
    page = Client().get("/pricing/").content.decode()
    assert "Plans are assigned by staff" in page
    assert "Choose" not in page


# The webhook.


def test_a_completed_checkout_switches_the_tier_now_and_records_the_payment(user, pro, stripe_stub, api_client):
    period_end = int(time.time()) + 30 * 86400
    stripe_stub.add_subscription("sub_1", period_end=period_end)
    before = subscription_current_get(user=user)

    response = post_event(checkout_completed(user, pro, subscription="sub_1"))

    assert response.status_code == 200, response.content
    current = subscription_current_get(user=user)
    assert current.subscription_type == pro and current.pk != before.pk
    assert current.end_date == datetime.fromtimestamp(period_end, tz=UTC)
    assert current.renews and current.stripe_subscription_id == "sub_1"
    payment = Payment.objects.get()
    assert (payment.amount, payment.currency, payment.stripe_checkout_session_id) == (
        Decimal("12.00"),
        "usd",
        "cs_test_1",
    )
    usage = api_client.get("/api/users/usage/").json()
    assert usage["subscription"]["subscription_type"]["name"] == "Pro"
    assert {limit["name"] for limit in usage["limits"]} >= {"hourly_max_messages", "max_openrouter_cost_usd"}


def test_a_one_time_payment_grants_duration_days(user, pro, stripe_stub):
    pro.duration_days = 90
    pro.save()
    assert post_event(checkout_completed(user, pro)).status_code == 200
    current = subscription_current_get(user=user)
    assert current.subscription_type == pro and not current.renews
    assert abs(current.end_date - (timezone.now() + timedelta(days=90))) < timedelta(minutes=1)


@pytest.mark.parametrize("how", ["no signature", "wrong secret", "tampered", "stale"])
def test_a_bad_or_stale_signature_is_400_and_changes_nothing(user, pro, stripe_stub, how):
    payload = checkout_completed(user, pro)
    if how == "no signature":
        response = Client().post(WEBHOOK, b"{}", content_type="application/json")
    elif how == "wrong secret":
        response = post_event(payload, secret="whsec_someone_else")
    elif how == "tampered":
        body, signature = signed_event(payload)
        body = body.replace(str(pro.pk).encode(), b"1", 1)
        response = Client().post(WEBHOOK, body, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature)
    else:
        response = post_event(payload, at=time.time() - 301)  # Stripe's tolerance is 5 minutes
    assert response.status_code == 400
    assert response.json()["code"] == "bad_signature"
    assert subscription_current_get(user=user).subscription_type.name == "Free"
    assert not WebhookEvent.objects.exists()


def test_a_replayed_event_answers_200_and_changes_nothing(user, pro, stripe_stub):
    payload = checkout_completed(user, pro)
    assert post_event(payload).status_code == 200
    first = subscription_current_get(user=user)

    again = post_event(payload)

    assert again.status_code == 200
    assert "replay" in again.json()["outcome"]
    assert subscription_current_get(user=user).pk == first.pk
    assert Payment.objects.count() == 1


def test_a_renewal_extends_the_period_and_records_its_payment(user, pro, stripe_stub):
    now = int(time.time())
    stripe_stub.add_subscription("sub_1", period_end=now + 30 * 86400)
    post_event(checkout_completed(user, pro, subscription="sub_1"))

    response = post_event(invoice_paid("sub_1", period_end=now + 60 * 86400))

    assert response.status_code == 200
    current = subscription_current_get(user=user)
    assert current.end_date == datetime.fromtimestamp(now + 60 * 86400, tz=UTC)
    assert sorted(Payment.objects.values_list("stripe_invoice_id", flat=True)) == ["", "in_2"]


def test_an_invoice_before_its_checkout_waits_for_it(user, pro, stripe_stub):
    now = int(time.time())
    stripe_stub.add_subscription("sub_1", period_end=now + 30 * 86400)
    # Stripe does not promise order: the first invoice, and even a renewal, may come first.
    first = post_event(
        invoice_paid("sub_1", period_end=now + 30 * 86400, invoice_id="in_1", reason="subscription_create")
    )
    early = post_event(invoice_paid("sub_1", period_end=now + 60 * 86400, invoice_id="in_2"))
    assert first.status_code == early.status_code == 200
    assert subscription_current_get(user=user).subscription_type.name == "Free"

    post_event(checkout_completed(user, pro, subscription="sub_1"))

    current = subscription_current_get(user=user)
    assert current.subscription_type == pro
    assert current.end_date == datetime.fromtimestamp(now + 60 * 86400, tz=UTC)
    # One payment for the checkout (its first invoice), one for the renewal.
    assert sorted(Payment.objects.values_list("stripe_invoice_id", flat=True)) == ["", "in_2"]
    assert not WebhookEvent.objects.filter(processed_at__isnull=True).exists()


def test_a_cancelled_subscription_runs_to_its_end_then_the_default_tier(user, pro, stripe_stub, default_tier):
    stripe_stub.add_subscription("sub_1", period_end=int(time.time()) + 30 * 86400)
    post_event(checkout_completed(user, pro, subscription="sub_1"))

    post_event(event("customer.subscription.deleted", {"id": "sub_1", "object": "subscription"}))

    current = subscription_current_get(user=user)
    assert current.subscription_type == pro and not current.renews
    later = current.end_date + timedelta(seconds=1)
    assert subscription_current_get(user=user, now=later) is None  # the default tier starts on the next request


def test_a_refund_marks_the_payment_and_staff_may_end_the_plan(user, pro, stripe_stub, admin_client):
    post_event(checkout_completed(user, pro))
    payment = Payment.objects.get()

    post_event(event("charge.refunded", {"id": "ch_1", "object": "charge", "payment_intent": "pi_1"}))

    payment.refresh_from_db()
    assert payment.status == Payment.Status.REFUNDED and payment.refunded_at is not None
    assert subscription_current_get(user=user).subscription_type == pro  # the plan stays until staff decide
    response = admin_client.post(
        "/admin/billing/payment/", {"action": "end_subscription", "_selected_action": [payment.pk]}
    )
    assert response.status_code == 302
    assert subscription_current_get(user=user) is None


def test_period_limits_start_fresh_and_rolling_windows_keep_counting(user, pro, stripe_stub, api_client):
    model = AIModelFactory(is_free=False)
    UsageEventFactory.create_batch(3, user=user, ai_model=model, billed_tokens=1000)
    post_event(checkout_completed(user, pro))

    limits = {limit["name"]: limit for limit in api_client.get("/api/users/usage/").json()["limits"]}

    assert limits["hourly_max_messages"]["used"] == 3  # a rolling window: what was sent still counts
    assert limits["max_tokens"]["used"] == 0  # a period limit: the new period starts empty


# The customer's side.


def test_the_portal_and_the_payments_list(api_client, user, pro, stripe_stub):
    assert api_client.post("/api/billing/portal/").json()["code"] == "no_billing_account"
    post_event(checkout_completed(user, pro))

    portal = api_client.post("/api/billing/portal/")
    payments = api_client.get("/api/billing/payments/")

    assert portal.status_code == 200
    assert portal.json()["url"].startswith(f"{stripe_stub.base_url}/portal/")
    assert stripe_stub.calls("POST", "/v1/billing_portal/sessions")[0]["form"]["customer"] == "cus_1"
    assert payments.json() == [
        {"id": Payment.objects.get().pk, "plan": "Pro", "amount": "12.00", "currency": "usd", "status": "paid",
         "created_at": payments.json()[0]["created_at"], "refunded_at": None}
    ]  # fmt: skip


def test_another_users_payments_are_not_listed(other_client, user, pro, stripe_stub):
    post_event(checkout_completed(user, pro))
    assert other_client.get("/api/billing/payments/").json() == []


def test_the_pricing_page_shows_every_limit_in_words_and_marks_the_plan(owner_page, user, pro, stripe_stub):
    visitor = Client().get("/pricing/").content.decode()
    assert "100 messages an hour" in visitor
    assert "$10 of model cost a month" in visitor
    assert "50,000 tokens on paid models a month" in visitor
    assert "Sign up to choose Pro" in visitor

    page = owner_page.get("/pricing/").content.decode()
    assert "Your plan" in page.split("Pro")[0]  # the free tier, listed first, is marked
    assert "Choose Pro" in page


def test_the_account_page_shows_the_plan_its_renewal_and_payments(owner_page, user, pro, stripe_stub):
    stripe_stub.add_subscription("sub_1", period_end=int(time.time()) + 30 * 86400)
    post_event(checkout_completed(user, pro, subscription="sub_1"))

    page = owner_page.get("/account/?checkout=success").content.decode()

    assert "Pro" in page and "Renews on" in page
    assert "Manage billing" in page
    assert "12.00 USD" in page
    assert "Your payment went through" in page


def test_stripe_sync_makes_a_product_and_price_per_paid_tier_and_replaces_a_changed_price(pro, stripe_stub):
    call_command("stripe_sync", stdout=io.StringIO())
    pro.refresh_from_db()
    first_price = pro.stripe_price_id
    assert stripe_stub.objects[first_price]["recurring"] == {"interval": "month"}
    assert stripe_stub.objects[first_price]["unit_amount"] == 1200

    pro.price = Decimal("15.00")
    pro.save()
    call_command("stripe_sync", stdout=io.StringIO())
    pro.refresh_from_db()

    assert pro.stripe_price_id != first_price
    assert stripe_stub.objects[first_price]["active"] is False
    assert stripe_stub.objects[pro.stripe_price_id]["unit_amount"] == 1500
    assert len(stripe_stub.calls("POST", "/v1/products")) == 1  # the product is kept, the price replaced


def test_ending_a_plan_now_hands_over_to_the_default_tier(user, pro, stripe_stub):
    post_event(checkout_completed(user, pro))
    subscription_end_now(subscription=subscription_current_get(user=user))
    assert subscription_current_get(user=user) is None
    assert UserSubscription.objects.filter(user=user, subscription_type=pro).exists()
    assert UsageEvent.objects.count() == 0


def test_the_admin_lists_payments_and_webhook_events_with_their_outcome(admin_client, user, pro, stripe_stub):
    post_event(checkout_completed(user, pro))
    record = WebhookEvent.objects.get()

    payments = admin_client.get("/admin/billing/payment/").content.decode()
    events = admin_client.get("/admin/billing/webhookevent/").content.decode()
    detail = admin_client.get(f"/admin/billing/webhookevent/{record.pk}/change/").content.decode()

    assert "12.00" in payments and user.email in payments
    assert "checkout.session.completed" in events and "now on Pro" in events
    assert "cs_test_1" in detail  # the payload, as received


def test_the_landing_page_and_the_account_page_link_to_the_plans(owner_page, default_tier):
    assert 'href="/pricing/"' in Client().get("/").content.decode()
    assert 'href="/pricing/"' in owner_page.get("/account/").content.decode()
