"""Template filters for the conversation page."""

from django import template
from django.utils.safestring import mark_safe

from sessions_app.rendering import message_html

register = template.Library()


@register.filter
def markdown(value: str) -> str:
    """Render a message's Markdown on the server, as the stream's `content_html` does."""
    # Safe to mark: nh3 rebuilt the HTML from an allow-list of tags, attributes and URL schemes.
    return mark_safe(message_html(value or ""))  # noqa: S308
