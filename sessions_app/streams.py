"""The reply endpoints as async views: send, regenerate and edit, and following a reply.

Each wraps its DRF action: the action authenticates, validates and begins the reply in a
short synchronous call (its database connection goes back right after), then this view
finishes on the event loop. A stream's reply runs as a task of its own and the response
follows it; a JSON answer waits for the reply without holding a thread or a connection.
"""

import functools

from chatsite import deferred
from chatsite.api import exception_handler
from sessions_app import runtime
from sessions_app.api import ReplyStarted
from sessions_app.streaming import event_stream_response, reply_events

# The router's names of the endpoints served here.
REPLY_ENDPOINTS = {"chat-session-send", "chat-session-regenerate", "chat-session-edit", "chat-session-follow"}


def started_endpoint(drf_view, *, finish, errors: deferred.Errors):
    """An async view that runs `drf_view` in the request's thread, then finishes its Started answer on the loop.

    `finish(request, started)` makes the answer: a stream, or `started` with its data filled.
    An error it runs into is answered by the exception handler `errors`, in the place of
    the answer. A JSON answer is finished once the middleware has run, so that no request
    thread waits for it.
    """
    drf_part = runtime.sync_step(drf_view)

    # wraps() keeps the DRF view's attributes: drf-spectacular documents it, and its csrf_exempt
    # holds, since DRF checks CSRF itself (for signed-in users; anonymous ones get 401).
    @functools.wraps(drf_view)
    async def view(request, *args, **kwargs):
        response = await drf_part(request, *args, **kwargs)
        if not isinstance(response, deferred.Started):
            return response
        if not response.stream and deferred.on_loop(request):
            return deferred.finish_later(response, functools.partial(finish, request, response), errors)
        try:
            return await finish(request, response)
        except Exception as exc:
            error = deferred.error_answer(exc, errors, like=response)
            if error is None:
                raise
            return error

    return view


def reply_endpoint(drf_view):
    """An async view that runs `drf_view` (a DRF action answering ReplyStarted) and then its reply."""
    return started_endpoint(drf_view, finish=_reply_response, errors=exception_handler)


async def _reply_response(request, started: ReplyStarted):
    if started.stream:
        release = None
        if started.follower_id is not None:
            slot = runtime.follow_slot(started.follower_id)
            slot.__enter__()  # raises TooManyStreams past the user's share

            def release():
                slot.__exit__(None, None, None)

        if started.job is not None:
            runtime.reply_start(started.job)
        return event_stream_response(
            request,
            reply_events(started.reply.pk, started.offset),
            head=started.head,
            headers=started.extra_headers,
            on_close=release,
        )
    reply = await runtime.reply_complete(reply=started.reply, job=started.job)
    started.data = started.body(reply)
    return started
