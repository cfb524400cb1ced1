"""Upstream adapters behind one small interface; `get_provider` picks the one for a model."""

from urllib.parse import urlsplit

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
    base_url = model.api_base or settings.AI_BASE_URL
    # The key belongs to AI_BASE_URL's host: a model pointed at another host (a local
    # Ollama, say) must not receive it.
    same_host = urlsplit(base_url).netloc == urlsplit(settings.AI_BASE_URL).netloc
    return OpenAIProvider(base_url=base_url, api_key=settings.AI_API_KEY if same_host else "")


__all__ = ["Completion", "ImageResult", "OpenAIProvider", "Provider", "estimate_tokens", "get_provider"]
