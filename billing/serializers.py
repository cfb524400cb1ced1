from decimal import Decimal

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing.models import ChatSessionUsage, SubscriptionType, UserSubscription


class SubscriptionTypeSerializer(serializers.ModelSerializer):
    class Meta:
        model = SubscriptionType
        fields = [
            "id",
            "name",
            "description",
            "price",
            "duration_days",
            "sku",
            "max_tokens",
            "max_tokens_free",
            "max_openrouter_cost_usd",
            "hourly_max_messages",
            "hourly_max_tokens",
            "three_hours_max_messages",
            "three_hours_max_tokens",
            "twelve_hours_max_messages",
            "twelve_hours_max_tokens",
            "daily_max_messages",
            "daily_max_tokens",
            "weekly_max_messages",
            "weekly_max_tokens",
            "monthly_max_messages",
            "monthly_max_tokens",
            "monthly_free_model_messages",
            "monthly_free_model_tokens",
            "daily_image_generation_limit",
            "weekly_image_generation_limit",
            "monthly_image_generation_limit",
            "is_active",
            "created_at",
            "is_default",
        ]


class UserSubscriptionSerializer(serializers.ModelSerializer):
    subscription_type = SubscriptionTypeSerializer()

    class Meta:
        model = UserSubscription
        fields = ["id", "subscription_type", "is_active", "start_date", "end_date"]


class ChatSessionUsageSerializer(serializers.ModelSerializer):
    class Meta:
        model = ChatSessionUsage
        fields = [
            "id",
            "tokens_count",
            "free_model_tokens_count",
            "is_free_model",
            "created_at",
            "updated_at",
            "session",
        ]


@extend_schema_field({"oneOf": [{"type": "integer"}, {"type": "string", "format": "decimal"}]})
class QuantityField(serializers.Field):
    """A count as a JSON integer; an amount of money as a decimal string, like the tier's prices."""

    def to_representation(self, value):
        return str(value) if isinstance(value, Decimal) else value


class LimitUsageSerializer(serializers.Serializer):
    name = serializers.CharField()
    window = serializers.CharField(help_text="hourly … monthly, or period (the subscription period).")
    limit = QuantityField(help_text="0 means unlimited.")
    used = QuantityField()
    remaining = QuantityField(allow_null=True, help_text="null when unlimited.")
    resets_at = serializers.DateTimeField(allow_null=True)


class UsageOutput(serializers.Serializer):
    subscription = UserSubscriptionSerializer()
    limits = LimitUsageSerializer(many=True)


class PaymentSerializer(serializers.ModelSerializer):
    plan = serializers.CharField(source="subscription_type.name", read_only=True)

    class Meta:
        from billing.models import Payment

        model = Payment
        fields = ["id", "plan", "amount", "currency", "status", "created_at", "refunded_at"]


class CheckoutInput(serializers.Serializer):
    subscription_type_id = serializers.IntegerField(min_value=1, max_value=2**31 - 1)


class RedirectOutput(serializers.Serializer):
    url = serializers.URLField()
