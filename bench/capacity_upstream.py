"""The capacity run's upstream: an OpenAI-compatible chat endpoint that streams the way a model does.

    python bench/capacity_upstream.py --port 8101 [--pieces 50] [--delay 0.2]

`POST /v1/chat/completions` with "stream": true answers with a role chunk at once, then
`--pieces` pieces `--delay` s apart (a 10 s reply by default), each piece's `delta.content`
the wall-clock time it was written, fixed width ("[1732171234.123456] "), so a client on
this machine can tell how late each piece reached it; then a finish chunk, a usage chunk and
`data: [DONE]`. Without "stream" it answers the same pieces at once as one completion. A
request whose last user message starts with "warm-up" gets its pieces back to back; one whose
last user message says "pieces=N" or "delay=S" gets N pieces, or S s between them, instead.

One asyncio process (uvloop when installed) with a timer per piece and no task per stream,
so thousands of streams cost little. `GET /stats` reports streams begun, finished, cut and at
most open at once, how late its timers fired, and its own CPU time (`?reset` starts the counts
again after answering); `GET /sent` the text each
stream sent, keyed by its request's last user message, which the capacity run checks against
what its clients received and what chatsite saved. `GET /v1/models` answers for readiness.
"""

import argparse
import asyncio
import json
import re
import resource
import socket
import time

PIECE_WIDTH = 20  # "[1732171234.123456] " until the year 2286
WARM_UP = "warm-up"
OPTION = re.compile(r"\b(pieces|delay)=(\d+(?:\.\d+)?)\b")
MODEL = "bench/capacity"


def stamp() -> str:
    return f"[{time.time():.6f}] "


class Stats:
    def __init__(self) -> None:
        self.begun = self.finished = self.cut = self.open = self.peak = 0
        self.late: list[float] = []  # seconds each piece's timer fired after its time
        self.sent: dict[str, dict] = {}  # last user message -> {"text", "complete"}

    def reset(self) -> None:
        """Count from now on (what was sent is kept)."""
        self.begun = self.finished = self.cut = 0
        self.peak = self.open
        self.late = []

    def report(self) -> dict:
        late = sorted(self.late)

        def at(q: float) -> float:
            return late[min(len(late) - 1, int(q * len(late)))] * 1000 if late else 0.0

        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "begun": self.begun, "finished": self.finished, "cut": self.cut, "open": self.open, "peak": self.peak,
            "pieces": len(late), "late_p50_ms": at(0.5), "late_p95_ms": at(0.95), "late_max_ms": at(1.0),
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
        }  # fmt: skip


