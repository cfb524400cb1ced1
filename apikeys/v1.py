"""The OpenAI-compatible API under /v1/: models, chat completions (plain and streamed) and images.

Authenticated by a personal API key (`Authorization: Bearer cs-...`), no session and no CSRF.
Each call is begun by a DRF view in a short synchronous step (authenticate, validate, reserve
under the quota's lock), then run by sessions_app's runtime on the event loop like a page's
reply: the same retries, timeouts, cap on replies in flight, and the one lifecycle that ends
and charges it. A stream whose client goes away stops its reply, which is charged for what it
produced. Errors come in OpenAI's shape (apikeys/errors.py).
"""

import asyncio
import base64
import functools
import json
import time
import uuid
from collections.abc import AsyncIterator

from django.core.serializers.json import DjangoJSONEncoder
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from apikeys import services
from apikeys.authentication import ApiKeyAuthentication
from apikeys.errors import openai_error, openai_exception_handler
from apikeys.serializers import ChatCompletionInput, ImageGenerationInput
from billing.quotas import rate_limit_headers
from chatbots.models import AIModel, ContentType
from chatsite import deferred
from chatsite.errors import ChatsiteError, UpstreamError
from sessions_app import runtime
from sessions_app.api import validated
from sessions_app.lifecycle import ReplyJob
from sessions_app.runtime import LiveReply
from sessions_app.streaming import KEEPALIVE, KEEPALIVE_SECONDS, event_stream_response
from sessions_app.streams import started_endpoint

DONE = b"data: [DONE]\n\n"


class OpenAIView(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [IsAuthenticated]
    throttle_classes = []

    def get_exception_handler(self):
        return openai_exception_handler

    def perform_content_negotiation(self, request, force=False):
        # JSON whatever the client accepts: a stream is an event stream made by the view itself.
        return super().perform_content_negotiation(request, force=True)


class CallStarted(deferred.Started):
    """What the DRF part of a call answers once its usage is reserved; its async view runs the call."""

    def __init__(self, *, job: ReplyJob, finish, headers: dict[str, str], stream: bool = False) -> None:
        super().__init__(status=status.HTTP_200_OK, headers=headers, stream=stream)
        self.job = job
        self.finish = finish  # async (request, started) -> the response: started itself, unless it streams


async def _call(request, started: CallStarted):
    return await started.finish(request, started)


def call_endpoint(drf_view):
    """An async view that runs `drf_view` (answering CallStarted) in the request's thread, then the call on the loop."""
    return started_endpoint(drf_view, finish=_call, errors=openai_exception_handler)


async def _on_runtime_loop(coroutine):
    """Await `coroutine` on the runtime's loop, where replies and their waiters live."""
    loop = runtime.runtime().ensure_loop()
    if asyncio.get_running_loop() is loop:
        return await coroutine
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, loop))


def _failed(live: LiveReply) -> ChatsiteError | None:
    """The error of a call that produced nothing (its reservation released), if that is how it ended."""
    if live.result is None:
        return UpstreamError("The call could not be finished; nothing was charged.")
    outcome = live.outcome
    if outcome is not None and outcome.error is not None and not outcome.produced:
        return outcome.error
    return None


def _usage(live: LiveReply) -> dict:
    event = live.result.event
    return {
        "prompt_tokens": event.prompt_tokens,
        "completion_tokens": event.completion_tokens,
        "total_tokens": event.prompt_tokens + event.completion_tokens,
    }


def _finish_reason(live: LiveReply) -> str:
    outcome = live.outcome
    if outcome.error is not None:
        return "error"  # cut short after some text (what came is kept and charged)
    max_tokens = (live.job.options or {}).get("max_tokens")
    if max_tokens and live.result.event.completion_tokens >= max_tokens:
        return "length"
    return "stop"


# GET /v1/models


class ModelsView(OpenAIView):
    """The active text models, as OpenAI's `GET /v1/models` lists them."""

    @extend_schema(exclude=True)
    def get(self, request):
        # Query: the active text models.
        models = AIModel.objects.filter(is_active=True, model_type=ContentType.TEXT).order_by("model_id")
        data = [
            {
                "id": model.model_id,
                "object": "model",
                "created": 0,  # chatsite does not record when a model was added
                "owned_by": model.model_id.split("/", 1)[0] if "/" in model.model_id else model.provider,
            }
            for model in models
        ]
        return Response({"object": "list", "data": data})


# POST /v1/chat/completions


