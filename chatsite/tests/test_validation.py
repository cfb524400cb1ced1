"""Every way a client can send bad input: a JSON `{"detail", "code"}` with the right status, never a 500."""

import pytest
from django.conf import settings as django_settings
from rest_framework.test import APIClient

from accounts.models import User
from accounts.tests.factories import PASSWORD, UserFactory
from billing.models import ChatSessionUsage, UsageEvent
from chatbots.tests.factories import AIModelFactory, ChatbotFactory
from sessions_app.models import ChatMessage, ChatSession
from sessions_app.tests.factories import ChatMessageFactory, ChatSessionFactory

# The Django test client re-raises any exception a view lets through, so each of these
# tests would fail loudly (not with a 500 status) if some input crashed the server.


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert isinstance(body.get("detail"), str)
    assert body["detail"]
    assert isinstance(body.get("code"), str)
    if code is not None:
        assert body["code"] == code, body
    return body


def anon_csrf_client() -> APIClient:
    client = APIClient(enforce_csrf_checks=True)
    token = client.get("/api/auth/csrf/").json()["csrfToken"]
    client.credentials(HTTP_X_CSRFTOKEN=token)
    return client


def counts():
    return ChatMessage.objects.count(), UsageEvent.objects.count(), ChatSessionUsage.objects.count()


@pytest.fixture
def image_model(db):
    return AIModelFactory(name="Image model", model_id="vendor/painter", model_type="image")


@pytest.fixture
def conversation(chat_session, ai_model):
    """The owner's chat with one question and its answer."""
    question = ChatMessageFactory(session=chat_session, content="What is the capital of France?")
    answer = ChatMessageFactory(
        session=chat_session, message_type=ChatMessage.Type.ASSISTANT, content="Paris.", ai_model=ai_model
    )
    return chat_session, question, answer


# -- creating a session ----------------------------------------------------------------------------------------


def test_session_create_with_valid_ids_works(api_client, chatbot, ai_model):
    by_model_id = api_client.post(
        "/api/chat-sessions/", {"chatbot_id": chatbot.pk, "ai_model_id": "openai/gpt-4"}, format="json"
    )
    by_pk = api_client.post(
        "/api/chat-sessions/", {"chatbot_id": str(chatbot.pk), "ai_model_id": ai_model.pk}, format="json"
    )
    assert by_model_id.status_code == 201
    assert by_pk.status_code == 201
    assert by_pk.json()["ai_model"]["model_id"] == "openai/gpt-4"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param({"ai_model_id": "openai/gpt-4"}, "required", id="missing chatbot_id"),
        pytest.param({"chatbot_id": "{chatbot}"}, "required", id="missing ai_model_id"),
        pytest.param({}, "required", id="empty body"),
        pytest.param({"chatbot_id": "abc", "ai_model_id": "openai/gpt-4"}, "unknown_chatbot", id="chatbot_id abc"),
        pytest.param({"chatbot_id": ["{chatbot}"], "ai_model_id": "openai/gpt-4"}, "invalid", id="chatbot_id list"),
        pytest.param({"chatbot_id": {"id": 1}, "ai_model_id": "openai/gpt-4"}, "invalid", id="chatbot_id object"),
        pytest.param({"chatbot_id": None, "ai_model_id": "openai/gpt-4"}, "null", id="chatbot_id null"),
        pytest.param({"chatbot_id": True, "ai_model_id": "openai/gpt-4"}, "invalid", id="chatbot_id true"),
        pytest.param({"chatbot_id": 1.5, "ai_model_id": "openai/gpt-4"}, "invalid", id="chatbot_id float"),
        pytest.param({"chatbot_id": "", "ai_model_id": "openai/gpt-4"}, "invalid", id="chatbot_id empty"),
        pytest.param({"chatbot_id": -1, "ai_model_id": "openai/gpt-4"}, "unknown_chatbot", id="chatbot_id negative"),
        pytest.param({"chatbot_id": "²", "ai_model_id": "openai/gpt-4"}, "unknown_chatbot", id="chatbot_id digit-like"),
        pytest.param({"chatbot_id": 999999, "ai_model_id": "openai/gpt-4"}, "unknown_chatbot", id="unknown chatbot"),
        pytest.param({"chatbot_id": 10**30, "ai_model_id": "openai/gpt-4"}, "unknown_chatbot", id="huge chatbot_id"),
        pytest.param({"chatbot_id": str(10**30), "ai_model_id": "x"}, "unknown_chatbot", id="huge chatbot_id str"),
        pytest.param({"chatbot_id": "{chatbot}", "ai_model_id": "no/such-model"}, "unknown_model", id="unknown model"),
        pytest.param({"chatbot_id": "{chatbot}", "ai_model_id": 999999}, "unknown_model", id="unknown model pk"),
        pytest.param({"chatbot_id": "{chatbot}", "ai_model_id": 10**30}, "unknown_model", id="huge ai_model_id"),
        pytest.param({"chatbot_id": "{chatbot}", "ai_model_id": -1}, "unknown_model", id="ai_model_id negative"),
        pytest.param({"chatbot_id": "{chatbot}", "ai_model_id": "²"}, "unknown_model", id="ai_model_id digit-like"),
        pytest.param({"chatbot_id": "{chatbot}", "ai_model_id": None}, "null", id="ai_model_id null"),
        pytest.param(
            {"chatbot_id": "{chatbot}", "ai_model_id": "a\x00b"}, "null_characters_not_allowed", id="ai_model_id NUL"
        ),
        pytest.param(
            {"chatbot_id": "1\x00", "ai_model_id": "openai/gpt-4"}, "null_characters_not_allowed", id="chatbot_id NUL"
        ),
        pytest.param({"chatbot_id": "{chatbot}", "ai_model_id": "١٢٣"}, "unknown_model", id="ai_model_id arabic"),
        pytest.param({"chatbot_id": "{chatbot}", "ai_model_id": False}, "invalid", id="ai_model_id false"),
        pytest.param({"chatbot_id": "{chatbot}", "ai_model_id": ""}, "invalid", id="ai_model_id empty"),
        pytest.param(
            {"chatbot_id": "{chatbot}", "ai_model_id": "openai/gpt-4", "title": "x" * 201}, "max_length", id="title 201"
        ),
        pytest.param(
            {"chatbot_id": "{chatbot}", "ai_model_id": "openai/gpt-4", "title": 42}, "invalid", id="title number"
        ),
        pytest.param(
            {"chatbot_id": "{chatbot}", "ai_model_id": "openai/gpt-4", "title": "a\x00b"},
            "null_characters_not_allowed",
            id="title NUL",
        ),
    ],
)
def test_session_create_with_bad_input_is_400(api_client, chatbot, ai_model, body, code):
    body = {k: (chatbot.pk if v == "{chatbot}" else [chatbot.pk] if v == ["{chatbot}"] else v) for k, v in body.items()}
    response = api_client.post("/api/chat-sessions/", body, format="json")
    assert_error(response, 400, code)
    assert not ChatSession.objects.exists()


