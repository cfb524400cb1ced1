"""A TCP relay in front of PostgreSQL that records every statement its clients send.

    with StatementTap(host="127.0.0.1", port=5432) as tap:
        ...  # point the code under test at 127.0.0.1:tap.port
        tap.statements()  # [(connection number, application_name, SQL text), ...]

It reads the frontend side of the protocol: a simple query ("Q") is one round trip with its
text, an extended-protocol statement is its Parse ("P"), or its Execute ("E") of a statement
parsed before (a prepared statement). So it sees what reaches the server, whoever sends it: Django, a connection
pool's health check, psycopg's own BEGIN and COMMIT. It turns TLS down (answering "N" to the
client's request for it), so it reads plain text; the server's answers pass through unread.
"""

import contextlib
import socket
import struct
import threading

SSL_REQUEST, GSSENC_REQUEST = 80877103, 80877104


class StatementTap:
    def __init__(self, *, host: str, port: int) -> None:
        self.target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._log: list[tuple[int, str, str]] = []
        self._sockets: list[socket.socket] = []
        self._connections = 0
        self._thread = threading.Thread(target=self._accept, name="pg-tap", daemon=True)

    def __enter__(self) -> "StatementTap":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._thread.join(timeout=5)

    def statements(self) -> list[tuple[int, str, str]]:
        with self._lock:
            return list(self._log)

    def clear(self) -> None:
        with self._lock:
            self._log.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        server = socket.create_connection(self.target)
        with self._lock:
            self._sockets += [client, server]
            self._connections += 1
            number = self._connections
        threading.Thread(target=_pipe, args=(server, client), daemon=True).start()
        try:
            self._read_frontend(client, server, number)
        except (OSError, ConnectionError):
            pass
        finally:
            for sock in (client, server):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _read_frontend(self, client: socket.socket, server: socket.socket, number: int) -> None:
        # The start: untyped messages, first perhaps a request for TLS (or GSS encryption) that we refuse.
        while True:
            length = struct.unpack("!I", _read(client, 4))[0]
            body = _read(client, length - 4)
            code = struct.unpack("!I", body[:4])[0]
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                client.sendall(b"N")
                continue
            server.sendall(struct.pack("!I", length) + body)
            break
        fields = body[4:].split(b"\0")
        parameters = dict(zip(fields[0::2], fields[1::2], strict=False))
        application = parameters.get(b"application_name", b"").decode()
        parsed = False  # a Parse since the last Sync: its Execute is the same statement
        while True:
            header = _read(client, 5)
            kind, length = header[:1], struct.unpack("!I", header[1:])[0]
            body = _read(client, length - 4)
            server.sendall(header + body)
            if kind == b"Q":
                self._record(number, application, body.rstrip(b"\0").decode())
            elif kind == b"P":
                parsed = True
                _name, query = body.split(b"\0")[:2]
                self._record(number, application, query.decode())
            elif kind == b"E" and not parsed:
                self._record(number, application, "EXECUTE (a prepared statement)")
            elif kind == b"S":
                parsed = False
            elif kind == b"X":
                return

    def _record(self, number: int, application: str, sql: str) -> None:
        with self._lock:
            self._log.append((number, application, sql))


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)
