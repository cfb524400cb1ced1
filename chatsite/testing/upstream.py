"""A real OpenAI-compatible HTTP server for tests: replies scripted per test, every request recorded.

    with StubUpstream() as stub:
        stub.enqueue_text("Hi there.", usage=(12, 3))
        ...  # point the code under test at stub.base_url

Every request to a known route takes the next scripted reply, first in first out; with
none queued it gets a default: "Hello from the stub." for chat completions (streamed
if the request asked for it, or an image when it asked for "modalities": ["image", ...]),
a small PNG for /images/generations, the catalogue for GET /models.

Run `python -m chatsite.testing.upstream --port 8001` for a standalone upstream that
always answers the defaults. With `--stamped N --delay S` (the benchmarks' upstream) a chat
completion is N pieces sent S seconds apart, each piece the wall-clock time it was sent,
so a client on the same machine can tell how long chatsite held each one; `--no-record`
keeps no request log, for long runs.
"""

import argparse
import base64
import contextlib
import json
import math
import socket
import struct
import sys
import threading
import time
import zlib
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from requests.structures import CaseInsensitiveDict

DEFAULT_TEXT = "Hello from the stub."
DEFAULT_USAGE = (10, 5)
ROUTES = {
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/images/generations"),
    ("GET", "/v1/models"),
}
IMAGE_PATH = "/v1/stub-images/"


