import re
import uuid

from django.http import Http404, HttpResponse
from django.utils.text import slugify
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from billing.quotas import rate_limit_headers
from chatsite import deferred
from chatsite.errors import InvalidInput
from chatsite.schema import REPLY_ERRORS, REPLY_EVENTS, error_responses, int_parameter, pagination, text_parameter
from sessions_app import exports, selectors, services
from sessions_app.models import ChatMessage
from sessions_app.rendering import message_html
from sessions_app.serializers import (
    ChatMessageSerializer,
    ChatSessionSearchResultSerializer,
    ChatSessionSerializer,
    CleanupOutput,
    EditInput,
    EditOutput,
    MessagesOutput,
    RegenerateInput,
    RegenerateOutput,
    RenderInput,
    RenderOutput,
    SendInput,
    SendOutput,
    SessionCreateInput,
    SessionUpdateInput,
    StopOutput,
    SuccessOutput,
    SwitchOutput,
    TitleInput,
    TitleOutput,
    VersionsOutput,
)
from sessions_app.streaming import sse

DEFAULT_PAGE = 100
MAX_PAGE = 1000


def int_param(request, name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    """Read a non-negative integer query parameter, or raise InvalidInput."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"\d{1,9}", raw):
        raise InvalidInput(f"`{name}` must be a whole number.", code="invalid_parameter")
    value = int(raw)
    if value < minimum:
        raise InvalidInput(f"`{name}` must be at least {minimum}.", code="invalid_parameter")
    return min(value, maximum) if maximum is not None else value


def validated(serializer_class, data, **kwargs):
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class EventStreamRenderer(BaseRenderer):
    """Lets clients ask for text/event-stream; an error before the stream starts comes as one `error` event."""

    media_type = "text/event-stream"
    format = "sse"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return sse("error", data) if data is not None else b""


STREAM_RENDERERS = [JSONRenderer, EventStreamRenderer]


def wants_stream(request, data) -> bool:
    return bool(data.get("stream")) or "text/event-stream" in request.headers.get("Accept", "")


def idempotency_key(request) -> uuid.UUID | None:
    """The Idempotency-Key header as a UUID (any string maps to one)."""
    key = request.headers.get("Idempotency-Key", "").strip()
    if not key:
        return None
    if len(key) > 255:
        raise InvalidInput("Idempotency-Key is too long.", code="invalid_idempotency_key")
    try:
        return uuid.UUID(key)
    except ValueError:
        return uuid.uuid5(uuid.NAMESPACE_URL, "chatsite:idempotency:" + key)


def parse_uuid_or_404(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise Http404 from None


def last_event_offset(request) -> int:
    raw = request.headers.get("Last-Event-ID") or request.query_params.get("last_event_id") or ""
    return int(raw) if re.fullmatch(r"\d{1,9}", raw.strip()) else 0


class ReplyStarted(deferred.Started):
    """What the DRF part of a reply endpoint answers once the reply is begun (or found).

    The endpoint's async view (sessions_app/streams.py) finishes it on the event loop: it
    streams the reply, or waits for it and fills `data` with `body(reply)`.
    """

    def __init__(
        self, *, reply: ChatMessage, job, stream: bool, head: list[bytes] | None = None, headers=None,
        body=None, status: int = status.HTTP_201_CREATED, offset: int = 0, follower_id: int | None = None,
    ) -> None:  # fmt: skip
        super().__init__(status=status, headers=headers, stream=stream)
        self.reply, self.job, self.head = reply, job, head or []
        self.body = body
        self.offset = offset
        self.follower_id = follower_id  # a follow stream, counted against its user's share


PAGINATION = pagination(DEFAULT_PAGE, MAX_PAGE)


class ChatSessionViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """The signed-in user's chats. Another user's chat is a 404."""

    serializer_class = ChatSessionSerializer
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        return selectors.session_list(user=self.request.user)

    def get_object(self):
        session = selectors.session_get_or_404(user=self.request.user, session_id=self.kwargs["pk"])
        self.check_object_permissions(self.request, session)
        return session

    @extend_schema(parameters=PAGINATION, responses=ChatSessionSerializer(many=True))
    def list(self, request):
        limit = int_param(request, "limit", DEFAULT_PAGE, minimum=1, maximum=MAX_PAGE)
        offset = int_param(request, "offset", 0)
        # Queries: the page of sessions joined to chatbot and model, carrying the total count;
        # a count of its own only for an empty page past the first.
        page, total = selectors.session_page(user=request.user, offset=offset, limit=limit)
        return Response(ChatSessionSerializer(page, many=True).data, headers={"X-Total-Count": str(total)})

    @extend_schema(request=SessionCreateInput, responses={201: ChatSessionSerializer})
    def create(self, request):
        data = validated(SessionCreateInput, request.data)
        session = services.session_create(user=request.user, **data)
        return Response(ChatSessionSerializer(session).data, status=status.HTTP_201_CREATED)

    def _update(self, request, *, partial: bool):
        session = self.get_object()
        data = validated(SessionUpdateInput, request.data, partial=partial)
        session = services.session_update(session=session, **data)
        return Response(ChatSessionSerializer(session).data)

    @extend_schema(request=SessionUpdateInput, responses=ChatSessionSerializer)
    def update(self, request, pk=None):
        return self._update(request, partial=False)

    @extend_schema(request=SessionUpdateInput, responses=ChatSessionSerializer)
    def partial_update(self, request, pk=None):
        return self._update(request, partial=True)

    @extend_schema(responses={200: SuccessOutput})
    def destroy(self, request, pk=None):
        services.session_delete(session=self.get_object())
        return Response({"success": True})

    @extend_schema(responses=MessagesOutput)
    @action(detail=True, methods=["get"])
    def messages(self, request, pk=None):
        # Query: the user's chat left-joined to its messages and their model, so an empty chat
        # costs no more and another user's chat is a 404 all the same.
        messages = selectors.message_list_owned(user=request.user, session_id=int(pk))
        if messages is None:
            raise Http404
        return Response({"messages": ChatMessageSerializer(messages, many=True).data})

    @extend_schema(
        request=SendInput,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key", str, OpenApiParameter.HEADER, description="Same as client_message_id; any string."
            )
        ],
        responses={
            (201, "application/json"): SendOutput,
            (200, "text/event-stream"): REPLY_EVENTS,
            **error_responses(409),
            **REPLY_ERRORS,
        },
    )
    @action(detail=True, methods=["post"], renderer_classes=STREAM_RENDERERS)
    def send(self, request, pk=None):
        session = self.get_object()
        data = validated(SendInput, request.data)
        result = services.message_send(
            session=session, user=request.user, content=data["message"],
            client_message_id=data.get("client_message_id") or idempotency_key(request),
        )  # fmt: skip
        headers = rate_limit_headers(services.send_headroom(session=session, user=request.user, job=result.job))
        if result.replayed:
            headers["Idempotent-Replayed"] = "true"
        user_message = ChatMessageSerializer(result.user_message).data
        return ReplyStarted(
            reply=result.reply, job=result.job, stream=wants_stream(request, data), headers=headers,
            head=[sse("user_message", user_message, 0)],
            body=lambda reply: {"user_message": user_message, "assistant_message": ChatMessageSerializer(reply).data},
        )  # fmt: skip

    @extend_schema(
        request=RegenerateInput,
        responses={
            (201, "application/json"): RegenerateOutput,
            (200, "text/event-stream"): REPLY_EVENTS,
            **REPLY_ERRORS,
        },
    )
    @action(detail=True, methods=["post"], renderer_classes=STREAM_RENDERERS)
    def regenerate(self, request, pk=None):
        session = self.get_object()
        data = validated(RegenerateInput, request.data or {})
        reply, job = services.message_regenerate(session=session, user=request.user, message_id=data.get("message_id"))
        return ReplyStarted(
            reply=reply, job=job, stream=wants_stream(request, data), headers=rate_limit_headers(job.headroom),
            body=lambda reply: {"assistant_message": ChatMessageSerializer(reply).data},
        )  # fmt: skip

    @extend_schema(request=None, responses=StopOutput)
    @action(detail=True, methods=["post"])
    def stop(self, request, pk=None):
        stopped = services.reply_stop(session=self.get_object())
        return Response({"success": True, "stopped_message_ids": [str(m.message_id) for m in stopped]})

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "Last-Event-ID",
                str,
                OpenApiParameter.HEADER,
                description="Resume after this event id (a character offset); anything else starts from the beginning.",
            )
        ],
        responses={(200, "text/event-stream"): REPLY_EVENTS},
    )
    @action(
        detail=True,
        methods=["get"],
        url_path=r"messages/(?P<message_id>[^/]+)/stream",
        renderer_classes=STREAM_RENDERERS,
    )
    def follow(self, request, pk=None, message_id=None):
        session = self.get_object()
        reply = session.messages.filter(
            message_id=parse_uuid_or_404(message_id), message_type=ChatMessage.Type.ASSISTANT
        ).first()
        if reply is None:
            raise Http404
        return ReplyStarted(
            reply=reply, job=None, stream=True, status=status.HTTP_200_OK,
            offset=last_event_offset(request), follower_id=request.user.pk,
        )  # fmt: skip

    @extend_schema(request=TitleInput, responses=TitleOutput)
    @action(detail=True, methods=["post"], url_path="update-title")
    def update_title(self, request, pk=None):
        session = self.get_object()
        data = validated(TitleInput, request.data)
        session = services.session_update_title(session=session, title=data["title"])
        return Response({"success": True, "title": session.title})

    @extend_schema(
        request=EditInput,
        responses={
            (200, "application/json"): EditOutput,
            (200, "text/event-stream"): REPLY_EVENTS,
            **REPLY_ERRORS,
        },
    )
    @action(
        detail=True,
        methods=["post"],
        url_path=r"messages/(?P<message_id>[^/]+)/edit",
        renderer_classes=STREAM_RENDERERS,
    )
    def edit(self, request, pk=None, message_id=None):
        session = self.get_object()
        message_uuid = parse_uuid_or_404(message_id)
        data = validated(EditInput, request.data)
        disabled, reply, job = services.message_edit(
            session=session, user=request.user, message_id=message_uuid,
            content=data["content"], regenerate=data["regenerate"],
        )  # fmt: skip
        disabled_ids = [str(m.message_id) for m in disabled]
        if reply is None:
            return Response({"success": True, "disabled_message_ids": disabled_ids, "assistant_message": None})
        return ReplyStarted(
            reply=reply, job=job, stream=wants_stream(request, data), status=status.HTTP_200_OK,
            head=[sse("edited", {"success": True, "disabled_message_ids": disabled_ids}, 0)],
            body=lambda reply: {
                "success": True, "disabled_message_ids": disabled_ids,
                "assistant_message": ChatMessageSerializer(reply).data,
            },
        )  # fmt: skip

    @extend_schema(
        parameters=[
            text_parameter("q", "Words to find in titles and messages (at most 200 characters).", max_length=200),
            int_parameter("limit", "At most this many (default 20, max 100).", minimum=1, maximum=100),
        ],
        responses=ChatSessionSearchResultSerializer(many=True),
    )
    @action(detail=False, methods=["get"])
    def search(self, request):
        query = request.query_params.get("q", "").strip()
        if not query:
            raise InvalidInput("Give something to search for in `q`.", code="blank")
        if len(query) > 200 or "\x00" in query:
            raise InvalidInput("The search is too long.", code="too_long")
        limit = int_param(request, "limit", 20, minimum=1, maximum=100)
        sessions = selectors.session_search(user=request.user, query=query, limit=limit)
        return Response(ChatSessionSearchResultSerializer(sessions, many=True).data)

    @extend_schema(
        parameters=[OpenApiParameter("format", str, enum=["json", "markdown"], description="Default json.")],
        responses={(200, "application/json"): OpenApiTypes.OBJECT, (200, "text/markdown"): OpenApiTypes.STR},
    )
    @action(detail=True, methods=["get"])
    def export(self, request, pk=None):
        kind = request.query_params.get("format", "json")
        if kind not in ("json", "markdown"):
            raise InvalidInput("`format` must be json or markdown.", code="invalid_parameter")
        session = self.get_object()
        messages = selectors.message_list(session=session)
        name = slugify(session.title)[:60] or "chat"
        if kind == "json":
            body, content_type, ext = (
                exports.export_json(session=session, messages=messages),
                "application/json",
                "json",
            )
        else:
            body, content_type, ext = exports.export_markdown(session=session, messages=messages), "text/markdown", "md"
        response = HttpResponse(body, content_type=f"{content_type}; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="chat-{session.pk}-{name}.{ext}"'
        return response

    @extend_schema(responses=VersionsOutput)
    @action(detail=True, methods=["get"], url_path=r"messages/(?P<message_id>[^/]+)/versions")
    def versions(self, request, pk=None, message_id=None):
        """The versions of a message: itself and its siblings (edits, or regenerated replies), oldest first."""
        session = self.get_object()
        versions = selectors.message_versions(session=session, message_id=parse_uuid_or_404(message_id))
        if versions is None:
            raise Http404
        current = next((i for i, m in enumerate(versions) if not m.disabled), -1)
        return Response({"versions": ChatMessageSerializer(versions, many=True).data, "current": current})

    @extend_schema(request=None, responses=SwitchOutput)
    @action(detail=True, methods=["post"], url_path=r"messages/(?P<message_id>[^/]+)/switch")
    def switch(self, request, pk=None, message_id=None):
        """Show the version of the chat through this message; every message outside it becomes `disabled`."""
        shown = services.version_switch(session=self.get_object(), message_id=parse_uuid_or_404(message_id))
        return Response({"success": True, "messages": ChatMessageSerializer(shown, many=True).data})

    @extend_schema(request=RenderInput, responses=RenderOutput)
    @action(detail=False, methods=["post"], url_path="render-markdown")
    def render_markdown(self, request):
        """Markdown to sanitized HTML with the saved replies' own renderer: pages show a streaming reply with it."""
        data = validated(RenderInput, request.data)
        return Response({"content_html": message_html(data["content"])})

    @extend_schema(request=None, responses=CleanupOutput)
    @action(detail=False, methods=["post"], url_path="cleanup-empty")
    def cleanup_empty(self, request):
        deleted = services.session_cleanup_empty(user=request.user)
        return Response({"deleted": deleted, "message": f"Deleted {deleted} empty chats"})
