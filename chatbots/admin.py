from django.contrib import admin
from django.db import models

from chatbots.models import AIModel, Chatbot


@admin.register(Chatbot)
class ChatbotAdmin(admin.ModelAdmin):
    list_display = ("name", "chatbot_type", "is_active", "prompt_is_private")
    list_editable = ("is_active",)
    list_filter = ("chatbot_type", "is_active", "prompt_is_private")
    search_fields = ("name", "description")


@admin.register(AIModel)
class AIModelAdmin(admin.ModelAdmin):
    # Say the scheme Django 6 will assume, so a bare host in api_base means https.
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "name",
                    "model_id",
                    "description",
                    "model_type",
                    "provider",
                    "api_base",
                    "context_length",
                    "is_free",
                    "is_active",
                )
            },
        ),
        (
            "Pricing",
            {
                "fields": ("token_cost_multiplier", "prompt_price_per_million", "completion_price_per_million"),
                "description": "Billed tokens = (prompt + completion) x multiplier; prices in USD per million.",
            },
        ),
    )
    list_display = (
        "name",
        "model_id",
        "model_type",
        "provider",
        "is_free",
        "is_active",
        "token_cost_multiplier",
        "prompt_price_per_million",
        "completion_price_per_million",
        "context_length",
    )
    list_filter = ("provider", "model_type", "is_free", "is_active")
    search_fields = ("name", "model_id")
