"""The Stripe adapter: Checkout for buying, the customer portal for managing, webhooks for what happened.

Only the official `stripe` package talks to Stripe. STRIPE_API_BASE points it elsewhere (the tests'
local Stripe-compatible server).
"""

import json
import logging
from datetime import UTC, datetime
from typing import Any

import stripe
from django.conf import settings

from billing.payments.base import Checkout, Period, minor_units, recurring_interval
from chatsite.errors import BadSignature, PaymentsError

logger = logging.getLogger(__name__)
# Stripe's own: an event signed longer ago than this is refused (a replay of an old capture).
SIGNATURE_TOLERANCE_SECONDS = 300


class StripePayments:
    def __init__(self, *, secret_key: str, webhook_secret: str, api_base: str) -> None:
        self.webhook_secret = webhook_secret
        self.client = stripe.StripeClient(
            secret_key, base_addresses={"api": api_base.rstrip("/")}, max_network_retries=2
        )

    def checkout_start(self, *, user, tier, customer_id: str | None, success_url: str, cancel_url: str) -> Checkout:
        interval = recurring_interval(tier.duration_days)
        metadata = {"subscription_type_id": str(tier.pk), "user_id": str(user.pk)}
        if tier.stripe_price_id:
            line_item = {"price": tier.stripe_price_id, "quantity": 1}
        else:  # not synced: the price described here
            price_data: dict[str, Any] = {
                "currency": settings.STRIPE_CURRENCY,
                "unit_amount": minor_units(tier.price),
                "product_data": {"name": tier.name},
            }
            if interval:
                price_data["recurring"] = {"interval": interval}
            line_item = {"price_data": price_data, "quantity": 1}
        params: dict[str, Any] = {
            "mode": "subscription" if interval else "payment",
            "line_items": [line_item],
            "client_reference_id": str(user.pk),
            "metadata": metadata,
            "success_url": success_url,
            "cancel_url": cancel_url,
        }
        if customer_id:
            params["customer"] = customer_id
        else:
            params["customer_email"] = user.email
            if not interval:
                params["customer_creation"] = "always"  # a customer for the portal, as subscriptions make one
        if interval:
            params["subscription_data"] = {"metadata": metadata}
        session = self._call(self.client.v1.checkout.sessions.create, params=params)
        return Checkout(id=session["id"], url=session["url"])

    def portal_start(self, *, customer_id: str, return_url: str) -> str:
        session = self._call(
            self.client.v1.billing_portal.sessions.create, params={"customer": customer_id, "return_url": return_url}
        )
        return session["url"]

    def event_verify(self, *, payload: bytes, signature: str) -> dict[str, Any]:
        try:
            stripe.Webhook.construct_event(
                payload, signature, self.webhook_secret, tolerance=SIGNATURE_TOLERANCE_SECONDS
            )
        except (stripe.SignatureVerificationError, ValueError) as exc:
            raise BadSignature() from exc
        # The verified bytes themselves, as plain data.
        return json.loads(payload)

    def subscription_period(self, subscription_id: str) -> Period | None:
        subscription = self._call(self.client.v1.subscriptions.retrieve, subscription_id)
        items = (subscription.get("items") or {}).get("data") or []
        # Newer API versions keep the period on the subscription's items, older ones on the subscription.
        end = (items[0].get("current_period_end") if items else None) or subscription.get("current_period_end")
        if not end:
            return None
        cancelled = subscription.get("status") == "canceled" or bool(subscription.get("cancel_at_period_end"))
        return Period(end=datetime.fromtimestamp(int(end), tz=UTC), cancelled=cancelled)

    def tier_sync(self, tier) -> tuple[str, str]:
        product_params = {"name": tier.name, "metadata": {"subscription_type_id": str(tier.pk)}}
        if tier.description:
            product_params["description"] = tier.description
        if tier.stripe_product_id:
            product = self._call(self.client.v1.products.update, tier.stripe_product_id, params=product_params)
        else:
            product = self._call(self.client.v1.products.create, params=product_params)
        interval = recurring_interval(tier.duration_days)
        wanted = {"currency": settings.STRIPE_CURRENCY, "unit_amount": minor_units(tier.price), "interval": interval}
        if tier.stripe_price_id:
            price = self._call(self.client.v1.prices.retrieve, tier.stripe_price_id)
            recurring = price.get("recurring") or {}
            have = {
                "currency": price["currency"],
                "unit_amount": price["unit_amount"],
                "interval": recurring.get("interval"),
            }
            if have == wanted and price.get("active", True) and price.get("product") == product["id"]:
                return product["id"], price["id"]
            # Prices cannot change at Stripe: a new one replaces it, and the old one is archived.
            self._call(self.client.v1.prices.update, tier.stripe_price_id, params={"active": False})
        price_params: dict[str, Any] = {
            "product": product["id"],
            "currency": wanted["currency"],
            "unit_amount": wanted["unit_amount"],
            "metadata": {"subscription_type_id": str(tier.pk)},
        }
        if interval:
            price_params["recurring"] = {"interval": interval}
        price = self._call(self.client.v1.prices.create, params=price_params)
        return product["id"], price["id"]

    def _call(self, method, *args, **kwargs):
        try:
            return method(*args, **kwargs).to_dict()  # plain data from here on
        except stripe.StripeError as exc:
            logger.warning("Stripe call failed: %s", exc)
            raise PaymentsError() from exc
