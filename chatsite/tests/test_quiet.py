"""A test's end waits for what it began on the live server before the test's database is emptied."""

import socket
import threading
import time
from urllib.parse import urlsplit

import pytest

from apikeys.tests.factories import make_key
from chatsite.testing.quiet import live_server_requests, wait_quiet

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_end_of_a_test_waits_for_a_request_the_live_server_is_still_answering(live_server, user):
    _, key = make_key(user)
    body = b'{"model": "no/such-model", "messages": [{"role": "user", "content": "Hello"}]}'
    address = urlsplit(live_server.url)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {address.netloc}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((address.hostname, address.port), timeout=10) as client:
        # The server begins the request, then waits for the rest of its body, sent 0.5 s later.
        client.sendall(head.encode() + body[:10])
        for _ in range(200):
            if live_server_requests.count == 1:
                break
            time.sleep(0.01)
        assert live_server_requests.count == 1
        threading.Timer(0.5, client.sendall, [body[10:]]).start()

        assert wait_quiet(timeout=10)

        # The answer was written before the wait ended: it is there to read at once.
        assert live_server_requests.count == 0
        client.setblocking(False)
        assert client.recv(65536).startswith(b"HTTP/1.1 4")
