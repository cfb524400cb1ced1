"""Buying plans: checkout, the customer portal, and the provider's webhook events that change a plan.

A plan change takes the same lock as a quota check (the user's current subscription row),
so a send racing a webhook either reserves under the old tier before the change commits, or
waits and reserves under the new one. The new subscription starts now: its period limits start
fresh, and the rolling windows, which count the user's ledger whatever the tier, go on counting.
"""

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.models import BillingCustomer, Payment, SubscriptionType, UserSubscription, WebhookEvent
from billing.payments import payments
from billing.selectors import subscription_current_get
from billing.services import subscription_assign
from chatsite.errors import InvalidInput

logger = logging.getLogger(__name__)


# The buyer's side.


def site_base_url(request) -> str:
    """This site's address as the request reached it, for the URLs the provider sends the buyer back to."""
    return request.build_absolute_uri("/").rstrip("/")


def checkout_begin(*, user, subscription_type_id: int, base_url: str) -> str:
    """Start buying a tier; the URL of the provider's checkout page."""
    provider = payments()
    tier = SubscriptionType.objects.filter(pk=subscription_type_id).first()
    if tier is None or not tier.is_active:
        raise InvalidInput("There is no such plan to buy.", code="unknown_plan")
    if tier.price <= 0:
        raise InvalidInput("This plan is free: there is nothing to pay.", code="free_plan")
    customer = BillingCustomer.objects.filter(user=user).first()
    checkout = provider.checkout_start(
        user=user, tier=tier, customer_id=customer.stripe_customer_id if customer else None,
        success_url=f"{base_url}/account/?checkout=success", cancel_url=f"{base_url}/pricing/",
    )  # fmt: skip
    return checkout.url


def portal_begin(*, user, base_url: str) -> str:
    """The URL of the provider's page where the user manages payment methods, invoices and cancellation."""
    provider = payments()
    customer = BillingCustomer.objects.filter(user=user).first()
    if customer is None:
        raise InvalidInput("You have not bought a plan yet.", code="no_billing_account")
    return provider.portal_start(customer_id=customer.stripe_customer_id, return_url=f"{base_url}/account/")


# The provider's side.

HANDLED = ("checkout.session.completed", "invoice.paid", "customer.subscription.deleted", "charge.refunded")


def webhook_receive(*, payload: bytes, signature: str) -> str:
    """Verify and apply one event, once; what it did, in words (a replay does nothing)."""
    event = payments().event_verify(payload=payload, signature=signature)
    with transaction.atomic():
        record, created = WebhookEvent.objects.select_for_update().get_or_create(
            event_id=event["id"], defaults={"type": event.get("type", ""), "payload": event}
        )
        if not created and record.processed_at is not None:
            return "a replay: already applied"
        outcome = _apply(event)
        if outcome is None:
            record.outcome = "waiting for its checkout"
            record.save(update_fields=["outcome"])
            return record.outcome
        record.outcome, record.processed_at = outcome, timezone.now()
        record.save(update_fields=["outcome", "processed_at"])
    return outcome


def _apply(event: dict[str, Any]) -> str | None:
    """Apply an event; None if it must wait for an event not here yet."""
    kind, data = event.get("type"), (event.get("data") or {}).get("object") or {}
    if kind == "checkout.session.completed":
        return _checkout_completed(data)
    if kind == "invoice.paid":
        return _invoice_paid(data)
    if kind == "customer.subscription.deleted":
        return _subscription_deleted(data)
    if kind == "charge.refunded":
        return _charge_refunded(data)
    return f"ignored: chatsite does not act on {kind}"


def _checkout_completed(session: dict) -> str:
    from accounts.models import User

    user = User.objects.filter(pk=_int(session.get("client_reference_id"))).first()
    tier = SubscriptionType.objects.filter(pk=_int((session.get("metadata") or {}).get("subscription_type_id"))).first()
    if user is None or tier is None:
        return "ignored: no such user or plan"
    if session.get("payment_status") not in (None, "paid", "no_payment_required"):
        return f"ignored: payment {session.get('payment_status')}"
    stripe_subscription = session.get("subscription") or ""
    period = payments().subscription_period(stripe_subscription) if stripe_subscription else None
    now = timezone.now()
    end = period.end if period is not None and period.end > now else now + timedelta(days=tier.duration_days)
    subscription = plan_change(
        user=user, tier=tier, end=end, stripe_subscription_id=stripe_subscription,
        renews=bool(stripe_subscription) and not (period and period.cancelled),
    )  # fmt: skip
    if session.get("customer"):
        BillingCustomer.objects.update_or_create(user=user, defaults={"stripe_customer_id": session["customer"]})
    _payment_record(
        user=user, tier=tier, subscription=subscription, amount_minor=session.get("amount_total"),
        currency=session.get("currency"), stripe_checkout_session_id=session.get("id") or "",
        stripe_subscription_id=stripe_subscription, stripe_payment_intent_id=session.get("payment_intent") or "",
    )  # fmt: skip
    # Renewals that arrived before this checkout apply now, in the order they came.
    if stripe_subscription:
        waiting_events = WebhookEvent.objects.select_for_update().filter(type="invoice.paid", processed_at__isnull=True)
        for waiting in waiting_events.order_by("received_at", "id"):
            if _invoice_subscription((waiting.payload.get("data") or {}).get("object") or {}) != stripe_subscription:
                continue
            waiting.outcome, waiting.processed_at = _apply(waiting.payload) or "still waiting", timezone.now()
            waiting.save(update_fields=["outcome", "processed_at"])
    return f"{user.email} now on {tier.name} until {end:%Y-%m-%d %H:%M} UTC"


