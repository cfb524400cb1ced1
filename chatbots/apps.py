from django.apps import AppConfig


class ChatbotsConfig(AppConfig):
    name = "chatbots"
    verbose_name = "Chatbots and AI models"
