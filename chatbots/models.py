from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models


class ContentType(models.TextChoices):
    TEXT = "text", "Text"
    IMAGE = "image", "Image"


class Chatbot(models.Model):
    """A preset: a system prompt with a name, shown to users as something to chat with."""

    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    image = models.ImageField(upload_to="chatbot_images/", blank=True)
    is_active = models.BooleanField(default=True)
    system_prompt = models.TextField(blank=True)
    prompt_is_private = models.BooleanField(
        "prompt is private",
        default=True,
        help_text="Hide the system prompt from users who are not staff (the API shows it empty to them).",
    )
    chatbot_type = models.CharField(max_length=10, choices=ContentType.choices, default=ContentType.TEXT)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class AIModel(models.Model):
    class Provider(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible"
        DEMO = "demo", "Demo (offline)"

    name = models.CharField(max_length=100)
    model_id = models.CharField(max_length=200, unique=True, help_text="Upstream id, e.g. openai/gpt-4o.")
    description = models.TextField(blank=True)
    model_type = models.CharField(max_length=10, choices=ContentType.choices, default=ContentType.TEXT)
    is_active = models.BooleanField(default=True)
    is_free = models.BooleanField(default=False)
    token_cost_multiplier = models.DecimalField(
        max_digits=8, decimal_places=2, default=Decimal("1.00"), validators=[MinValueValidator(0)]
    )
    context_length = models.PositiveIntegerField(default=8192)
    prompt_price_per_million = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        default=Decimal("0"),
        validators=[MinValueValidator(0)],
        help_text="USD per million prompt tokens.",
    )
    completion_price_per_million = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        default=Decimal("0"),
        validators=[MinValueValidator(0)],
        help_text="USD per million completion tokens.",
    )
    provider = models.CharField(max_length=20, choices=Provider.choices, default=Provider.OPENAI)
    api_base = models.URLField(blank=True, help_text="Overrides AI_BASE_URL for this model.")

    class Meta:
        ordering = ["name", "id"]
        verbose_name = "AI model"

    def __str__(self) -> str:
        return f"{self.name} ({self.model_id})"

    def price_usd(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        """What the upstream would charge for these tokens at this model's list prices."""
        return (
            Decimal(prompt_tokens) * self.prompt_price_per_million
            + Decimal(completion_tokens) * self.completion_price_per_million
        ) / Decimal(1_000_000)