def tiny_png() -> bytes:
    """A valid one-pixel PNG, built by hand so the stub needs nothing but the standard library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # one pixel, 8-bit RGB
    pixels = zlib.compress(b"\x00\x4c\x8c\xff")  # filter byte, then one blue pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


DEFAULT_CATALOGUE = [
    {
        "id": "stub/chat",
        "name": "Stub: Chat",
        "description": "The test upstream's text model.",
        "context_length": 8192,
        "pricing": {"prompt": "0.000001", "completion": "0.000002"},
        "architecture": {"input_modalities": ["text"], "output_modalities": ["text"]},
    }
]


class StubUpstream:
    """An OpenAI-compatible upstream on 127.0.0.1 that answers what each test scripts."""

    def __init__(self, port: int = 0, *, record: bool = True, stamped: tuple[int, float] | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.record = record
        self.stamped = stamped  # (pieces, seconds between them) for the default chat reply
        self._replies: deque[tuple[str, dict[str, Any]]] = deque()
        self._catalogue: list[dict[str, Any]] = list(DEFAULT_CATALOGUE)
        self._images: dict[str, tuple[bytes, str]] = {}
        self._changed = threading.Condition()
        # Set at stop(): every hang and delay ends at once, so teardown never waits them out.
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        # Every connection a client opened, kept-alive ones counted once: a client that reuses its pool opens few.
        self.connections_opened = 0
        self._handler_threads: set[threading.Thread] = set()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.stub = self
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="stub-upstream", daemon=True
        )

    # Lifecycle.

    def start(self) -> "StubUpstream":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        with self._changed:
            connections, threads = list(self._connections), list(self._handler_threads)
        for connection in connections:
            # Wakes handlers blocked reading the next request of a kept-alive connection.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(timeout=5)
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "StubUpstream":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Scripting.

    def enqueue_text(
        self,
        text: str,
        *,
        chunks: list[str] | None = None,
        usage: tuple[int, int] | None = None,
        cost: float | str | None = None,
        delay: float = 0.0,
    ) -> None:
        """Answer with `text`: as SSE chunks (one per item of `chunks`) if streamed, else as one completion."""
        self._enqueue("text", text=text, chunks=chunks, usage=usage, cost=cost, delay=delay)

    def enqueue_raw(
        self,
        pieces: list[bytes],
        *,
        delay: float = 0.0,
        status: int = 200,
        content_type: str = "text/event-stream",
        cut: bool = False,
    ) -> None:
        """Write each piece as its own HTTP chunk, `delay` seconds apart; `cut` drops the connection at the end."""
        self._enqueue("raw", pieces=pieces, delay=delay, status=status, content_type=content_type, cut=cut)

    def enqueue_status(
        self, code: int, *, body: dict[str, Any] | str | bytes | None = None, headers: dict[str, str] | None = None
    ) -> None:
        """Answer with HTTP `code`; a dict body is sent as JSON, the default an OpenAI-style error object."""
        self._enqueue("status", code=code, body=body, headers=headers or {})

    def enqueue_malformed(self) -> None:
        """Answer 200 application/json with a body that is not JSON."""
        self._enqueue("malformed")

    def enqueue_hang(self, seconds: float) -> None:
        """Accept the request, send nothing for `seconds` (less if the stub stops), then drop the connection."""
        self._enqueue("hang", seconds=seconds)

    def enqueue_silent(self, seconds: float) -> None:
        """Answer 200 with an event stream's headers, then send nothing for `seconds`, then drop the connection."""
        self._enqueue("silent", seconds=seconds)

    def enqueue_image(self, png: bytes, *, via: str = "images", cost: float | str | None = None) -> None:
        """Answer with an image: "images" (data[0].b64_json), "url" (data[0].url) or "chat" (message.images)."""
        if via not in ("images", "url", "chat"):
            raise ValueError(f"via must be 'images', 'url' or 'chat', not {via!r}")
        self._enqueue("image", png=png, via=via, cost=cost)

    def set_models(self, catalogue: list[dict[str, Any]]) -> None:
        """Answer GET /v1/models with {"data": catalogue} from now on."""
        self._catalogue = list(catalogue)

    # Looking at what happened.

    @property
    def queued(self) -> int:
        """How many scripted replies no request has taken yet."""
        with self._changed:
            return len(self._replies)

    def wait_for_requests(self, n: int, timeout: float = 5) -> list[dict[str, Any]]:
        """Wait until at least `n` requests arrived and return them all."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.requests) >= n, timeout):
                raise AssertionError(f"the stub upstream got {len(self.requests)} requests, not {n}")
            return list(self.requests)

    def wait_for_disconnect(self, timeout: float = 5) -> bool:
        """Wait until a client hung up on a reply the stub was still sending; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: any(r["disconnected"] for r in self.requests), timeout)

    # Used by the handler.

    def _enqueue(self, kind: str, **params: Any) -> None:
        with self._changed:
            self._replies.append((kind, params))

    def _take(self) -> tuple[str, dict[str, Any]] | None:
        with self._changed:
            return self._replies.popleft() if self._replies else None

    def _record(self, record: dict[str, Any]) -> None:
        with self._changed:
            if self.record:
                self.requests.append(record)
            self._changed.notify_all()

    def _mark_disconnected(self, record: dict[str, Any]) -> None:
        with self._changed:
            record["disconnected"] = True
            self._changed.notify_all()

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Many clients connect at once (a pool filling up): none should wait for a SYN retry.
    request_queue_size = 256
    stub: StubUpstream

    def handle_error(self, request, client_address) -> None:
        # Clients hanging up is what several tests are about; anything else is a bug worth seeing.
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class _ClientGone(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30  # an idle kept-alive connection ends on its own
    # Headers and body leave in separate writes; without this, Nagle's algorithm holds the body
    # until the client's delayed ACK of the headers, 40 ms later on Linux.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        with self.server.stub._changed:
            self.server.stub._connections.add(self.connection)
            self.server.stub.connections_opened += 1
            self.server.stub._handler_threads.add(threading.current_thread())

    def finish(self) -> None:
        with self.server.stub._changed:
            self.server.stub._connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        stub = self.server.stub
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = None
        path = self.path.split("?", 1)[0]
        self.record = {
            "method": self.command,
            "path": path,
            "headers": CaseInsensitiveDict(self.headers.items()),
            "json": payload,
            "body": body,
            "disconnected": False,
        }
        stub._record(self.record)
        self.request_json = payload if isinstance(payload, dict) else {}
        try:
            if self.command == "GET" and path.startswith(IMAGE_PATH) and path[len(IMAGE_PATH) :] in stub._images:
                png, content_type = stub._images[path[len(IMAGE_PATH) :]]
                self._send_body(200, png, content_type)
                return
            if (self.command, path) not in ROUTES:
                self._send_json(404, {"error": {"message": f"The stub has no route {self.command} {path}."}})
                return
            scripted = stub._take()
            if scripted is None:
                self._reply_default(path)
            else:
                kind, params = scripted
                getattr(self, f"_reply_{kind}")(**params)
        except _ClientGone:
            stub._mark_disconnected(self.record)
            self.close_connection = True

    # Replies.

    def _reply_default(self, path: str) -> None:
        if path == "/v1/models":
            self._send_json(200, {"object": "list", "data": self.server.stub._catalogue})
        elif path == "/v1/images/generations":
            self._reply_image(tiny_png(), via="images", cost=None)
        elif "image" in (self.request_json.get("modalities") or []):
            self._reply_image(tiny_png(), via="chat", cost=None)
        elif self.server.stub.stamped:
            self._reply_stamped(*self.server.stub.stamped)
        else:
            self._reply_text(DEFAULT_TEXT, chunks=None, usage=DEFAULT_USAGE, cost=None, delay=0.0)

    def _reply_text(
        self, text: str, *, chunks: list[str] | None, usage: tuple[int, int] | None, cost: Any, delay: float
    ) -> None:
        model = self.request_json.get("model", "stub/chat")
        usage_body = None
        if usage is not None:
            usage_body = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
            if cost is not None:
                usage_body["cost"] = float(cost) if isinstance(cost, str) else cost
        if not self.request_json.get("stream"):
            completion = {
                "id": "chatcmpl-stub",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            }
            if usage_body is not None:
                completion["usage"] = usage_body
            self._send_json(200, completion)
            return

        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            chunk = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": int(time.time())}
            chunk |= {"model": model, "choices": choices, **extra}
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        self._start_chunked(200, "text/event-stream")
        self._write_chunk(event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]))
        for i, piece in enumerate(split_text(text) if chunks is None else chunks):
            if i:
                self.server.stub._pause(delay)
            self._write_chunk(event([{"index": 0, "delta": {"content": piece}, "finish_reason": None}]))
        self._write_chunk(event([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
        if usage_body is not None:
            self._write_chunk(event([], usage=usage_body))
        self._write_chunk(b"data: [DONE]\n\n")
        self._end_chunked()

    def _reply_stamped(self, pieces: int, delay: float) -> None:
        """`pieces` pieces, each its send time as "[1732171234.123456] "; one body with them all unless streamed."""
        if not self.request_json.get("stream"):
            text = "".join(stamp() for _ in range(pieces))
            self._reply_text(text, chunks=None, usage=DEFAULT_USAGE, cost=None, delay=0.0)
            return
        model = self.request_json.get("model", "stub/chat")

        def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if delta is not None else []
            chunk = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": int(time.time())}
            return b"data: " + json.dumps(chunk | {"model": model, "choices": choices, **extra}).encode() + b"\n\n"

        self._start_chunked(200, "text/event-stream")
        for i in range(pieces):
            if i:
                self.server.stub._pause(delay)
            self._write_chunk(event({"content": stamp()}))
        prompt = DEFAULT_USAGE[0]
        usage = {"prompt_tokens": prompt, "completion_tokens": pieces, "total_tokens": prompt + pieces}
        self._write_chunk(event({}, "stop") + event(None, usage=usage) + b"data: [DONE]\n\n")
        self._end_chunked()

    def _reply_raw(self, *, pieces: list[bytes], delay: float, status: int, content_type: str, cut: bool) -> None:
        self._start_chunked(status, content_type)
        for i, piece in enumerate(pieces):
            if i:
                self.server.stub._pause(delay)
            self._write_chunk(piece)
        if cut:
            self.close_connection = True  # no terminating chunk: the client sees the connection drop
        else:
            self._end_chunked()

    def _reply_status(self, *, code: int, body: Any, headers: dict[str, str]) -> None:
        if body is None:
            body = {"error": {"message": f"Stub upstream error {code}.", "code": code}}
        if isinstance(body, dict):
            self._send_body(code, json.dumps(body).encode(), "application/json", headers)
        else:
            self._send_body(code, body if isinstance(body, bytes) else body.encode(), "text/plain", headers)

    def _reply_malformed(self) -> None:
        self._send_body(200, b'{"id": "chatcmpl-stub", "choices": [{"message": ', "application/json")

    def _reply_hang(self, *, seconds: float) -> None:
        self.server.stub._pause(seconds)
        self.close_connection = True

    def _reply_silent(self, *, seconds: float) -> None:
        self._start_chunked(200, "text/event-stream")
        self.server.stub._pause(seconds)
        self.close_connection = True

    def _reply_image(self, png: bytes, *, via: str, cost: Any) -> None:
        encoded = base64.b64encode(png).decode()
        usage = {"prompt_tokens": 7, "completion_tokens": 0, "total_tokens": 7}
        if cost is not None:
            usage["cost"] = float(cost) if isinstance(cost, str) else cost
        if via == "chat":
            image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{encoded}"}}
            message = {"role": "assistant", "content": "", "images": [image]}
            body = {
                "id": "chatcmpl-stub",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.request_json.get("model", "stub/image"),
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": usage,
            }
        elif via == "url":
            name = f"{len(self.server.stub._images)}.png"
            self.server.stub._images[name] = (png, "image/png")
            host, port = self.server.server_address[:2]
            body = {"created": int(time.time()), "data": [{"url": f"http://{host}:{port}{IMAGE_PATH}{name}"}]}
        else:
            body = {"created": int(time.time()), "data": [{"b64_json": encoded}]}
        self._send_json(200, body)

    # HTTP plumbing. wfile is unbuffered, so every write leaves at once.

    def _send_json(self, status: int, body: Any) -> None:
        self._send_body(status, json.dumps(body).encode(), "application/json")

    def _send_body(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except OSError as exc:
            raise _ClientGone from exc

    def _start_chunked(self, status: int, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
        except OSError as exc:
            raise _ClientGone from exc

    def _write_chunk(self, data: bytes) -> None:
        if not data:
            return  # an empty chunk would end the body
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        except OSError as exc:
            raise _ClientGone from exc

    def _end_chunked(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
        except OSError as exc:
            raise _ClientGone from exc


def stamp() -> str:
    return f"[{time.time():.6f}] "


def split_text(text: str, parts: int = 4) -> list[str]:
    """Cut `text` into about `parts` pieces that join back to it exactly."""
    size = max(1, math.ceil(len(text) / parts))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the stub OpenAI-compatible upstream with its default replies.")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--stamped", type=int, metavar="N", help="answer chats with N time-stamped pieces")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between stamped pieces")
    parser.add_argument("--no-record", action="store_true", help="keep no log of requests")
    args = parser.parse_args()
    stamped = (args.stamped, args.delay) if args.stamped else None
    with StubUpstream(port=args.port, record=not args.no_record, stamped=stamped) as stub:
        print(f"Stub upstream at {stub.base_url} (Ctrl-C stops it)")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
