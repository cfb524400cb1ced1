"""Markdown for messages, rendered on the server and sanitized: one policy for saved and streaming text."""

import html
import re

import nh3
from markdown_it import MarkdownIt
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


def message_html(content: str) -> str:
    """Render a message's Markdown to HTML that is safe to insert into a page."""
    return nh3.clean(
        _markdown.render(content),
        tags=_TAGS,
        attributes=_ATTRIBUTES,
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
