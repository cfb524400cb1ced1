"""The capacity run's load client: many streamed sends at once from one asyncio process.

    python bench/capacity_client.py PLAN.json RESULTS.json

bench/capacity.py writes the plan (the server's port, the ramp, the deadline, and per send the
chat, the message, the session cookie and the CSRF token) and reads the results. Send i opens its
own connection at `ramp * i / len(sends)` s and posts `{"message": ..., "stream": true}`; the
answer is read as it comes: the status, the first body byte, each `delta` (every time stamp in it
against the time it arrived: the piece's delay, same clock as the upstream that wrote it), then
`assistant_message`, `usage` and `done`. Whatever is still open `deadline` s after the first send
is cut and counted as timed out.

It runs on uvloop with protocols, not streams or an HTTP library, so that thousands of streams
cost it little; it reports its own CPU time and how late its event loop ran (a late loop would
add to every time it measures).
"""

import asyncio
import json
import sys
import time
from pathlib import Path

PIECE_WIDTH = 20  # "[1732171234.123456] ", as bench/capacity_upstream.py writes them


class Send(asyncio.Protocol):
    """One streamed send on a connection of its own."""

    def __init__(self, plan: dict, send: dict, done: asyncio.Future) -> None:
        self.done = done
        self.transport: asyncio.Transport | None = None
        body = json.dumps({"message": send["message"], "stream": True}).encode()
        self.request = (
            f"POST /api/chat-sessions/{send['chat']}/send/ HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{plan['port']}\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\n"
            f"Cookie: {send['cookie']}\r\nX-CSRFToken: {send['csrf']}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode() + body
        self.result = {"chat": send["chat"], "message": send["message"], "status": None, "outcome": None}
        self.head = b""
        self.raw = b""  # body bytes not yet decoded
        self.chunked = False
        self.length: int | None = None  # of a body that is not chunked
        self.need: int | None = None  # bytes of the current chunk still to come
        self.sse = b""
        self.text = ""
        self.scanned = 0
        self.delays: list[float] = []
        self.events: list[str] = []
        self.error_body = b""
        self.began = 0.0

    # The connection.

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if self.result["status"] is None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            self.result["headers_ms"] = (now - self.began) * 1000
            lines = self.head[:end].decode("latin-1").split("\r\n")
            self.result["status"] = int(lines[0].split(" ")[1])
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == "transfer-encoding" and "chunked" in value:
                    self.chunked = True
                elif name == "content-length":
                    self.length = int(value)
            data, self.head = self.head[end + 4 :], b""
        if self.chunked:
            self.dechunk(data, now)
        else:
            if data:
                self.body(data, now)
            if self.length is not None and self.length <= 0:
                self.finish()

    def connection_lost(self, exc) -> None:
        self.transport = None
        if self.result["outcome"] is None:
            self.finish("cut" if self.result["status"] is not None else f"no answer ({type(exc).__name__})")

    def finish(self, outcome: str | None = None) -> None:
        if self.result["outcome"] is not None:
            return
        status = self.result["status"]
        if outcome is None:
            if status != 200:
                outcome = f"HTTP {status}"
                # JSON, or one `error` event when the API answers an event-stream client.
                body = self.error_body.split(b"data:", 1)[-1]
                try:
                    code = json.loads(body).get("code")
                except (ValueError, AttributeError):
                    code = None
                outcome += f" {code}" if code else ""
            elif "done" in self.events and "error" not in self.events:
                outcome = "done"
            else:
                outcome = "ended without done"
        self.result.update(outcome=outcome, text=self.text, delays_ms=self.delays, events=len(self.events))
        if self.transport is not None:
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)

    # The body.

    def dechunk(self, data: bytes, now: float) -> None:
        self.raw += data
        while True:
            if self.need is None:
                line_end = self.raw.find(b"\r\n")
                if line_end < 0:
                    return
                size = int(self.raw[:line_end].split(b";")[0], 16)
                self.raw = self.raw[line_end + 2 :]
                if size == 0:
                    self.finish()
                    return
                self.need = size
            if len(self.raw) < self.need + 2:
                return
            piece, self.raw = self.raw[: self.need], self.raw[self.need + 2 :]
            self.need = None
            self.body(piece, now)

    def body(self, data: bytes, now: float) -> None:
        if self.length is not None:
            self.length -= len(data)
        if "first_byte_ms" not in self.result:
            self.result["first_byte_ms"] = (now - self.began) * 1000
        if self.result["status"] != 200:
            self.error_body += data
            return
        self.sse += data
        while (end := self.sse.find(b"\n\n")) >= 0:
            raw, self.sse = self.sse[:end], self.sse[end + 2 :]
            event = payload = None
            for line in raw.split(b"\n"):
                if line.startswith(b"event:"):
                    event = line[6:].strip().decode()
                elif line.startswith(b"data:"):
                    payload = line[5:]
            if event is None:
                continue  # a keep-alive comment
            self.events.append(event)
            if event == "delta":
                self.delta(json.loads(payload)["content"], now)
            elif event == "assistant_message":
                message = json.loads(payload)
                self.result.update(reply_id=message.get("message_id"), reply_text=message.get("content"))
            elif event == "done":
                self.result["done_status"] = json.loads(payload).get("status")
            elif event == "error":
                self.result["error"] = json.loads(payload).get("code")

    def delta(self, content: str, now: float) -> None:
        """Each whole time stamp that arrived: how long after the upstream wrote it."""
        self.text += content
        while self.scanned + PIECE_WIDTH <= len(self.text):
            piece = self.text[self.scanned : self.scanned + PIECE_WIDTH]
            self.scanned += PIECE_WIDTH
            try:
                self.delays.append((now - float(piece[1:-2])) * 1000)
            except ValueError:
                self.result["malformed"] = True


