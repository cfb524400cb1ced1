import pytest
from django.test import Client

from chatbots.models import AIModel
from chatbots.tests.factories import AIModelFactory, ChatbotFactory
from sessions_app.models import ChatMessage, ChatSession
from sessions_app.tests.factories import ChatMessageFactory, ChatSessionFactory

pytestmark = pytest.mark.django_db

XSS = "<script>alert(1)</script>"


@pytest.fixture
def owner_client(client, user):
    client.force_login(user)
    return client


def _body(response) -> str:
    return response.content.decode()


def _exchange(session, user_text="Hello there", reply_text="Hi! How can I help?"):
    question = ChatMessageFactory(session=session, content=user_text)
    answer = ChatMessageFactory(session=session, message_type=ChatMessage.Type.ASSISTANT, content=reply_text)
    return question, answer


def test_chat_pages_redirect_anonymous_users_to_login(client, chat_session):
    for url in ["/chat/", f"/chat/{chat_session.pk}/", f"/chat/{chat_session.pk}/delete/"]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.url.startswith("/accounts/login/?next=/chat/"), url
    response = client.post(f"/chat/{chat_session.pk}/send/", {"content": "Hello"})
    assert response.status_code == 302
    assert not ChatMessage.objects.exists()


def test_root_redirects_to_the_chat_list(owner_client):
    response = owner_client.get("/")

    assert response.status_code == 302
    assert response.url == "/chat/"


def test_chat_list_shows_only_the_users_own_sessions(owner_client, user, other_user, chatbot, ai_model):
    ChatSessionFactory(user=user, chatbot=chatbot, ai_model=ai_model, title="My own chat")
    ChatSessionFactory(user=other_user, chatbot=chatbot, ai_model=ai_model, title="Somebody else's chat")

    body = _body(owner_client.get("/chat/"))

    assert "My own chat" in body
    assert "Somebody else" not in body


def test_chat_list_is_newest_first(owner_client, user, chatbot, ai_model):
    older = ChatSessionFactory(user=user, chatbot=chatbot, ai_model=ai_model, title="Older chat")
    ChatSessionFactory(user=user, chatbot=chatbot, ai_model=ai_model, title="Newer chat")
    older.save()  # touching it makes it the most recent

    body = _body(owner_client.get("/chat/"))

    assert body.index("Older chat") < body.index("Newer chat")


def test_new_chat_form_offers_active_chatbots_and_models_and_marks_free_ones(owner_client, chatbot, ai_model):
    AIModelFactory(name="Tiny Llama", is_free=True)
    AIModelFactory(name="Retired Model", is_active=False)
    ChatbotFactory(name="Retired Bot", is_active=False)

    body = _body(owner_client.get("/chat/"))

    assert "General Assistant" in body
    assert "GPT-4" in body
    assert "Tiny Llama (free)" in body
    assert "Retired" not in body


def test_creating_a_chat_via_the_form(owner_client, user, chatbot, ai_model):
    response = owner_client.post(
        "/chat/new/", {"chatbot": chatbot.pk, "ai_model": ai_model.pk, "title": "Trip planning"}
    )

    session = ChatSession.objects.get()
    assert response.status_code == 302
    assert response.url == f"/chat/{session.pk}/"
    assert (session.user, session.chatbot, session.ai_model) == (user, chatbot, ai_model)
    assert session.title == "Trip planning"


def test_creating_a_chat_with_a_mismatched_model_shows_the_error(owner_client, chatbot):
    image_model = AIModelFactory(name="Painter", model_type="image")

    response = owner_client.post("/chat/new/", {"chatbot": chatbot.pk, "ai_model": image_model.pk, "title": ""})

    assert response.status_code == 400
    assert "needs a text model" in _body(response)
    assert not ChatSession.objects.exists()


def test_creating_a_chat_with_an_unknown_chatbot_is_refused(owner_client, ai_model):
    response = owner_client.post("/chat/new/", {"chatbot": 999, "ai_model": ai_model.pk})

    assert response.status_code == 400
    assert not ChatSession.objects.exists()


