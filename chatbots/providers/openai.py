"""The adapter for any OpenAI-compatible upstream: OpenRouter, OpenAI, Ollama, vLLM, llama.cpp server, LM Studio."""

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from httpx_sse import EventSource, ServerSentEvent

from chatbots.providers.base import (
    OPTION_NAMES,
    Completion,
    ImageResult,
    Message,
    Provider,
    StreamEvent,
    Usage,
    estimate_prompt_tokens,
    estimate_tokens,
)
from chatbots.providers.http import sync_client, upstream_client, upstream_timeout
from chatsite.errors import UpstreamError, UpstreamTimeout

logger = logging.getLogger(__name__)

RETRY_AFTER_CAP = 10.0
DETAIL_MAX_CHARS = 300
# After [DONE], how long the rest of a stream's body (normally its last, empty chunk) is waited for.
DRAIN_SECONDS = 0.5
IMAGE_SIGNATURES = [
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"RIFF", "image/webp"),
]


class OpenAIProvider(Provider):
    """Speaks the OpenAI chat completions protocol over httpx; streams are read with httpx-sse."""

    name = "openai"

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        parts = urlsplit(self.base_url)
        self.host = f"{parts.hostname}:{parts.port}" if parts.port else (parts.hostname or self.base_url)
        self.is_openrouter = "openrouter" in (parts.hostname or "")

    # The three calls of the interface.

    async def complete(self, *, model, messages: list[Message]) -> Completion:
        payload = {"model": model.model_id, "messages": messages, "stream": False, **self._extra_body()}
        async with upstream_client() as client:
            data = await self._read_json(await self._send(client, "POST", "/chat/completions", payload=payload))
        content = _message_content(self._first_choice(data))
        usage = _usage(data.get("usage"), messages=messages, content=content)
        return Completion(
            content=content,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=usage.cost_usd,
        )

    async def stream(
        self, *, model, messages: list[Message], options: dict | None = None
    ) -> AsyncIterator[StreamEvent]:
        """Yield each piece of text as soon as it arrives, then the usage.

        A stream that fails before its first piece of text (silence after the headers, a
        cut, an error event) is tried again like a request that failed; once text has come,
        nothing is retried. Cancelling the task that reads it, or `aclose()`, runs the
        `finally` below, which hangs up on the upstream, also while a read waits for the next byte.
        """
        payload = {
            "model": model.model_id,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            **{name: value for name, value in (options or {}).items() if name in OPTION_NAMES},
            **self._extra_body(),
        }
        attempt = 0
        async with upstream_client() as client:
            while True:
                attempt += 1
                produced = False
                response = await self._send(client, "POST", "/chat/completions", payload=payload, stream=True)
                try:
                    async with contextlib.aclosing(self._answer_events(response, messages)) as events:
                        async for event in events:
                            produced = produced or bool(event.text)
                            yield event
                    return
                except UpstreamError as error:
                    # Timeouts, cuts and error events may pass; garbage would come again.
                    transient = error.transient or isinstance(error, UpstreamTimeout)
                    delay = self._retry_delay(attempt, error, None) if transient and not produced else None
                    if delay is None:
                        raise
                finally:
                    # A body not read to its end closes the connection instead of returning it to the pool.
                    await response.aclose()
                if delay > 0:
                    await asyncio.sleep(delay)

    async def _answer_events(self, response: httpx.Response, messages: list[Message]) -> AsyncIterator[StreamEvent]:
        if response.headers.get("Content-Type", "").startswith("application/json"):
            # The upstream ignored "stream": true and answered in one piece.
            completion_data = await self._read_json(response)
            content = _message_content(self._first_choice(completion_data))
            if content:
                yield StreamEvent(text=content)
            if isinstance(completion_data.get("usage"), dict):
                yield StreamEvent(usage=_usage(completion_data["usage"], messages=messages, content=content))
            return
        async with contextlib.aclosing(self._stream_events(response, messages)) as events:
            async for event in events:
                yield event

    async def generate_image(self, *, model, prompt: str) -> ImageResult:
        api = settings.AI_IMAGE_API
        if api not in ("images", "chat"):
            api = "chat" if self.is_openrouter else "images"
        async with upstream_client() as client:
            if api == "chat":
                return await self._image_via_chat(client, model, prompt)
            return await self._image_via_images(client, model, prompt)

    # More than the interface: the catalogue behind GET /models, for sync_models.

    def list_models(self) -> list[dict[str, Any]]:
        """Return the upstream's model catalogue (the items of GET /models).

        Blocking: sync_models runs outside any event loop.
        """
        with sync_client() as client:
            body = self._send_blocking(client, "GET", "/models").content
        data = self._parse_json(body, require_dict=False)
        items = data.get("data") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise self._error("The AI provider sent a model list that is not a list.")
        return items

    # Streaming.

    async def _stream_events(self, response: httpx.Response, messages: list[Message]) -> AsyncIterator[StreamEvent]:
        pieces: list[str] = []
        reported_usage = None
        finished = False
        async with contextlib.aclosing(self._sse_events(response, started=lambda: bool(pieces))) as events:
            async for event in events:
                if event.data.strip() == "[DONE]":
                    finished = True
                    break
                if event.event == "error":
                    detail = _error_message(event.data) or "no detail given"
                    raise self._error(f"The AI provider failed {_where(pieces)}: {detail}.", transient=True)
                try:
                    chunk = json.loads(event.data)
                except ValueError:
                    raise self._error("The AI provider sent a malformed stream chunk.") from None
                if not isinstance(chunk, dict):
                    raise self._error("The AI provider sent a malformed stream chunk.")
                if chunk.get("error"):
                    detail = _error_message(chunk) or "no detail given"
                    raise self._error(f"The AI provider failed {_where(pieces)}: {detail}.", transient=True)
                choices = chunk.get("choices")
                if isinstance(choices, list) and choices and isinstance(choices[0], dict):
                    choice = choices[0]
                    delta = choice.get("delta")
                    text = delta.get("content") if isinstance(delta, dict) else None
                    if isinstance(text, str) and text:
                        pieces.append(text)
                        yield StreamEvent(text=text)
                    if choice.get("finish_reason") == "error":
                        raise self._error(f"The AI provider failed {_where(pieces)}.", transient=True)
                    if choice.get("finish_reason"):
                        finished = True
                # vLLM and llama.cpp may report usage on several chunks; the last one is the total.
                if isinstance(chunk.get("usage"), dict):
                    reported_usage = chunk["usage"]
            if finished:
                # Read the body to its end: only then does the connection go back to the pool
                # (closed, the next reply would connect and shake hands again).
                with contextlib.suppress(TimeoutError, UpstreamError):
                    async with asyncio.timeout(DRAIN_SECONDS):
                        async for _ in events:
                            pass
        if not finished:
            raise self._error(f"The AI provider closed the stream early, {_where(pieces)}.", transient=True)
        if reported_usage is not None:
            yield StreamEvent(usage=_usage(reported_usage, messages=messages, content="".join(pieces)))

    async def _sse_events(self, response: httpx.Response, started) -> AsyncIterator[ServerSentEvent]:
        """Yield each server-sent event as soon as its closing blank line arrives; end where the body ends.

        `started()` says whether text came already, for the words of a timeout.
        """
        try:
            async with contextlib.aclosing(EventSource(_ending_with_a_blank_line(response)).aiter_sse()) as events:
                async for event in events:
                    # Once an event had an `id:`, httpx-sse dispatches every blank line (keep-alives
                    # too) as an event without data; the SSE spec drops those.
                    if event.data or event.event == "error":
                        yield event
        except httpx.ReadTimeout:
            where = "mid-reply" if started() else "before its first token"
            raise self._error(
                f"The AI provider went silent for more than {settings.AI_TIMEOUT:g} s {where}.", timeout=True
            ) from None
        except httpx.HTTPError as exc:
            # A cut connection ends the events; the caller tells a finished reply from a cut one.
            logger.info("stream from %s broke off: %s", self.host, exc)

    # Images.

    async def _image_via_images(self, client: httpx.AsyncClient, model, prompt: str) -> ImageResult:
        payload = {"model": model.model_id, "prompt": prompt, "n": 1}
        # DALL-E answers with a short-lived URL unless asked for base64; gpt-image models reject the field.
        if not model.model_id.rsplit("/", 1)[-1].startswith(("gpt-image", "chatgpt-image")):
            payload["response_format"] = "b64_json"
        data = await self._read_json(await self._send(client, "POST", "/images/generations", payload=payload))
        items = data.get("data")
        item = items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}
        if isinstance(item.get("b64_json"), str):
            png = self._b64decode(item["b64_json"])
            content_type = _sniff_image(png) or "image/png"
        elif isinstance(item.get("url"), str):
            png, content_type = await self._image_from_url(client, item["url"])
        else:
            raise self._error("The AI provider returned no image.")
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        prompt_tokens = _count(usage.get("input_tokens"))
        if prompt_tokens is None:
            prompt_tokens = _count(usage.get("prompt_tokens"))
        return ImageResult(
            png=png,
            prompt_tokens=estimate_tokens(prompt) if prompt_tokens is None else prompt_tokens,
            cost_usd=_cost(usage.get("cost")),
            content_type=content_type,
        )

    async def _image_via_chat(self, client: httpx.AsyncClient, model, prompt: str) -> ImageResult:
        messages = [{"role": "user", "content": prompt}]
        payload = {"model": model.model_id, "messages": messages, "modalities": ["image", "text"], **self._extra_body()}
        data = await self._read_json(await self._send(client, "POST", "/chat/completions", payload=payload))
        message = self._first_choice(data).get("message")
        message = message if isinstance(message, dict) else {}
        url = _image_url(message.get("images")) or _image_url(message.get("content"))
        if not url:
            raise self._error("The AI provider returned no image.")
        png, content_type = await self._image_from_url(client, url)
        usage = _usage(data.get("usage"), messages=messages, content="")
        return ImageResult(
            png=png, prompt_tokens=usage.prompt_tokens, cost_usd=usage.cost_usd, content_type=content_type
        )

    async def _image_from_url(self, client: httpx.AsyncClient, url: str) -> tuple[bytes, str]:
        if url.startswith("data:"):
            header, comma, encoded = url.partition(",")
            if not comma or ";base64" not in header:
                raise self._error("The AI provider returned an image URL that is not base64 data.")
            png = self._b64decode(encoded)
            return png, header.removeprefix("data:").split(";")[0] or _sniff_image(png) or "image/png"
        if not url.startswith(("http://", "https://")):
            raise self._error("The AI provider returned an image URL chatsite cannot fetch.")
        # Our key goes only to our upstream, never to the storage that hosts its images.
        response = await self._send(client, "GET", url, authorize=url.startswith(self.base_url + "/"))
        declared = response.headers.get("Content-Type", "").split(";")[0].strip()
        png = await self._read_body(response)
        if not png:
            raise self._error("The AI provider returned an empty image.")
        return png, _sniff_image(png) or (declared if declared.startswith("image/") else "image/png")

    # HTTP.

    def _extra_body(self) -> dict[str, Any]:
        # OpenRouter reports the cost only when asked; OpenAI rejects fields it does not know.
        return {"usage": {"include": True}} if self.is_openrouter else {}

    def _headers(self, *, stream: bool, authorize: bool) -> dict[str, str]:
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        if stream:
            # A compressed stream would be held back until a compression block fills.
            headers["Accept-Encoding"] = "identity"
        if authorize and self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if self.is_openrouter:
            if settings.AI_APP_URL:
                headers["HTTP-Referer"] = settings.AI_APP_URL
            if settings.AI_APP_NAME:
                headers["X-Title"] = settings.AI_APP_NAME
        return headers

    async def _send(
        self,
        client: httpx.AsyncClient,
        method: str,
        path_or_url: str,
        *,
        payload: dict[str, Any] | None = None,
        stream: bool = False,
        authorize: bool = True,
    ) -> httpx.Response:
        """Send a request and return its 2xx response, body unread: the caller closes it. Retry what may be retried.

        Retries happen here only, before any byte of a reply arrived: on connection errors,
        timeouts, 429 and 5xx. Nothing retries once a reply's body is being read.
        """
        url = path_or_url if "://" in path_or_url else self.base_url + path_or_url
        headers = self._headers(stream=stream, authorize=authorize)
        attempt = 0
        while True:
            attempt += 1
            retry_after, cause = None, None
            try:
                request = client.build_request(method, url, json=payload, headers=headers, timeout=upstream_timeout())
                response = await client.send(request, stream=True)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                error, cause = self._failure(exc), exc
            else:
                if response.status_code < 300:
                    return response
                try:
                    body = await response.aread()
                except httpx.HTTPError:
                    body = b""
                finally:
                    await response.aclose()
                error, retry_after = self._status_failure(response, body)
            delay = self._retry_delay(attempt, error, retry_after)
            if delay is None:
                raise error from cause
            if delay > 0:
                await asyncio.sleep(delay)

    def _send_blocking(self, client: httpx.Client, method: str, path: str) -> httpx.Response:
        """`_send` for code outside any event loop; the response comes back read."""
        url = self.base_url + path
        headers = self._headers(stream=False, authorize=True)
        attempt = 0
        while True:
            attempt += 1
            retry_after, cause = None, None
            try:
                response = client.request(method, url, headers=headers, timeout=upstream_timeout())
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                error, cause = self._failure(exc), exc
            else:
                if response.status_code < 300:
                    return response
                error, retry_after = self._status_failure(response, response.content)
            delay = self._retry_delay(attempt, error, retry_after)
            if delay is None:
                raise error from cause
            if delay > 0:
                time.sleep(delay)

    def _failure(self, exc: Exception) -> UpstreamError:
        """The error for a request that got no answer; raised at once unless another attempt may get one."""
        if isinstance(exc, httpx.ConnectTimeout):
            return self._error(
                f"The AI provider did not accept a connection within {settings.AI_CONNECT_TIMEOUT:g} s.",
                timeout=True,
            )
        if isinstance(exc, httpx.PoolTimeout):
            # Every pooled connection stayed busy: this server, not the upstream, ran out of room.
            return self._error(
                f"Too many calls to the AI provider are open; none ended within {settings.AI_TIMEOUT:g} s.",
                timeout=True,
            )
        if isinstance(exc, httpx.TimeoutException):
            return self._error(f"The AI provider did not answer within {settings.AI_TIMEOUT:g} s.", timeout=True)
        if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError | httpx.ProxyError):
            return self._error("Could not reach the AI provider.")
        raise self._error("Could not send the request to the AI provider.") from exc

    def _status_failure(self, response: httpx.Response, body: bytes) -> tuple[UpstreamError, float | None]:
        """The error for a non-2xx answer and the upstream's Retry-After; raised at once unless 429 or 5xx."""
        message = _error_message(body.decode("utf-8", errors="replace"))
        code = response.status_code
        if code == 429:
            summary = "The AI provider is rate limiting requests (HTTP 429)"
        elif code >= 500:
            summary = f"The AI provider failed (HTTP {code})"
        else:
            summary = f"The AI provider refused the request (HTTP {code})"
        # What the upstream said goes to the log; users see it only when it is about their request
        # (a 4xx other than our key's), never a server's internals.
        about_the_request = code < 500 and code not in (401, 403, 429)
        error = self._error(
            f"{summary}: {message}." if message and about_the_request else f"{summary}.",
            logged=f"{summary}: {message}." if message else None,
        )
        if code != 429 and code < 500:
            raise error
        return error, _retry_after(response.headers.get("Retry-After"))

    def _retry_delay(self, attempt: int, error: UpstreamError, retry_after: float | None) -> float | None:
        """Seconds to wait before trying again after failed attempt number `attempt`; None when it was the last."""
        attempts = max(0, settings.AI_MAX_RETRIES) + 1
        if attempt >= attempts:
            return None
        delay = retry_after if retry_after is not None else settings.AI_RETRY_BACKOFF * 2 ** (attempt - 1)
        # What failed is logged already, with the upstream's address, where the error was made (_error).
        logger.warning("AI provider call: attempt %d of %d failed, retrying in %.2f s", attempt, attempts, delay)
        return delay

    async def _read_body(self, response: httpx.Response) -> bytes:
        try:
            return await response.aread()
        except httpx.ReadTimeout:
            raise self._error(
                f"The AI provider did not finish its answer within {settings.AI_TIMEOUT:g} s.",
                timeout=True,
            ) from None
        except httpx.HTTPError as exc:
            raise self._error("The connection to the AI provider broke off.") from exc
        finally:
            await response.aclose()

    async def _read_json(self, response: httpx.Response) -> dict[str, Any]:
        return self._parse_json(await self._read_body(response))

    def _parse_json(self, body: bytes, *, require_dict: bool = True) -> Any:
        try:
            data = json.loads(body)
        except ValueError:
            raise self._error("The AI provider sent a malformed response.") from None
        if require_dict and not isinstance(data, dict):
            raise self._error("The AI provider sent a malformed response.")
        if isinstance(data, dict) and data.get("error"):
            # OpenRouter reports some provider failures as a 200 with an error object.
            raise self._error(f"The AI provider failed: {_error_message(data) or 'no detail given'}.")
        return data

    def _first_choice(self, data: dict[str, Any]) -> dict[str, Any]:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise self._error("The AI provider sent an answer with no choices.")
        return choices[0]

    def _b64decode(self, encoded: str) -> bytes:
        try:
            data = base64.b64decode("".join(encoded.split()), validate=True)
        except (binascii.Error, ValueError):
            raise self._error("The AI provider sent an image that is not valid base64.") from None
        if not data:
            raise self._error("The AI provider returned an empty image.")
        return data

    def _error(
        self, detail: str, *, timeout: bool = False, logged: str | None = None, transient: bool = False
    ) -> UpstreamError:
        """The error users see (no address of ours in it); the log names the upstream and all it said.

        `transient`: another attempt may well succeed (a stream cut or ended by an error event).
        """
        if self.api_key and len(self.api_key) >= 4:
            detail = detail.replace(self.api_key, "[redacted]")
            logged = logged and logged.replace(self.api_key, "[redacted]")
        logger.warning("AI provider at %s: %s", self.host, logged or detail)
        error = (UpstreamTimeout if timeout else UpstreamError)(detail)
        error.transient = transient
        return error


