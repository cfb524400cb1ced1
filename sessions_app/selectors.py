"""Reads of chat sessions and messages, already joined to what their serializers show."""

from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery
from django.http import Http404
from django.utils.html import escape

from chatbots.models import AIModel
from chatsite.rows import Joined
from sessions_app.models import ChatMessage, ChatSession

# ts_headline marks matches with these control characters; the text around them is
# escaped in Python before they become <mark>, so message content stays inert.
_MARK_START, _MARK_STOP = "\x02", "\x03"
SEARCH_CONFIG = "english"


def session_list(*, user) -> QuerySet[ChatSession]:
    return ChatSession.objects.filter(user=user).select_related("chatbot", "ai_model").order_by("-updated_at", "-id")


def session_page(*, user, offset: int, limit: int) -> tuple[list[ChatSession], int]:
    """One page of the user's chats, newest first, and how many chats the user has in all."""
    sessions = session_list(user=user)
    # The total rides along as an uncorrelated subquery, which the database runs once.
    count = ChatSession.objects.filter(user=user).order_by().values("user").annotate(n=Count("*")).values("n")
    page = list(sessions.annotate(total=Subquery(count))[offset : offset + limit])
    if page:
        return page, page[0].total
    # An empty page says nothing about the total, unless it is the first one.
    return page, sessions.count() if offset else 0


_SESSION = Joined(ChatSession, "chatbot", "ai_model")


def session_get(*, user, session_id: int | str) -> ChatSession | None:
    """The user's chat with its chatbot and model, or None (another user's chat is None too).

    Every chat request begins here: on PostgreSQL it is one statement written once per process.
    """
    if connection.vendor != "postgresql":
        return session_list(user=user).filter(pk=session_id).first()
    return _SESSION.first("WHERE m.id = %s AND m.user_id = %s", [int(session_id), user.pk])


def session_get_or_404(*, user, session_id: int | str) -> ChatSession:
    """The user's chat, as session_get; a missing chat and another user's chat are the same 404."""
    session = session_get(user=user, session_id=session_id)
    if session is None:
        raise Http404("No such chat.")
    return session


def session_any(*, session_id: int) -> ChatSession | None:
    """Any user's session, for staff."""
    return ChatSession.objects.select_related("chatbot", "ai_model").filter(pk=session_id).first()


def message_list(*, session: ChatSession) -> QuerySet[ChatMessage]:
    return ChatMessage.objects.filter(session=session).select_related("ai_model").order_by("created_at", "id")


_MESSAGE_FIELDS = ChatMessage._meta.concrete_fields


def message_list_owned(*, user, session_id: int) -> list[ChatMessage] | None:
    """The messages of the user's chat, oldest first, each with its model; None if there is no such chat.

    One query: the chat left-joined to its messages, so an empty chat is one row of
    nulls and a chat that is not the user's is no row at all.
    """
    query = (
        ChatSession.objects.filter(pk=session_id, user=user)
        .order_by("messages__created_at", "messages__id")
        .values_list(*[f"messages__{field.name}" for field in _MESSAGE_FIELDS], "messages__ai_model__model_id")
    )
    rows = list(query)
    if not rows:
        return None
    names = [field.attname for field in _MESSAGE_FIELDS]
    messages = []
    for *values, model_id in rows:
        if values[0] is None:
            continue  # the one row of an empty chat
        message = ChatMessage.from_db(query.db, names, values)
        if message.ai_model_id is not None:
            # Only the model_id is shown; the model's other fields load if anything asks for them.
            message.ai_model = AIModel.from_db(query.db, ["id", "model_id"], [message.ai_model_id, model_id])
        messages.append(message)
    return messages


def version_order_key(message: ChatMessage):
    """Versions of one place in a chat, oldest first: an edit is as new as its last change."""
    return (message.edited_at or message.created_at, message.created_at, message.pk)


def is_version(message: ChatMessage) -> bool:
    # A reply that failed before saying anything is no version worth going back to.
    return not (message.status == ChatMessage.Status.FAILED and not message.content)


def version_place(message: ChatMessage):
    """What the versions of one place in a chat share: their parent, or for a first message its time.

    An edit's earlier version keeps the time of the message it was; a first message has no parent,
    and two first messages of different times (data from before versions) are no versions of each other.
    """
    if message.parent_message_id is not None:
        return message.parent_message_id
    return ("first", message.created_at)


