import factory

from accounts.tests.factories import UserFactory
from chatbots.tests.factories import AIModelFactory, ChatbotFactory
from sessions_app.models import ChatMessage, ChatSession


class ChatSessionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ChatSession

    user = factory.SubFactory(UserFactory)
    chatbot = factory.SubFactory(ChatbotFactory)
    ai_model = factory.SubFactory(AIModelFactory)
    title = "New Chat"


def _last_message_id(message):
    # As the app links them: each message follows the chat's latest one.
    last = ChatMessage.objects.filter(session=message.session).order_by("-created_at", "-id").first()
    return last.message_id if last is not None else None


class ChatMessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ChatMessage

    session = factory.SubFactory(ChatSessionFactory)
    message_type = ChatMessage.Type.USER
    content = factory.Sequence(lambda n: f"Message number {n}")
    tokens_count = 5
    parent_message_id = factory.LazyAttribute(_last_message_id)
