"""What chatsite asks of a payment provider, in its own words."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol


@dataclass(frozen=True)
class Checkout:
    """A started checkout: where to send the buyer."""

    id: str
    url: str


@dataclass(frozen=True)
class Period:
    """A recurring plan's current paid period at the provider."""

    end: datetime
    cancelled: bool


class PaymentsProvider(Protocol):
    def checkout_start(self, *, user, tier, customer_id: str | None, success_url: str, cancel_url: str) -> Checkout: ...

    def portal_start(self, *, customer_id: str, return_url: str) -> str: ...

    def event_verify(self, *, payload: bytes, signature: str) -> dict[str, Any]:
        """The event, if `signature` proves the provider sent `payload` within its tolerance; else BadSignature."""

    def subscription_period(self, subscription_id: str) -> Period | None: ...

    def tier_sync(self, tier) -> tuple[str, str]:
        """Create or update the tier's product and price at the provider; their ids."""


def recurring_interval(duration_days: int) -> str | None:
    """The provider's billing interval for a tier of this length, or None for a one-time payment."""
    return {7: "week", 30: "month", 365: "year"}.get(duration_days)


def minor_units(amount: Decimal) -> int:
    """An amount in cents (every currency chatsite prices in has two decimals)."""
    return int((amount * 100).to_integral_value())
