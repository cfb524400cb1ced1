"""Reading server-sent events in tests, the way a browser's parser does."""

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass
class Event:
    event: str
    data: object
    id: str | None


def parse_events(chunks: Iterable[bytes]) -> Iterator[Event | str]:
    """Yield each event as it completes, and each comment (e.g. keep-alive) as a string."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            fields: dict[str, str] = {}
            comments = []
            for line in block.decode().split("\n"):
                if line.startswith(":"):
                    comments.append(line[1:].strip())
                elif line:
                    name, _, value = line.partition(": ")
                    fields[name] = fields[name] + "\n" + value if name in fields else value
            yield from comments
            if "event" in fields or "data" in fields:
                data = json.loads(fields["data"]) if "data" in fields else None
                yield Event(fields.get("event", "message"), data, fields.get("id"))


def events_only(items: Iterable[Event | str]) -> list[Event]:
    return [item for item in items if isinstance(item, Event)]


def arriving(response) -> Iterator[bytes]:
    """The body of a streamed `requests` response, piece by piece as it arrives on the socket."""
    while True:
        piece = response.raw.read1(65536)
        if not piece:
            return
        yield piece
