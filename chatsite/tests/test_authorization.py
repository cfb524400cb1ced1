"""Who may call which endpoint of the JSON API (SPEC 4), tried as anonymous, owner, another user and staff."""

import re
from dataclasses import dataclass

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from accounts.tests.factories import UserFactory
from billing.models import ChatSessionUsage, UsageEvent
from chatbots.tests.factories import AIModelFactory, ChatbotFactory
from sessions_app.models import ChatMessage, ChatSession
from sessions_app.tests.factories import ChatMessageFactory, ChatSessionFactory


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    body: dict | None = None

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def call(client, endpoint: Endpoint, ids: dict):
    path = endpoint.path.format(**ids)
    method = getattr(client, endpoint.method.lower())
    if endpoint.body is None:
        return method(path)
    return method(path, endpoint.body, format="json")


def params(*endpoints: Endpoint):
    return [pytest.param(endpoint, id=str(endpoint)) for endpoint in endpoints]


# Endpoints any signed-in user may call; they show only the caller's own data.
SIGNED_IN = (
    Endpoint("GET", "/api/users/"),
    Endpoint("GET", "/api/users/subscription/"),
    Endpoint("GET", "/api/users/usage/"),
    Endpoint("GET", "/api/chatbots/"),
    Endpoint("GET", "/api/chatbots/{chatbot}/"),
    Endpoint("GET", "/api/ai-models/"),
    Endpoint("GET", "/api/ai-models/{model}/"),
    Endpoint("GET", "/api/chat-sessions/"),
    Endpoint("POST", "/api/chat-sessions/", {"chatbot_id": "{chatbot}", "ai_model_id": "openai/gpt-4"}),
    Endpoint("GET", "/api/chat-sessions/search/?q=x"),
    Endpoint("POST", "/api/chat-sessions/cleanup-empty/"),
    Endpoint("GET", "/api/chat-session-usages/"),
    Endpoint("POST", "/api/auth/logout/"),
)

# Endpoints on one of the owner's objects: anyone else gets a 404, staff included.
OWNED = (
    Endpoint("GET", "/api/chat-sessions/{session}/"),
    Endpoint("PUT", "/api/chat-sessions/{session}/", {"title": "Renamed"}),
    Endpoint("PATCH", "/api/chat-sessions/{session}/", {"title": "Renamed"}),
    Endpoint("DELETE", "/api/chat-sessions/{session}/"),
    Endpoint("GET", "/api/chat-sessions/{session}/messages/"),
    Endpoint("POST", "/api/chat-sessions/{session}/send/", {"message": "Hello again"}),
    Endpoint("POST", "/api/chat-sessions/{session}/regenerate/"),
    Endpoint("POST", "/api/chat-sessions/{session}/update-title/", {"title": "Renamed"}),
    Endpoint("POST", "/api/chat-sessions/{session}/messages/{message}/edit/", {"content": "Edited question"}),
    Endpoint("GET", "/api/chat-sessions/{session}/export/?format=json"),
    Endpoint("GET", "/api/chat-sessions/{session}/export/?format=markdown"),
    Endpoint("GET", "/api/chat-session-usages/{usage}/"),
    Endpoint("POST", "/api/chat-sessions/{session}/stop/"),
    Endpoint("GET", "/api/chat-sessions/{session}/messages/{answer}/stream/"),
)

STAFF_ONLY = (
    Endpoint("GET", "/api/admin/users/"),
    Endpoint("PATCH", "/api/admin/users/{user}/role/", {"role": "user"}),
    Endpoint("GET", "/api/admin/users/{user}/chats/"),
    Endpoint("GET", "/api/admin/chats/{session}/messages/"),
    Endpoint("POST", "/api/debug/test-model-usage/?model_name=openai/gpt-4"),
)

EVERY_ENDPOINT = SIGNED_IN + OWNED + STAFF_ONLY
UNSAFE = tuple(e for e in EVERY_ENDPOINT if e.method not in ("GET", "HEAD", "OPTIONS"))


def _resolve(endpoint: Endpoint, ids: dict) -> Endpoint:
    """Fill `{placeholders}` in the body too (ids are only known once the fixtures exist)."""
    if endpoint.body is None:
        return endpoint
    body = {k: (int(v.format(**ids)) if v == "{chatbot}" else v) for k, v in endpoint.body.items()}
    return Endpoint(endpoint.method, endpoint.path, body)