async def run(plan: dict) -> dict:
    loop = asyncio.get_running_loop()
    sends = plan["sends"]
    futures = [loop.create_future() for _ in sends]
    protocols: list[Send] = []
    lags: list[float] = []
    stop = asyncio.Event()

    async def watch_loop() -> None:
        # How late this loop wakes: what its own load adds to every time measured here.
        while not stop.is_set():
            due = loop.time() + 0.05
            await asyncio.sleep(0.05)
            lags.append((loop.time() - due) * 1000)

    async def open_one(i: int) -> None:
        protocol = Send(plan, sends[i], futures[i])
        protocols.append(protocol)
        protocol.began = time.time()
        try:
            await loop.create_connection(lambda: protocol, "127.0.0.1", plan["port"])
        except OSError as exc:
            protocol.finish(f"connect error ({type(exc).__name__})")

    watcher = loop.create_task(watch_loop())
    cpu, wall, began = time.process_time(), time.perf_counter(), time.time()
    base = loop.time()
    starts = [loop.create_task(_at(loop, base + plan["ramp"] * i / len(sends), open_one, i)) for i in range(len(sends))]
    _, pending = await asyncio.wait(futures, timeout=plan["deadline"])
    for protocol in protocols:
        if protocol.result["outcome"] is None:
            protocol.finish("timeout")
    for task in starts:
        task.cancel()
    stop.set()
    await watcher
    lags.sort()
    return {
        "began": began,
        "wall_seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
        "loop_lag_p99_ms": lags[int(0.99 * (len(lags) - 1))] if lags else 0.0,
        "loop_lag_max_ms": lags[-1] if lags else 0.0,
        "results": [protocol.result for protocol in protocols],
        "not_started": len(sends) - len(protocols),
        "timed_out": len(pending),
    }


async def _at(loop, when: float, call, *args) -> None:
    await asyncio.sleep(max(0.0, when - loop.time()))
    await call(*args)


def main() -> None:
    plan_path, results_path = Path(sys.argv[1]), Path(sys.argv[2])
    plan = json.loads(plan_path.read_text())
    try:
        import uvloop
    except ImportError:
        uvloop = None
    outcome = uvloop.run(run(plan)) if uvloop is not None else asyncio.run(run(plan))
    results_path.write_text(json.dumps(outcome))


if __name__ == "__main__":
    main()
