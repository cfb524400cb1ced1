"""The gunicorn worker: uvicorn on uvloop and httptools, with a graceful stop that lets replies finish."""

from uvicorn_worker import UvicornWorker


class ChatsiteWorker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "uvloop", "http": "httptools", "lifespan": "on"}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Streams end when their replies do, so waiting for open connections is waiting for replies;
        # the lifespan shutdown then ends whatever still runs, before gunicorn's own timeout kills the worker.
        self.config.timeout_graceful_shutdown = max(1, self.cfg.graceful_timeout // 2)