def test_session_create_with_an_inactive_chatbot_is_400(api_client, ai_model):
    retired = ChatbotFactory(is_active=False)
    response = api_client.post(
        "/api/chat-sessions/", {"chatbot_id": retired.pk, "ai_model_id": "openai/gpt-4"}, format="json"
    )
    assert_error(response, 400, "unknown_chatbot")


def test_session_create_with_an_inactive_model_is_400(api_client, chatbot):
    retired = AIModelFactory(model_id="vendor/retired", is_active=False)
    for ref in ("vendor/retired", retired.pk):
        response = api_client.post("/api/chat-sessions/", {"chatbot_id": chatbot.pk, "ai_model_id": ref}, format="json")
        assert_error(response, 400, "unknown_model")
    assert not ChatSession.objects.exists()


def test_text_chatbot_with_an_image_model_is_a_type_mismatch(api_client, chatbot, image_model):
    response = api_client.post(
        "/api/chat-sessions/", {"chatbot_id": chatbot.pk, "ai_model_id": image_model.model_id}, format="json"
    )
    assert_error(response, 400, "type_mismatch")
    assert not ChatSession.objects.exists()


def test_image_chatbot_with_a_text_model_is_a_type_mismatch(api_client, ai_model):
    painter = ChatbotFactory(chatbot_type="image")
    response = api_client.post(
        "/api/chat-sessions/", {"chatbot_id": painter.pk, "ai_model_id": ai_model.model_id}, format="json"
    )
    assert_error(response, 400, "type_mismatch")


@pytest.mark.parametrize("body", [[1, 2], "hello", 5, None], ids=["list", "string", "number", "null"])
def test_session_create_with_a_body_that_is_not_an_object_is_400(api_client, chatbot, body):
    response = api_client.post("/api/chat-sessions/", body, format="json")
    assert_error(response, 400)


def test_session_title_of_exactly_200_characters_is_accepted(api_client, chatbot, ai_model):
    response = api_client.post(
        "/api/chat-sessions/",
        {"chatbot_id": chatbot.pk, "ai_model_id": "openai/gpt-4", "title": "x" * 200},
        format="json",
    )
    assert response.status_code == 201
    assert response.json()["title"] == "x" * 200


# -- updating a session ----------------------------------------------------------------------------------------


def test_put_without_a_title_is_400_because_a_full_update_needs_it(api_client, chat_session):
    response = api_client.put(f"/api/chat-sessions/{chat_session.pk}/", {"auto_generate_title": False}, format="json")
    assert_error(response, 400, "required")
    chat_session.refresh_from_db()
    assert chat_session.auto_generate_title is True


