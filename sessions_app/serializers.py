from django.conf import settings
from rest_framework import serializers

from chatbots.serializers import AIModelSerializer, ChatbotSerializer
from chatsite.fields import IdField, StrictBooleanField, StrictCharField
from sessions_app.models import ChatMessage, ChatSession


class ChatSessionSerializer(serializers.ModelSerializer):
    chatbot = ChatbotSerializer(read_only=True)
    ai_model = AIModelSerializer(read_only=True)

    class Meta:
        model = ChatSession
        fields = [
            "id", "chatbot", "ai_model", "title", "auto_generate_title", "created_at", "updated_at", "is_active",
            "pinned",
        ]  # fmt: skip


class ChatSessionSearchResultSerializer(ChatSessionSerializer):
    snippet = serializers.CharField(read_only=True, help_text="HTML: escaped text, matches in <mark>.")

    class Meta(ChatSessionSerializer.Meta):
        fields = [*ChatSessionSerializer.Meta.fields, "snippet"]


class ChatMessageSerializer(serializers.ModelSerializer):
    ai_model = serializers.SlugRelatedField(slug_field="model_id", read_only=True, allow_null=True)

    class Meta:
        model = ChatMessage
        fields = [
            "message_id",
            "message_type",
            "content",
            "tokens_count",
            "image_url",
            "created_at",
            "edited_at",
            "disabled",
            "status",
            "ai_model",
            "parent_message_id",
        ]
        extra_kwargs = {
            "parent_message_id": {
                "help_text": "The message this one follows (null for the first). Messages with the same parent "
                "are versions of one place in the chat: edits of a message, or regenerated replies."
            }
        }

    def to_representation(self, message: ChatMessage) -> dict:
        # Every send shows its messages, and DRF builds a model serializer's fields anew for each
        # instance it makes (0.27 ms a message, against 0.02 written out). This is what those fields give,
        # written out; a test holds it equal to DRF's own for every kind of message.
        return {
            "message_id": str(message.message_id),
            "message_type": message.message_type,
            "content": message.content,
            "tokens_count": message.tokens_count,
            "image_url": message.image_url,
            "created_at": _datetime(message.created_at),
            "edited_at": _datetime(message.edited_at),
            "disabled": message.disabled,
            "status": message.status,
            "ai_model": None if message.ai_model_id is None else message.ai_model.model_id,
            "parent_message_id": None if message.parent_message_id is None else str(message.parent_message_id),
        }


def _datetime(value) -> str | None:
    return None if value is None else _DATETIME.to_representation(value)


_DATETIME = serializers.DateTimeField()


class SessionCreateInput(serializers.Serializer):
    chatbot_id = IdField()
    ai_model_id = IdField(help_text="The model's upstream model_id (e.g. openai/gpt-4) or its numeric id.")
    title = StrictCharField(required=False, max_length=200, allow_blank=True)


class SessionUpdateInput(serializers.Serializer):
    title = StrictCharField(max_length=200)
    auto_generate_title = StrictBooleanField(required=False)
    ai_model_id = IdField(required=False)
    pinned = StrictBooleanField(required=False, help_text="Keep the chat at the top of the chat list.")


class TitleInput(serializers.Serializer):
    title = StrictCharField(max_length=200)


def _message_field(**kwargs):
    return StrictCharField(max_length=settings.MAX_MESSAGE_CHARS, trim_whitespace=False, **kwargs)


class SendInput(serializers.Serializer):
    message = _message_field()
    stream = StrictBooleanField(
        required=False,
        default=False,
        help_text="Stream the reply as server-sent events (like Accept: text/event-stream).",
    )
    client_message_id = serializers.UUIDField(
        required=False, allow_null=True, help_text="Idempotency key: the same id again returns the first result."
    )


class RegenerateInput(serializers.Serializer):
    stream = StrictBooleanField(required=False, default=False)
    message_id = serializers.UUIDField(
        required=False, allow_null=True,
        help_text="A shown reply to write again (default: the last reply). The old one stays as a version.",
    )  # fmt: skip


class EditInput(serializers.Serializer):
    content = _message_field()
    regenerate = StrictBooleanField(required=False, default=True)
    stream = StrictBooleanField(required=False, default=False)


class StopOutput(serializers.Serializer):
    success = serializers.BooleanField()
    stopped_message_ids = serializers.ListField(child=serializers.UUIDField())


class MessagesOutput(serializers.Serializer):
    messages = ChatMessageSerializer(many=True)


class SendOutput(serializers.Serializer):
    user_message = ChatMessageSerializer()
    assistant_message = ChatMessageSerializer()


class RegenerateOutput(serializers.Serializer):
    assistant_message = ChatMessageSerializer()


class EditOutput(serializers.Serializer):
    success = serializers.BooleanField()
    disabled_message_ids = serializers.ListField(child=serializers.UUIDField())
    assistant_message = ChatMessageSerializer(allow_null=True)


class SuccessOutput(serializers.Serializer):
    success = serializers.BooleanField()


class TitleOutput(SuccessOutput):
    title = serializers.CharField()


class CleanupOutput(serializers.Serializer):
    deleted = serializers.IntegerField()
    message = serializers.CharField()


MAX_RENDER_CHARS = 200_000


class RenderInput(serializers.Serializer):
    content = StrictCharField(max_length=MAX_RENDER_CHARS, allow_blank=True, trim_whitespace=False)


class RenderOutput(serializers.Serializer):
    content_html = serializers.CharField(help_text="The Markdown as sanitized HTML, exactly as a saved reply shows.")


class VersionsOutput(serializers.Serializer):
    versions = ChatMessageSerializer(many=True, help_text="The versions at this place in the chat, oldest first.")
    current = serializers.IntegerField(help_text="Index in `versions` of the one shown (not disabled), or -1.")


class SwitchOutput(serializers.Serializer):
    success = serializers.BooleanField()
    messages = ChatMessageSerializer(many=True, help_text="The messages now shown, oldest first.")
