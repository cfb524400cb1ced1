"""HTML pages of chats: the list with a new-chat form, and a conversation with plain HTML forms."""

import functools
import html
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from billing.models import UsageEvent
from billing.quotas import LIMITS
from billing.services import quota_headroom
from chatbots.models import AIModel
from chatbots.selectors import ai_model_list, chatbot_list
from chatsite.errors import ChatsiteError, InvalidInput, NoSubscription, PermissionDenied, QuotaExceeded, UpstreamError
from sessions_app import runtime, selectors, services
from sessions_app.forms import EditForm, ModelForm, NewChatForm, RenameForm, SearchForm, SendForm
from sessions_app.models import ChatMessage, ChatSession

SESSION_PAGE = 200
SEARCH_LIMIT = 50
MESSAGE_PAGE = 500
# Read for a conversation: its shown messages and the other versions beside them.
VERSION_ROWS = 5000
# The usage hint shows when less than this share of the tightest limit is left.
USAGE_HINT_SHARE = 0.2
# What people read when the AI provider fails: its own text names internal hosts and ports.
UPSTREAM_TEXT = {
    "upstream_error": "The AI model could not answer this time.",
    "upstream_timeout": "The AI model took too long to answer.",
}
_MARK = re.compile(r"<mark>(.*?)</mark>", re.DOTALL)


def _message_url(session: ChatSession, message: ChatMessage | None = None) -> str:
    url = reverse("chat:detail", args=[session.pk])
    return f"{url}#m-{message.message_id}" if message is not None else url


def _snippet_parts(snippet: str) -> list[tuple[str, bool]]:
    """Split a search snippet (escaped HTML with <mark>) into (text, is_match) pieces.

    The template escapes the pieces again itself, so no HTML is ever marked safe.
    """
    parts, pos = [], 0
    for match in _MARK.finditer(snippet):
        parts += [(html.unescape(snippet[pos : match.start()]), False), (html.unescape(match.group(1)), True)]
        pos = match.end()
    parts.append((html.unescape(snippet[pos:]), False))
    return [(text, hit) for text, hit in parts if text]


def _new_chat_form(data=None) -> NewChatForm:
    return NewChatForm(data, chatbots=list(chatbot_list()), ai_models=list(ai_model_list()))


def _sidebar(request) -> dict:
    """The chat list beside every chat page: pinned chats, then by day; or the search results."""
    search_form = SearchForm(request.GET)
    query = search_form.cleaned_data["q"].strip() if search_form.is_valid() else ""
    if query:
        found = selectors.session_search(user=request.user, query=query, limit=SEARCH_LIMIT)
        rows = [{"session": s, "snippet": _snippet_parts(s.snippet)} for s in found]
        truncated = len(found) == SEARCH_LIMIT
    else:
        sessions = list(selectors.session_list(user=request.user)[: SESSION_PAGE + 1])
        rows = [{"session": s, "snippet": None} for s in sessions[:SESSION_PAGE]]
        truncated = len(sessions) > SESSION_PAGE
    for row in rows:
        # Grouped under the day the chat was last active, in the site's time zone.
        row["day"] = timezone.localdate(row["session"].updated_at)
    today = timezone.localdate()
    return {
        "pinned_rows": [] if query else [row for row in rows if row["session"].pinned],
        "rows": rows if query else [row for row in rows if not row["session"].pinned],
        "truncated": truncated,
        "query": query,
        "today": today,
        "yesterday": today - timedelta(days=1),
        "search_form": search_form,
    }


def _render_index(request, *, new_chat_form: NewChatForm | None = None, status: int = 200):
    context = {**_sidebar(request), "new_chat_form": new_chat_form or _new_chat_form()}
    return render(request, "sessions_app/index.html", context, status=status)


@login_required
@require_GET
def index(request):
    return _render_index(request)