def versions_tree(messages: list[ChatMessage]) -> dict:
    """The messages at each place (`version_place`) as versions oldest first; a place's children are under its id."""
    children: dict = {}
    for message in messages:
        if is_version(message) or not message.disabled:
            children.setdefault(version_place(message), []).append(message)
    for siblings in children.values():
        siblings.sort(key=version_order_key)
    return children


def message_versions(*, session: ChatSession, message_id) -> list[ChatMessage] | None:
    """The versions at a message's place in its chat (it and its siblings of its kind), oldest first."""
    message = session.messages.filter(message_id=message_id).first()
    if message is None:
        return None
    # parent_message_id=None filters on IS NULL: the versions of a chat's first message share its time too.
    siblings = message_list(session=session).filter(
        parent_message_id=message.parent_message_id, message_type=message.message_type
    )
    if message.parent_message_id is None:
        siblings = siblings.filter(created_at=message.created_at)
    return sorted((m for m in siblings if is_version(m) or m.pk == message.pk), key=version_order_key)


def _highlight(text: str) -> str:
    return escape(text).replace(_MARK_START, "<mark>").replace(_MARK_STOP, "</mark>")


def _plain_snippet(text: str, query: str, width: int = 80) -> str:
    at = text.lower().find(query.lower())
    if at < 0:
        return escape(text[: width * 2])
    start = max(at - width, 0)
    end = at + len(query) + width
    return (
        ("…" if start else "")
        + escape(text[start:at])
        + "<mark>"
        + escape(text[at : at + len(query)])
        + "</mark>"
        + escape(text[at + len(query) : end])
        + ("…" if end < len(text) else "")
    )


def session_search(*, user, query: str, limit: int = 20) -> list[ChatSession]:
    """Sessions whose title or any message matches `query`, newest first, each with an HTML `snippet`."""
    if connection.vendor == "postgresql":
        return _search_postgres(user=user, query=query, limit=limit)
    return _search_plain(user=user, query=query, limit=limit)


def _search_plain(*, user, query: str, limit: int) -> list[ChatSession]:
    matching = ChatMessage.objects.filter(session=OuterRef("pk"), content__icontains=query)
    sessions = list(session_list(user=user).filter(Q(title__icontains=query) | Exists(matching))[:limit])
    hits = {}
    for session_id, content in (
        ChatMessage.objects.filter(session__in=sessions, content__icontains=query)
        .order_by("session_id", "created_at", "id")
        .values_list("session_id", "content")
    ):
        hits.setdefault(session_id, content)
    for session in sessions:
        text = hits.get(session.pk)
        session.snippet = _plain_snippet(text if text is not None else session.title, query)
    return sessions


# Only constants are formatted into this SQL; the user's words travel as parameters.
_HEADLINE_OPTIONS = "StartSel=\x02, StopSel=\x03, MaxFragments=1, MaxWords=30, MinWords=8"
_SEARCH_SQL = f"""
    SELECT s.id, hit.snippet
    FROM sessions_app_chatsession s
    LEFT JOIN LATERAL (
        SELECT ts_headline('{SEARCH_CONFIG}', m.content, websearch_to_tsquery('{SEARCH_CONFIG}', %(q)s), %(opts)s)
            AS snippet
        FROM sessions_app_chatmessage m
        WHERE m.session_id = s.id AND m.search_vector @@ websearch_to_tsquery('{SEARCH_CONFIG}', %(q)s)
        ORDER BY m.created_at, m.id
        LIMIT 1
    ) hit ON true
    WHERE s.user_id = %(user)s AND (s.title ILIKE %(like)s OR hit.snippet IS NOT NULL)
    ORDER BY s.updated_at DESC, s.id DESC
    LIMIT %(limit)s
"""  # noqa: S608


def _search_postgres(*, user, query: str, limit: int) -> list[ChatSession]:
    # The stored, GIN-indexed `search_vector` column is added by migration 0002 on PostgreSQL only.
    params = {
        "q": query,
        "opts": _HEADLINE_OPTIONS,
        "user": user.pk,
        "like": "%" + _like_escape(query) + "%",
        "limit": limit,
    }
    with connection.cursor() as cursor:
        cursor.execute(_SEARCH_SQL, params)
        rows = cursor.fetchall()
    snippets = dict(rows)
    sessions = {s.pk: s for s in session_list(user=user).filter(pk__in=snippets)}
    found = []
    for session_id, snippet in rows:
        session = sessions[session_id]
        session.snippet = _highlight(snippet) if snippet is not None else _plain_snippet(session.title, query)
        found.append(session)
    return found


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
