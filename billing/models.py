from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

# Rolling windows of the tier's limits, in the order they are shown.
WINDOWS: dict[str, timedelta] = {
    "hourly": timedelta(hours=1),
    "three_hours": timedelta(hours=3),
    "twelve_hours": timedelta(hours=12),
    "daily": timedelta(days=1),
    "weekly": timedelta(days=7),
    "monthly": timedelta(days=30),
}


def _limit(help_text: str = "0 means unlimited."):
    return models.PositiveBigIntegerField(default=0, help_text=help_text)


class SubscriptionType(models.Model):
    """A tier: a price and the quotas that come with it. 0 means unlimited."""

    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    price = models.DecimalField(max_digits=10, decimal_places=2, default=Decimal("0"))
    duration_days = models.PositiveIntegerField(default=30)
    sku = models.CharField(max_length=64, unique=True)
    max_tokens = _limit("Paid-model tokens per subscription period. 0 means unlimited.")
    max_tokens_free = _limit("Free-model tokens per subscription period. 0 means unlimited.")
    max_openrouter_cost_usd = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        default=Decimal("0"),
        help_text="Upstream cost per subscription period, USD. 0 means unlimited.",
    )
    hourly_max_messages = _limit()
    hourly_max_tokens = _limit()
    three_hours_max_messages = _limit()
    three_hours_max_tokens = _limit()
    twelve_hours_max_messages = _limit()
    twelve_hours_max_tokens = _limit()
    daily_max_messages = _limit()
    daily_max_tokens = _limit()
    weekly_max_messages = _limit()
    weekly_max_tokens = _limit()
    monthly_max_messages = _limit()
    monthly_max_tokens = _limit()
    monthly_free_model_messages = _limit()
    monthly_free_model_tokens = _limit()
    daily_image_generation_limit = _limit()
    weekly_image_generation_limit = _limit()
    monthly_image_generation_limit = _limit()
    is_active = models.BooleanField(default=True)
    is_default = models.BooleanField(default=False, help_text="The tier every new user gets.")
    created_at = models.DateTimeField(auto_now_add=True)
    # Set by `manage.py stripe_sync`; without them checkout describes the price inline.
    stripe_product_id = models.CharField(max_length=255, blank=True)
    stripe_price_id = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["price", "id"]
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True), name="one_default_tier"),
        ]

    def __str__(self) -> str:
        return self.name


class UserSubscription(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="subscriptions")
    subscription_type = models.ForeignKey(SubscriptionType, on_delete=models.PROTECT, related_name="subscriptions")
    is_active = models.BooleanField(default=True)
    start_date = models.DateTimeField(default=timezone.now)
    end_date = models.DateTimeField()
    # A plan bought through Stripe: its subscription there (empty for a one-time payment), and
    # whether it renews at end_date (False once cancelled: it then runs out, and the default tier follows).
    stripe_subscription_id = models.CharField(max_length=255, blank=True, db_index=True)
    renews = models.BooleanField(default=False)

    class Meta:
        ordering = ["-start_date", "-id"]
        indexes = [models.Index(fields=["user", "is_active", "-end_date"], name="subscription_current_idx")]

    def __str__(self) -> str:
        return f"subscription #{self.pk}"

    def save(self, *args, **kwargs):
        if self.end_date is None:
            self.end_date = self.start_date + timedelta(days=self.subscription_type.duration_days)
        super().save(*args, **kwargs)

    def is_current(self, now=None) -> bool:
        now = now or timezone.now()
        return self.is_active and self.start_date <= now < self.end_date


class UsageEvent(models.Model):
    """The ledger quotas read: one row per message or image, reserved then settled or released."""

    class Kind(models.TextChoices):
        MESSAGE = "message", "Message"
        IMAGE = "image", "Image"

    class State(models.TextChoices):
        RESERVED = "reserved", "Reserved"
        SETTLED = "settled", "Settled"
        RELEASED = "released", "Released"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_events", db_index=False
    )
    # SET_NULL: deleting a chat must never hand quota back.
    session = models.ForeignKey(
        "sessions_app.ChatSession", on_delete=models.SET_NULL, null=True, blank=True, related_name="usage_events"
    )
    ai_model = models.ForeignKey(
        "chatbots.AIModel", on_delete=models.SET_NULL, null=True, blank=True, related_name="usage_events"
    )
    # The reply this usage paid for (SET_NULL like the session).
    message = models.ForeignKey(
        "sessions_app.ChatMessage", on_delete=models.SET_NULL, null=True, blank=True, related_name="usage_events"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.MESSAGE)
    is_free_model = models.BooleanField(default=False)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    billed_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=Decimal("0"))
    state = models.CharField(max_length=10, choices=State.choices, default=State.RESERVED)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # A user's rows in time order, with every column a quota sum reads: the ledger part of
            # a window (its partial first hour) is an index-only scan.
            models.Index(
                fields=["user", "created_at", "state", "kind", "is_free_model", "billed_tokens", "cost_usd"],
                name="usage_user_time_sum_idx",
            ),
            # The admin's newest-first list and prune_usage's range delete.
            models.Index(fields=["created_at"], name="usage_time_idx"),
        ]

    def __str__(self) -> str:
        return f"usage #{self.pk}"


