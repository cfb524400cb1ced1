"""The gunicorn worker: uvicorn on uvloop and httptools, with a graceful stop that lets replies finish."""

from uvicorn_worker import UvicornWorker


class ChatsiteWorker(UvicornWorker):
    # proxy_headers off: uvicorn would take X-Forwarded-Proto and X-Forwarded-For from any client
    # on a trusted address as the truth. Django alone reads them, and only when told a proxy sets
    # them (USE_X_FORWARDED_PROTO, USE_X_FORWARDED_FOR in chatsite/settings.py).
    CONFIG_KWARGS = {"loop": "uvloop", "http": "httptools", "lifespan": "on", "proxy_headers": False}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Streams end when their replies do, so waiting for open connections is waiting for replies;
        # the lifespan shutdown then ends whatever still runs, before gunicorn's own timeout kills the worker.
        self.config.timeout_graceful_shutdown = max(1, self.cfg.graceful_timeout // 2)
