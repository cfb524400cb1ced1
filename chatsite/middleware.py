"""chatsite's middleware: a database outage answers 503 with Retry-After, never a 500, and the next
request reconnects; a signed-in user's answers are never cached."""

import contextlib
import logging

import psycopg
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.utils.cache import patch_cache_control

logger = logging.getLogger(__name__)

# What a lost or refused connection raises: Django's wrapped errors, and psycopg's own where
# they escape Django's wrapper. A deadlock or a lock timeout is an OperationalError too, and
# "try again shortly" is the right answer for those as well.
DATABASE_ERRORS = (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)
RETRY_AFTER_SECONDS = 5
UNAVAILABLE = {
    "detail": "The database is unavailable for a moment. Try again shortly.",
    "code": "database_unavailable",
}


def database_connections_reset(exc: BaseException) -> None:
    """Log a database outage and close this thread's broken connections, so the next request opens new ones."""
    logger.warning("database unavailable: %s", exc)
    for connection in connections.all(initialized_only=True):
        # Inside a transaction the caller's atomic block must unwind first; Django closes it at the request's end.
        if connection.in_atomic_block:
            continue
        with contextlib.suppress(DatabaseError):
            if not connection.is_usable():
                connection.close()


def database_unavailable_response(request: HttpRequest, exc: BaseException) -> HttpResponse:
    """503: JSON under /api/ (OpenAI's shape under /v1/), a plain page elsewhere."""
    database_connections_reset(exc)
    if request.path.startswith("/v1/"):
        from apikeys.errors import openai_error

        response = JsonResponse(openai_error(UNAVAILABLE, 503), status=503)
    elif request.path.startswith("/api/"):
        response = JsonResponse(UNAVAILABLE, status=503)
    else:
        # No request context: its processors may read the database that is away.
        response = HttpResponse(render_to_string("503.html"), status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class DatabaseUnavailableMiddleware:
    """Turn a database outage raised by a view into 503 with Retry-After (API views: chatsite.api)."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, DATABASE_ERRORS):
            return database_unavailable_response(request, exception)
        return None


class PrivateAnswersMiddleware:
    """Every answer to a signed-in user is `Cache-Control: private, no-store`: no proxy or browser cache keeps it.

    A request with a session cookie or credentials is somebody's: its answer is private
    whether or not the session still signs anyone in. Deciding costs no look-up, so it holds
    while the database is away too. Static files never get here (whitenoise answers them
    further out).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if settings.SESSION_COOKIE_NAME in request.COOKIES or "HTTP_AUTHORIZATION" in request.META:
            patch_cache_control(response, private=True, no_store=True)
        return response
