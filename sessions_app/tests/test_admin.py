import pytest

from sessions_app.models import ChatMessage
from sessions_app.tests.factories import ChatMessageFactory, ChatSessionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def message(chat_session):
    return ChatMessageFactory(session=chat_session, content="word " * 100)


def test_session_changelist_add_and_change_pages_answer_200(admin_client, chat_session, message):
    assert admin_client.get("/admin/sessions_app/chatsession/").status_code == 200
    assert admin_client.get("/admin/sessions_app/chatsession/add/").status_code == 200
    assert admin_client.get(f"/admin/sessions_app/chatsession/{chat_session.pk}/change/").status_code == 200


def test_message_changelist_and_view_page_answer_200(admin_client, message):
    assert admin_client.get("/admin/sessions_app/chatmessage/").status_code == 200
    assert admin_client.get(f"/admin/sessions_app/chatmessage/{message.pk}/change/").status_code == 200


def test_messages_cannot_be_added_or_changed_in_the_admin(admin_client, message):
    assert admin_client.get("/admin/sessions_app/chatmessage/add/").status_code == 403
    response = admin_client.post(
        f"/admin/sessions_app/chatmessage/{message.pk}/change/", {"content": "rewritten", "session": message.session_id}
    )

    assert response.status_code == 403
    assert ChatMessage.objects.get(pk=message.pk).content == message.content


def test_session_page_shows_messages_read_only_and_truncated(admin_client, chat_session, message):
    response = admin_client.get(f"/admin/sessions_app/chatsession/{chat_session.pk}/change/")

    (inline,) = response.context["inline_admin_formsets"]
    assert not inline.has_add_permission
    assert not inline.has_change_permission
    assert not inline.has_delete_permission
    assert "rewritten" not in response.content.decode()
    preview = inline.opts.content_preview(message)
    assert len(preview) <= 80
    assert preview.endswith("…")
    assert preview in response.content.decode()


def test_saving_a_session_leaves_its_messages_alone(admin_client, chat_session, message):
    response = admin_client.post(
        f"/admin/sessions_app/chatsession/{chat_session.pk}/change/",
        {
            "user": str(chat_session.user_id),
            "chatbot": str(chat_session.chatbot_id),
            "ai_model": str(chat_session.ai_model_id),
            "title": "Renamed by staff",
            "auto_generate_title": "on",
            "is_active": "on",
            "messages-TOTAL_FORMS": "1",
            "messages-INITIAL_FORMS": "1",
            "messages-MIN_NUM_FORMS": "0",
            "messages-MAX_NUM_FORMS": "0",
            "messages-0-id": str(message.pk),
            "messages-0-session": str(chat_session.pk),
            "messages-0-content": "rewritten",
        },
    )

    assert response.status_code == 302
    chat_session.refresh_from_db()
    assert chat_session.title == "Renamed by staff"
    assert ChatMessage.objects.get(pk=message.pk).content == message.content


def test_session_changelist_of_50_rows_costs_a_constant_number_of_queries(
    admin_client, default_tier, django_assert_max_num_queries
):
    ChatSessionFactory.create_batch(50)

    # session, admin user, chatbots and AI models for the filters, the filtered and the full count,
    # the page of sessions joined to user, chatbot and AI model
    with django_assert_max_num_queries(7):
        response = admin_client.get("/admin/sessions_app/chatsession/")

    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 50


def test_message_changelist_of_50_rows_costs_a_constant_number_of_queries(
    admin_client, chat_session, django_assert_max_num_queries
):
    for session in ChatSessionFactory.create_batch(50):
        ChatMessageFactory(session=session)

    # session, admin user, the count (no second, unfiltered count), the page of messages joined to their session
    with django_assert_max_num_queries(4):
        response = admin_client.get("/admin/sessions_app/chatmessage/")

    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 50
