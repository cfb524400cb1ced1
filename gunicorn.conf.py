"""gunicorn settings for chatsite: uvicorn workers (ASGI), each running its replies as tasks on its event loop.

A streamed reply costs a task and a little memory, not a thread or a database
connection, so a worker holds thousands. Every setting comes from the environment.
"""

import multiprocessing
import os

import environ

from chatsite.workers import core_for

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
wsgi_app = "chatsite.asgi:application"
worker_class = "chatsite.workers.ChatsiteWorker"
workers = int(os.environ.get("GUNICORN_WORKERS") or os.environ.get("WEB_CONCURRENCY") or multiprocessing.cpu_count())
# A streamed reply keeps its connection open; keep-alive comments flow every 15 s meanwhile.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", 120))
# A stopping worker lets its streams finish for half of this and its other replies for REPLY_GRACE_SECONDS
# more, then ends what still runs at once (charged for what it produced).
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", 30))
keepalive = 5
backlog = int(os.environ.get("GUNICORN_BACKLOG", 4096))
# Off unless asked for ("-" is standard output): the proxy in front logs every request already.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
# Recycle workers now and then, at a random point so they do not restart together.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", 100000))
max_requests_jitter = 10000
# No forwarded header is trusted by the server itself (gunicorn's default list includes X-Forwarded-Ssl
# and X-Forwarded-Protocol): Django reads X-Forwarded-Proto, and only with USE_X_FORWARDED_PROTO=1.
secure_scheme_headers = {}

# Each worker on a CPU core of its own while there are no more workers than cores (Linux):
# a worker runs Python on one core at a time (its interpreter lock), and one that stays
# on its core keeps its caches warm. GUNICORN_PIN_WORKERS=0 leaves placing them to the system.
pin_workers = environ.Env().bool("GUNICORN_PIN_WORKERS", default=True)


def pre_fork(server, worker):
    # In the master: the core is chosen among those its running workers do not hold.
    siblings = [getattr(sibling, "core", None) for sibling in server.WORKERS.values()]
    worker.core = core_for(siblings, server.num_workers) if pin_workers else None


def post_fork(server, worker):
    if worker.core is not None:
        os.sched_setaffinity(0, {worker.core})
        server.log.info("Worker %s pinned to CPU core %s", worker.pid, worker.core)
