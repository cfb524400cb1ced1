"""The ASGI application: Django, plus the lifespan that runs the reply runtime on the server's loop."""

import asyncio
import contextlib
import gc
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import django
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.db import close_old_connections
from django.http import FileResponse, HttpResponse
from django.urls import set_script_prefix

from chatsite import deferred

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
django.setup(set_prefix=False)

logger = logging.getLogger(__name__)

# The cyclic garbage collector, set for a worker holding a thousand replies. By default it looks
# over the young objects every 700 allocations, though refcounting frees most of them anyway: at
# 1,000 replies at once that took 11 % of a worker's CPU, and each pass over the oldest objects
# stopped the worker for about 0.2 s (BENCHMARKS.md). Every 20,000 it takes 2 %.
COLLECTOR_THRESHOLDS = (20_000, 20, 20)


def routes_load() -> int:
    """Import the URLconf, and with it every view module, as the worker starts.

    Django does it at the first request it resolves, and under ASGI that runs on the loop:
    a tenth of a second in which the worker's replies, streams and /health/ wait. Loaded
    before the collector freezes the start, the views are frozen with it.
    """
    from django.urls import get_resolver

    count = len(get_resolver().url_patterns)
    logger.info("URLconf loaded: %d patterns at the top", count)
    return count


def collector_tune() -> None:
    """Set the collector for serving. What the worker loaded to start lives as long as it: never looked at again."""
    gc.freeze()
    gc.set_threshold(*COLLECTOR_THRESHOLDS)
    logger.info(
        "garbage collector: thresholds %s, %d objects of the start frozen", gc.get_threshold(), gc.get_freeze_count()
    )


class RequestThreadsHandler(ASGIHandler):
    """Django's ASGI handler, with the synchronous part of a request in one step on one of a few shared threads.

    Django gives every request a thread of its own for its synchronous code. Under load
    that is hundreds of threads taking turns at the GIL with the event loop, which then
    answers late; here a worker has REQUEST_THREADS of them, each serving one request's
    synchronous step at a time (a request keeps its thread: its connection and its
    transaction stay in one place). Replies and streams never wait in them.

    Django's own handler also goes to that thread and back three times for a plain answer:
    to signal the request's start, to run the middleware (synchronous here), and to close
    the answer. Here one step does all three, so a request costs the loop one hand-over
    and one wake-up; only a streamed answer is closed in a second step, once it has been
    sent. An async view (the reply endpoints) still runs on the loop, called from within
    that step.
    """

    def __init__(self, threads: int) -> None:
        super().__init__()
        self.executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"chatsite-request-{n}") for n in range(threads)
        ]
        self.busy = [0] * threads

    def load_middleware(self, is_async=False):
        # The chain is synchronous, run whole in the request's step: Django's async chain would
        # hand each synchronous middleware over to a thread, and their methods one by one.
        super().load_middleware(is_async=False)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"chatsite serves HTTP only, not {scope['type']}.")
        index = min(range(len(self.executors)), key=self.busy.__getitem__)
        self.busy[index] += 1
        try:
            async with ThreadSensitiveContext(executor=self.executors[index]):
                await self.handle(scope, receive, send)
        finally:
            self.busy[index] -= 1

    async def handle(self, scope, receive, send):
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        try:
            # Not cancelled when the client goes away meanwhile: the answer it makes is closed all
            # the same below (a follow stream's share is given back there).
            response = await sync_to_async(self.respond, thread_sensitive=True)(scope, body_file)
            # A client that goes away stops the sending (and with it a stream), as in Django's handler.
            tasks = [
                asyncio.create_task(self.listen_for_disconnect(receive)),
                asyncio.create_task(self.answer(response, send)),
            ]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if not task.done():
                    task.cancel()
                with contextlib.suppress(RequestAborted, asyncio.CancelledError):
                    await task
            if response.streaming:
                await sync_to_async(response.close, thread_sensitive=True)()
        finally:
            body_file.close()

    async def answer(self, response: HttpResponse, send) -> None:
        finish = getattr(response, "finish_on_loop", None)  # chatsite.deferred
        if finish is not None:
            await finish()
        await self.send_response(response, send)

    def respond(self, scope, body_file) -> HttpResponse:
        """The request's synchronous step: its start, the middleware and the view, and (unless it streams) its close."""
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            setattr(request, deferred.ON_LOOP, True)  # a view waiting on a reply leaves its answer to answer()
            response = self.get_response(request)
            response._handler_class = self.__class__
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size
        if response.streaming:
            # Its connections go back to the pool now, not when the stream ends.
            close_old_connections()
        else:
            # The body is made already (or, finished on the loop, needs no thread): closing it now
            # ends the request (request_finished) in this step.
            response.close()
        return response


def _django_application():
    from django.conf import settings

    return RequestThreadsHandler(settings.REQUEST_THREADS)


django_application = _django_application()


HEALTH_BODY = b'{"status": "ok"}'
HEALTH_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(HEALTH_BODY)).encode()),
    (b"cache-control", b"max-age=0, no-cache, no-store, must-revalidate, private"),
    (b"x-content-type-options", b"nosniff"),
]


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] == "http" and scope["path"] == "/health/" and scope["method"] in ("GET", "HEAD"):
        # Liveness is this loop answering: no thread, no middleware, so a busy worker still says so at once.
        await send({"type": "http.response.start", "status": 200, "headers": HEALTH_HEADERS})
        await send({"type": "http.response.body", "body": HEALTH_BODY if scope["method"] == "GET" else b""})
        return
    await django_application(scope, receive, send)


async def _lifespan(receive, send) -> None:
    """Replies run as tasks on this worker's loop; at shutdown they get their grace period, then end at once."""
    import asyncio

    from django.conf import settings

    from sessions_app.runtime import runtime

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            routes_load()
            collector_tune()
            runtime().attach(asyncio.get_running_loop())
            runtime().ensure_started()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await runtime().stop(grace=settings.REPLY_GRACE_SECONDS)
            await send({"type": "lifespan.shutdown.complete"})
            return
