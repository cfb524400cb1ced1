"""The ASGI application: Django, plus the lifespan that runs the reply runtime on the server's loop."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
django_application = get_asgi_application()


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
            runtime().attach(asyncio.get_running_loop())
            runtime().ensure_started()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await runtime().stop(grace=settings.REPLY_GRACE_SECONDS)
            await send({"type": "lifespan.shutdown.complete"})
            return
