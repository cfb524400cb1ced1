"""Upstream adapters behind one small interface; `get_provider` picks the one for a model."""

from django.conf import settings

from chatbots.providers.base import Completion, ImageResult, Provider, estimate_tokens
from chatbots.providers.demo import DemoProvider
from chatbots.providers.openai import OpenAIProvider


def get_provider(model) -> Provider:
    """Return the adapter that answers for `model`.

    The demo provider answers demo models, and every model while there is neither an
    API key nor a per-model `api_base` to call; any other model goes to its
    OpenAI-compatible upstream.
    """
    if model.provider == "demo" or not (settings.AI_API_KEY or model.api_base):
        return DemoProvider()
    return OpenAIProvider(base_url=model.api_base or settings.AI_BASE_URL, api_key=settings.AI_API_KEY)


__all__ = ["Completion", "ImageResult", "OpenAIProvider", "Provider", "estimate_tokens", "get_provider"]