def test_patch_with_only_auto_generate_title_works(api_client, chat_session):
    response = api_client.patch(f"/api/chat-sessions/{chat_session.pk}/", {"auto_generate_title": False}, format="json")
    assert response.status_code == 200
    assert response.json()["auto_generate_title"] is False
    assert response.json()["title"] == "New Chat"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param({"title": ""}, "blank", id="blank title"),
        pytest.param({"title": "   "}, "blank", id="whitespace title"),
        pytest.param({"title": "\u200b\u2060\ufeff"}, "blank", id="invisible title"),
        pytest.param({"title": "x" * 201}, "max_length", id="long title"),
        pytest.param({"title": None}, "null", id="null title"),
        pytest.param({"title": ["a"]}, "invalid", id="list title"),
        pytest.param({"auto_generate_title": "no"}, "invalid", id="string flag"),
        pytest.param({"auto_generate_title": 0}, "invalid", id="number flag"),
        pytest.param({"ai_model_id": "no/such-model"}, "unknown_model", id="unknown model"),
        pytest.param({"ai_model_id": 10**30}, "unknown_model", id="huge model id"),
        pytest.param({"ai_model_id": "²"}, "unknown_model", id="digit-like model id"),
        pytest.param({"ai_model_id": "{image}"}, "type_mismatch", id="image model on a text chat"),
        pytest.param({"ai_model_id": "{inactive}"}, "unknown_model", id="inactive model"),
    ],
)
def test_patch_with_bad_input_is_400_and_changes_nothing(api_client, chat_session, image_model, body, code):
    inactive = AIModelFactory(is_active=False)
    placeholders = {"{image}": image_model.pk, "{inactive}": inactive.pk}
    body = {k: placeholders.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    response = api_client.patch(f"/api/chat-sessions/{chat_session.pk}/", body, format="json")
    assert_error(response, 400, code)
    chat_session.refresh_from_db()
    assert (chat_session.title, chat_session.auto_generate_title) == ("New Chat", True)
    assert chat_session.ai_model.model_id == "openai/gpt-4"


# -- sending a message -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param({}, "required", id="no message"),
        pytest.param({"message": ""}, "blank", id="empty"),
        pytest.param({"message": "   \n\t "}, "blank", id="whitespace"),
        pytest.param({"message": "\u200b" * 9}, "blank", id="zero-width spaces"),
        pytest.param({"message": "\u3164\u2800 \u200d\ufe0f"}, "blank", id="blank-looking characters"),
        pytest.param({"message": 123}, "invalid", id="number"),
        pytest.param({"message": None}, "null", id="null"),
        pytest.param({"message": ["hi"]}, "invalid", id="list"),
        pytest.param({"message": {"text": "hi"}}, "invalid", id="object"),
        pytest.param({"message": True}, "invalid", id="true"),
        pytest.param({"message": "hello\x00world"}, "null_characters_not_allowed", id="NUL"),
        pytest.param({"message": "x" * (django_settings.MAX_MESSAGE_CHARS + 1)}, "max_length", id="too long"),
        pytest.param([{"message": "hi"}], "invalid", id="list body"),
        pytest.param("hi", "invalid", id="string body"),
    ],
)
def test_send_with_bad_input_is_400_and_saves_nothing(api_client, chat_session, body, code):
    before = counts()
    response = api_client.post(f"/api/chat-sessions/{chat_session.pk}/send/", body, format="json")
    assert_error(response, 400, code)
    assert counts() == before


# Lone surrogates (`"\ud800"`) are valid JSON escapes but cannot be stored or rendered as UTF-8,
# and NUL cannot be stored in PostgreSQL text; both must stop at validation. Sent as raw bytes
# because the test client's own JSON renderer refuses to encode a lone surrogate.
RAW_STRINGS = [
    ("post", "/api/chat-sessions/", '{"chatbot_id": "\\ud800", "ai_model_id": "openai/gpt-4"}'),
    ("post", "/api/chat-sessions/", '{"chatbot_id": CHATBOT, "ai_model_id": "\\ud800"}'),
    ("post", "/api/chat-sessions/", '{"chatbot_id": CHATBOT, "ai_model_id": "openai/gpt-4\\u0000"}'),
    ("post", "/api/chat-sessions/", '{"chatbot_id": CHATBOT, "ai_model_id": "openai/gpt-4", "title": "\\udfff"}'),
    ("patch", "/api/chat-sessions/SESSION/", '{"ai_model_id": "\\udfff"}'),
    ("patch", "/api/chat-sessions/SESSION/", '{"ai_model_id": "\\u0000"}'),
    ("patch", "/api/chat-sessions/SESSION/", '{"title": "\\ud800"}'),
    ("patch", "/api/chat-sessions/SESSION/", '{"auto_generate_title": "\\ud800"}'),
    ("post", "/api/chat-sessions/SESSION/send/", '{"message": "\\ud800"}'),
    ("post", "/api/chat-sessions/SESSION/send/", '{"message": "hi \\u0000"}'),
    ("post", "/api/chat-sessions/SESSION/update-title/", '{"title": "\\ud800"}'),
    ("post", "/api/chat-sessions/SESSION/messages/MESSAGE/edit/", '{"content": "\\ud800"}'),
    ("post", "/api/chat-sessions/SESSION/messages/MESSAGE/edit/", '{"content": "\\u0000"}'),
]


