"""Domain errors raised by services; the API layer maps them to responses in one place."""

from typing import Any


class ChatsiteError(Exception):
    status = 400
    code = "invalid"
    default_detail = "Invalid request."

    def __init__(self, detail: str | None = None, *, code: str | None = None, **extra: Any) -> None:
        self.detail = detail or self.default_detail
        if code:
            self.code = code
        self.extra = extra
        self.headers: dict[str, str] = {}
        super().__init__(self.detail)

    def as_dict(self) -> dict[str, Any]:
        return {"detail": self.detail, "code": self.code, **self.extra}


class InvalidInput(ChatsiteError):
    pass


class NotFound(ChatsiteError):
    status = 404
    code = "not_found"
    default_detail = "Not found."


class PermissionDenied(ChatsiteError):
    status = 403
    code = "permission_denied"
    default_detail = "You do not have permission to perform this action."


class Conflict(ChatsiteError):
    status = 409
    code = "conflict"
    default_detail = "The request conflicts with an earlier one."


class NoSubscription(ChatsiteError):
    status = 403
    code = "no_subscription"
    default_detail = "You have no active subscription."


class QuotaExceeded(ChatsiteError):
    status = 429
    code = "quota_exceeded"
    default_detail = "You have reached a usage limit."


class UpstreamError(ChatsiteError):
    status = 502
    code = "upstream_error"
    default_detail = "The AI provider failed to answer. Try again."
    transient = False  # set by the provider: another attempt may well get an answer


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    default_detail = "The AI provider did not answer in time. Try again."


class TooManyStreams(ChatsiteError):
    """A user past their share of replies generating at once, or of open follow streams."""

    status = 429
    code = "too_many_streams"
    default_detail = "You have too many replies running at once. Wait for one to finish."

    def __init__(self, detail: str | None = None, *, retry_after: int = 5, **extra) -> None:
        super().__init__(detail, **extra)
        self.headers["Retry-After"] = str(retry_after)


class TooManyAttempts(ChatsiteError):
    """Too many sign-in failures, or emails asked for, from one account or one address."""

    status = 429
    code = "too_many_attempts"
    default_detail = "Too many attempts. Try again later."

    def __init__(self, detail: str | None = None, *, retry_after: int = 60, **extra) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after
        self.headers["Retry-After"] = str(retry_after)


class PaymentsNotConfigured(ChatsiteError):
    status = 503
    code = "payments_not_configured"
    default_detail = "Plans cannot be bought here: payments are not set up. Staff assign plans."


class PaymentsError(ChatsiteError):
    status = 502
    code = "payments_error"
    default_detail = "The payment provider did not answer. Try again in a moment."


class BadSignature(ChatsiteError):
    status = 400
    code = "bad_signature"
    default_detail = "The webhook's signature is missing, wrong or too old."


class Interrupted(UpstreamError):
    """The server running a reply stopped before the reply finished."""

    code = "interrupted"
    default_detail = "The server generating this reply stopped before it finished."
