"""Versions of edits and regenerations, the Markdown preview, pins: the API and the services behind them."""

import uuid

import pytest

from chatsite.tests.shapes import assert_message_shape
from sessions_app import services
from sessions_app.models import ChatMessage
from sessions_app.rendering import markdown_plain, message_html
from sessions_app.tests.factories import ChatSessionFactory
from sessions_app.titles import title_from_words


def send(client, session, text):
    response = client.post(f"/api/chat-sessions/{session.pk}/send/", {"message": text}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def shown(session):
    return list(
        session.messages.filter(disabled=False).order_by("created_at", "id").values_list("message_type", "content")
    )


def test_each_message_links_to_the_one_it_follows(api_client, chat_session):
    first = send(api_client, chat_session, "One")
    second = send(api_client, chat_session, "Two")

    messages = api_client.get(f"/api/chat-sessions/{chat_session.pk}/messages/").json()["messages"]

    for message in messages:
        assert_message_shape(message)
    assert [m["parent_message_id"] for m in messages] == [
        None,
        first["user_message"]["message_id"],
        first["assistant_message"]["message_id"],
        second["user_message"]["message_id"],
    ]


def test_an_edit_keeps_the_earlier_version_with_its_reply_and_switching_shows_it_again(api_client, chat_session):
    first = send(api_client, chat_session, "Plan a trip to the mountains")
    send(api_client, chat_session, "And the food?")
    question_id = first["user_message"]["message_id"]

    edit = api_client.post(
        f"/api/chat-sessions/{chat_session.pk}/messages/{question_id}/edit/",
        {"content": "Plan a trip to the sea"},
        format="json",
    )

    # The seed's answer, unchanged: what was disabled, and the new reply.
    assert edit.status_code == 200
    body = edit.json()
    assert set(body) == {"success", "disabled_message_ids", "assistant_message"}
    assert len(body["disabled_message_ids"]) == 3
    assert body["assistant_message"]["parent_message_id"] == question_id
    assert shown(chat_session)[0][1] == "Plan a trip to the sea"
    assert len(shown(chat_session)) == 2

    versions = api_client.get(f"/api/chat-sessions/{chat_session.pk}/messages/{question_id}/versions/").json()
    assert [v["content"] for v in versions["versions"]] == ["Plan a trip to the mountains", "Plan a trip to the sea"]
    assert versions["current"] == 1
    old_id = versions["versions"][0]["message_id"]

    switched = api_client.post(f"/api/chat-sessions/{chat_session.pk}/messages/{old_id}/switch/")

    assert switched.status_code == 200
    assert [m["content"] for m in switched.json()["messages"]][0::2] == [
        "Plan a trip to the mountains",
        "And the food?",
    ]
    assert [kind for kind, _ in shown(chat_session)] == ["user", "assistant", "user", "assistant"]
    assert "mountains" in shown(chat_session)[1][1]
    again = api_client.get(f"/api/chat-sessions/{chat_session.pk}/messages/{old_id}/versions/").json()
    assert again["current"] == 0

    api_client.post(f"/api/chat-sessions/{chat_session.pk}/messages/{question_id}/switch/")
    assert shown(chat_session)[0][1] == "Plan a trip to the sea"
    assert len(shown(chat_session)) == 2


def test_a_regenerate_keeps_the_earlier_reply_as_a_version(api_client, chat_session):
    first = send(api_client, chat_session, "Hello")
    old_reply = first["assistant_message"]["message_id"]

    response = api_client.post(f"/api/chat-sessions/{chat_session.pk}/regenerate/", {}, format="json")

    assert response.status_code == 201
    new_reply = response.json()["assistant_message"]
    assert new_reply["parent_message_id"] == first["user_message"]["message_id"]
    versions = api_client.get(f"/api/chat-sessions/{chat_session.pk}/messages/{new_reply['message_id']}/versions/")
    assert [v["message_id"] for v in versions.json()["versions"]] == [old_reply, new_reply["message_id"]]
    assert versions.json()["current"] == 1


def test_a_reply_in_the_middle_can_be_regenerated_and_what_followed_it_becomes_another_version(
    api_client, chat_session
):
    first = send(api_client, chat_session, "First question")
    send(api_client, chat_session, "Second question")

    response = api_client.post(
        f"/api/chat-sessions/{chat_session.pk}/regenerate/",
        {"message_id": first["assistant_message"]["message_id"]},
        format="json",
    )

    assert response.status_code == 201
    assert [kind for kind, _ in shown(chat_session)] == ["user", "assistant"]
    assert shown(chat_session)[0][1] == "First question"
    # Back to the first reply: its continuation (the second question) comes with it.
    api_client.post(f"/api/chat-sessions/{chat_session.pk}/messages/{first['assistant_message']['message_id']}/switch/")
    assert [content for kind, content in shown(chat_session) if kind == "user"] == [
        "First question",
        "Second question",
    ]


def test_a_user_message_cannot_be_regenerated_and_a_hidden_reply_must_be_switched_to_first(api_client, chat_session):
    first = send(api_client, chat_session, "Hello")
    api_client.post(f"/api/chat-sessions/{chat_session.pk}/regenerate/", {}, format="json")
    url = f"/api/chat-sessions/{chat_session.pk}/regenerate/"

    as_user = api_client.post(url, {"message_id": first["user_message"]["message_id"]}, format="json")
    hidden = api_client.post(url, {"message_id": first["assistant_message"]["message_id"]}, format="json")
    unknown = api_client.post(url, {"message_id": str(uuid.uuid4())}, format="json")

    assert (as_user.status_code, as_user.json()["code"]) == (400, "not_a_reply")
    assert (hidden.status_code, hidden.json()["code"]) == (400, "message_disabled")
    assert unknown.status_code == 404


def test_versions_and_switch_are_scoped_to_the_owner(api_client, other_client, staff_client, anon_client, chat_session):
    first = send(api_client, chat_session, "Mine")
    message_id = first["user_message"]["message_id"]
    versions = f"/api/chat-sessions/{chat_session.pk}/messages/{message_id}/versions/"
    switch = f"/api/chat-sessions/{chat_session.pk}/messages/{message_id}/switch/"

    assert api_client.get(versions).status_code == 200
    assert other_client.get(versions).status_code == 404
    assert staff_client.get(versions).status_code == 404
    assert anon_client.get(versions).status_code in (401, 403)
    assert other_client.post(switch).status_code == 404
    assert anon_client.post(switch).status_code in (401, 403)
    assert api_client.get(f"/api/chat-sessions/{chat_session.pk}/messages/not-a-uuid/versions/").status_code == 404
    assert api_client.post(f"/api/chat-sessions/{chat_session.pk}/messages/{uuid.uuid4()}/switch/").status_code == 404


def test_listing_versions_costs_a_constant_number_of_queries(api_client, chat_session, django_assert_max_num_queries):
    first = send(api_client, chat_session, "Hello")
    for _ in range(5):
        api_client.post(f"/api/chat-sessions/{chat_session.pk}/regenerate/", {}, format="json")
    reply_id = first["assistant_message"]["message_id"]

    # session, user, the chat with chatbot and model, the message, its siblings with their model
    with django_assert_max_num_queries(5):
        response = api_client.get(f"/api/chat-sessions/{chat_session.pk}/messages/{reply_id}/versions/")
    assert len(response.json()["versions"]) == 6


def test_render_markdown_answers_exactly_what_a_saved_reply_shows(api_client, anon_client):
    text = "## Hi\n\n```python\nprint(1)\n```\n\n<img src=x onerror=alert(1)> [x](javascript:alert(1))"

    response = api_client.post("/api/chat-sessions/render-markdown/", {"content": text}, format="json")

    assert response.status_code == 200
    html = response.json()["content_html"]
    assert html == message_html(text)
    assert '<code class="language-python"><span class="nb">print</span>' in html
    # The markup is inert text: no element, no attribute, no javascript: link.
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert 'href="javascript' not in html
    too_long = api_client.post("/api/chat-sessions/render-markdown/", {"content": "x" * 200_001}, format="json")
    assert too_long.status_code == 400
    assert anon_client.post("/api/chat-sessions/render-markdown/", {"content": "x"}, format="json").status_code in (
        401,
        403,
    )


def test_pinning_keeps_a_chat_in_place_and_shows_in_the_api(api_client, chat_session):
    before = chat_session.updated_at

    response = api_client.patch(f"/api/chat-sessions/{chat_session.pk}/", {"pinned": True}, format="json")

    assert response.status_code == 200
    assert response.json()["pinned"] is True
    chat_session.refresh_from_db()
    assert chat_session.pinned is True
    assert chat_session.updated_at == before


def test_a_failed_reply_is_no_version_to_switch_to(chat_session, user):
    question = ChatMessage.objects.create(session=chat_session, message_type="user", content="Hi")
    failed = ChatMessage.objects.create(
        session=chat_session, message_type="assistant", status="failed", disabled=True,
        parent_message_id=question.message_id,
    )  # fmt: skip

    with pytest.raises(services.InvalidInput):
        services.version_switch(session=chat_session, message_id=failed.message_id)


@pytest.mark.parametrize(
    ("content", "title"),
    [
        ("Here are **hints** for you:\n\n```python\nprint(1)\n```", "Here are hints for you:"),
        ("## Plan *a* trip to [Lisbon](https://example.com)", "Plan a trip to Lisbon"),
        ("hints for you: ```python print(1)", "hints for you: print(1)"),
        ("Use `sorted()` on the list", "Use sorted() on the list"),
    ],
)
def test_automatic_titles_carry_no_markdown(content, title):
    assert markdown_plain(content) == title
    assert title_from_words(content) == title


def test_the_chat_list_puts_pinned_chats_first(client, user, chatbot, ai_model):
    ChatSessionFactory(user=user, chatbot=chatbot, ai_model=ai_model, title="Recent")
    pinned = ChatSessionFactory(user=user, chatbot=chatbot, ai_model=ai_model, title="Kept", pinned=True)
    client.force_login(user)

    body = client.get("/chat/").content.decode()

    assert body.index("Pinned") < body.index(">Kept<") < body.index("Today") < body.index(">Recent<")
    assert f'action="/chat/{pinned.pk}/pin/"' in body
