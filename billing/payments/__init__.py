"""Selling plans through a payment provider, behind one small interface (Stripe is the first adapter).

`payments()` answers the configured provider, or raises PaymentsNotConfigured: without keys
nothing talks to a provider, and everything that would explains itself instead.
"""

from django.conf import settings

from billing.payments.base import Checkout, PaymentsProvider, Period
from chatsite.errors import PaymentsNotConfigured

__all__ = ["Checkout", "PaymentsProvider", "Period", "payments", "payments_configured"]


def payments_configured() -> bool:
    return bool(settings.STRIPE_SECRET_KEY and settings.STRIPE_WEBHOOK_SECRET)


def payments() -> PaymentsProvider:
    if not payments_configured():
        raise PaymentsNotConfigured()
    from billing.payments.stripe import StripePayments

    return StripePayments(
        secret_key=settings.STRIPE_SECRET_KEY,
        webhook_secret=settings.STRIPE_WEBHOOK_SECRET,
        api_base=settings.STRIPE_API_BASE,
    )