@login_required
@require_POST
def create(request):
    form = _new_chat_form(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            session = services.session_create(
                user=request.user, chatbot_id=data["chatbot"], ai_model_id=data["ai_model"], title=data["title"]
            )
        except ChatsiteError as exc:
            form.add_error(None, exc.detail)
        else:
            return redirect(_message_url(session))
    return _render_index(request, new_chat_form=form, status=400)


def error_text(code: str, detail: str) -> str:
    """An error as people read it: the AI provider's own words name internal hosts, so they are replaced."""
    return UPSTREAM_TEXT.get(code, detail)


def _error(exc: ChatsiteError, *, saved: bool) -> dict:
    """The error as the conversation page shows it: what happened and what to do next."""
    account_link = False
    if isinstance(exc, QuotaExceeded):
        hint, account_link = "Your limits and when they reset are on your account page.", True
    elif isinstance(exc, NoSubscription):
        hint = "Ask the staff of this site to give your account a plan."
    elif isinstance(exc, PermissionDenied) and exc.code == "unverified":
        hint, account_link = "Open the link in the email we sent you, or ask for a new one on your account page.", True
    elif saved:
        hint = "Your message is kept in the chat: press Retry to try again."
    elif isinstance(exc, UpstreamError):
        hint = "Try again in a moment."
    else:
        hint = ""
    return {
        "detail": error_text(exc.code, exc.detail), "code": exc.code, "hint": hint, "account_link": account_link,
        "retry": saved and not isinstance(exc, QuotaExceeded | NoSubscription | PermissionDenied),
        "resets_at": exc.extra.get("resets_at"),
    }  # fmt: skip


def _price(model: AIModel) -> str:
    if model.is_free:
        return "free"
    prompt, completion = model.prompt_price_per_million, model.completion_price_per_million
    if not prompt and not completion:
        return "paid"
    return f"paid, ${prompt:.2f} in / ${completion:.2f} out per 1M tokens"


def _conversation(session: ChatSession) -> tuple[list[dict], bool]:
    """The messages shown (the version on display), each with the versions at its place; and whether cut short."""
    # Query: the chat's newest messages of every version, shown and not.
    everything = list(selectors.message_list(session=session).reverse()[:VERSION_ROWS])[::-1]
    shown = [m for m in everything if not m.disabled]
    children = selectors.versions_tree(everything)
    rows = []
    for message in shown[-MESSAGE_PAGE:]:
        place = children.get(selectors.version_place(message), [])
        siblings = [m for m in place if m.message_type == message.message_type]
        index = next((i for i, m in enumerate(siblings) if m.pk == message.pk), 0)
        versions = None
        if len(siblings) > 1:
            versions = {
                "number": index + 1,
                "total": len(siblings),
                "previous": siblings[index - 1].message_id if index > 0 else None,
                "next": siblings[index + 1].message_id if index + 1 < len(siblings) else None,
            }
        rows.append({"message": message, "versions": versions})
    unanswered = None
    if shown and shown[-1].message_type == ChatMessage.Type.USER:
        # The shown version ends on the user's message: say why its reply is missing, and offer Retry.
        tried = [m for m in children.get(shown[-1].message_id, []) if m.message_type == ChatMessage.Type.ASSISTANT]
        tried += [m for m in everything if m.parent_message_id == shown[-1].message_id and not selectors.is_version(m)]
        failed = max(tried, key=selectors.version_order_key) if tried else None
        if failed is not None and failed.status == ChatMessage.Status.FAILED:
            code = failed.error_code or "upstream_error"
            unanswered = {"code": code, "text": error_text(code, failed.error_detail or UpstreamError.default_detail)}
        else:
            unanswered = {"code": "no_reply", "text": "This message has no reply yet."}
    return rows, len(shown) > MESSAGE_PAGE, unanswered


def _usage_hint(request, session: ChatSession) -> str:
    """A word by the composer when less than a fifth of the tightest limit is left."""
    kind = UsageEvent.Kind.IMAGE if session.chatbot.chatbot_type == "image" else UsageEvent.Kind.MESSAGE
    try:
        headroom = quota_headroom(user=request.user, ai_model=session.ai_model, kind=kind)
    except ChatsiteError:
        return ""
    return usage_hint_text(headroom)


_WINDOW_WORDS = {
    "hourly": "this hour", "three_hours": "in these 3 hours", "twelve_hours": "in these 12 hours",
    "daily": "today", "weekly": "this week", "monthly": "this month", "period": "in this plan period",
}  # fmt: skip


def usage_hint_text(headroom) -> str:
    """ "3 messages left this hour", when less than a fifth of the tightest limit is left; else ""."""
    if headroom is None or not headroom.limit or headroom.remaining >= headroom.limit * USAGE_HINT_SHARE:
        return ""
    limit = next((limit for limit in LIMITS if limit.name == headroom.limit_name), None)
    when = _WINDOW_WORDS.get(limit.window, "") if limit else ""
    left = headroom.remaining
    if limit is not None and limit.measure == "cost":
        return f"${left:.2f} left to spend {when}."
    if limit is not None and limit.measure == "tokens":
        return f"{left:,} tokens left {when}."
    noun = "images" if limit is not None and "image" in limit.name else "messages"
    if left == 1:
        noun = noun[:-1]
    return f"{left} {noun} left {when}.".replace(" .", ".")


@login_required
@require_GET
def usage_hint(request, session_id: int):
    """The hint by the composer, read again by the page after each reply."""
    session = selectors.session_get_or_404(user=request.user, session_id=session_id)
    return JsonResponse({"hint": _usage_hint(request, session)})


def _render_detail(
    request,
    session: ChatSession,
    *,
    send_form: SendForm | None = None,
    rename_form: RenameForm | None = None,
    error: ChatsiteError | None = None,
    saved: bool = False,
    status: int = 200,
):
    rows, truncated, unanswered = _conversation(session)
    is_image = session.chatbot.chatbot_type == "image"
    send_form = send_form or SendForm()
    if is_image:
        send_form.fields["content"].widget.attrs["aria-describedby"] = "composer-hint"
    models = list(ai_model_list(model_type=session.chatbot.chatbot_type))
    if session.ai_model not in models:
        models.insert(0, session.ai_model)
    context = {
        **_sidebar(request),
        "session": session,
        "chat_rows": rows,
        "truncated": truncated,
        "unanswered": unanswered is not None and error is None,
        "unanswered_code": unanswered["code"] if unanswered else "",
        "unanswered_text": unanswered["text"] if unanswered else "",
        "is_image": is_image,
        "send_form": send_form,
        "rename_form": rename_form or RenameForm(initial={"title": session.title}),
        "model_form": ModelForm(models=models, initial={"ai_model": session.ai_model_id}),
        "models": [{"model": m, "price": _price(m)} for m in models],
        "is_demo_model": session.ai_model.provider == AIModel.Provider.DEMO,
        "usage_hint": _usage_hint(request, session),
        "error": _error(error, saved=saved) if error is not None else None,
    }
    response = render(request, "sessions_app/detail.html", context, status=status)
    for header, value in (error.headers if error is not None else {}).items():
        response[header] = value
    return response


@login_required
@require_GET
def detail(request, session_id: int):
    return _render_detail(request, selectors.session_get_or_404(user=request.user, session_id=session_id))


def _was_saved(session: ChatSession, content: str) -> bool:
    """Whether a failed send still left the user's message as the last one in the chat."""
    last = selectors.message_list(session=session).filter(disabled=False).last()
    return last is not None and last.message_type == ChatMessage.Type.USER and last.content == content


@dataclass(frozen=True)
class AwaitReply:
    """What a page's synchronous step answers once a reply is begun: the page view waits for it, then calls `then`."""

    reply: ChatMessage
    job: object
    then: Callable[[ChatMessage | None, ChatsiteError | None], HttpResponse]


def page_with_reply(sync_view):
    """An async page view around `sync_view`, which may answer AwaitReply: no request thread waits on the model."""

    run_sync_step = runtime.sync_step(sync_view)

    @functools.wraps(sync_view)
    async def view(request, *args, **kwargs):
        answer = await run_sync_step(request, *args, **kwargs)
        if not isinstance(answer, AwaitReply):
            return answer
        try:
            reply, error = await runtime.reply_complete(reply=answer.reply, job=answer.job), None
        except ChatsiteError as exc:
            reply, error = None, exc
        return await sync_to_async(answer.then)(reply, error)

    return view


@page_with_reply
@login_required
@require_POST
def send(request, session_id: int):
    session = selectors.session_get_or_404(user=request.user, session_id=session_id)
    form = SendForm(request.POST)
    if not form.is_valid():
        return _render_detail(request, session, send_form=form, status=400)
    content = form.cleaned_data["content"]

    def failed(exc: ChatsiteError) -> HttpResponse:
        saved = _was_saved(session, content)
        # A saved message is already in the chat; keeping it in the box would invite a duplicate.
        return _render_detail(
            request, session, send_form=None if saved else form, error=exc, saved=saved, status=exc.status
        )

    try:
        result = services.message_send(session=session, user=request.user, content=content)
    except ChatsiteError as exc:
        return failed(exc)
    return AwaitReply(
        result.reply, result.job, lambda reply, exc: failed(exc) if exc else redirect(_message_url(session, reply))
    )


@page_with_reply
@login_required
@require_POST
def regenerate(request, session_id: int):
    session = selectors.session_get_or_404(user=request.user, session_id=session_id)

    def failed(exc: ChatsiteError) -> HttpResponse:
        saved = not isinstance(exc, InvalidInput)  # invalid: there was nothing to answer, or a reply is running
        return _render_detail(request, session, error=exc, saved=saved, status=exc.status)

    try:
        message_id = uuid.UUID(request.POST["message_id"]) if request.POST.get("message_id") else None
    except ValueError:
        raise Http404("No such message.") from None
    try:
        reply, job = services.message_regenerate(session=session, user=request.user, message_id=message_id)
    except ChatsiteError as exc:
        return failed(exc)
    return AwaitReply(reply, job, lambda reply, exc: failed(exc) if exc else redirect(_message_url(session, reply)))


@login_required
@require_POST
def rename(request, session_id: int):
    session = selectors.session_get_or_404(user=request.user, session_id=session_id)
    form = RenameForm(request.POST)
    if form.is_valid():
        try:
            services.session_update_title(session=session, title=form.cleaned_data["title"])
        except ChatsiteError as exc:
            form.add_error("title", exc.detail)
        else:
            messages.success(request, "Chat renamed.")
            return redirect(_next_or(request, _message_url(session)))
    return _render_detail(request, session, rename_form=form, status=400)


@login_required
@require_http_methods(["GET", "POST"])
def delete(request, session_id: int):
    session = selectors.session_get_or_404(user=request.user, session_id=session_id)
    if request.method == "POST":
        title = session.title
        services.session_delete(session=session)
        messages.success(request, f"Deleted the chat “{title}”.")
        return redirect("chat:index")
    return render(request, "sessions_app/delete.html", {"session": session})


@page_with_reply
@login_required
@require_http_methods(["GET", "POST"])
def edit(request, session_id: int, message_id: uuid.UUID):
    session = selectors.session_get_or_404(user=request.user, session_id=session_id)
    message = (
        selectors.message_list(session=session)
        .filter(message_id=message_id, message_type=ChatMessage.Type.USER, disabled=False)
        .first()
    )
    if message is None:
        raise Http404("No such message.")
    form = EditForm(request.POST if request.method == "POST" else None, initial={"content": message.content})

    def page(status: int = 200) -> HttpResponse:
        context = {"session": session, "message": message, "form": form}
        return render(request, "sessions_app/edit.html", context, 400 if form.errors else status)

    if not form.is_valid():
        return page()
    edited_at = message.edited_at

    def failed(exc: ChatsiteError) -> HttpResponse:
        message.refresh_from_db(fields=["edited_at"])
        if message.edited_at != edited_at:
            # The edit was applied and only the new reply failed: show it in the conversation.
            return _render_detail(request, session, error=exc, saved=True, status=exc.status)
        form.add_error("content", exc.detail)
        return page()

    try:
        _, reply, job = services.message_edit(
            session=session, user=request.user, message_id=message.message_id, content=form.cleaned_data["content"]
        )
    except ChatsiteError as exc:
        return failed(exc)
    return AwaitReply(reply, job, lambda reply, exc: failed(exc) if exc else redirect(_message_url(session, reply)))


def _next_or(request, default: str) -> str:
    """Where a form from the chat list goes back to: its `next`, if it is on this site."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, require_https=request.is_secure()):
        return target
    return default


@login_required
@require_POST
def pin(request, session_id: int):
    session = selectors.session_get_or_404(user=request.user, session_id=session_id)
    services.session_pin(session=session, pinned=request.POST.get("pinned") == "true")
    return redirect(_next_or(request, _message_url(session)))


@login_required
@require_POST
def switch_model(request, session_id: int):
    session = selectors.session_get_or_404(user=request.user, session_id=session_id)
    models = list(ai_model_list(model_type=session.chatbot.chatbot_type))
    form = ModelForm(request.POST, models=models)
    if form.is_valid():
        try:
            services.session_update(session=session, ai_model_id=form.cleaned_data["ai_model"])
        except ChatsiteError as exc:
            messages.error(request, exc.detail)
        else:
            messages.success(request, f"Replies now come from {session.ai_model.name}.")
    else:
        messages.error(request, "Pick one of the models offered.")
    return redirect(_message_url(session))


@login_required
@require_POST
def switch_version(request, session_id: int, message_id: uuid.UUID):
    session = selectors.session_get_or_404(user=request.user, session_id=session_id)
    try:
        services.version_switch(session=session, message_id=message_id)
    except ChatsiteError as exc:
        messages.error(request, exc.detail)
        return redirect(_message_url(session))
    return redirect(f"{reverse('chat:detail', args=[session.pk])}#m-{message_id}")