def test_conversation_shows_messages_oldest_first(owner_client, chat_session):
    _exchange(chat_session, "First question", "First answer")
    _exchange(chat_session, "Second question", "Second answer")

    body = _body(owner_client.get(f"/chat/{chat_session.pk}/"))

    positions = [body.index(text) for text in ["First question", "First answer", "Second question", "Second answer"]]
    assert positions == sorted(positions)


def test_conversation_keeps_line_breaks(owner_client, chat_session):
    ChatMessageFactory(session=chat_session, content="line one\nline two")

    # As typed, newline and all: the page shows it with white-space: pre-wrap (test_browser_chat checks the look).
    body = _body(owner_client.get(f"/chat/{chat_session.pk}/"))
    assert '<div class="message-body plain">line one\nline two</div>' in body


def test_sending_a_message_via_the_form_creates_it_and_the_demo_reply(owner_client, chat_session):
    response = owner_client.post(f"/chat/{chat_session.pk}/send/", {"content": "What is the capital\r\nof France?"})

    question, reply = chat_session.messages.order_by("created_at", "id")
    assert (question.message_type, question.content) == ("user", "What is the capital\nof France?")
    assert reply.message_type == "assistant"
    assert reply.status == "complete"
    assert "Demo reply" in reply.content
    assert response.status_code == 302
    assert response.url == f"/chat/{chat_session.pk}/#m-{reply.message_id}"
    body = _body(owner_client.get(response.url))
    assert "What is the capital\nof France?" in body
    assert "Demo reply" in body


def test_sending_a_blank_message_shows_the_error(owner_client, chat_session):
    response = owner_client.post(f"/chat/{chat_session.pk}/send/", {"content": "   \n "})

    assert response.status_code == 400
    assert "The message is empty." in _body(response)
    assert not chat_session.messages.exists()


def test_a_refused_send_shows_the_error_and_keeps_the_typed_text(owner_client, chat_session, settings):
    settings.REQUIRE_VERIFIED = True

    response = owner_client.post(f"/chat/{chat_session.pk}/send/", {"content": "Please keep this text"})

    body = _body(response)
    assert response.status_code == 403
    assert "Verify your email address before sending messages." in body
    assert 'href="/account/"' in body
    assert 'id="id_content">\nPlease keep this text</textarea>' in body
    assert not chat_session.messages.exists()


def test_an_upstream_error_shows_inline_and_offers_regenerate(owner_client, chat_session, upstream, settings):
    settings.AI_MAX_RETRIES = 0
    AIModel.objects.filter(pk=chat_session.ai_model_id).update(provider="openai")
    upstream.enqueue_status(500)

    response = owner_client.post(f"/chat/{chat_session.pk}/send/", {"content": "Are you there?"})

    body = _body(response)
    assert response.status_code == 502
    # What to do, and no internal address of the AI provider.
    assert "The AI model could not answer this time." in body
    assert "127.0.0.1" not in body
    assert "Your message is kept in the chat: press Retry to try again." in body
    assert body.count('class="error-box"') == 1
    # The message is saved in the chat, so the box is emptied rather than inviting a duplicate send.
    active = chat_session.messages.filter(disabled=False)
    assert list(active.values_list("message_type", "content")) == [("user", "Are you there?")]
    assert 'id="id_content">\n</textarea>' in body


def test_a_quota_error_shows_inline_with_its_headers(owner_client, chat_session, default_tier):
    default_tier.hourly_max_messages = 1
    default_tier.save()
    first = owner_client.post(f"/chat/{chat_session.pk}/send/", {"content": "The first message"})

    response = owner_client.post(f"/chat/{chat_session.pk}/send/", {"content": "One more"})

    body = _body(response)
    assert first.status_code == 302
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 3600
    assert "You have reached a usage limit (hourly max messages: 1 of 1). It resets at " in body
    assert "Your limits and when they reset are on your account page." in body
    assert 'href="/account/"' in body
    assert 'href="/pricing/">see the plans</a>' in body
    assert 'id="id_content">\nOne more</textarea>' in body
    # The refused message was not saved: only the first one is in the chat.
    assert list(chat_session.messages.filter(message_type="user").values_list("content", flat=True)) == [
        "The first message"
    ]


