"""Answers finished on the event loop once the middleware has run: a reply awaited as JSON holds no request thread.

An async view called from the synchronous middleware chain (chatsite.asgi) keeps the
request's thread until it returns. A view that has to wait for a reply (a send answered
as JSON, a completion of the OpenAI-compatible API) returns its answer unfinished
instead, and the server completes it on its loop before sending it.
"""

from collections.abc import Awaitable, Callable

from rest_framework.response import Response

# Set on a request by a server that finishes answers on its loop (chatsite.asgi.RequestThreadsHandler).
ON_LOOP = "answer_finished_on_loop"


def on_loop(request) -> bool:
    """Whether the server serving `request` completes an unfinished answer on its loop."""
    return getattr(request, ON_LOOP, False)


class Started(Response):
    """What the DRF part of an endpoint answers once its work is begun: its async view finishes it on the loop.

    `stream`: whether the finished answer is an event stream (else this answer, its data
    filled). `extra_headers`: the endpoint's own headers (its rate limits), kept on any error
    that replaces the answer.
    """

    def __init__(self, data=None, *, status: int, headers: dict[str, str] | None, stream: bool) -> None:
        super().__init__(data, status=status, headers=headers)
        self.stream = stream
        self.extra_headers = dict(headers or {})


Errors = Callable[[Exception, dict], Response | None]


def error_answer(exc: Exception, errors: Errors, *, like: Response) -> Response | None:
    """`exc` as the exception handler `errors` answers it (None if it does not), rendered as `like` was negotiated.

    The error keeps `like`'s own headers (a Started answer's rate limits) where it sets none of its own.
    """
    error = errors(exc, {})
    if error is None:
        return None
    error.accepted_renderer = like.accepted_renderer
    error.accepted_media_type = like.accepted_media_type
    error.renderer_context = like.renderer_context
    for name, value in getattr(like, "extra_headers", {}).items():
        error.headers.setdefault(name, value)
    return error


def finish_later(response: Response, fill: Callable[[], Awaitable[object]], errors: Errors) -> Response:
    """`response` to be completed on the loop: `fill` sets its data (its return is not used) or raises.

    `errors` is an API exception handler (ChatsiteError, a database outage...; None for
    anything else, which is raised). The middleware sees the answer with an empty body; its
    headers (and theirs) are kept, and an error's status, body and own headers replace what
    the answer would have been.
    """

    async def finish() -> None:
        try:
            await fill()
        except Exception as exc:
            error = error_answer(exc, errors, like=response)
            if error is None:
                raise
            response.status_code = error.status_code
            response.data = error.data
            for name, value in error.items():
                if name.lower() != "content-type":
                    response[name] = value
        response.content = response.rendered_content
        response["Content-Length"] = str(len(response.content))

    response.finish_on_loop = finish
    return response
