"""Buying a plan in a real browser: pricing, Stripe's checkout (the local stand-in), the webhook, the account page."""

import time
from decimal import Decimal

import pytest
import requests

from accounts.tests.factories import PASSWORD
from billing.tests.factories import SubscriptionTypeFactory
from chatsite.testing.browser import screenshot
from chatsite.testing.stripe_stub import event, signed_event

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_purchase_from_the_pricing_page_to_the_account_page(page, live_server, user, default_tier, stripe_stub):
    pro = SubscriptionTypeFactory(
        name="Pro", sku="PRO", price=Decimal("12.00"), duration_days=30, hourly_max_messages=100,
        max_openrouter_cost_usd=Decimal("10"),
    )  # fmt: skip
    page.goto("/accounts/login/")
    page.get_by_label("Email or phone number").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/chat/")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Plans").click()
    page.wait_for_url("**/pricing/")
    free_card = page.locator(".plan-card", has_text="Free")
    assert free_card.get_by_text("Your plan").is_visible()
    pro_card = page.locator(".plan-card", has_text="Pro")
    assert pro_card.get_by_text("100 messages an hour").is_visible()
    assert pro_card.get_by_text("$10 of model cost a month").is_visible()
    for width, height, scheme in ((1440, 900, "light"), (1440, 900, "dark"), (390, 844, "light"), (390, 844, "dark")):
        page.set_viewport_size({"width": width, "height": height})
        page.emulate_media(color_scheme=scheme)
        screenshot(page, f"pricing-{width}-{scheme}")
    page.set_viewport_size({"width": 1280, "height": 800})

    pro_card.get_by_role("button", name="Choose Pro").click()

    page.wait_for_url(f"{stripe_stub.base_url}/checkout/**")
    assert page.get_by_role("heading", name="Stripe test checkout").is_visible()
    (session,) = [o for o in stripe_stub.objects.values() if o.get("object") == "checkout.session"]
    assert session["client_reference_id"] == str(user.pk)
    assert session["metadata"] == {"subscription_type_id": str(pro.pk), "user_id": str(user.pk)}

    # Stripe confirms the payment: the signed event, over HTTP, as Stripe would send it.
    stripe_stub.add_subscription("sub_browser", period_end=int(time.time()) + 30 * 86400)
    body, signature = signed_event(
        event(
            "checkout.session.completed",
            {
                "id": session["id"], "object": "checkout.session", "client_reference_id": str(user.pk),
                "metadata": session["metadata"], "amount_total": 1200, "currency": "usd", "customer": "cus_browser",
                "subscription": "sub_browser", "payment_status": "paid", "mode": "subscription",
            },
        )
    )  # fmt: skip
    hook = requests.post(
        f"{live_server.url}/billing/stripe/webhook/", data=body,
        headers={"Stripe-Signature": signature, "Content-Type": "application/json"}, timeout=10,
    )  # fmt: skip
    assert hook.status_code == 200, hook.text

    page.goto(session["success_url"].replace("http://testserver", live_server.url))
    page.wait_for_url("**/account/?checkout=success")
    assert page.locator(".plan-name").inner_text() == "Pro"
    assert "Renews on" in page.locator(".plan-renewal").inner_text()
    assert page.get_by_role("button", name="Manage billing").is_visible()
    payments = page.locator("table.payments")
    assert "12.00 USD" in payments.inner_text() and "Paid" in payments.inner_text()
    for width, height, scheme in ((1440, 900, "light"), (1440, 900, "dark"), (390, 844, "light"), (390, 844, "dark")):
        page.set_viewport_size({"width": width, "height": height})
        page.emulate_media(color_scheme=scheme)
        screenshot(page, f"account-plan-{width}-{scheme}")

    page.get_by_role("button", name="Manage billing").click()
    page.wait_for_url(f"{stripe_stub.base_url}/portal/**")
    assert stripe_stub.calls("POST", "/v1/billing_portal/sessions")[0]["form"]["customer"] == "cus_browser"