def _where(pieces: list[str]) -> str:
    return "mid-reply" if pieces else "before its first token"


def _ending_with_a_blank_line(response: httpx.Response) -> httpx.Response:
    """The response as httpx-sse should read it: its body, then one blank line.

    httpx-sse dispatches an event only at the blank line that closes it, so the last event
    of a server that ends without one (some do) would be lost. The blank line follows only
    a body that ended cleanly; a cut connection raises as before. An event stream is UTF-8
    whatever else its Content-Type says, and is parsed even when it names another type.
    """

    async def body() -> AsyncIterator[bytes]:
        async for chunk in response.aiter_bytes():
            yield chunk
        yield b"\n\n"

    return httpx.Response(response.status_code, headers={"Content-Type": "text/event-stream"}, content=body())


def _message_content(choice: dict[str, Any]) -> str:
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):  # content parts, as some servers send them
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def _usage(reported: Any, *, messages: list[Message], content: str) -> Usage:
    """The upstream's usage, with estimates for whatever it left out."""
    reported = reported if isinstance(reported, dict) else {}
    prompt_tokens = _count(reported.get("prompt_tokens"))
    completion_tokens = _count(reported.get("completion_tokens"))
    return Usage(
        prompt_tokens=estimate_prompt_tokens(messages) if prompt_tokens is None else prompt_tokens,
        completion_tokens=estimate_tokens(content) if completion_tokens is None else completion_tokens,
        cost_usd=_cost(reported.get("cost")),
    )


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return int(value)


