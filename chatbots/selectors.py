from django.db.models import QuerySet

from chatbots.models import AIModel, Chatbot


def chatbot_list() -> QuerySet[Chatbot]:
    return Chatbot.objects.filter(is_active=True).order_by("name", "id")


def ai_model_list(*, model_type: str | None = None) -> QuerySet[AIModel]:
    models = AIModel.objects.filter(is_active=True).order_by("name", "id")
    return models.filter(model_type=model_type) if model_type else models