def test_regenerate_replaces_the_last_reply(owner_client, chat_session):
    _, answer = _exchange(chat_session, "Tell me a joke", "Old reply")

    response = owner_client.post(f"/chat/{chat_session.pk}/regenerate/")

    answer.refresh_from_db()
    new_reply = chat_session.messages.get(disabled=False, message_type="assistant")
    assert answer.disabled
    assert "Demo reply" in new_reply.content
    assert response.url == f"/chat/{chat_session.pk}/#m-{new_reply.message_id}"


def test_regenerate_with_nothing_to_answer_shows_the_error(owner_client, chat_session):
    response = owner_client.post(f"/chat/{chat_session.pk}/regenerate/")

    assert response.status_code == 400
    assert "There is no message to answer." in _body(response)
    assert "press Regenerate" not in _body(response)


def test_disabled_messages_are_other_versions_and_not_shown(owner_client, chat_session):
    _, answer = _exchange(chat_session, "Question", "An answer that was replaced")
    answer.disabled = True
    answer.save()

    body = _body(owner_client.get(f"/chat/{chat_session.pk}/"))

    assert "An answer that was replaced" not in body
    assert "Question" in body
    # The chat ends on a question with no reply: Retry is offered by the composer.
    assert "This message has no reply yet." in body
    assert ">Retry</button>" in body


def test_rename_changes_the_title_and_stops_auto_titles(owner_client, chat_session):
    response = owner_client.post(f"/chat/{chat_session.pk}/rename/", {"title": "  Holiday ideas  "})

    chat_session.refresh_from_db()
    assert response.status_code == 302
    assert chat_session.title == "Holiday ideas"
    assert not chat_session.auto_generate_title
    assert "<h1>Holiday ideas</h1>" in _body(owner_client.get(response.url))


def test_rename_to_a_blank_title_shows_the_error(owner_client, chat_session):
    response = owner_client.post(f"/chat/{chat_session.pk}/rename/", {"title": "   "})

    chat_session.refresh_from_db()
    assert response.status_code == 400
    assert "This field is required." in _body(response)
    assert chat_session.title == "New Chat"


def test_delete_asks_for_confirmation_then_deletes(owner_client, chat_session):
    _exchange(chat_session)

    confirm = owner_client.get(f"/chat/{chat_session.pk}/delete/")
    assert confirm.status_code == 200
    assert "Delete this chat?" in _body(confirm)
    assert ChatSession.objects.filter(pk=chat_session.pk).exists()

    response = owner_client.post(f"/chat/{chat_session.pk}/delete/", follow=True)
    assert response.redirect_chain == [("/chat/", 302)]
    assert "Deleted the chat" in _body(response)
    assert not ChatSession.objects.filter(pk=chat_session.pk).exists()
    assert not ChatMessage.objects.exists()


def test_editing_a_message_disables_later_ones_and_answers_again(owner_client, chat_session):
    question, answer = _exchange(chat_session, "Typo questoin", "Answer to the typo")

    page = owner_client.get(f"/chat/{chat_session.pk}/messages/{question.message_id}/edit/")
    assert page.status_code == 200
    assert 'id="id_content">\nTypo questoin</textarea>' in _body(page)

    response = owner_client.post(
        f"/chat/{chat_session.pk}/messages/{question.message_id}/edit/", {"content": "Fixed question"}
    )

    question.refresh_from_db()
    answer.refresh_from_db()
    assert response.status_code == 302
    assert question.content == "Fixed question"
    assert question.edited_at is not None
    assert answer.disabled
    assert chat_session.messages.filter(disabled=False, message_type="assistant").count() == 1


def test_assistant_messages_cannot_be_edited(owner_client, chat_session):
    _, answer = _exchange(chat_session)

    response = owner_client.get(f"/chat/{chat_session.pk}/messages/{answer.message_id}/edit/")

    assert response.status_code == 404


def test_other_users_conversation_is_404(client, other_user, chat_session):
    question, _ = _exchange(chat_session, "Private words")
    client.force_login(other_user)
    base = f"/chat/{chat_session.pk}"

    assert client.get(f"{base}/").status_code == 404
    assert client.get(f"{base}/delete/").status_code == 404
    assert client.get(f"{base}/messages/{question.message_id}/edit/").status_code == 404
    assert client.post(f"{base}/send/", {"content": "Intrusion"}).status_code == 404
    assert client.post(f"{base}/regenerate/").status_code == 404
    assert client.post(f"{base}/rename/", {"title": "Hijacked"}).status_code == 404
    assert client.post(f"{base}/delete/").status_code == 404
    chat_session.refresh_from_db()
    assert chat_session.title == "New Chat"
    assert chat_session.messages.count() == 2


