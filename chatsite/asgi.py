"""The ASGI application: Django, plus the lifespan that runs the reply runtime on the server's loop."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
django_application = get_asgi_application()


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
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