@pytest.mark.parametrize(("method", "path", "raw"), RAW_STRINGS, ids=[f"{m} {p} {r}" for m, p, r in RAW_STRINGS])
def test_surrogates_and_nul_in_any_string_are_400(api_client, conversation, chatbot, method, path, raw):
    session, question, _ = conversation
    path = path.replace("SESSION", str(session.pk)).replace("MESSAGE", str(question.message_id))
    raw = raw.replace("CHATBOT", str(chatbot.pk))
    before = counts(), ChatSession.objects.count()
    response = getattr(api_client, method)(path, data=raw.encode(), content_type="application/json")
    assert_error(response, 400)
    assert (counts(), ChatSession.objects.count()) == before
    session.refresh_from_db()
    assert (session.title, session.auto_generate_title) == ("New Chat", True)
    assert session.ai_model.model_id == "openai/gpt-4"


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/api/auth/register/", '{"email": "\\ud800@example.com", "password": "a long passphrase 8271"}'),
        ("/api/auth/register/", '{"email": "n@example.com", "password": "\\ud800 a long passphrase 8271"}'),
        ("/api/auth/register/", '{"email": "n@example.com", "password": "a long passphrase", "name": "\\ud800"}'),
        (
            "/api/auth/register/",
            '{"email": "n@example.com", "password": "a long passphrase", "phone_number": "\\u0000"}',
        ),
        ("/api/auth/login/", '{"email": "\\ud800", "password": "x"}'),
        ("/api/auth/login/", '{"phone_number": "\\u0000", "password": "x"}'),
    ],
)
def test_surrogates_and_nul_in_register_and_login_are_400(user, path, raw):
    users = User.objects.count()
    response = anon_csrf_client().post(path, data=raw.encode(), content_type="application/json")
    assert_error(response, 400)
    assert User.objects.count() == users


def test_a_surrogate_in_the_admin_role_is_400(staff_client, user):
    response = staff_client.patch(
        f"/api/admin/users/{user.pk}/role/", data=b'{"role": "\\ud800"}', content_type="application/json"
    )
    assert_error(response, 400, "invalid_choice")


def test_send_of_exactly_max_message_chars_is_accepted(api_client, chat_session):
    message = "x" * django_settings.MAX_MESSAGE_CHARS
    response = api_client.post(f"/api/chat-sessions/{chat_session.pk}/send/", {"message": message}, format="json")
    assert response.status_code == 201
    assert response.json()["user_message"]["content"] == message


def test_send_honours_a_lowered_max_message_chars(api_client, chat_session, settings):
    settings.MAX_MESSAGE_CHARS = 10
    before = counts()
    response = api_client.post(f"/api/chat-sessions/{chat_session.pk}/send/", {"message": "x" * 11}, format="json")
    assert_error(response, 400, "too_long")
    assert counts() == before


def test_malformed_json_is_a_parse_error(api_client, chat_session):
    before = counts()
    response = api_client.post(
        f"/api/chat-sessions/{chat_session.pk}/send/", data='{"message": ', content_type="application/json"
    )
    assert_error(response, 400, "parse_error")
    assert counts() == before


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"message": "\xff\xfe"}', id="invalid UTF-8"),
        pytest.param(b'{"message": NaN}', id="NaN"),
        pytest.param(b'{"message": Infinity}', id="Infinity"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="nested too deep"),
        pytest.param(b'{"message": "hi"} trailing', id="trailing garbage"),
    ],
)
def test_unparseable_json_is_a_parse_error(api_client, chat_session, raw):
    before = counts()
    response = api_client.post(f"/api/chat-sessions/{chat_session.pk}/send/", data=raw, content_type="application/json")
    assert_error(response, 400, "parse_error")
    assert counts() == before


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        pytest.param("message=hello", "application/x-www-form-urlencoded", id="form"),
        pytest.param("hello", "text/plain", id="text"),
        pytest.param("<message>hello</message>", "application/xml", id="xml"),
    ],
)
def test_a_non_json_content_type_is_415(api_client, chat_session, data, content_type):
    before = counts()
    response = api_client.post(f"/api/chat-sessions/{chat_session.pk}/send/", data=data, content_type=content_type)
    assert_error(response, 415, "unsupported_media_type")
    assert counts() == before


def test_a_multipart_body_is_415(api_client, chat_session):
    response = api_client.post(f"/api/chat-sessions/{chat_session.pk}/send/", {"message": "hello"})
    assert_error(response, 415, "unsupported_media_type")


