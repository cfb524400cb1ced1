"""gunicorn settings for chatsite: threaded workers, because replies stream.

A streamed reply holds its worker thread for as long as the client listens,
so workers are `gthread` with many threads each; the reply itself runs in a
thread of its own and finishes even if the client goes away.
"""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
worker_class = "gthread"
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count()))
threads = int(os.environ.get("GUNICORN_THREADS", 32))
# Streams stay open while the upstream thinks; keep-alive comments flow every 15 s.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", 120))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", 60))
keepalive = 5
accesslog = "-"
errorlog = "-"
# Recycle workers now and then, at a random point so they do not restart together.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", 10000))
max_requests_jitter = 1000
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