class ChatCompletionsView(OpenAIView):
    @extend_schema(exclude=True)
    def post(self, request):
        serializer = ChatCompletionInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        model = services.api_model_resolve(model_id=data["model"], model_type=ContentType.TEXT)
        call = services.completion_begin(
            api_key=request.auth, model=model, messages=data["messages"], options=serializer.options(),
            store=data.get("store"),
        )  # fmt: skip
        include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
        finish = functools.partial(_stream, include_usage=include_usage) if data["stream"] else _complete
        return CallStarted(
            job=call.job, finish=finish, headers=rate_limit_headers(call.job.headroom), stream=data["stream"]
        )


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


async def _complete(request, started: CallStarted):
    live = await runtime.reply_run_live(started.job)
    error = _failed(live)
    if error is not None:
        raise error
    started.data = {
        "id": _completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": started.job.model.model_id,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": live.outcome.content},
                "finish_reason": _finish_reason(live),
            }
        ],
        "usage": _usage(live),
    }
    return started


async def _first_text(live: LiveReply) -> None:
    """Wait until the reply has some text or has ended."""
    while not await live.wait(0, KEEPALIVE_SECONDS):
        pass


async def _stream(request, started: CallStarted, *, include_usage: bool):
    live = runtime.reply_start(started.job)
    try:
        # The status line waits for the first text: a call that fails before it is an HTTP error (502/504).
        await _on_runtime_loop(_first_text(live))
    except asyncio.CancelledError:
        live.stop()  # the client went away before any text
        raise
    if live.finished:
        error = _failed(live)
        if error is not None:
            raise error
    chunks = _chunks(live, include_usage=include_usage)
    return event_stream_response(request, chunks, headers=started.extra_headers)


def _data(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, cls=DjangoJSONEncoder, ensure_ascii=False).encode() + b"\n\n"


async def _chunks(live: LiveReply, *, include_usage: bool) -> AsyncIterator[bytes]:
    """The reply as `chat.completion.chunk` events, then its usage if asked for, then [DONE]."""
    head = {"id": _completion_id(), "object": "chat.completion.chunk", "created": int(time.time())}
    head["model"] = live.job.model.model_id

    def chunk(delta: dict, finish_reason: str | None = None) -> bytes:
        return _data({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})

    offset = 0
    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            content = live.content
            if len(content) > offset:
                yield chunk({"content": content[offset:]})
                offset = len(content)
            elif live.finished:
                break
            elif not await live.wait(offset, KEEPALIVE_SECONDS):
                yield KEEPALIVE
        if live.result is None:
            yield _data(openai_error(UpstreamError("The call could not be finished.").as_dict(), 502))
            return
        outcome = live.outcome
        if outcome.error is not None and not outcome.stopped:
            # Cut short after some text: that text is kept and charged; the client learns why it ends here.
            yield _data(openai_error({**outcome.error.as_dict(), "partial": True}, outcome.error.status))
            return
        yield chunk({}, _finish_reason(live))
        if include_usage:
            yield _data({**head, "choices": [], "usage": _usage(live)})
        yield DONE
    finally:
        if not live.finished:
            live.stop()  # the client went away: the reply stops, and what it produced is charged


# POST /v1/images/generations


class ImageGenerationsView(OpenAIView):
    @extend_schema(exclude=True)
    def post(self, request):
        data = validated(ImageGenerationInput, request.data)
        model = services.api_model_resolve(model_id=data["model"], model_type=ContentType.IMAGE)
        job = services.image_begin(api_key=request.auth, model=model, prompt=data["prompt"])
        finish = functools.partial(_image, response_format=data.get("response_format") or "url")
        return CallStarted(job=job, finish=finish, headers=rate_limit_headers(job.headroom))


async def _image(request, started: CallStarted, *, response_format: str):
    live = await runtime.reply_run_live(started.job)
    error = _failed(live)
    if error is not None:
        raise error
    if response_format == "b64_json":
        item = {"b64_json": base64.b64encode(live.image or b"").decode()}
    else:
        item = {"url": request.build_absolute_uri(live.image_url)}
    event = live.result.event
    usage = {"input_tokens": event.prompt_tokens, "output_tokens": 0, "total_tokens": event.prompt_tokens}
    started.data = {"created": int(time.time()), "data": [{**item, "revised_prompt": None}], "usage": usage}
    return started


urlpatterns_views = {
    "models": ModelsView.as_view(),
    "chat/completions": call_endpoint(ChatCompletionsView.as_view()),
    "images/generations": call_endpoint(ImageGenerationsView.as_view()),
}
