"""The one place where exceptions raised in API views become JSON errors."""

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from chatsite.errors import ChatsiteError
from chatsite.middleware import DATABASE_ERRORS, RETRY_AFTER_SECONDS, UNAVAILABLE, database_connections_reset

logger = logging.getLogger(__name__)


def _first_message(detail) -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            message = _first_message(value)
            return message if key == "non_field_errors" else f"{key}: {message}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def _first_code(codes) -> str:
    if isinstance(codes, dict):
        return _first_code(next(iter(codes.values()), "invalid"))
    if isinstance(codes, list):
        return _first_code(codes[0]) if codes else "invalid"
    return str(codes)


def exception_handler(exc, context):
    """Turn every exception raised in an API view into `{"detail", "code"}` JSON."""
    if isinstance(exc, ChatsiteError):
        set_rollback()
        return Response(exc.as_dict(), status=exc.status, headers=exc.headers)
    if isinstance(exc, DATABASE_ERRORS):
        set_rollback()
        database_connections_reset(exc)
        return Response(
            dict(UNAVAILABLE),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, (RequestDataTooBig, TooManyFieldsSent)):
        return Response(
            {"detail": "Request body is too large.", "code": "too_large"},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if not isinstance(exc, exceptions.APIException):
        return None

    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    set_rollback()
    if isinstance(exc, exceptions.ValidationError):
        body = {
            "detail": _first_message(exc.detail),
            "code": _first_code(exc.get_codes()),
            "errors": exc.detail,
        }
    else:
        body = {"detail": str(exc.detail), "code": _first_code(exc.get_codes())}
    return Response(body, status=exc.status_code, headers=headers)
