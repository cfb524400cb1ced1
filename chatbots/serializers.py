from rest_framework import serializers

from chatbots.models import AIModel, Chatbot


class ChatbotSerializer(serializers.ModelSerializer):
    image = serializers.SerializerMethodField()

    class Meta:
        model = Chatbot
        fields = ["id", "name", "description", "image", "is_active", "system_prompt", "chatbot_type"]

    def get_image(self, obj: Chatbot) -> str | None:
        return obj.image.url if obj.image else None


class AIModelSerializer(serializers.ModelSerializer):
    class Meta:
        model = AIModel
        fields = [
            "id",
            "name",
            "model_id",
            "description",
            "model_type",
            "is_active",
            "is_free",
            "token_cost_multiplier",
            "context_length",
            "prompt_price_per_million",
            "completion_price_per_million",
        ]
