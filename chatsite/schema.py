"""drf-spectacular extensions for chatsite's own API classes, and the error responses every operation documents."""

from drf_spectacular.authentication import SessionScheme
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse


class ChatsiteSessionScheme(SessionScheme):
    target_class = "chatsite.authentication.SessionAuthentication"


# The shape chatsite.api.exception_handler gives every error.
ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "detail": {"type": "string", "description": "What went wrong, for people."},
        "code": {"type": "string", "description": "What went wrong, for programs (e.g. not_found, quota_exceeded)."},
        "errors": {
            "description": "Invalid input (400): the messages of each field that was wrong.",
            "oneOf": [{"type": "object", "additionalProperties": {}}, {"type": "array", "items": {}}],
        },
    },
    "required": ["detail", "code"],
    "description": "An error. A refused quota (429) adds limit, limit_value, used and resets_at.",
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}

# A text/event-stream response's schema describes each of its events (`: keep-alive` comments are not events).
EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "How many characters of the reply came so far (Last-Event-ID)."},
        "event": {
            "type": "string",
            "enum": ["user_message", "edited", "delta", "assistant_message", "usage", "done", "error"],
        },
        "data": {
            "type": "string",
            "description": "JSON: the saved message (user_message, assistant_message), "
            '{"content"} (delta), the usage, {"status", "title"} (done) or an Error (error).',
        },
    },
    "required": ["event", "data"],
    "description": "One server-sent event of a reply.",
}
EVENT_REF = {"$ref": "#/components/schemas/ReplyEvent"}
# What a client that asked for a stream gets when the request fails before the stream starts.
ERROR_EVENT_SCHEMA = {
    "type": "object",
    "properties": {"event": {"type": "string", "enum": ["error"]}, "data": {"type": "string"}},
    "required": ["event", "data"],
    "description": "One `error` event whose data is an Error.",
}
ERROR_EVENT_REF = {"$ref": "#/components/schemas/ErrorEvent"}

ERROR_DESCRIPTIONS = {
    400: "Invalid input.",
    401: "Not signed in.",
    403: "Not allowed (a failed CSRF check, staff only, or no subscription).",
    404: "Not found, or not yours.",
    409: "This idempotency key was already used for a different message.",
    413: "Request body too large.",
    415: "The body is not JSON.",
    429: "A usage limit is reached, or too many attempts; Retry-After says when to try again.",
    502: "The AI provider (for billing: the payment provider) failed to answer.",
    503: "The database is unavailable for a moment (Retry-After says when to try again); for billing, also: "
    "payments are not set up (payments_not_configured).",
    504: "The AI provider did not answer in time.",
}


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    """`extend_schema` responses for errors only some operations give."""
    return {status: OpenApiResponse(ERROR_REF, description=ERROR_DESCRIPTIONS[status]) for status in statuses}


# The errors of a reply from the AI provider; 403 also covers an unverified user under REQUIRE_VERIFIED.
REPLY_ERRORS = error_responses(429, 502, 504)
REPLY_EVENTS = OpenApiResponse(EVENT_REF, description="The reply as server-sent events.")

UNSAFE_METHODS = {"post", "put", "patch", "delete"}


def _statuses(method: str, operation: dict) -> set[int]:
    """The errors any operation of this kind can give, whatever its view does."""
    statuses = {503}
    parameters = operation.get("parameters", [])
    if {} not in operation.get("security", [{}]):
        statuses |= {401, 403}
    if method in UNSAFE_METHODS:
        statuses.add(403)  # CSRF
    if any(parameter["in"] == "path" for parameter in parameters):
        statuses.add(404)
    if "requestBody" in operation or any(parameter["in"] in ("query", "header") for parameter in parameters):
        statuses.add(400)
    if "requestBody" in operation:
        statuses |= {413, 415}
    return statuses


def add_error_responses(result, generator, request, public):
    """Postprocessing hook: document the `{"detail", "code"}` errors of every operation."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(Error=ERROR_SCHEMA, ReplyEvent=EVENT_SCHEMA, ErrorEvent=ERROR_EVENT_SCHEMA)
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            responses = operation["responses"]
            for status in _statuses(method, operation):
                responses.setdefault(str(status), {"description": ERROR_DESCRIPTIONS[status]})
            streams = any("text/event-stream" in response.get("content", {}) for response in responses.values())
            for status, response in responses.items():
                if int(status) >= 400:
                    response["content"] = {"application/json": {"schema": ERROR_REF}}
                    if streams:
                        response["content"]["text/event-stream"] = {"schema": ERROR_EVENT_REF}
            operation["responses"] = dict(sorted(responses.items()))
    return result


# Query parameters as int_param reads them: whole numbers of at most 9 digits, from `minimum` up.
INT_MAX = 999_999_999


def int_parameter(name: str, description: str, *, minimum: int = 0, maximum: int = INT_MAX) -> OpenApiParameter:
    """An integer query parameter with the bounds the server holds it to (above `maximum` it is clamped)."""
    return OpenApiParameter(name, {"type": "integer", "minimum": minimum, "maximum": maximum}, description=description)


# Text that is not blank: some character other than whitespace, and no NUL (which PostgreSQL refuses).
NOT_BLANK = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"


def text_parameter(name: str, description: str, *, max_length: int) -> OpenApiParameter:
    """A required text query parameter that is not blank, with the length the server holds it to."""
    schema = {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": NOT_BLANK}
    return OpenApiParameter(name, schema, required=True, description=description)


def pagination(default: int, maximum: int) -> list[OpenApiParameter]:
    return [
        int_parameter("limit", f"At most this many (default {default}, max {maximum}).", minimum=1, maximum=maximum),
        int_parameter("offset", "Skip this many."),
    ]