def _invoice_paid(invoice: dict) -> str | None:
    stripe_subscription = _invoice_subscription(invoice)
    if not stripe_subscription:
        return "ignored: not a subscription's invoice"
    if invoice.get("billing_reason") == "subscription_create":
        return "the first invoice: paid with its checkout"
    subscription = (
        UserSubscription.objects.select_related("subscription_type", "user")
        .filter(stripe_subscription_id=stripe_subscription).order_by("-start_date", "-id").first()
    )  # fmt: skip
    if subscription is None:
        return None  # its checkout.session.completed has not come yet
    period_end = _invoice_period_end(invoice)
    with transaction.atomic():
        # The quota check's lock, so a send racing the renewal sees the period before or after it.
        subscription_current_get(user=subscription.user, lock=True)
        subscription = UserSubscription.objects.select_for_update().get(pk=subscription.pk)
        if period_end is not None and period_end > subscription.end_date:
            subscription.end_date = period_end
        subscription.renews = True
        subscription.save(update_fields=["end_date", "renews"])
    _payment_record(
        user=subscription.user, tier=subscription.subscription_type, subscription=subscription,
        amount_minor=invoice.get("amount_paid"), currency=invoice.get("currency"),
        stripe_invoice_id=invoice.get("id") or "", stripe_subscription_id=stripe_subscription,
        stripe_payment_intent_id=invoice.get("payment_intent") or "",
    )  # fmt: skip
    return f"renewed until {subscription.end_date:%Y-%m-%d %H:%M} UTC"


def _subscription_deleted(stripe_subscription: dict) -> str:
    updated = UserSubscription.objects.filter(stripe_subscription_id=stripe_subscription.get("id") or "-").update(
        renews=False
    )
    # The paid period runs to its end; then subscription_current starts the default tier.
    return "cancelled: runs to the end of its paid period" if updated else "ignored: unknown subscription"


def _charge_refunded(charge: dict) -> str:
    intent = charge.get("payment_intent") or ""
    invoice = charge.get("invoice") or ""
    payments_refunded = Payment.objects.filter(status=Payment.Status.PAID).filter(
        **({"stripe_payment_intent_id": intent} if intent else {"stripe_invoice_id": invoice or "-"})
    )
    count = payments_refunded.update(status=Payment.Status.REFUNDED, refunded_at=timezone.now())
    # The plan itself stays: staff end it in the admin if they decide to.
    return f"{count} payment(s) marked refunded" if count else "ignored: no such payment"


# Plans.


def plan_change(*, user, tier: SubscriptionType, end: datetime, stripe_subscription_id: str = "", renews: bool = False):
    """Make `tier` the user's plan from now to `end`, under the quota check's lock."""
    with transaction.atomic():
        subscription_current_get(user=user, lock=True)  # queue behind (and ahead of) reservations
        return subscription_assign(
            user=user, subscription_type=tier, end=end, stripe_subscription_id=stripe_subscription_id, renews=renews
        )


def subscription_end_now(*, subscription: UserSubscription) -> None:
    """End a plan at once (staff, after a refund); the default tier applies from the next request."""
    with transaction.atomic():
        subscription_current_get(user=subscription.user, lock=True)
        UserSubscription.objects.filter(pk=subscription.pk).update(end_date=timezone.now(), renews=False)


def _payment_record(*, user, tier, subscription, amount_minor, currency, **stripe_ids) -> None:
    try:
        with transaction.atomic():
            Payment.objects.create(
                user=user, subscription_type=tier, subscription=subscription,
                amount=Decimal(int(amount_minor or 0)) / 100, currency=(currency or "").lower()[:3], **stripe_ids,
            )  # fmt: skip
    except IntegrityError:
        logger.info("payment for %s recorded already", stripe_ids)


def _invoice_subscription(invoice: dict) -> str:
    # Older API versions name it on the invoice, newer ones under parent.subscription_details.
    details = ((invoice.get("parent") or {}).get("subscription_details")) or {}
    return invoice.get("subscription") or details.get("subscription") or ""


def _invoice_period_end(invoice: dict) -> datetime | None:
    lines = (invoice.get("lines") or {}).get("data") or []
    end = ((lines[0].get("period") or {}).get("end")) if lines else None
    return datetime.fromtimestamp(int(end), tz=UTC) if end else None


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