class ChatSessionUsage(models.Model):
    """Running token totals of one chat, kept after the chat is deleted."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="session_usages")
    session = models.OneToOneField(
        "sessions_app.ChatSession", on_delete=models.SET_NULL, null=True, blank=True, related_name="usage"
    )
    tokens_count = models.PositiveBigIntegerField(default=0)
    free_model_tokens_count = models.PositiveBigIntegerField(default=0)
    is_free_model = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [models.Index(fields=["user", "-updated_at"], name="session_usage_user_idx")]

    def __str__(self) -> str:
        return f"session usage #{self.pk}"


class UsageBucket(models.Model):
    """One user's usage of one class in one UTC hour, and again per UTC day: what quota windows add up.

    Kept in step with the ledger in the same transactions. A window's sum reads
    whole days from the day buckets, whole hours at its two ends from the hour
    buckets, and only its partial first hour from the ledger itself: a few dozen
    rows however long the ledger grows.
    """

    class Klass(models.TextChoices):
        PAID = "paid", "Paid-model messages"
        FREE = "free", "Free-model messages"
        IMAGE = "image", "Images"

    class Span(models.TextChoices):
        HOUR = "hour", "Hour"
        DAY = "day", "Day"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_buckets", db_index=False
    )
    span = models.CharField(max_length=4, choices=Span.choices, default=Span.HOUR)
    hour = models.DateTimeField(help_text="Start of the UTC hour (or day).")
    klass = models.CharField(max_length=5, choices=Klass.choices)
    messages = models.IntegerField(default=0)
    tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=16, decimal_places=8, default=Decimal("0"))

    class Meta:
        ordering = ["-hour"]
        constraints = [
            models.UniqueConstraint(fields=["user", "span", "hour", "klass"], name="usage_bucket_unique"),
        ]
        indexes = [
            # Covers the window sums, so they never visit the table (index-only scans).
            models.Index(
                fields=["user", "span", "hour", "klass", "messages", "tokens", "cost_usd"], name="usage_bucket_sum_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.klass} usage in the {self.span} from {self.hour:%Y-%m-%d %H:00}"


class BillingCustomer(models.Model):
    """The user's customer at the payment provider (Stripe), made at their first checkout."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="billing_customer")
    stripe_customer_id = models.CharField(max_length=255, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.stripe_customer_id


class Payment(models.Model):
    """Money received for a plan: a checkout, or a renewal's invoice."""

    class Status(models.TextChoices):
        PAID = "paid", "Paid"
        REFUNDED = "refunded", "Refunded"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="payments")
    subscription_type = models.ForeignKey(SubscriptionType, on_delete=models.PROTECT, related_name="payments")
    subscription = models.ForeignKey(
        UserSubscription, on_delete=models.SET_NULL, null=True, blank=True, related_name="payments"
    )
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PAID)
    stripe_checkout_session_id = models.CharField(max_length=255, blank=True)
    stripe_invoice_id = models.CharField(max_length=255, blank=True)
    stripe_subscription_id = models.CharField(max_length=255, blank=True)
    stripe_payment_intent_id = models.CharField(max_length=255, blank=True, db_index=True)
    created_at = models.DateTimeField(default=timezone.now)
    refunded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "-created_at"], name="payment_user_idx")]
        constraints = [
            # One payment per checkout and per invoice, however often their events arrive.
            models.UniqueConstraint(
                fields=["stripe_checkout_session_id"], condition=~Q(stripe_checkout_session_id=""),
                name="payment_one_per_checkout",
            ),
            models.UniqueConstraint(
                fields=["stripe_invoice_id"], condition=~Q(stripe_invoice_id=""), name="payment_one_per_invoice"
            ),
        ]  # fmt: skip

    def __str__(self) -> str:
        return f"{self.amount} {self.currency.upper()} for {self.subscription_type}"


class WebhookEvent(models.Model):
    """A payment provider's event as received: each id takes effect once."""

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.TextField(blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"
