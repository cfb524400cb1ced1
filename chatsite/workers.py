"""The gunicorn worker: uvicorn on uvloop and httptools, with a graceful stop that lets replies finish."""

import os

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


def core_for(taken: list[int | None], workers: int, cores: set[int] | None = None) -> int | None:
    """The CPU core a new worker is pinned to, or None to leave it to the operating system.

    `taken`: the cores of the workers still running. While there are no more workers than
    cores, each worker gets a core of its own (the least used, the lowest first), so it keeps
    its caches instead of following its interpreter lock from core to core; a worker that is
    recycled hands its core to the next. With more workers than cores nothing is pinned.
    """
    if cores is None:
        if not hasattr(os, "sched_getaffinity"):
            return None  # not Linux
        cores = os.sched_getaffinity(0)
    if workers > len(cores):
        return None
    return min(sorted(cores), key=taken.count)
