from decimal import Decimal

import factory

from chatbots.models import AIModel, Chatbot


class ChatbotFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Chatbot

    name = factory.Sequence(lambda n: f"Chatbot {n}")
    description = "A chatbot for tests"
    system_prompt = "You are a helpful assistant."
    chatbot_type = "text"


class AIModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AIModel

    name = factory.Sequence(lambda n: f"Model {n}")
    model_id = factory.Sequence(lambda n: f"vendor/model-{n}")
    model_type = "text"
    provider = "demo"
    token_cost_multiplier = Decimal("1.00")
    context_length = 8192