def _cost(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        cost = Decimal(str(value))
    except InvalidOperation:
        return None
    return cost if cost.is_finite() and cost >= 0 else None


def _error_message(body: Any) -> str:
    """The human part of an upstream error, in any of the shapes servers use."""
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return body.strip()[:DETAIL_MAX_CHARS].rstrip(". ")
    message: Any = ""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = error.get("message") or error.get("code") or ""
        elif error:
            message = error
        else:
            message = body.get("message") or body.get("detail") or ""
    # Without its final full stop, so it reads well inside a sentence of ours.
    return str(message).strip()[:DETAIL_MAX_CHARS].rstrip(". ")


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
    if seconds is None or seconds != seconds or seconds < 0:
        return None
    return min(seconds, RETRY_AFTER_CAP)


def _image_url(value: Any) -> str | None:
    """The first image URL in OpenRouter's message.images, or in a list of content parts."""
    if not isinstance(value, list):
        return None
    for part in value:
        image_url = part.get("image_url") if isinstance(part, dict) else None
        url = image_url.get("url") if isinstance(image_url, dict) else image_url
        if isinstance(url, str) and url:
            return url
    return None


def _sniff_image(data: bytes) -> str | None:
    for signature, content_type in IMAGE_SIGNATURES:
        if data.startswith(signature) and (content_type != "image/webp" or data[8:12] == b"WEBP"):
            return content_type
    return None