def test_a_body_over_the_upload_limit_is_413(api_client, chat_session, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    before = counts()
    response = api_client.post(f"/api/chat-sessions/{chat_session.pk}/send/", {"message": "x" * 2000}, format="json")
    assert_error(response, 413, "too_large")
    assert counts() == before


def test_a_body_over_the_default_upload_limit_is_413(api_client, chat_session):
    body = {"message": "hi", "padding": "x" * (django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)}
    response = api_client.post(f"/api/chat-sessions/{chat_session.pk}/send/", body, format="json")
    assert_error(response, 413, "too_large")


def test_session_create_over_the_upload_limit_is_413(api_client, chatbot, ai_model, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = {"chatbot_id": chatbot.pk, "ai_model_id": "openai/gpt-4", "title": "t", "padding": "x" * 2000}
    assert_error(api_client.post("/api/chat-sessions/", body, format="json"), 413, "too_large")
    assert not ChatSession.objects.exists()


def test_register_over_the_upload_limit_is_413(db, default_tier, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = {"email": "new@example.com", "password": "a long passphrase 8271", "name": "x" * 2000}
    assert_error(anon_csrf_client().post("/api/auth/register/", body, format="json"), 413, "too_large")
    assert not User.objects.filter(email="new@example.com").exists()


# -- editing a message -----------------------------------------------------------------------------------------


def test_edit_with_a_malformed_uuid_is_404(api_client, conversation):
    session, _, _ = conversation
    response = api_client.post(
        f"/api/chat-sessions/{session.pk}/messages/not-a-uuid/edit/", {"content": "x"}, format="json"
    )
    assert_error(response, 404, "not_found")


def test_edit_with_an_unknown_uuid_is_404(api_client, conversation):
    session, _, _ = conversation
    response = api_client.post(
        f"/api/chat-sessions/{session.pk}/messages/00000000-0000-4000-8000-000000000000/edit/",
        {"content": "x"},
        format="json",
    )
    assert_error(response, 404, "not_found")


def test_edit_of_an_assistant_message_is_not_editable(api_client, conversation):
    session, _, answer = conversation
    before = counts()
    response = api_client.post(
        f"/api/chat-sessions/{session.pk}/messages/{answer.message_id}/edit/", {"content": "Lyon."}, format="json"
    )
    assert_error(response, 400, "not_editable")
    answer.refresh_from_db()
    assert (answer.content, answer.disabled, answer.edited_at) == ("Paris.", False, None)
    assert counts() == before


def test_edit_of_a_disabled_message_is_400(api_client, conversation):
    session, question, _ = conversation
    ChatMessage.objects.filter(pk=question.pk).update(disabled=True)
    response = api_client.post(
        f"/api/chat-sessions/{session.pk}/messages/{question.message_id}/edit/", {"content": "New"}, format="json"
    )
    assert_error(response, 400, "message_disabled")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param({"content": ""}, "blank", id="empty"),
        pytest.param({"content": "   "}, "blank", id="whitespace"),
        pytest.param({"content": "\u200b\u200c\u200d"}, "blank", id="invisible"),
        pytest.param({}, "required", id="missing"),
        pytest.param({"content": 5}, "invalid", id="number"),
        pytest.param({"content": None}, "null", id="null"),
        pytest.param({"content": "x" * (django_settings.MAX_MESSAGE_CHARS + 1)}, "max_length", id="too long"),
        pytest.param({"content": "ok", "regenerate": "no"}, "invalid", id="regenerate string"),
    ],
)
def test_edit_with_bad_content_is_400_and_changes_nothing(api_client, conversation, body, code):
    session, question, answer = conversation
    before = counts()
    response = api_client.post(
        f"/api/chat-sessions/{session.pk}/messages/{question.message_id}/edit/", body, format="json"
    )
    assert_error(response, 400, code)
    question.refresh_from_db()
    answer.refresh_from_db()
    assert (question.content, question.edited_at, answer.disabled) == ("What is the capital of France?", None, False)
    assert counts() == before


# -- update-title ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param({"title": ""}, "blank", id="blank"),
        pytest.param({"title": "    "}, "blank", id="whitespace"),
        pytest.param({"title": "\u200b\u200b"}, "blank", id="invisible"),
        pytest.param({"title": "x" * 201}, "max_length", id="too long"),
        pytest.param({}, "required", id="missing"),
        pytest.param({"title": 7}, "invalid", id="number"),
    ],
)
def test_update_title_with_bad_title_is_400(api_client, chat_session, body, code):
    response = api_client.post(f"/api/chat-sessions/{chat_session.pk}/update-title/", body, format="json")
    assert_error(response, 400, code)
    chat_session.refresh_from_db()
    assert (chat_session.title, chat_session.auto_generate_title) == ("New Chat", True)


