"""Project-wide views: health checks and error pages that speak JSON under /api/ (and OpenAI's JSON under /v1/)."""

import logging
import sys

from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from chatsite.database import database_answers
from chatsite.middleware import DATABASE_ERRORS, database_unavailable_response

logger = logging.getLogger(__name__)


def _is_api(request) -> bool:
    return request.path.startswith(("/api/", "/v1/"))


def _error(request, detail: str, code: str, status: int) -> JsonResponse:
    if request.path.startswith("/v1/"):
        from apikeys.errors import openai_error

        return JsonResponse(openai_error({"detail": detail, "code": code}, status), status=status)
    return JsonResponse({"detail": detail, "code": code}, status=status)


@require_GET
def landing(request):
    """What chatsite is, for a visitor; signed-in people go straight to their chats."""
    if request.user.is_authenticated:
        return redirect("chat:index")
    return render(request, "landing.html")


@never_cache
@require_GET
def health(request):
    """Liveness: the process answers."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def ready(request):
    """Readiness: the process answers and the database does too."""
    try:
        # Not through the pool, which would wait out a short outage instead of telling of it.
        if not database_answers():
            raise RuntimeError("SELECT 1 did not answer 1")
    except Exception:
        logger.exception("readiness check: database unavailable")
        return JsonResponse(
            {"status": "unavailable", "code": "database_unavailable", "detail": "The database does not answer."},
            status=503,
        )
    return JsonResponse({"status": "ok", "database": "ok"})


def not_found(request, exception=None):
    if _is_api(request):
        return _error(request, "Not found.", "not_found", 404)
    return render(request, "404.html", status=404)


def bad_request(request, exception=None):
    if _is_api(request):
        return _error(request, "Bad request.", "bad_request", 400)
    return render(request, "400.html", status=400)


def permission_denied(request, exception=None):
    if _is_api(request):
        return _error(request, "Permission denied.", "permission_denied", 403)
    return render(request, "403.html", status=403)


def server_error(request):
    exc = sys.exc_info()[1]
    if isinstance(exc, DATABASE_ERRORS):
        # Raised outside a view (a middleware saving the session): still an outage, not a bug.
        return database_unavailable_response(request, exc)
    if _is_api(request):
        return _error(request, "Server error.", "server_error", 500)
    return render(request, "500.html", status=500)


def csrf_failure(request, reason=""):
    if _is_api(request):
        return _error(request, f"CSRF check failed: {reason}", "csrf_failed", 403)
    return render(request, "403_csrf.html", {"reason": reason}, status=403)