def test_staff_cannot_open_another_users_conversation_here_either(client, staff, chat_session):
    client.force_login(staff)

    assert client.get(f"/chat/{chat_session.pk}/").status_code == 404


def test_state_changes_need_post(owner_client, chat_session):
    for action in ["send", "regenerate", "rename"]:
        assert owner_client.get(f"/chat/{chat_session.pk}/{action}/").status_code == 405
    assert owner_client.get("/chat/new/").status_code == 405


def test_every_form_on_the_chat_pages_carries_a_csrf_token(owner_client, chat_session):
    question, _ = _exchange(chat_session)
    for url in [
        "/chat/",
        f"/chat/{chat_session.pk}/",
        f"/chat/{chat_session.pk}/delete/",
        f"/chat/{chat_session.pk}/messages/{question.message_id}/edit/",
    ]:
        body = _body(owner_client.get(url))
        assert body.count('method="post"') == body.count('name="csrfmiddlewaretoken"'), url


def test_the_send_form_works_with_csrf_checks_on(user, chat_session):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get(f"/chat/{chat_session.pk}/")
    token = client.cookies["csrftoken"].value

    refused = client.post(f"/chat/{chat_session.pk}/send/", {"content": "No token"})
    accepted = client.post(f"/chat/{chat_session.pk}/send/", {"content": "With token", "csrfmiddlewaretoken": token})

    assert refused.status_code == 403
    assert accepted.status_code == 302
    assert list(chat_session.messages.filter(message_type="user").values_list("content", flat=True)) == ["With token"]


def test_image_replies_are_shown_as_images(owner_client, user):
    painter = ChatbotFactory(name="Painter", chatbot_type="image")
    session = ChatSessionFactory(user=user, chatbot=painter, ai_model=AIModelFactory(model_type="image"))

    response = owner_client.post(f"/chat/{session.pk}/send/", {"content": "a red bicycle"})

    reply = session.messages.get(message_type="assistant")
    assert reply.image_url.endswith(".png")
    body = _body(owner_client.get(response.url))
    assert f'<img src="{reply.image_url}" alt="Image generated for: a red bicycle"' in body
    assert "Describe the image" in body


def test_search_finds_chats_by_title_and_message(owner_client, user, other_user, chatbot, ai_model):
    by_title = ChatSessionFactory(user=user, chatbot=chatbot, ai_model=ai_model, title="Banana bread recipe")
    by_message = ChatSessionFactory(user=user, chatbot=chatbot, ai_model=ai_model, title="Kitchen")
    ChatMessageFactory(session=by_message, content="How ripe should a banana be? <b>asap</b>")
    ChatSessionFactory(user=user, chatbot=chatbot, ai_model=ai_model, title="Unrelated")
    ChatSessionFactory(user=other_user, chatbot=chatbot, ai_model=ai_model, title="Banana for someone else")

    body = _body(owner_client.get("/chat/", {"q": "banana"}))

    assert by_title.title in body
    assert by_message.title in body
    assert "Unrelated" not in body
    assert "someone else" not in body
    assert "<mark>banana</mark>" in body
    # User markup never comes through raw (PostgreSQL's headline drops it, the fallback escapes it).
    assert "<b>asap</b>" not in body


def test_xss_in_a_title_a_message_and_a_chatbot_name_is_escaped(owner_client, user, ai_model):
    bot = ChatbotFactory(name=f"Bot {XSS}")
    session = ChatSessionFactory(user=user, chatbot=bot, ai_model=ai_model, title=f"Title {XSS}")
    ChatMessageFactory(session=session, content=f"Message {XSS}")
    ChatMessageFactory(session=session, message_type="assistant", content=f"Reply {XSS}")
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"

    for url, expected in [
        ("/chat/", 3),  # the title, the bot in the list, the bot in the picker
        (f"/chat/{session.pk}/", 6),  # <title>, <h1>, header bot, message, reply, reply's author
        (f"/chat/{session.pk}/delete/", 2),
        ("/chat/?q=script", 3),
    ]:
        body = _body(owner_client.get(url))
        assert "<script>" not in body, url
        assert body.count(escaped) >= expected, url
    owner_client.post(f"/chat/{session.pk}/delete/")
    assert "<script>" not in _body(owner_client.get("/chat/"))


