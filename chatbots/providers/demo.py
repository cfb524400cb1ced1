"""The offline demo provider: deterministic answers so chatsite runs with no network."""

import asyncio
import hashlib
import io
import re
import textwrap
from collections.abc import AsyncIterator

from django.conf import settings
from PIL import Image, ImageDraw

from chatbots.providers.base import (
    Completion,
    ImageResult,
    Message,
    Provider,
    StreamEvent,
    Usage,
    estimate_prompt_tokens,
    estimate_tokens,
)

# The language a message names, and a few lines of it: the demo shows what a real model's code looks like.
_SAMPLES = {
    "python": 'def greet(name: str) -> str:\n    return f"Hello, {name}!"\n\nprint(greet("chatsite"))',
    "javascript": 'function greet(name) {\n  return `Hello, ${name}!`;\n}\n\nconsole.log(greet("chatsite"));',
    "typescript": "function greet(name: string): string {\n  return `Hello, ${name}!`;\n}\n",
    "rust": 'fn main() {\n    let name = "chatsite";\n    println!("Hello, {name}!");\n}',
    "go": 'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("Hello, chatsite!")\n}',
    "java": 'class Hello {\n    public static void main(String[] args) {\n        System.out.println("Hi!");\n    }\n}',
    "csharp": 'Console.WriteLine("Hello, chatsite!");',
    "cpp": '#include <iostream>\n\nint main() {\n    std::cout << "Hello, chatsite!\\n";\n}',
    "c": '#include <stdio.h>\n\nint main(void) {\n    printf("Hello, chatsite!\\n");\n    return 0;\n}',
    "ruby": 'def greet(name)\n  "Hello, #{name}!"\nend\n\nputs greet("chatsite")',
    "php": '<?php\nfunction greet(string $name): string {\n    return "Hello, $name!";\n}\necho greet("chatsite");',
    "sql": "SELECT title, updated_at\nFROM chats\nWHERE user_id = 42\nORDER BY updated_at DESC\nLIMIT 10;",
    "bash": 'for name in alice bob; do\n  echo "Hello, $name!"\ndone',
    "html": '<p class="greeting">Hello, <strong>chatsite</strong>!</p>',
    "css": ".greeting {\n  color: #1a5fd0;\n  font-weight: 600;\n}",
    "kotlin": 'fun main() {\n    println("Hello, chatsite!")\n}',
    "swift": 'print("Hello, chatsite!")',
}
_LANGUAGE_WORDS = [
    (r"python|py", "python"),
    (r"javascript|js|node(?:\.?js)?", "javascript"),
    (r"typescript|ts", "typescript"),
    (r"rust", "rust"),
    # "go" is also an everyday word: only "golang", "in go" or "go code" and the like.
    (r"golang|(?<=in )go(?! to)|go(?= (?:code|program|function|snippet|module))", "go"),
    (r"java", "java"),
    (r"c#|csharp", "csharp"),
    (r"c\+\+|cpp", "cpp"),
    (r"ruby", "ruby"),
    (r"php", "php"),
    (r"sql|postgres(?:ql)?|sqlite", "sql"),
    (r"bash|shell|sh", "bash"),
    (r"html", "html"),
    (r"css", "css"),
    (r"kotlin", "kotlin"),
    (r"swift", "swift"),
    (r"c", "c"),
]


def demo_language(text: str) -> str:
    """The programming language a message names (python when it names none)."""
    for pattern, language in _LANGUAGE_WORDS:
        if re.search(rf"(?<![\w#+]){pattern}(?![\w#+])", text, re.IGNORECASE):
            return language
    return "python"


def demo_reply(messages: list[Message]) -> str:
    last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    words = last.split()
    excerpt = " ".join(words[:40]) + (" …" if len(words) > 40 else "")
    turns = sum(1 for m in messages if m["role"] == "user")
    language = demo_language(last)
    return (
        "**Demo reply** (offline demo provider, no AI model was called).\n\n"
        f"You wrote {len(words)} word{'s' if len(words) != 1 else ''} in turn {turns} of this chat:\n\n"
        f"> {excerpt}\n\n"
        "A real model's answer is shown the same way:\n\n"
        "- **lists**, *emphasis* and `inline code`\n"
        "- tables\n"
        f"- code blocks, highlighted ({language} here)\n\n"
        "| Turn | Words | Language |\n"
        "|---:|---:|---|\n"
        f"| {turns} | {len(words)} | {language} |\n\n"
        f"```{language}\n{_SAMPLES[language]}\n```\n\n"
        "Set `AI_API_KEY` to talk to a real model."
    )


def _apply_options(content: str, options: dict) -> str:
    """Honour `stop` and `max_tokens` as a model would: the text ends before a stop sequence, or at the limit."""
    stops = options.get("stop") or []
    for stop in [stops] if isinstance(stops, str) else stops:
        if stop and stop in content:
            content = content[: content.index(stop)]
    if options.get("max_tokens"):
        content = content[: options["max_tokens"] * 4]
    return content


class DemoProvider(Provider):
    name = "demo"

    async def complete(self, *, model, messages: list[Message]) -> Completion:
        content = demo_reply(messages)
        return Completion(
            content=content,
            prompt_tokens=estimate_prompt_tokens(messages),
            completion_tokens=estimate_tokens(content),
        )

    async def stream(
        self, *, model, messages: list[Message], options: dict | None = None
    ) -> AsyncIterator[StreamEvent]:
        content = _apply_options(demo_reply(messages), options or {})
        delay = settings.DEMO_STREAM_DELAY
        # Word by word, like a model's tokens, paced so the streaming is visible.
        for piece in re.findall(r"\S+\s*|\s+", content):
            if delay:
                await asyncio.sleep(delay)
            yield StreamEvent(text=piece)
        yield StreamEvent(usage=Usage(estimate_prompt_tokens(messages), estimate_tokens(content)))

    async def generate_image(self, *, model, prompt: str) -> ImageResult:
        # Drawing and encoding 256 x 256 takes a few milliseconds: not worth a thread.
        digest = hashlib.sha256(prompt.encode()).digest()
        background = tuple(digest[:3])
        ink = tuple(255 - c for c in background)
        image = Image.new("RGB", (256, 256), background)
        draw = ImageDraw.Draw(image)
        for i in range(8):
            x, y = digest[3 + i] % 200, digest[11 + i] % 200
            draw.ellipse((x, y, x + 56, y + 56), outline=ink, width=3)
        draw.text((12, 12), "chatsite demo", fill=ink)
        draw.multiline_text((12, 200), "\n".join(textwrap.wrap(prompt, 36)[:3]), fill=ink)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return ImageResult(png=buffer.getvalue(), prompt_tokens=estimate_tokens(prompt))
