"""Create or update a Stripe product and price for each active paid tier, and store the price's id."""

from django.core.management.base import BaseCommand, CommandError

from billing.models import SubscriptionType
from billing.payments import payments
from chatsite.errors import ChatsiteError


class Command(BaseCommand):
    help = "Create or update the Stripe product and price of each active paid tier (weekly, monthly or yearly "
    "tiers recur; others are one-time payments granting duration_days)."

    def handle(self, *args, **options):
        try:
            provider = payments()
            tiers = SubscriptionType.objects.filter(is_active=True, price__gt=0).order_by("price", "id")
            for tier in tiers:
                product_id, price_id = provider.tier_sync(tier)
                changed = (product_id, price_id) != (tier.stripe_product_id, tier.stripe_price_id)
                tier.stripe_product_id, tier.stripe_price_id = product_id, price_id
                tier.save(update_fields=["stripe_product_id", "stripe_price_id"])
                self.stdout.write(f"{tier.name}: {price_id}{' (new)' if changed else ''}")
        except ChatsiteError as exc:
            raise CommandError(exc.detail) from exc
