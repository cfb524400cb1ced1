"""The interface every upstream adapter offers, and the values it returns."""

import math
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

# A chat message as the OpenAI protocol spells it: {"role": ..., "content": ...}.
Message = dict[str, str]
# The sampling options a reply may carry to its upstream, as OpenAI's chat completions name them.
OPTION_NAMES = ("max_tokens", "temperature", "top_p", "stop")


def estimate_tokens(text: str) -> int:
    """Estimate tokens the way most tokenizers land on English: about four characters each."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def estimate_prompt_tokens(messages: list[Message]) -> int:
    # Each message costs a few tokens of framing on top of its text.
    return sum(estimate_tokens(m["content"]) + 4 for m in messages)


@dataclass(frozen=True)
class Usage:
    """Token counts and cost as the upstream reported them (cost None: price it from the model)."""

    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal | None = None


@dataclass(frozen=True)
class Completion:
    content: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal | None = None  # None: the upstream did not say; price it from the model


@dataclass(frozen=True)
class StreamEvent:
    """One step of a streamed reply: a piece of text, or the usage the upstream reports at the end."""

    text: str = ""
    usage: Usage | None = None


@dataclass(frozen=True)
class ImageResult:
    png: bytes
    prompt_tokens: int
    cost_usd: Decimal | None = None
    content_type: str = "image/png"


class Provider(ABC):
    """What every upstream adapter offers.

    Adapters raise chatsite.errors.UpstreamError (or UpstreamTimeout) for every
    failure, also from inside a stream's iteration. `stream` is an async generator:
    cancelling the task that reads it, or its `aclose()`, hangs up on the upstream at
    once, even while a read waits for the next byte. Read it inside
    `contextlib.aclosing` so that a reader that stops early closes it at once.
    """

    name = "base"

    @abstractmethod
    async def complete(self, *, model, messages: list[Message]) -> Completion: ...

    @abstractmethod
    def stream(self, *, model, messages: list[Message], options: dict | None = None) -> AsyncIterator[StreamEvent]:
        """The reply piece by piece. `options`: OpenAI sampling fields (OPTION_NAMES) passed on to the upstream."""

    @abstractmethod
    async def generate_image(self, *, model, prompt: str) -> ImageResult: ...
