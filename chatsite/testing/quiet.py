"""Waiting, at the end of a test, until nothing it began still runs: its replies, and the requests the
live test server is answering (a chat page asks for its usage hint as each reply ends).

The test's database is emptied next, with one TRUNCATE of every table; beside a query still running on
the live server it can deadlock, and PostgreSQL then cancels the TRUNCATE, leaving the rows behind for
the next test.
"""

import threading
import time

from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started


class LiveServerRequests:
    """The requests the live server is answering, by the thread that answers each, from the signals its
    handler sends; a thread that ended without its `request_finished` (an earlier receiver raised) counts
    no more.

    Only a WSGI handler's requests in a thread other than the main one are the live server's: the test
    client sends the same signals from a handler of its own class, and the schema fuzzer calls the WSGI
    application in the test's own thread.
    """

    def __init__(self) -> None:
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self.begun = 0  # requests begun since the tests started

    @property
    def count(self) -> int:
        with self._lock:
            self._threads = {thread for thread in self._threads if thread.is_alive()}
            return len(self._threads)

    def started(self, sender, **kwargs) -> None:
        if _served(sender):
            with self._lock:
                self._threads.add(threading.current_thread())
                self.begun += 1

    def finished(self, sender, **kwargs) -> None:
        if _served(sender):
            with self._lock:
                self._threads.discard(threading.current_thread())


def _served(sender) -> bool:
    served = isinstance(sender, type) and issubclass(sender, WSGIHandler)
    return served and threading.current_thread() is not threading.main_thread()


live_server_requests = LiveServerRequests()
request_started.connect(live_server_requests.started, dispatch_uid="chatsite.testing.quiet.started")
request_finished.connect(live_server_requests.finished, dispatch_uid="chatsite.testing.quiet.finished")


_begun_before = 0


def wait_quiet(timeout: float = 30.0) -> bool:
    """Wait until no reply runs here and the live server answers no request. If the live server began
    any since the last wait, look twice, 50 ms apart: a request it has received but not yet begun shows
    at the second look."""
    from sessions_app.runtime import wait_idle

    global _begun_before
    deadline = time.monotonic() + timeout
    looks = 1 if live_server_requests.begun == _begun_before else 2
    calm = 0
    while True:
        busy = live_server_requests.count > 0 or not wait_idle(timeout=0)
        calm = 0 if busy else calm + 1
        if calm == looks:
            _begun_before = live_server_requests.begun
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