# -- query parameters ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "code"),
    [
        pytest.param("", "blank", id="no q"),
        pytest.param("?q=", "blank", id="empty q"),
        pytest.param("?q=%20%20", "blank", id="blank q"),
        pytest.param("?q=" + "x" * 201, "too_long", id="long q"),
        pytest.param("?q=a%00b", None, id="NUL in q"),
        pytest.param("?q=x&limit=-1", "invalid_parameter", id="limit -1"),
        pytest.param("?q=x&limit=abc", "invalid_parameter", id="limit abc"),
        pytest.param("?q=x&limit=0", "invalid_parameter", id="limit 0"),
        pytest.param("?q=x&limit=1.5", "invalid_parameter", id="limit 1.5"),
        pytest.param("?q=x&limit=" + "9" * 30, "invalid_parameter", id="limit huge"),
    ],
)
def test_search_with_bad_parameters_is_400(api_client, conversation, query, code):
    assert_error(api_client.get(f"/api/chat-sessions/search/{query}"), 400, code)


@pytest.mark.parametrize(
    "query",
    ["?limit=0", "?offset=-5", "?limit=abc", "?offset=abc", "?limit=-1", "?limit=2.0", "?offset=" + "9" * 30],
)
def test_session_list_with_bad_paging_is_400(api_client, chat_session, query):
    assert_error(api_client.get(f"/api/chat-sessions/{query}"), 400, "invalid_parameter")


def test_session_list_caps_a_large_limit(api_client, chat_session):
    response = api_client.get("/api/chat-sessions/?limit=5000&offset=0")
    assert response.status_code == 200
    assert response["X-Total-Count"] == "1"


@pytest.mark.parametrize("fmt", ["pdf", "", "JSON", "html"])
def test_export_with_an_unknown_format_is_400(api_client, chat_session, fmt):
    assert_error(api_client.get(f"/api/chat-sessions/{chat_session.pk}/export/?format={fmt}"), 400, "invalid_parameter")


def test_export_of_an_unknown_session_with_a_bad_format_is_a_json_error(api_client):
    response = api_client.get("/api/chat-sessions/999999/export/?format=pdf")
    assert response.status_code in (400, 404)
    assert response.json()["code"]


@pytest.mark.parametrize("model_type", ["video", "TEXT", "text,image"])
def test_ai_models_with_an_unknown_model_type_is_400(api_client, model_type):
    assert_error(api_client.get(f"/api/ai-models/?model_type={model_type}"), 400, "invalid_parameter")


def test_ai_models_filters_by_a_known_model_type(api_client, ai_model, image_model):
    response = api_client.get("/api/ai-models/?model_type=image")
    assert [m["model_id"] for m in response.json()] == ["vendor/painter"]


@pytest.mark.parametrize("query", ["?limit=abc", "?limit=0", "?offset=-1"])
def test_admin_user_list_with_bad_paging_is_400(staff_client, query):
    assert_error(staff_client.get(f"/api/admin/users/{query}"), 400, "invalid_parameter")


@pytest.mark.parametrize(
    ("query", "code"),
    [("", "required"), ("?model_name=", "required"), ("?model_name=%20", "required"), ("?model_name=nope", None)],
)
def test_debug_model_usage_with_a_bad_model_name_is_400(staff_client, ai_model, query, code):
    before = UsageEvent.objects.count()
    assert_error(staff_client.post(f"/api/debug/test-model-usage/{query}"), 400, code)
    assert UsageEvent.objects.count() == before


# -- admin role ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param({"role": "superhero"}, "invalid_choice", id="unknown role"),
        pytest.param({"role": ""}, "invalid_choice", id="blank role"),
        pytest.param({"role": None}, "null", id="null role"),
        pytest.param({"role": ["admin"]}, "invalid_choice", id="list role"),
        pytest.param({}, "required", id="missing role"),
    ],
)
def test_admin_role_with_a_bad_role_is_400(staff_client, user, body, code):
    response = staff_client.patch(f"/api/admin/users/{user.pk}/role/", body, format="json")
    assert_error(response, 400, code)
    user.refresh_from_db()
    assert not user.is_staff


def test_staff_cannot_demote_themselves(staff_client, staff):
    response = staff_client.patch(f"/api/admin/users/{staff.pk}/role/", {"role": "user"}, format="json")
    assert_error(response, 403, "superuser_required")
    staff.refresh_from_db()
    assert staff.is_staff


# -- register and login ----------------------------------------------------------------------------------------

