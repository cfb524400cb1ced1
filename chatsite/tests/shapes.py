"""The JSON shapes of seeds/001 (plus the fields chatsite adds), asserted key for key."""

CHATBOT_KEYS = {
    "id", "name", "description", "image", "is_active", "system_prompt", "chatbot_type",
    # added
    "prompt_is_private",
}  # fmt: skip
AI_MODEL_KEYS = {
    "id", "name", "model_id", "description", "model_type", "is_active", "is_free", "token_cost_multiplier",
    # added
    "context_length", "prompt_price_per_million", "completion_price_per_million",
}  # fmt: skip
SESSION_KEYS = {
    "id", "chatbot", "ai_model", "title", "auto_generate_title", "created_at", "updated_at", "is_active",
    # added
    "pinned",
}  # fmt: skip
MESSAGE_KEYS = {
    "message_id", "message_type", "content", "tokens_count", "image_url", "created_at", "edited_at", "disabled",
    # added
    "status", "ai_model", "parent_message_id",
}  # fmt: skip
USER_KEYS = {"id", "phone_number", "name", "is_verified", "date_joined", "email", "role"}
SUBSCRIPTION_KEYS = {"id", "subscription_type", "is_active", "start_date", "end_date"}
SUBSCRIPTION_TYPE_KEYS = {
    "id", "name", "description", "price", "duration_days", "sku", "max_tokens", "max_tokens_free",
    "max_openrouter_cost_usd", "hourly_max_messages", "hourly_max_tokens", "three_hours_max_messages",
    "three_hours_max_tokens", "twelve_hours_max_messages", "twelve_hours_max_tokens", "daily_max_messages",
    "daily_max_tokens", "weekly_max_messages", "weekly_max_tokens", "monthly_max_messages", "monthly_max_tokens",
    "monthly_free_model_messages", "monthly_free_model_tokens", "daily_image_generation_limit",
    "weekly_image_generation_limit", "monthly_image_generation_limit", "is_active", "created_at",
    # added
    "is_default",
}  # fmt: skip
SESSION_USAGE_KEYS = {
    "id",
    "tokens_count",
    "free_model_tokens_count",
    "is_free_model",
    "created_at",
    "updated_at",
    "session",
}


def assert_session_shape(data: dict) -> None:
    assert set(data) == SESSION_KEYS
    assert set(data["chatbot"]) == CHATBOT_KEYS
    assert set(data["ai_model"]) == AI_MODEL_KEYS


def assert_message_shape(data: dict) -> None:
    assert set(data) == MESSAGE_KEYS
