"""Errors in the shape OpenAI's clients read: {"error": {"message", "type", "param", "code"}}."""

from chatsite.api import exception_handler

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
# Ours, where OpenAI's clients know a more precise type.
CODE_TYPES = {"quota_exceeded": "insufficient_quota"}


def openai_error(body: dict, status: int) -> dict:
    """chatsite's `{"detail", "code", ...}` error as OpenAI's; the extra fields (a quota's limit) stay beside them."""
    extra = {key: value for key, value in body.items() if key not in ("detail", "code", "errors")}
    errors = body.get("errors")
    param = next(iter(errors), None) if isinstance(errors, dict) else None
    code = body.get("code")
    kind = CODE_TYPES.get(code) or ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": str(body.get("detail", "")), "type": kind, "param": param, "code": code, **extra}}


def openai_exception_handler(exc, context):
    """The one exception handler (chatsite.api), its body reshaped for OpenAI's clients."""
    response = exception_handler(exc, context)
    if response is not None:
        response.data = openai_error(response.data, response.status_code)
    return response
