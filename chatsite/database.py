"""Direct PostgreSQL sessions beside the pool: the notification listener's, and the readiness probe's."""

import psycopg
import psycopg.conninfo
from django.db import connection


def conninfo(**extra) -> str:
    """The connection string of the default database as Django is configured for it (tests: the test database)."""
    db = connection.settings_dict
    params = {"dbname": db["NAME"], "user": db["USER"], "password": db["PASSWORD"], "host": db["HOST"]}
    params["port"] = db["PORT"]
    return psycopg.conninfo.make_conninfo(**{key: str(value) for key, value in {**params, **extra}.items() if value})


def database_answers(timeout: int = 2) -> bool:
    """Whether the database answers now, without waiting for a pooled connection to come free or back."""
    if connection.vendor != "postgresql" or not connection.settings_dict.get("OPTIONS", {}).get("pool"):
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    with psycopg.connect(conninfo(connect_timeout=timeout), autocommit=True) as direct:
        return direct.execute("SELECT 1").fetchone() == (1,)
