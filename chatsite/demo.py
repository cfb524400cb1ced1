"""Demo data for the quick start: a free default tier, a paid tier, two chatbots and three offline models."""

from decimal import Decimal
from typing import Any

from django.db import models, transaction

from billing.models import SubscriptionType
from chatbots.models import AIModel, Chatbot, ContentType

FREE_TIER: dict[str, Any] = {
    "name": "Free",
    "description": "Try chatsite: free models, a few paid-model messages and images a day.",
    "price": Decimal("0.00"),
    "duration_days": 30,
    "max_tokens": 200_000,
    "max_tokens_free": 1_000_000,
    "max_openrouter_cost_usd": Decimal("1.00"),
    "hourly_max_messages": 20,
    "hourly_max_tokens": 20_000,
    "daily_max_messages": 100,
    "daily_max_tokens": 100_000,
    "monthly_max_messages": 1_000,
    "monthly_free_model_messages": 1_000,
    "monthly_free_model_tokens": 1_000_000,
    "daily_image_generation_limit": 5,
    "weekly_image_generation_limit": 20,
    "monthly_image_generation_limit": 50,
    "is_active": True,
}

PRO_TIER: dict[str, Any] = {
    "name": "Pro",
    "description": "For daily use: every model, generous limits.",
    "price": Decimal("20.00"),
    "duration_days": 30,
    "max_tokens": 10_000_000,
    "max_tokens_free": 0,
    "max_openrouter_cost_usd": Decimal("15.00"),
    "hourly_max_messages": 100,
    "hourly_max_tokens": 200_000,
    "three_hours_max_messages": 250,
    "three_hours_max_tokens": 500_000,
    "twelve_hours_max_messages": 600,
    "twelve_hours_max_tokens": 1_000_000,
    "daily_max_messages": 1_000,
    "daily_max_tokens": 2_000_000,
    "weekly_max_messages": 5_000,
    "weekly_max_tokens": 5_000_000,
    "monthly_max_messages": 15_000,
    "monthly_max_tokens": 10_000_000,
    "daily_image_generation_limit": 50,
    "weekly_image_generation_limit": 250,
    "monthly_image_generation_limit": 1_000,
    "is_active": True,
}

# Created in this order, so on a fresh database "General Assistant" is chatbot 1 (as in the README).
CHATBOTS: list[dict[str, Any]] = [
    {
        "name": "General Assistant",
        "description": "Answers questions, writes and explains.",
        "system_prompt": "You are a helpful assistant.",
        "chatbot_type": ContentType.TEXT,
        "is_active": True,
    },
    {
        "name": "Image Studio",
        "description": "Turns a description into a picture.",
        "system_prompt": "",
        "chatbot_type": ContentType.IMAGE,
        "is_active": True,
    },
]

AI_MODELS: list[dict[str, Any]] = [
    {
        "model_id": "demo/chat-free",
        "name": "Demo Chat (free)",
        "description": "Offline demo model; counts against the free-model quotas.",
        "model_type": ContentType.TEXT,
        "is_free": True,
        "token_cost_multiplier": Decimal("1.00"),
        "prompt_price_per_million": Decimal("0"),
        "completion_price_per_million": Decimal("0"),
    },
    {
        "model_id": "demo/chat-pro",
        "name": "Demo Chat Pro",
        "description": "Offline demo model priced like a paid one.",
        "model_type": ContentType.TEXT,
        "is_free": False,
        "token_cost_multiplier": Decimal("1.00"),
        "prompt_price_per_million": Decimal("0.50"),
        "completion_price_per_million": Decimal("1.50"),
    },
    {
        "model_id": "demo/image",
        "name": "Demo Image",
        "description": "Offline demo image model: draws a picture from the prompt.",
        "model_type": ContentType.IMAGE,
        "is_free": False,
        "token_cost_multiplier": Decimal("1.00"),
        "prompt_price_per_million": Decimal("0"),
        "completion_price_per_million": Decimal("0"),
    },
]


def _ensure(model: type[models.Model], counts: dict[str, int], key: str, lookup: dict, defaults: dict) -> None:
    # Only missing rows are created: `make run` seeds on every start, and staff edits must survive it.
    _, created = model.objects.get_or_create(**lookup, defaults=defaults)
    counts[f"{key}_{'created' if created else 'kept'}"] += 1


@transaction.atomic
def demo_seed() -> dict[str, int]:
    """Create whichever demo tiers, chatbots and models are missing; return how many were created or kept."""
    counts = dict.fromkeys(
        (f"{key}_{what}" for key in ("tiers", "chatbots", "ai_models") for what in ("created", "kept")), 0
    )
    # Free becomes the default tier unless staff already made another tier the default.
    has_default = SubscriptionType.objects.filter(is_default=True).exists()
    _ensure(SubscriptionType, counts, "tiers", {"sku": "FREE"}, {**FREE_TIER, "is_default": not has_default})
    _ensure(SubscriptionType, counts, "tiers", {"sku": "PRO"}, {**PRO_TIER, "is_default": False})
    for chatbot in CHATBOTS:
        _ensure(Chatbot, counts, "chatbots", {"name": chatbot["name"]}, chatbot)
    for ai_model in AI_MODELS:
        _ensure(AIModel, counts, "ai_models", {"model_id": ai_model["model_id"]}, {**ai_model, "provider": "demo"})
    return counts