GOOD_PASSWORD = "a long passphrase 8271"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param({"email": "owner@example.com", "password": GOOD_PASSWORD}, "email_taken", id="taken email"),
        pytest.param({"email": "OWNER@Example.com", "password": GOOD_PASSWORD}, "email_taken", id="taken email case"),
        pytest.param({"email": "not-an-email", "password": GOOD_PASSWORD}, "invalid", id="invalid email"),
        pytest.param({"email": 123, "password": GOOD_PASSWORD}, "invalid", id="email number"),
        pytest.param({"email": "new@example.com", "password": "password"}, "weak_password", id="common password"),
        pytest.param({"email": "new@example.com", "password": "12345678901"}, "weak_password", id="numeric password"),
        pytest.param({"email": "new@example.com", "password": "short"}, "weak_password", id="short password"),
        pytest.param({"email": "new@example.com", "password": 12345678}, "invalid", id="password number"),
        pytest.param({"email": "new@example.com"}, "required", id="missing password"),
        pytest.param({"password": GOOD_PASSWORD}, "required", id="missing email"),
        pytest.param(
            {"email": "new@example.com", "password": GOOD_PASSWORD, "phone_number": "12345"},
            "invalid_phone",
            id="bad phone",
        ),
        pytest.param(
            {"email": "new@example.com", "password": GOOD_PASSWORD, "phone_number": "+1 (415) 555-0100"},
            "phone_taken",
            id="taken phone",
        ),
        pytest.param(
            {"email": "new@example.com", "password": GOOD_PASSWORD, "phone_number": 14155550100},
            "invalid",
            id="phone number as a number",
        ),
        pytest.param(
            {"email": "new@example.com", "password": GOOD_PASSWORD, "name": "x" * 151}, "max_length", id="long name"
        ),
        pytest.param(
            {"email": "new@example.com", "password": GOOD_PASSWORD, "name": "a\x00b"},
            "null_characters_not_allowed",
            id="NUL in name",
        ),
        pytest.param(["new@example.com", GOOD_PASSWORD], "invalid", id="list body"),
        pytest.param({"email": "new@example.com", "password": " " * 12}, "weak_password", id="password of spaces"),
        pytest.param(
            {"email": "new@example.com", "password": "\u200b" * 9}, "weak_password", id="password of zero-width spaces"
        ),
        pytest.param(
            {"email": "new@example.com", "password": "ab\u200b\u200b\u200b\u200b\u200b\u200b\u200b\u200b"},
            "weak_password",
            id="password mostly invisible",
        ),
    ],
)
def test_register_with_bad_input_is_400_and_creates_no_account(user, body, code):
    UserFactory(email="phone@example.com", phone_number="+14155550100")
    users = User.objects.count()
    client = anon_csrf_client()
    response = client.post("/api/auth/register/", body, format="json")
    assert_error(response, 400, code)
    assert User.objects.count() == users
    assert client.get("/api/users/").status_code == 401


def test_register_while_signed_in_is_400_and_keeps_the_session(api_client, user):
    users = User.objects.count()
    response = api_client.post("/api/auth/register/", {"email": "second@example.com", "password": GOOD_PASSWORD})
    assert_error(response, 400, "already_signed_in")
    assert User.objects.count() == users
    assert api_client.get("/api/users/").json()["email"] == user.email


def test_a_passphrase_with_spaces_is_fine(db, default_tier):
    response = anon_csrf_client().post(
        "/api/auth/register/", {"email": "new@example.com", "password": "tall  trees   whisper"}, format="json"
    )
    assert response.status_code == 201, response.content


def test_register_with_good_input_signs_in(db, default_tier):
    client = anon_csrf_client()
    response = client.post(
        "/api/auth/register/",
        {"email": "New@Example.com", "password": GOOD_PASSWORD, "phone_number": "+44 20 7946 0958"},
        format="json",
    )
    assert response.status_code == 201
    assert response.json()["email"] == "new@example.com"
    assert response.json()["phone_number"] == "+442079460958"
    assert client.get("/api/users/").status_code == 200


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param({"email": "owner@example.com", "password": "wrong password"}, "invalid_credentials", id="wrong"),
        pytest.param({"email": "nobody@example.com", "password": PASSWORD}, "invalid_credentials", id="unknown email"),
        pytest.param({"phone_number": "+14155550199", "password": PASSWORD}, "invalid_credentials", id="unknown phone"),
        pytest.param({"password": PASSWORD}, "required", id="neither email nor phone"),
        pytest.param({"email": "", "phone_number": "", "password": PASSWORD}, None, id="both blank"),
        pytest.param({"email": "owner@example.com"}, "required", id="missing password"),
        pytest.param({"email": "owner@example.com", "password": ""}, "blank", id="blank password"),
        pytest.param({"email": ["owner@example.com"], "password": PASSWORD}, "invalid", id="email list"),
        pytest.param({"email": "owner@example.com\x00", "password": PASSWORD}, None, id="NUL in email"),
        pytest.param("owner@example.com", "invalid", id="string body"),
    ],
)
def test_login_with_bad_input_is_400_and_signs_nobody_in(user, body, code):
    client = anon_csrf_client()
    response = client.post("/api/auth/login/", body, format="json")
    assert_error(response, 400, code)
    assert client.get("/api/users/").status_code == 401


def test_login_of_an_inactive_account_is_refused(user):
    User.objects.filter(pk=user.pk).update(is_active=False)
    client = anon_csrf_client()
    response = client.post("/api/auth/login/", {"email": user.email, "password": PASSWORD}, format="json")
    assert_error(response, 400, "invalid_credentials")