class Upstream(asyncio.Protocol):
    """One client connection: requests one after another (keep-alive), a stream at a time."""

    def __init__(self, stats: Stats, *, pieces: int, delay: float) -> None:
        self.stats, self.pieces, self.delay = stats, pieces, delay
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.streaming = False
        self.keep_alive = True

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Headers and each piece leave at once, not when the client's delayed ACK comes back.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.streaming:
            self.next_request()

    def connection_lost(self, exc) -> None:
        self.transport = None

    def next_request(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].decode("latin-1").split("\r\n")
        method, path, version = [*head[0].split(" "), "", "", ""][:3]
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        if len(self.buffer) < end + 4 + length:
            return  # the body is still on its way
        body = self.buffer[end + 4 : end + 4 + length]
        self.buffer = self.buffer[end + 4 + length :]
        connection = headers.get("connection", "").lower()
        self.keep_alive = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")
        path, _, query = path.partition("?")
        if method == "POST" and path == "/v1/chat/completions":
            try:
                request = json.loads(body)
            except ValueError:
                request = None
            if not isinstance(request, dict):
                self.send_json(400, {"error": {"message": "The body is not a JSON object."}})
            elif request.get("stream"):
                self.stream(request)
            else:
                self.complete(request)
        elif method == "GET" and path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [{"id": MODEL, "name": "Capacity upstream"}]})
        elif method == "GET" and path == "/stats":
            self.send_json(200, self.stats.report())
            if query == "reset":
                self.stats.reset()
        elif method == "GET" and path == "/sent":
            self.send_json(200, self.stats.sent)
        else:
            self.send_json(404, {"error": {"message": f"No route {method} {path}."}})

    def done(self) -> None:
        """The response is out: close, or read the next request of a kept-alive connection."""
        self.streaming = False
        if self.transport is None:
            return
        if not self.keep_alive:
            self.transport.close()
        elif self.buffer:
            self.next_request()

    # Replies.

    def send_json(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        head = f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\nContent-Type: application/json\r\n"
        head += f"Content-Length: {len(data)}\r\n"
        if not self.keep_alive:
            head += "Connection: close\r\n"
        if self.transport is not None:
            self.transport.write(head.encode() + b"\r\n" + data)
        self.done()

    def shape(self, key: str) -> tuple[int, float]:
        """How many pieces this request gets and how far apart: the server's, unless its message says."""
        options = dict(OPTION.findall(key))
        pieces = int(float(options.get("pieces", self.pieces)))
        delay = 0.0 if key.startswith(WARM_UP) else float(options.get("delay", self.delay))
        return max(1, pieces), delay

    def complete(self, request: dict) -> None:
        pieces, _ = self.shape(key_of(request))
        text = "".join(stamp() for _ in range(pieces))
        self.stats.sent[key_of(request)] = {"text": text, "complete": True}
        self.send_json(
            200,
            {
                "id": "chatcmpl-capacity",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": request.get("model", MODEL),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": pieces, "total_tokens": 10 + pieces},
            },
        )

    def stream(self, request: dict) -> None:
        self.streaming = True
        stats, key = self.stats, key_of(request)
        stats.begun += 1
        stats.open += 1
        stats.peak = max(stats.peak, stats.open)
        record = stats.sent[key] = {"text": "", "complete": False}
        model = json.dumps(request.get("model", MODEL))
        # Every piece is one template with the stamp in the middle: no JSON encoding per piece.
        created = int(time.time())
        head = f'data: {{"id":"chatcmpl-capacity","object":"chat.completion.chunk","created":{created},"model":{model},'
        before = (head + '"choices":[{"index":0,"delta":{"content":"').encode()
        after = b'"},"finish_reason":null}]}\n\n'
        role = head + '"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            + (b"" if self.keep_alive else b"Connection: close\r\n")
            + b"Transfer-Encoding: chunked\r\n\r\n"
            + chunk(role.encode())
        )
        loop = asyncio.get_running_loop()
        pieces, delay = self.shape(key)
        started = loop.time()
        parts: list[str] = []

        def piece(i: int, due: float) -> None:
            if self.transport is None or self.transport.is_closing():
                stats.open -= 1
                stats.cut += 1
                record["text"] = "".join(parts)
                self.streaming = False
                return
            stats.late.append(loop.time() - due)
            parts.append(stamp())
            self.transport.write(chunk(before + parts[-1].encode() + after))
            if i + 1 < pieces:
                following = started + delay * (i + 2)
                loop.call_at(following, piece, i + 1, following)
                return
            usage = {"prompt_tokens": 10, "completion_tokens": pieces, "total_tokens": 10 + pieces}
            ending = (
                head + '"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
                + head + f'"choices":[],"usage":{json.dumps(usage)}}}\n\n'
                + "data: [DONE]\n\n"
            )  # fmt: skip
            self.transport.write(chunk(ending.encode()) + b"0\r\n\r\n")
            record.update(text="".join(parts), complete=True)
            stats.open -= 1
            stats.finished += 1
            self.done()

        first = started + delay
        loop.call_at(first, piece, 0, first)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def key_of(request: dict) -> str:
    """The request's last user message: what tells the capacity run's sends apart."""
    for message in reversed(request.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


async def serve(port: int, pieces: int, delay: float) -> None:
    stats = Stats()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Upstream(stats, pieces=pieces, delay=delay), "127.0.0.1", port, backlog=4096, reuse_address=True
    )
    print(f"capacity upstream on http://127.0.0.1:{port}/v1: {pieces} pieces {delay} s apart", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--pieces", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds between pieces")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        uvloop = None
    if uvloop is not None:
        uvloop.run(serve(args.port, args.pieces, args.delay))
    else:
        asyncio.run(serve(args.port, args.pieces, args.delay))


if __name__ == "__main__":
    main()
