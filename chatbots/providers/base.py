"""The interface every upstream adapter offers, and the values it returns."""

import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal

# A chat message as the OpenAI protocol spells it: {"role": ..., "content": ...}.
Message = dict[str, str]


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


class Cancel:
    """Lets another thread end a call that is blocked waiting on the upstream."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hooks: list[Callable[[], None]] = []
        self.cancelled = False

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Run `hook` when the call is cancelled (at once if it already was)."""
        with self._lock:
            if not self.cancelled:
                self._hooks.append(hook)
                return
        hook()

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook()


class Provider(ABC):
    """What every upstream adapter offers.

    Adapters raise chatsite.errors.UpstreamError (or UpstreamTimeout) for every
    failure, also from inside a stream's iteration. `stream` returns an iterator
    whose `close()` releases the upstream connection, ending the call; `cancel`
    ends it from another thread, even while a read is blocked.
    """

    name = "base"

    @abstractmethod
    def complete(self, *, model, messages: list[Message]) -> Completion: ...

    @abstractmethod
    def stream(self, *, model, messages: list[Message], cancel: Cancel | None = None) -> Iterator[StreamEvent]: ...

    @abstractmethod
    def generate_image(self, *, model, prompt: str) -> ImageResult: ...
