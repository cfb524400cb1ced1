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


def finish_later(
    response: Response, fill: Callable[[], Awaitable[None]], errors: Callable[[Exception, dict], Response]
) -> Response:
    """`response` to be completed on the loop: `fill` sets its data, or raises what `errors` answers.

    `errors` is an API exception handler (ChatsiteError, a database outage...; None for
    anything else, which is raised). The middleware sees the answer with an empty body; its
    headers (and theirs) are kept, and an error's status, body and own headers replace what
    the answer would have been.
    """

    async def finish() -> None:
        try:
            await fill()
        except Exception as exc:
            error = errors(exc, {})
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