# -- methods and paths -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/chat-sessions/{session}/send/"),
        ("get", "/api/chat-sessions/{session}/regenerate/"),
        ("get", "/api/chat-sessions/{session}/update-title/"),
        ("get", "/api/chat-sessions/cleanup-empty/"),
        ("put", "/api/chat-sessions/{session}/messages/"),
        ("delete", "/api/chat-sessions/"),
        ("post", "/api/chatbots/"),
        ("put", "/api/chatbots/{chatbot}/"),
        ("delete", "/api/ai-models/{model}/"),
        ("post", "/api/chat-session-usages/"),
        ("delete", "/api/users/"),
        ("post", "/api/users/usage/"),
        ("get", "/api/auth/login/"),
        ("get", "/api/auth/register/"),
        ("get", "/api/auth/logout/"),
        ("post", "/api/chat-sessions/search/?q=x"),
    ],
)
def test_a_wrong_method_is_405(api_client, chat_session, chatbot, ai_model, method, path):
    path = path.format(session=chat_session.pk, chatbot=chatbot.pk, model=ai_model.pk)
    assert_error(getattr(api_client, method)(path), 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/api/admin/users/{user}/role/"), ("get", "/api/debug/test-model-usage/"), ("post", "/api/admin/users/")],
)
def test_a_wrong_method_on_a_staff_endpoint_is_405(staff_client, user, method, path):
    assert_error(getattr(staff_client, method)(path.format(user=user.pk)), 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/chat-sessions/abc/"),
        ("get", "/api/chat-sessions/-1/"),
        ("get", "/api/chat-sessions/1.5/"),
        ("post", "/api/chat-sessions/abc/send/"),
        ("get", "/api/chat-sessions/abc/messages/"),
        ("get", "/api/chatbots/abc/"),
        ("get", "/api/ai-models/openai/gpt-4/"),
        ("get", "/api/chat-session-usages/abc/"),
        ("get", "/api/admin/users/abc/chats/"),
        ("get", "/api/no-such-endpoint/"),
        ("get", "/api/chat-sessions/99999999999999999999999999999/"),
        ("post", "/api/chat-sessions/99999999999999999999999999999/send/"),
        ("get", "/api/chatbots/99999999999999999999999999999/"),
        ("get", "/api/ai-models/99999999999999999999999999999/"),
        ("get", "/api/chat-session-usages/99999999999999999999999999999/"),
    ],
)
def test_a_path_that_names_no_object_is_a_json_404(api_client, chat_session, method, path):
    if method == "post":
        response = api_client.post(path, {"message": "hi"}, format="json")
    else:
        response = api_client.get(path)
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize(
    "path",
    [
        "/api/admin/users/99999999999999999999999999999/chats/",
        "/api/admin/chats/99999999999999999999999999999/messages/",
    ],
)
def test_a_huge_id_on_a_staff_endpoint_is_a_json_404(staff_client, path):
    assert_error(staff_client.get(path), 404, "not_found")


def test_a_huge_id_in_the_admin_role_url_is_a_json_404(staff_client):
    response = staff_client.patch("/api/admin/users/99999999999999999999999999999/role/", {"role": "user"}, "json")
    assert_error(response, 404, "not_found")


# -- regenerate ------------------------------------------------------------------------------------------------


def test_regenerate_on_an_empty_chat_is_400_and_creates_nothing(api_client, chat_session):
    before = counts()
    response = api_client.post(f"/api/chat-sessions/{chat_session.pk}/regenerate/")
    assert_error(response, 400, "nothing_to_regenerate")
    assert counts() == before


def test_regenerate_while_a_reply_is_generating_is_400_and_changes_nothing(api_client, conversation):
    session, _, answer = conversation
    ChatMessage.objects.filter(pk=answer.pk).update(status=ChatMessage.Status.GENERATING)
    before = counts()
    response = api_client.post(f"/api/chat-sessions/{session.pk}/regenerate/")
    assert_error(response, 400, "reply_in_progress")
    answer.refresh_from_db()
    assert not answer.disabled
    assert counts() == before


def test_regenerate_replaces_the_last_reply(api_client, conversation):
    session, _, answer = conversation
    response = api_client.post(f"/api/chat-sessions/{session.pk}/regenerate/")
    assert response.status_code == 201
    answer.refresh_from_db()
    assert answer.disabled
    assert UsageEvent.objects.filter(session=session).count() == 1


def test_send_to_a_valid_chat_saves_both_messages(api_client, chat_session):
    response = api_client.post(f"/api/chat-sessions/{chat_session.pk}/send/", {"message": " Hi "}, format="json")
    assert response.status_code == 201
    assert response.json()["user_message"]["content"] == " Hi "
    assert ChatMessage.objects.filter(session=chat_session).count() == 2


def test_an_unrelated_other_session_is_not_touched_by_bad_input(api_client, other_user, chatbot, ai_model):
    theirs = ChatSessionFactory(user=other_user, chatbot=chatbot, ai_model=ai_model)
    response = api_client.post(f"/api/chat-sessions/{theirs.pk}/send/", {"message": ""}, format="json")
    # Input is checked before the session is looked up; either way nothing is revealed or saved.
    assert response.status_code in (400, 404)
    assert not ChatMessage.objects.exists()
