"""Upstream adapters behind one small interface; `get_provider` picks the one for a model."""

from chatbots.providers.base import Completion, ImageResult, Provider, estimate_tokens
from chatbots.providers.demo import DemoProvider


def get_provider(model) -> Provider:
    """Return the adapter that answers for `model`.

    The demo provider answers every model for now; the OpenAI-compatible
    adapter plugs in here.
    """
    return DemoProvider()


__all__ = ["Completion", "ImageResult", "Provider", "estimate_tokens", "get_provider"]
