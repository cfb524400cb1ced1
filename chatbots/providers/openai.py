"""The adapter for any OpenAI-compatible upstream: OpenRouter, OpenAI, Ollama, vLLM, llama.cpp server, LM Studio."""

import base64
import binascii
import contextlib
import json
import logging
import socket
import time
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ReadTimeoutError

from chatbots.providers.base import (
    Cancel,
    Completion,
    ImageResult,
    Message,
    Provider,
    StreamEvent,
    Usage,
    estimate_prompt_tokens,
    estimate_tokens,
)
from chatsite.errors import UpstreamError, UpstreamTimeout

logger = logging.getLogger(__name__)

# One pool of keep-alive connections per process: a TLS handshake per message would cost more than chatsite does.
_session = requests.Session()

RETRY_AFTER_CAP = 10.0
DETAIL_MAX_CHARS = 300
IMAGE_SIGNATURES = [
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"RIFF", "image/webp"),
]


class OpenAIProvider(Provider):
    """Speaks the OpenAI chat completions protocol over `requests`."""

    name = "openai"

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        parts = urlsplit(self.base_url)
        self.host = f"{parts.hostname}:{parts.port}" if parts.port else (parts.hostname or self.base_url)
        self.is_openrouter = "openrouter" in (parts.hostname or "")

    # The three calls of the interface.

    def complete(self, *, model, messages: list[Message]) -> Completion:
        payload = {"model": model.model_id, "messages": messages, "stream": False, **self._extra_body()}
        data = self._read_json(self._send("POST", "/chat/completions", payload=payload))
        content = _message_content(self._first_choice(data))
        usage = _usage(data.get("usage"), messages=messages, content=content)
        return Completion(
            content=content,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=usage.cost_usd,
        )

    def stream(self, *, model, messages: list[Message], cancel: Cancel | None = None) -> Iterator[StreamEvent]:
        """Yield each piece of text as soon as it arrives, then the usage; `close()` hangs up on the upstream."""
        payload = {
            "model": model.model_id,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            **self._extra_body(),
        }
        response = self._send("POST", "/chat/completions", payload=payload, stream=True)
        if cancel is not None:
            cancel.on_cancel(lambda: _hang_up(response))
        try:
            if response.headers.get("Content-Type", "").startswith("application/json"):
                # The upstream ignored "stream": true and answered in one piece.
                completion_data = self._read_json(response)
                content = _message_content(self._first_choice(completion_data))
                if content:
                    yield StreamEvent(text=content)
                if isinstance(completion_data.get("usage"), dict):
                    yield StreamEvent(usage=_usage(completion_data["usage"], messages=messages, content=content))
                return
            yield from self._stream_events(response, messages)
        finally:
            response.close()

    def generate_image(self, *, model, prompt: str) -> ImageResult:
        api = settings.AI_IMAGE_API
        if api not in ("images", "chat"):
            api = "chat" if self.is_openrouter else "images"
        if api == "chat":
            return self._image_via_chat(model, prompt)
        return self._image_via_images(model, prompt)

    # More than the interface: the catalogue behind GET /models, for sync_models.

    def list_models(self) -> list[dict[str, Any]]:
        """Return the upstream's model catalogue (the items of GET /models)."""
        data = self._read_json(self._send("GET", "/models"), require_dict=False)
        items = data.get("data") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise self._error(f"The AI provider at {self.host} sent a model list that is not a list.")
        return items

    # Streaming.

    def _stream_events(self, response: requests.Response, messages: list[Message]) -> Iterator[StreamEvent]:
        pieces: list[str] = []
        reported_usage = None
        finished = False
        for event_type, data in self._sse_events(response):
            if data.strip() == "[DONE]":
                finished = True
                break
            if event_type == "error":
                raise self._error(f"The AI provider failed mid-reply: {_error_message(data) or 'no detail given'}.")
            try:
                chunk = json.loads(data)
            except ValueError:
                raise self._error(f"The AI provider at {self.host} sent a malformed stream chunk.") from None
            if not isinstance(chunk, dict):
                raise self._error(f"The AI provider at {self.host} sent a malformed stream chunk.")
            if chunk.get("error"):
                raise self._error(f"The AI provider failed mid-reply: {_error_message(chunk) or 'no detail given'}.")
            choices = chunk.get("choices")
            if isinstance(choices, list) and choices and isinstance(choices[0], dict):
                choice = choices[0]
                delta = choice.get("delta")
                text = delta.get("content") if isinstance(delta, dict) else None
                if isinstance(text, str) and text:
                    pieces.append(text)
                    yield StreamEvent(text=text)
                if choice.get("finish_reason") == "error":
                    raise self._error("The AI provider failed mid-reply.")
                if choice.get("finish_reason"):
                    finished = True
            # vLLM and llama.cpp may report usage on several chunks; the last one is the total.
            if isinstance(chunk.get("usage"), dict):
                reported_usage = chunk["usage"]
        if not finished:
            raise self._error("The AI provider stopped mid-reply: the upstream closed the stream early.")
        if reported_usage is not None:
            yield StreamEvent(usage=_usage(reported_usage, messages=messages, content="".join(pieces)))

    def _sse_events(self, response: requests.Response) -> Iterator[tuple[str, str]]:
        """Yield (event type, data) for each server-sent event as soon as its closing blank line arrives."""
        event_type, data_lines = "", []
        pending: list[bytes] = []
        for chunk in self._raw_chunks(response):
            if b"\n" not in chunk:
                pending.append(chunk)
                continue
            # Lines are split as bytes and decoded whole, so a character cut between two reads stays intact.
            *lines, rest = b"".join([*pending, chunk]).split(b"\n")
            pending = [rest] if rest else []
            for raw_line in lines:
                line = raw_line.rstrip(b"\r").decode("utf-8", errors="replace")
                if not line:
                    if data_lines or event_type:
                        yield event_type or "message", "\n".join(data_lines)
                    event_type, data_lines = "", []
                elif not line.startswith(":"):  # ":" starts a comment, e.g. ": OPENROUTER PROCESSING"
                    field, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if field == "data":
                        data_lines.append(value)
                    elif field == "event":
                        event_type = value
        # Some servers end with a last event that has no closing blank line.
        last_line = b"".join(pending).rstrip(b"\r").decode("utf-8", errors="replace")
        if last_line.startswith("data:"):
            data_lines.append(last_line.removeprefix("data:").removeprefix(" "))
        if data_lines:
            yield event_type or "message", "\n".join(data_lines)

    def _raw_chunks(self, response: requests.Response) -> Iterator[bytes]:
        # read1 returns whatever bytes have arrived instead of waiting to fill a buffer.
        while True:
            try:
                chunk = response.raw.read1(65536)
            except ReadTimeoutError:
                raise self._error(
                    f"The AI provider at {self.host} went silent for more than {settings.AI_TIMEOUT:g} s mid-reply.",
                    timeout=True,
                ) from None
            except (Urllib3Error, OSError, ValueError) as exc:
                logger.info("stream from %s broke off: %s", self.host, exc)
                return
            if not chunk:
                return
            yield chunk

    # Images.

    def _image_via_images(self, model, prompt: str) -> ImageResult:
        payload = {"model": model.model_id, "prompt": prompt, "n": 1}
        # DALL-E answers with a short-lived URL unless asked for base64; gpt-image models reject the field.
        if not model.model_id.rsplit("/", 1)[-1].startswith(("gpt-image", "chatgpt-image")):
            payload["response_format"] = "b64_json"
        data = self._read_json(self._send("POST", "/images/generations", payload=payload))
        items = data.get("data")
        item = items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}
        if isinstance(item.get("b64_json"), str):
            png = self._b64decode(item["b64_json"])
            content_type = _sniff_image(png) or "image/png"
        elif isinstance(item.get("url"), str):
            png, content_type = self._image_from_url(item["url"])
        else:
            raise self._error(f"The AI provider at {self.host} returned no image.")
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

    def _image_via_chat(self, model, prompt: str) -> ImageResult:
        messages = [{"role": "user", "content": prompt}]
        payload = {"model": model.model_id, "messages": messages, "modalities": ["image", "text"], **self._extra_body()}
        data = self._read_json(self._send("POST", "/chat/completions", payload=payload))
        message = self._first_choice(data).get("message")
        message = message if isinstance(message, dict) else {}
        url = _image_url(message.get("images")) or _image_url(message.get("content"))
        if not url:
            raise self._error(f"The AI provider at {self.host} returned no image.")
        png, content_type = self._image_from_url(url)
        usage = _usage(data.get("usage"), messages=messages, content="")
        return ImageResult(
            png=png, prompt_tokens=usage.prompt_tokens, cost_usd=usage.cost_usd, content_type=content_type
        )

    def _image_from_url(self, url: str) -> tuple[bytes, str]:
        if url.startswith("data:"):
            header, comma, encoded = url.partition(",")
            if not comma or ";base64" not in header:
                raise self._error(f"The AI provider at {self.host} returned an image URL that is not base64 data.")
            png = self._b64decode(encoded)
            return png, header.removeprefix("data:").split(";")[0] or _sniff_image(png) or "image/png"
        if not url.startswith(("http://", "https://")):
            raise self._error(f"The AI provider at {self.host} returned an image URL chatsite cannot fetch.")
        # Our key goes only to our upstream, never to the storage that hosts its images.
        response = self._send("GET", url, authorize=url.startswith(self.base_url + "/"))
        png = self._read_body(response)
        if not png:
            raise self._error(f"The AI provider at {self.host} returned an empty image.")
        declared = response.headers.get("Content-Type", "").split(";")[0].strip()
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

    def _send(
        self,
        method: str,
        path_or_url: str,
        *,
        payload: dict[str, Any] | None = None,
        stream: bool = False,
        authorize: bool = True,
    ) -> requests.Response:
        """Send a request and return its 2xx response, body unread; retry what may be retried.

        Retries happen here only, before any byte of a reply arrived: on connection errors,
        timeouts, 429 and 5xx. Nothing retries once a reply's body is being read.
        """
        url = path_or_url if "://" in path_or_url else self.base_url + path_or_url
        headers = self._headers(stream=stream, authorize=authorize)
        connect_timeout, read_timeout = settings.AI_CONNECT_TIMEOUT, settings.AI_TIMEOUT
        attempts = max(0, settings.AI_MAX_RETRIES) + 1
        attempt = 0
        while True:
            attempt += 1
            retry_after = None
            try:
                response = _session.request(
                    method,
                    url,
                    json=payload,
                    headers=headers,
                    timeout=(connect_timeout, read_timeout),
                    stream=True,
                )
            except requests.ConnectTimeout as exc:
                cause: Exception = exc
                error = self._error(
                    f"The AI provider at {self.host} did not accept a connection within {connect_timeout:g} s.",
                    timeout=True,
                )
            except requests.ReadTimeout as exc:
                cause = exc
                error = self._error(
                    f"The AI provider at {self.host} did not answer within {read_timeout:g} s.", timeout=True
                )
            except requests.ConnectionError as exc:
                cause = exc
                error = self._error(f"Could not reach the AI provider at {self.host}.")
            except (requests.RequestException, ValueError) as exc:
                raise self._error(f"Could not send the request to the AI provider at {self.host}.") from exc
            else:
                if response.status_code < 300:
                    return response
                cause, error = None, self._status_error(response)
                if response.status_code != 429 and response.status_code < 500:
                    raise error
                retry_after = _retry_after(response.headers.get("Retry-After"))
            if attempt >= attempts:
                raise error from cause
            delay = retry_after if retry_after is not None else settings.AI_RETRY_BACKOFF * 2 ** (attempt - 1)
            logger.warning(
                "AI provider call failed (%s); attempt %d of %d, retrying in %.2f s",
                error.detail,
                attempt,
                attempts,
                delay,
            )
            if delay > 0:
                time.sleep(delay)

    def _status_error(self, response: requests.Response) -> UpstreamError:
        try:
            body = self._read_body(response)
        except UpstreamError:
            body = b""
        message = _error_message(body.decode("utf-8", errors="replace"))
        code = response.status_code
        if code == 429:
            summary = f"The AI provider at {self.host} is rate limiting requests (HTTP 429)"
        elif code >= 500:
            summary = f"The AI provider at {self.host} failed (HTTP {code})"
        else:
            summary = f"The AI provider at {self.host} refused the request (HTTP {code})"
        return self._error(f"{summary}: {message}." if message else f"{summary}.")

    def _read_body(self, response: requests.Response) -> bytes:
        try:
            return response.raw.read(decode_content=True)
        except ReadTimeoutError:
            raise self._error(
                f"The AI provider at {self.host} did not finish its answer within {settings.AI_TIMEOUT:g} s.",
                timeout=True,
            ) from None
        except (Urllib3Error, OSError, ValueError) as exc:
            raise self._error(f"The connection to the AI provider at {self.host} broke off.") from exc
        finally:
            response.close()

    def _read_json(self, response: requests.Response, *, require_dict: bool = True) -> Any:
        body = self._read_body(response)
        try:
            data = json.loads(body)
        except ValueError:
            raise self._error(f"The AI provider at {self.host} sent a malformed response.") from None
        if require_dict and not isinstance(data, dict):
            raise self._error(f"The AI provider at {self.host} sent a malformed response.")
        if isinstance(data, dict) and data.get("error"):
            # OpenRouter reports some provider failures as a 200 with an error object.
            raise self._error(f"The AI provider at {self.host} failed: {_error_message(data) or 'no detail given'}.")
        return data

    def _first_choice(self, data: dict[str, Any]) -> dict[str, Any]:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise self._error(f"The AI provider at {self.host} sent an answer with no choices.")
        return choices[0]

    def _b64decode(self, encoded: str) -> bytes:
        try:
            data = base64.b64decode("".join(encoded.split()), validate=True)
        except (binascii.Error, ValueError):
            raise self._error(f"The AI provider at {self.host} sent an image that is not valid base64.") from None
        if not data:
            raise self._error(f"The AI provider at {self.host} returned an empty image.")
        return data

    def _error(self, detail: str, *, timeout: bool = False) -> UpstreamError:
        if self.api_key and len(self.api_key) >= 4:
            detail = detail.replace(self.api_key, "[redacted]")
        return (UpstreamTimeout if timeout else UpstreamError)(detail)


def _hang_up(response: requests.Response) -> None:
    """End a response from any thread: shutting the socket down wakes a read blocked on it."""
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


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
