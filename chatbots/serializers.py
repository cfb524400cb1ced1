from rest_framework import serializers

from chatbots.models import AIModel, Chatbot


class ChatbotSerializer(serializers.ModelSerializer):
    image = serializers.SerializerMethodField()
    system_prompt = serializers.SerializerMethodField(help_text="Empty when the prompt is private, except for staff.")

    class Meta:
        model = Chatbot
        fields = [
            "id",
            "name",
            "description",
            "image",
            "is_active",
            "system_prompt",
            "chatbot_type",
            "prompt_is_private",
        ]

    def get_image(self, obj: Chatbot) -> str | None:
        return obj.image.url if obj.image else None

    def get_system_prompt(self, obj: Chatbot) -> str:
        request = self.context.get("request")
        staff = request is not None and getattr(request.user, "is_staff", False)
        return obj.system_prompt if staff or not obj.prompt_is_private else ""


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
