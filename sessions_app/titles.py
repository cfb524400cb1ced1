"""Automatic chat titles: a short summary after the first exchange."""

import logging

from django.conf import settings

from chatbots.models import AIModel
from chatbots.providers import get_provider
from chatsite.errors import ChatsiteError
from sessions_app.models import DEFAULT_TITLE
from sessions_app.rendering import markdown_plain

logger = logging.getLogger(__name__)

TITLE_MAX_CHARS = 200
AUTO_TITLE_WORDS = 8
TITLE_INSTRUCTION = (
    "Write a title of at most six words for a chat that starts with the message below. "
    "Answer with the title only, without quotes."
)


def title_from_words(content: str) -> str:
    """The first words of a message as plain text: titles show no Markdown."""
    words = markdown_plain(content).split()
    title = " ".join(words[:AUTO_TITLE_WORDS]) + ("…" if len(words) > AUTO_TITLE_WORDS else "")
    return title[:TITLE_MAX_CHARS] or DEFAULT_TITLE


def _title_model() -> AIModel:
    known = AIModel.objects.filter(model_id=settings.TITLE_MODEL).first()
    return known or AIModel(model_id=settings.TITLE_MODEL, name=settings.TITLE_MODEL, provider=AIModel.Provider.OPENAI)


async def title_summarize(content: str) -> str:
    """A short title for a chat that opens with `content`: from TITLE_MODEL if set, else its first words."""
    if settings.TITLE_MODEL:
        from sessions_app.runtime import db

        model = await db(_title_model)
        messages = [{"role": "system", "content": TITLE_INSTRUCTION}, {"role": "user", "content": content[:2000]}]
        try:
            answer = (await get_provider(model).complete(model=model, messages=messages)).content
        except ChatsiteError:
            logger.warning("title model %s failed; using the first words", settings.TITLE_MODEL)
        else:
            title = markdown_plain(answer).strip().strip("\"'“”")[:TITLE_MAX_CHARS]
            if title:
                return title
    return title_from_words(content)