def test_chat_list_query_count(owner_client, user, chatbot, ai_model, django_assert_max_num_queries):
    ChatSessionFactory.create_batch(100, user=user, chatbot=chatbot, ai_model=ai_model)
    AIModelFactory.create_batch(5)

    # session, user, chat sessions joined to chatbot and model, chatbots, models, the demo banner
    with django_assert_max_num_queries(6):
        response = owner_client.get("/chat/")
    assert response.status_code == 200
    assert _body(response).count('class="session-title"') == 100


def test_conversation_query_count(owner_client, chat_session, django_assert_max_num_queries):
    ChatMessageFactory.create_batch(200, session=chat_session)

    # session, user, the chat session joined to chatbot and model, the chat list, messages (every
    # version) joined to their model, the models of the picker, the subscription and its usage (hint)
    with django_assert_max_num_queries(8):
        response = owner_client.get(f"/chat/{chat_session.pk}/")
    assert response.status_code == 200
    assert _body(response).count('class="message message-') == 200


def test_long_lists_are_bounded(owner_client, user, chat_session, chatbot, ai_model, monkeypatch):
    monkeypatch.setattr("sessions_app.views.SESSION_PAGE", 3)
    monkeypatch.setattr("sessions_app.views.MESSAGE_PAGE", 4)
    ChatSessionFactory.create_batch(4, user=user, chatbot=chatbot, ai_model=ai_model)
    for n in range(6):
        ChatMessageFactory(session=chat_session, content=f"Numbered message {n}")

    chat_list = _body(owner_client.get("/chat/"))
    conversation = _body(owner_client.get(f"/chat/{chat_session.pk}/"))

    assert chat_list.count('class="session-title"') == 3
    assert "Showing your 3 most recent chats." in chat_list
    assert "Numbered message 1" not in conversation
    assert all(f"Numbered message {n}" in conversation for n in range(2, 6))
    assert "Only the latest 4 messages are shown" in conversation


def test_visitors_get_the_landing_page_and_signed_in_people_their_chats(owner_client):
    response = Client().get("/")

    assert response.status_code == 200
    body = _body(response)
    assert 'href="/accounts/signup/"' in body and 'href="/accounts/login/"' in body
    assert owner_client.get("/").url == "/chat/"


def test_the_admin_is_branded_chatsite(admin_client):
    body = admin_client.get("/admin/").content.decode()

    assert "chatsite administration" in body
    assert "Django administration" not in body


def test_a_version_switch_from_the_page_redirects_to_that_message(owner_client, chat_session):
    question, answer = _exchange(chat_session, "Question", "First answer")
    newer = ChatMessageFactory(
        session=chat_session, message_type="assistant", content="Second answer", parent_message_id=question.message_id
    )
    answer.parent_message_id = question.message_id
    answer.disabled = True
    answer.save()

    body = _body(owner_client.get(f"/chat/{chat_session.pk}/"))
    assert "Second answer" in body and "First answer" not in body
    assert '<span class="version-count">2/2</span>' in body

    response = owner_client.post(f"/chat/{chat_session.pk}/messages/{answer.message_id}/switch/")

    assert response.url == f"/chat/{chat_session.pk}/#m-{answer.message_id}"
    body = _body(owner_client.get(f"/chat/{chat_session.pk}/"))
    assert "First answer" in body and "Second answer" not in body
    assert '<span class="version-count">1/2</span>' in body
    newer.refresh_from_db()
    assert newer.disabled


def test_messages_from_before_versions_show_no_version_switch(owner_client, chat_session):
    # Messages without parent links (the migration links old chats; this is what it would miss).
    for n in range(3):
        ChatMessageFactory(session=chat_session, content=f"Old question {n}", parent_message_id=None)
        ChatMessageFactory(session=chat_session, message_type="assistant", parent_message_id=None)

    body = _body(owner_client.get(f"/chat/{chat_session.pk}/"))

    assert "Old question 2" in body
    assert "version-count" not in body
