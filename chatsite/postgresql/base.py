"""Django's PostgreSQL backend, whose pool checks a connection without a round trip while the server has said nothing.

With CONN_HEALTH_CHECKS, Django's pool runs psycopg_pool's check each time it hands a
connection out: an empty statement, one more round trip to PostgreSQL per request and per
database step of a reply. An idle connection hears from the server only when something
happened to it (a restart or a terminated backend sends a FATAL error and closes the socket;
a parameter change or notice also arrives this way): so the round trip is paid only when its
socket has something to read, and everything else passes at the cost of a poll.
"""

import select

import psycopg
from django.db.backends.postgresql import base
from psycopg_pool import ConnectionPool


def check_connection(conn: psycopg.Connection) -> None:
    """Raise if `conn` is closed, or if the server has spoken since its last use and the full check fails."""
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        ConnectionPool.check_connection(conn)


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self):
        pool = super().pool
        # Django asks for psycopg_pool's own check when CONN_HEALTH_CHECKS is on; ours catches the same failures.
        if pool is not None and pool._check is ConnectionPool.check_connection:
            pool._check = check_connection
        return pool
