from django.conf import settings
from rest_framework import serializers

from apikeys.models import ApiKey
from chatsite.text import is_blank


class KeyUsageSerializer(serializers.Serializer):
    messages = serializers.IntegerField(help_text="Messages and images charged through this key.")
    tokens = serializers.IntegerField(help_text="Billed tokens charged through this key.")
    cost_usd = serializers.DecimalField(max_digits=14, decimal_places=8, coerce_to_string=True)


class ApiKeySerializer(serializers.ModelSerializer):
    usage = serializers.SerializerMethodField()

    class Meta:
        model = ApiKey
        fields = ["id", "name", "prefix", "store_chats", "created_at", "last_used_at", "usage"]

    def get_usage(self, key) -> KeyUsageSerializer:
        return KeyUsageSerializer(
            {
                "messages": getattr(key, "used_messages", 0) or 0,
                "tokens": getattr(key, "used_tokens", 0) or 0,
                "cost_usd": getattr(key, "used_cost", 0) or 0,
            }
        ).data


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(help_text="The full key: shown this once, never again.")

    class Meta(ApiKeySerializer.Meta):
        fields = ["id", "name", "prefix", "key", "store_chats", "created_at", "last_used_at", "usage"]


class ApiKeyCreateInput(serializers.Serializer):
    name = serializers.CharField(max_length=100, trim_whitespace=True)
    store_chats = serializers.BooleanField(default=False, help_text="Keep this key's calls as chats.")

    def validate_name(self, value: str) -> str:
        if is_blank(value):
            raise serializers.ValidationError("Give the key a name.", code="blank")
        return value


class ApiKeyUpdateInput(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    store_chats = serializers.BooleanField(required=False)


# The OpenAI-compatible API's input.

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class StopField(serializers.Field):
    """`stop`: one string or a list of up to four."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            data = [data]
        valid = isinstance(data, list) and len(data) <= 4
        if not valid or not all(isinstance(s, str) and 0 < len(s) <= 100 for s in data):
            raise serializers.ValidationError("`stop` is a string or a list of up to 4 strings.", code="invalid")
        return [_storable(s) for s in data]

    def to_representation(self, value):
        return value


def _storable(text: str) -> str:
    """Text the database can store and the upstream's JSON can carry: no NUL, no lone surrogate."""
    if "\x00" in text or any("\ud800" <= character <= "\udfff" for character in text):
        raise serializers.ValidationError("Text may not contain NUL or unpaired surrogate characters.", code="invalid")
    return text


def message_text(content) -> str:
    """A message's content: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise serializers.ValidationError("Only text content parts are supported.", code="unsupported_content")
            texts.append(part["text"])
        return "".join(texts)
    raise serializers.ValidationError("A message's `content` is a string or a list of text parts.", code="invalid")


class ChatCompletionInput(serializers.Serializer):
    model = serializers.CharField(max_length=255)
    messages = serializers.ListField(child=serializers.JSONField(), min_length=1, max_length=1000)
    stream = serializers.BooleanField(default=False)
    stream_options = serializers.JSONField(required=False, allow_null=True)
    max_tokens = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False, allow_null=True)
    max_completion_tokens = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False, allow_null=True)
    temperature = serializers.FloatField(min_value=0, max_value=2, required=False, allow_null=True)
    top_p = serializers.FloatField(min_value=0, max_value=1, required=False, allow_null=True)
    stop = StopField(required=False, allow_null=True)
    n = serializers.IntegerField(min_value=1, max_value=1, required=False, allow_null=True)
    store = serializers.BooleanField(required=False, allow_null=True, default=None)

    def validate_messages(self, value):
        messages = []
        for item in value:
            if not isinstance(item, dict) or item.get("role") not in ROLES:
                raise serializers.ValidationError(
                    "Each message is an object whose `role` is system, developer, user or assistant.", code="invalid"
                )
            text = _storable(message_text(item.get("content")))
            if len(text) > settings.MAX_MESSAGE_CHARS:
                raise serializers.ValidationError(
                    f"A message is longer than {settings.MAX_MESSAGE_CHARS} characters.", code="too_long"
                )
            messages.append({"role": ROLES[item["role"]], "content": text})
        if not any(m["role"] == "user" and not is_blank(m["content"]) for m in messages):
            raise serializers.ValidationError("Give at least one user message with some text.", code="blank")
        return messages

    def validate_stream_options(self, value):
        if value is None:
            return {}
        if not isinstance(value, dict) or not isinstance(value.get("include_usage", False), bool):
            raise serializers.ValidationError('`stream_options` is {"include_usage": true|false}.', code="invalid")
        return value

    def options(self) -> dict:
        """The sampling options for the upstream, without the ones not given."""
        data = self.validated_data
        options = {
            "max_tokens": data.get("max_tokens") or data.get("max_completion_tokens"),
            "temperature": data.get("temperature"),
            "top_p": data.get("top_p"),
            "stop": data.get("stop"),
        }
        return {name: value for name, value in options.items() if value is not None}


class ImageGenerationInput(serializers.Serializer):
    model = serializers.CharField(max_length=255)
    prompt = serializers.CharField(max_length=32000, trim_whitespace=False)
    n = serializers.IntegerField(min_value=1, max_value=1, required=False, allow_null=True)
    response_format = serializers.ChoiceField(["url", "b64_json"], required=False, allow_null=True)
    size = serializers.CharField(max_length=20, required=False, allow_null=True)

    def validate_prompt(self, value: str) -> str:
        if is_blank(value):
            raise serializers.ValidationError("The prompt is empty.", code="blank")
        if len(value) > settings.MAX_MESSAGE_CHARS:
            raise serializers.ValidationError(f"The prompt is longer than {settings.MAX_MESSAGE_CHARS} characters.")
        return value