def csrf_client(user=None) -> APIClient:
    """A client with CSRF checks on and a valid token header, signed in as `user` when given."""
    client = APIClient(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    token = client.get("/api/auth/csrf/").json()["csrfToken"]
    client.credentials(HTTP_X_CSRFTOKEN=token)
    return client


@pytest.fixture
def anon_csrf_client(db):
    """Anonymous, but with a valid CSRF token, so a 401 is about the missing login and nothing else."""
    return csrf_client()


@pytest.fixture
def ids(user, chat_session, chatbot, ai_model):
    """The owner's chat with one question and its answer, plus its usage row."""
    question = ChatMessageFactory(session=chat_session, content="What is the capital of France?")
    answer = ChatMessageFactory(
        session=chat_session, message_type=ChatMessage.Type.ASSISTANT, content="Paris.", ai_model=ai_model
    )
    usage = ChatSessionUsage.objects.create(user=user, session=chat_session, tokens_count=42)
    return {
        "chatbot": chatbot.pk,
        "model": ai_model.pk,
        "session": chat_session.pk,
        "message": question.message_id,
        "answer": answer.message_id,
        "usage": usage.pk,
        "user": user.pk,
    }


def snapshot(session_id: int):
    """Everything a request on the owner's chat could change."""
    session = ChatSession.objects.filter(pk=session_id).values("title", "auto_generate_title", "ai_model_id").first()
    messages = list(
        ChatMessage.objects.filter(session_id=session_id)
        .order_by("id")
        .values_list("message_id", "content", "disabled", "edited_at")
    )
    usage = list(ChatSessionUsage.objects.order_by("id").values_list("id", "session_id", "tokens_count"))
    return session, messages, usage, UsageEvent.objects.count(), ChatSession.objects.count()


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code
    assert body["detail"]


# -- anonymous -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", params(*EVERY_ENDPOINT))
def test_anonymous_request_to_any_endpoint_is_401(anon_csrf_client, ids, endpoint):
    before = snapshot(ids["session"])
    response = call(anon_csrf_client, _resolve(endpoint, ids), ids)
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"]
    assert snapshot(ids["session"]) == before


# -- the owner -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", params(*SIGNED_IN, *OWNED))
def test_owner_may_call_every_user_endpoint(api_client, ids, endpoint):
    response = call(api_client, _resolve(endpoint, ids), ids)
    assert 200 <= response.status_code < 300, response.content


# -- another user, and staff through the normal endpoints -----------------------------------------------------


@pytest.mark.parametrize("endpoint", params(*OWNED))
def test_other_users_object_is_404_and_left_alone(other_client, ids, endpoint):
    before = snapshot(ids["session"])
    response = call(other_client, _resolve(endpoint, ids), ids)
    assert_error(response, 404, "not_found")
    assert snapshot(ids["session"]) == before


@pytest.mark.parametrize("endpoint", params(*OWNED))
def test_staff_on_another_users_object_through_the_normal_api_is_404(staff_client, ids, endpoint):
    before = snapshot(ids["session"])
    response = call(staff_client, _resolve(endpoint, ids), ids)
    assert_error(response, 404, "not_found")
    assert snapshot(ids["session"]) == before


def test_another_user_deleting_a_session_leaves_it_in_the_database(other_client, ids):
    response = other_client.delete(f"/api/chat-sessions/{ids['session']}/")
    assert_error(response, 404, "not_found")
    assert ChatSession.objects.filter(pk=ids["session"]).exists()
    assert ChatMessage.objects.filter(session_id=ids["session"]).count() == 2


def test_another_users_message_id_in_the_edit_url_is_404(api_client, other_user, ids):
    foreign = ChatMessageFactory(session=ChatSessionFactory(user=other_user), content="Mine, not yours")
    response = api_client.post(
        f"/api/chat-sessions/{ids['session']}/messages/{foreign.message_id}/edit/",
        {"content": "Hijacked"},
        format="json",
    )
    assert_error(response, 404, "not_found")
    foreign.refresh_from_db()
    assert foreign.content == "Mine, not yours"
    assert foreign.edited_at is None


def test_a_message_of_one_own_chat_cannot_be_edited_through_another_own_chat(api_client, user, ids):
    second = ChatSessionFactory(user=user)
    response = api_client.post(
        f"/api/chat-sessions/{second.pk}/messages/{ids['message']}/edit/", {"content": "Moved"}, format="json"
    )
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize("client_fixture", ["other_client", "staff_client"])
def test_lists_and_search_never_show_another_users_chats(request, ids, client_fixture):
    client = request.getfixturevalue(client_fixture)
    assert client.get("/api/chat-sessions/").json() == []
    assert client.get("/api/chat-sessions/search/?q=France").json() == []
    assert client.get("/api/chat-session-usages/").json() == []


def test_cleanup_by_another_user_leaves_the_owners_empty_chats(other_client, user, chatbot, ai_model):
    empty = ChatSessionFactory(user=user, chatbot=chatbot, ai_model=ai_model)
    response = other_client.post("/api/chat-sessions/cleanup-empty/")
    assert response.status_code == 200
    assert response.json()["deleted"] == 0
    assert ChatSession.objects.filter(pk=empty.pk).exists()


def test_inactive_chatbot_and_model_are_404(api_client):
    chatbot = ChatbotFactory(is_active=False)
    model = AIModelFactory(is_active=False)
    assert_error(api_client.get(f"/api/chatbots/{chatbot.pk}/"), 404, "not_found")
    assert_error(api_client.get(f"/api/ai-models/{model.pk}/"), 404, "not_found")


# -- staff-only endpoints --------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", params(*STAFF_ONLY))
def test_staff_only_endpoint_is_403_for_a_normal_user(api_client, ids, endpoint):
    before = snapshot(ids["session"])
    response = call(api_client, _resolve(endpoint, ids), ids)
    assert_error(response, 403, "permission_denied")
    assert snapshot(ids["session"]) == before


@pytest.mark.parametrize("endpoint", params(*STAFF_ONLY))
def test_staff_may_call_every_staff_only_endpoint(staff_client, superuser_client, ids, endpoint):
    # Roles are the superuser's to change (below); everything else is any staff user's.
    client = superuser_client if endpoint.path.endswith("/role/") else staff_client
    response = call(client, _resolve(endpoint, ids), ids)
    assert 200 <= response.status_code < 300, response.content


def test_a_normal_user_cannot_make_themselves_admin(api_client, user):
    response = api_client.patch(f"/api/admin/users/{user.pk}/role/", {"role": "admin"}, format="json")
    assert_error(response, 403, "permission_denied")
    user.refresh_from_db()
    assert not user.is_staff


def test_staff_who_is_not_a_superuser_cannot_change_roles(staff_client, superuser, user):
    for target, role in ((superuser, "user"), (user, "admin")):
        response = staff_client.patch(f"/api/admin/users/{target.pk}/role/", {"role": role}, format="json")
        assert_error(response, 403, "superuser_required")
    superuser.refresh_from_db()
    user.refresh_from_db()
    assert superuser.is_staff and superuser.is_superuser
    assert not user.is_staff


def test_a_superusers_role_never_changes_through_the_api(superuser_client, default_tier):
    other_root = UserFactory(is_staff=True, is_superuser=True)
    response = superuser_client.patch(f"/api/admin/users/{other_root.pk}/role/", {"role": "user"}, format="json")
    assert_error(response, 400, "superuser_role_fixed")
    other_root.refresh_from_db()
    assert other_root.is_staff


def test_nobody_changes_their_own_role(superuser_client, superuser):
    response = superuser_client.patch(f"/api/admin/users/{superuser.pk}/role/", {"role": "user"}, format="json")
    assert_error(response, 400, "cannot_change_own_role")
    superuser.refresh_from_db()
    assert superuser.is_staff


def test_staff_sees_another_users_chats_through_the_admin_api(staff_client, ids):
    chats = staff_client.get(f"/api/admin/users/{ids['user']}/chats/").json()
    assert [chat["id"] for chat in chats] == [ids["session"]]
    messages = staff_client.get(f"/api/admin/chats/{ids['session']}/messages/").json()["messages"]
    assert [m["content"] for m in messages] == ["What is the capital of France?", "Paris."]


def test_admin_endpoints_on_unknown_ids_are_404(staff_client):
    assert_error(staff_client.get("/api/admin/users/999999/chats/"), 404, "not_found")
    assert_error(staff_client.patch("/api/admin/users/999999/role/", {"role": "user"}, format="json"), 404, "not_found")
    assert_error(staff_client.get("/api/admin/chats/999999/messages/"), 404, "not_found")


# -- CSRF ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", params(*UNSAFE))
def test_unsafe_request_without_csrf_token_from_a_signed_in_session_is_403(staff, ids, endpoint):
    # Staff, so that staff-only endpoints too are refused for the missing token alone.
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(User.objects.get(pk=ids["user"]) if endpoint not in STAFF_ONLY else staff)
    client.get("/api/auth/csrf/")  # the cookie is set; only the header is missing
    before = snapshot(ids["session"])
    response = call(client, _resolve(endpoint, ids), ids)
    assert response.status_code == 403, response.content
    assert response.json()["code"]
    assert snapshot(ids["session"]) == before
    assert client.get("/api/users/").status_code == 200  # still signed in


def test_register_without_csrf_token_is_rejected(db, default_tier):
    client = APIClient(enforce_csrf_checks=True)
    response = client.post(
        "/api/auth/register/", {"email": "new@example.com", "password": "a long passphrase 8271"}, format="json"
    )
    assert response.status_code == 403
    assert response.json()["code"] == "csrf_failed"
    assert not User.objects.filter(email="new@example.com").exists()
    assert client.get("/api/users/").status_code == 401


def test_login_without_csrf_token_is_rejected(user):
    client = APIClient(enforce_csrf_checks=True)
    response = client.post(
        "/api/auth/login/", {"email": user.email, "password": "correct horse battery staple"}, format="json"
    )
    assert response.status_code == 403
    assert response.json()["code"] == "csrf_failed"
    assert client.get("/api/users/").status_code == 401


def test_login_with_csrf_token_signs_in(user):
    client = csrf_client()
    response = client.post(
        "/api/auth/login/", {"email": user.email, "password": "correct horse battery staple"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["id"] == user.pk
    assert client.get("/api/users/").json()["id"] == user.pk


def test_logout_ends_the_session(api_client):
    assert api_client.post("/api/auth/logout/").json() == {"success": True}
    assert_error(api_client.get("/api/users/"), 401, "not_authenticated")


def test_a_login_session_sees_only_its_own_user(api_client, other_client, user, other_user):
    assert api_client.get("/api/users/").json()["id"] == user.pk
    assert other_client.get("/api/users/").json()["id"] == other_user.pk


def test_inactive_user_session_is_401(user, api_client):
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert_error(api_client.get("/api/users/"), 401, "not_authenticated")


# -- public endpoints ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/schema/", "/api/docs/", "/api/redoc/", "/health/", "/health/ready/"])
def test_public_endpoint_answers_anonymously(anon_client, db, path):
    assert anon_client.get(path).status_code == 200


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_api_docs_load_every_asset_from_our_own_static_files(anon_client, db, path):
    html = anon_client.get(path).content.decode()
    external = [url for url in re.findall(r"https?://[^\s\"'<>)]+", html) if not url.startswith("http://testserver/")]
    assert external == []
    assets = re.findall(r"(?:src|href)=\"([^\"]+)\"", html)
    assert assets
    for asset in assets:
        assert asset.startswith("/static/"), asset
        response = anon_client.get(asset)
        assert response.status_code == 200, asset
        if hasattr(response, "close"):
            response.close()


def test_normal_user_cannot_list_users_but_staff_can(api_client, staff_client, user):
    assert_error(api_client.get("/api/admin/users/"), 403, "permission_denied")
    emails = [u["email"] for u in staff_client.get("/api/admin/users/").json()]
    assert user.email in emails


def test_staff_role_change_takes_effect(superuser_client, user):
    response = superuser_client.patch(f"/api/admin/users/{user.pk}/role/", {"role": "admin"}, format="json")
    assert response.status_code == 200
    assert response.json()["role"] == "admin"
    user.refresh_from_db()
    assert user.is_staff
    demoted = UserFactory(is_staff=True)
    superuser_client.patch(f"/api/admin/users/{demoted.pk}/role/", {"role": "user"}, format="json")
    demoted.refresh_from_db()
    assert not demoted.is_staff


# -- caching ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/chat/", "/chat/{session}/", "/account/", "/api/users/", "/api/users/usage/", "/api/chat-sessions/",
        "/api/chat-sessions/{session}/messages/", "/api/chat-sessions/{session}/export/?format=json",
        "/api/chat-sessions/{session}/export/?format=markdown", "/api/chatbots/",
    ],
)  # fmt: skip
def test_every_answer_to_a_signed_in_user_is_private_and_not_stored(api_client, ids, path):
    response = api_client.get(path.format(**ids))
    assert response.status_code == 200, path
    directives = {part.strip() for part in response["Cache-Control"].split(",")}
    assert {"private", "no-store"} <= directives, response["Cache-Control"]
    assert "public" not in directives


def test_static_files_stay_cacheable_for_signed_in_users(api_client):
    response = api_client.get("/static/css/site.css")
    response.close()  # a file response: its file closes with it
    assert response.status_code == 200
    assert "no-store" not in response.get("Cache-Control", "")
