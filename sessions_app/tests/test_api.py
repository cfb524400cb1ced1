import json
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework import serializers

from billing.models import ChatSessionUsage, UsageEvent
from chatbots.tests.factories import AIModelFactory, ChatbotFactory
from chatsite.tests.shapes import assert_message_shape, assert_session_shape
from sessions_app.models import ChatMessage, ChatSession
from sessions_app.serializers import ChatMessageSerializer
from sessions_app.tests.factories import ChatMessageFactory, ChatSessionFactory


def send(client, session, text="Hello, how are you?"):
    return client.post(f"/api/chat-sessions/{session.pk}/send/", {"message": text}, format="json")


# Create, read, update, delete


def test_create_session_by_model_id_string(api_client, chatbot, ai_model):
    response = api_client.post(
        "/api/chat-sessions/",
        {"chatbot_id": chatbot.pk, "ai_model_id": "openai/gpt-4", "title": "New Chat"},
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    assert_session_shape(body)
    assert body["title"] == "New Chat"
    assert body["auto_generate_title"] is True
    assert body["is_active"] is True
    assert body["chatbot"]["id"] == chatbot.pk
    assert body["ai_model"]["model_id"] == "openai/gpt-4"
    assert ChatSession.objects.get(pk=body["id"]).user.email == "owner@example.com"


def test_create_session_by_model_primary_key_without_title(api_client, chatbot, ai_model):
    response = api_client.post(
        "/api/chat-sessions/", {"chatbot_id": chatbot.pk, "ai_model_id": ai_model.pk}, format="json"
    )

    assert response.status_code == 201
    assert response.json()["title"] == "New Chat"


def test_list_sessions_newest_activity_first_with_total(api_client, user, other_user):
    older = ChatSessionFactory(user=user, title="older")
    newer = ChatSessionFactory(user=user, title="newer")
    ChatSessionFactory(user=other_user, title="not mine")
    ChatSession.objects.filter(pk=older.pk).update(updated_at=newer.updated_at.replace(year=2020))

    response = api_client.get("/api/chat-sessions/")

    assert response.status_code == 200
    assert [s["title"] for s in response.json()] == ["newer", "older"]
    assert response["X-Total-Count"] == "2"
    assert_session_shape(response.json()[0])


def test_list_sessions_paginates_with_limit_and_offset(api_client, user):
    ChatSessionFactory.create_batch(5, user=user)

    first = api_client.get("/api/chat-sessions/?limit=2")
    last = api_client.get("/api/chat-sessions/?limit=2&offset=4")
    beyond = api_client.get("/api/chat-sessions/?offset=10")

    assert len(first.json()) == 2
    assert first["X-Total-Count"] == "5"
    assert len(last.json()) == 1
    assert last["X-Total-Count"] == "5"
    assert beyond.json() == []
    assert beyond["X-Total-Count"] == "5"


def test_listing_100_sessions_costs_a_constant_number_of_queries(api_client, user, django_assert_max_num_queries):
    ChatSessionFactory.create_batch(101, user=user, chatbot=ChatbotFactory(), ai_model=AIModelFactory())

    # Queries: the session, the user, the page joined to chatbot and model with the total as a subquery.
    with django_assert_max_num_queries(3):
        response = api_client.get("/api/chat-sessions/?limit=100")
    assert len(response.json()) == 100
    assert response["X-Total-Count"] == "101"


def test_listing_no_sessions_costs_three_queries(api_client, django_assert_max_num_queries):
    # Queries: the session, the user, the empty first page (so the total is 0).
    with django_assert_max_num_queries(3):
        response = api_client.get("/api/chat-sessions/")
    assert response.json() == []
    assert response["X-Total-Count"] == "0"


def test_a_page_past_the_end_still_counts_every_session(api_client, user, other_user, django_assert_max_num_queries):
    ChatSessionFactory.create_batch(3, user=user)
    ChatSessionFactory(user=other_user)

    # Queries: the session, the user, the empty page, then a count of its own (an empty page has no total).
    with django_assert_max_num_queries(4):
        response = api_client.get("/api/chat-sessions/?limit=2&offset=3")
    far = api_client.get("/api/chat-sessions/?offset=1000")
    last = api_client.get("/api/chat-sessions/?limit=2&offset=2")

    assert response.json() == []
    assert response["X-Total-Count"] == "3"
    assert far.json() == []
    assert far["X-Total-Count"] == "3"
    assert len(last.json()) == 1
    assert last["X-Total-Count"] == "3"


def test_get_session(api_client, chat_session):
    response = api_client.get(f"/api/chat-sessions/{chat_session.pk}/")

    assert response.status_code == 200
    assert_session_shape(response.json())
    assert response.json()["id"] == chat_session.pk


def test_put_replaces_title(api_client, chat_session):
    response = api_client.put(f"/api/chat-sessions/{chat_session.pk}/", {"title": "Updated Chat Title"}, format="json")

    assert response.status_code == 200
    assert response.json()["title"] == "Updated Chat Title"
    assert_session_shape(response.json())
    chat_session.refresh_from_db()
    assert chat_session.title == "Updated Chat Title"


def test_patch_changes_only_given_fields(api_client, chat_session):
    response = api_client.patch(f"/api/chat-sessions/{chat_session.pk}/", {"auto_generate_title": False}, format="json")

    assert response.status_code == 200
    assert response.json()["auto_generate_title"] is False
    assert response.json()["title"] == "New Chat"


def test_patch_switches_model_of_the_same_type(api_client, chat_session):
    other = AIModelFactory(model_id="vendor/other")

    response = api_client.patch(
        f"/api/chat-sessions/{chat_session.pk}/", {"ai_model_id": "vendor/other"}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["ai_model"]["id"] == other.pk


def test_delete_session_removes_messages_and_keeps_usage(api_client, chat_session):
    assert send(api_client, chat_session).status_code == 201
    events = UsageEvent.objects.filter(session=chat_session).count()
    assert events == 1

    response = api_client.delete(f"/api/chat-sessions/{chat_session.pk}/")

    assert response.status_code == 200
    assert response.json() == {"success": True}
    assert not ChatSession.objects.filter(pk=chat_session.pk).exists()
    assert ChatMessage.objects.count() == 0
    event = UsageEvent.objects.get()
    assert event.session_id is None
    assert event.state == UsageEvent.State.SETTLED
    assert event.billed_tokens > 0
    assert ChatSessionUsage.objects.get().session_id is None


# Messages, send, regenerate, edit


def test_send_returns_both_messages_and_saves_them(api_client, chat_session, ai_model):
    response = send(api_client, chat_session)

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"user_message", "assistant_message"}
    assert_message_shape(body["user_message"])
    assert_message_shape(body["assistant_message"])
    assert body["user_message"]["message_type"] == "user"
    assert body["user_message"]["content"] == "Hello, how are you?"
    assert body["user_message"]["edited_at"] is None
    assert body["user_message"]["disabled"] is False
    assert body["assistant_message"]["message_type"] == "assistant"
    assert body["assistant_message"]["status"] == "complete"
    assert body["assistant_message"]["ai_model"] == "openai/gpt-4"
    assert "Hello, how are you?" in body["assistant_message"]["content"]
    assert body["assistant_message"]["tokens_count"] > 0
    uuid.UUID(body["user_message"]["message_id"])
    assert ChatMessage.objects.filter(session=chat_session).count() == 2


def test_send_records_settled_usage(api_client, chat_session, user):
    send(api_client, chat_session)

    event = UsageEvent.objects.get()
    assert event.user == user
    assert event.state == UsageEvent.State.SETTLED
    assert event.prompt_tokens > 0
    assert event.completion_tokens > 0
    assert event.billed_tokens == event.prompt_tokens + event.completion_tokens
    usage = ChatSessionUsage.objects.get(session=chat_session)
    assert usage.tokens_count == event.billed_tokens
    assert usage.free_model_tokens_count == 0


# Transaction control is not counted: outside tests each transaction is BEGIN/COMMIT, and
# tests wrap everything in one transaction, which turns every block into a SAVEPOINT.
TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")


def data_statements(captured: CaptureQueriesContext) -> list[str]:
    return [query["sql"] for query in captured.captured_queries if not query["sql"].startswith(TRANSACTION_CONTROL)]


def test_the_first_send_of_a_chat_costs_at_most_15_queries(api_client, chat_session):
    # Queries: the session, the user, the chat with chatbot and model; the user message, the history,
    # the empty reply; the locked subscription, the quota sums, the ledger row, its buckets; the reply
    # written, the usage settled, its buckets, the chat's usage; the chat touched and named.
    with CaptureQueriesContext(connection) as captured:
        response = send(api_client, chat_session, "Plan a trip")

    assert response.status_code == 201
    statements = data_statements(captured)
    assert len(statements) <= 15, "\n".join(statements)
    chat_session.refresh_from_db()
    assert chat_session.title == "Plan a trip"


def test_a_send_in_a_chat_with_history_costs_at_most_15_queries(api_client, chat_session):
    for text in ("first", "second", "third"):
        send(api_client, chat_session, text)

    # Queries: as the first send, but the chat is only touched (it has its title).
    with CaptureQueriesContext(connection) as captured:
        response = send(api_client, chat_session, "fourth")

    assert response.status_code == 201
    statements = data_statements(captured)
    assert len(statements) <= 15, "\n".join(statements)


def test_first_exchange_names_the_chat_from_its_first_words(api_client, chat_session):
    send(api_client, chat_session, "Plan a three day trip to Lisbon with a small budget please")

    chat_session.refresh_from_db()
    assert chat_session.title == "Plan a three day trip to Lisbon with…"


def test_image_chatbot_draws_and_stores_a_png(api_client, user, settings):
    session = ChatSessionFactory(
        user=user, chatbot=ChatbotFactory(chatbot_type="image"), ai_model=AIModelFactory(model_type="image")
    )

    response = send(api_client, session, "a lighthouse at dusk")

    assert response.status_code == 201
    url = response.json()["assistant_message"]["image_url"]
    assert url.startswith("/media/generated/") and url.endswith(".png")
    stored = settings.MEDIA_ROOT / url.removeprefix("/media/")
    assert stored.read_bytes().startswith(b"\x89PNG")
    assert UsageEvent.objects.get().kind == UsageEvent.Kind.IMAGE


def test_messages_are_listed_oldest_first(api_client, chat_session):
    send(api_client, chat_session, "first")
    send(api_client, chat_session, "second")

    response = api_client.get(f"/api/chat-sessions/{chat_session.pk}/messages/")

    assert response.status_code == 200
    messages = response.json()["messages"]
    assert [m["message_type"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert [messages[0]["content"], messages[2]["content"]] == ["first", "second"]
    for message in messages:
        assert_message_shape(message)


def test_listing_500_messages_costs_a_constant_number_of_queries(
    api_client, chat_session, django_assert_max_num_queries
):
    ChatMessageFactory.create_batch(500, session=chat_session)

    # Queries: the session, the user, the chat left-joined to its messages and their model.
    with django_assert_max_num_queries(3):
        response = api_client.get(f"/api/chat-sessions/{chat_session.pk}/messages/")
    assert len(response.json()["messages"]) == 500


def test_listing_the_messages_of_an_empty_chat_costs_three_queries(
    api_client, chat_session, django_assert_max_num_queries
):
    # Queries: the session, the user, the chat left-joined to its (no) messages.
    with django_assert_max_num_queries(3):
        response = api_client.get(f"/api/chat-sessions/{chat_session.pk}/messages/")

    assert response.status_code == 200
    assert response.json() == {"messages": []}


def test_listed_messages_match_the_saved_ones_with_their_models(api_client, chat_session):
    send(api_client, chat_session, "first")
    ChatMessageFactory(session=chat_session, ai_model=AIModelFactory(model_id="vendor/other"))
    ChatMessageFactory(session=chat_session, ai_model=None)
    expected = ChatMessageSerializer(ChatMessage.objects.filter(session=chat_session), many=True).data

    response = api_client.get(f"/api/chat-sessions/{chat_session.pk}/messages/")

    assert response.json()["messages"] == json.loads(json.dumps(expected))
    assert [m["ai_model"] for m in response.json()["messages"]] == [None, "openai/gpt-4", "vendor/other", None]


def test_a_message_is_shown_exactly_as_drfs_model_serializer_shows_it(chat_session, settings):
    settings.TIME_ZONE = "Europe/Berlin"  # not UTC: the times keep their offset as DRF writes them
    messages = [
        ChatMessageFactory(session=chat_session, ai_model=None, parent_message_id=None),
        ChatMessageFactory(
            session=chat_session,
            message_type=ChatMessage.Type.ASSISTANT,
            ai_model=AIModelFactory(model_id="vendor/other"),
            status=ChatMessage.Status.PARTIAL,
            image_url="/media/generated/x.png",
            tokens_count=0,
        ),
        ChatMessageFactory(session=chat_session, edited_at=timezone.now(), disabled=True, content="<b>&</b> ünï"),
    ]

    for message in ChatMessage.objects.filter(pk__in=[m.pk for m in messages]).order_by("pk"):
        serializer = ChatMessageSerializer(message)
        drf = serializers.ModelSerializer.to_representation(serializer, message)  # built from the fields
        assert serializer.data == drf
        assert list(serializer.data) == list(drf)  # the same keys in the same order


@pytest.mark.parametrize("session_id", ["0", "999999", "99999999999999999999999", "abc", "1.0", "-1"])
def test_messages_of_a_chat_that_does_not_exist_are_404(api_client, session_id):
    response = api_client.get(f"/api/chat-sessions/{session_id}/messages/")

    assert response.status_code == 404


def test_messages_of_another_users_chat_are_404(api_client, other_user):
    theirs = ChatSessionFactory(user=other_user)
    ChatMessageFactory(session=theirs)

    response = api_client.get(f"/api/chat-sessions/{theirs.pk}/messages/")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_regenerate_disables_the_last_reply_and_adds_a_new_one(api_client, chat_session):
    first_reply = send(api_client, chat_session).json()["assistant_message"]

    response = api_client.post(f"/api/chat-sessions/{chat_session.pk}/regenerate/")

    assert response.status_code == 201
    new_reply = response.json()["assistant_message"]
    assert new_reply["message_id"] != first_reply["message_id"]
    assert ChatMessage.objects.get(message_id=first_reply["message_id"]).disabled is True
    assert UsageEvent.objects.filter(state=UsageEvent.State.SETTLED).count() == 2


def test_edit_disables_every_later_message_and_answers_again(api_client, chat_session):
    first = send(api_client, chat_session, "first").json()
    second = send(api_client, chat_session, "second").json()

    response = api_client.post(
        f"/api/chat-sessions/{chat_session.pk}/messages/{first['user_message']['message_id']}/edit/",
        {"content": "first, edited"},
        format="json",
    )

    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["disabled_message_ids"] == [
        first["assistant_message"]["message_id"],
        second["user_message"]["message_id"],
        second["assistant_message"]["message_id"],
    ]
    assert "first, edited" in body["assistant_message"]["content"]
    edited = ChatMessage.objects.get(message_id=first["user_message"]["message_id"])
    assert edited.content == "first, edited"
    assert edited.edited_at is not None
    assert edited.disabled is False
    active = ChatMessage.objects.filter(session=chat_session, disabled=False).order_by("created_at", "id")
    assert active.first().content == "first, edited"
    assert active.count() == 2


def test_edit_without_regenerating_answers_nothing(api_client, chat_session):
    first = send(api_client, chat_session, "first").json()

    response = api_client.post(
        f"/api/chat-sessions/{chat_session.pk}/messages/{first['user_message']['message_id']}/edit/",
        {"content": "changed", "regenerate": False},
        format="json",
    )

    assert response.status_code == 200
    assert response.json()["assistant_message"] is None
    assert response.json()["disabled_message_ids"] == [first["assistant_message"]["message_id"]]
    assert UsageEvent.objects.count() == 1


def test_update_title_stops_automatic_titles(api_client, chat_session):
    response = api_client.post(
        f"/api/chat-sessions/{chat_session.pk}/update-title/", {"title": "New Chat Title"}, format="json"
    )

    assert response.status_code == 200
    assert response.json() == {"success": True, "title": "New Chat Title"}
    chat_session.refresh_from_db()
    assert chat_session.auto_generate_title is False


# Search, export, cleanup


def test_search_finds_a_word_in_messages_with_a_highlighted_snippet(api_client, chat_session, user):
    ChatMessageFactory(session=chat_session, content="We talked about <b>photosynthesis</b> in plants.")
    ChatMessageFactory(session=ChatSessionFactory(user=user), content="Nothing relevant here.")

    response = api_client.get("/api/chat-sessions/search/?q=photosynthesis")

    assert response.status_code == 200
    results = response.json()
    assert [r["id"] for r in results] == [chat_session.pk]
    snippet = results[0]["snippet"]
    assert "<mark>photosynthesis</mark>" in snippet
    # User markup never comes through raw (PostgreSQL's headline drops it, the fallback escapes it).
    assert "<b>" not in snippet


def test_search_matches_titles(api_client, user):
    session = ChatSessionFactory(user=user, title="Tax return questions")

    results = api_client.get("/api/chat-sessions/search/?q=tax").json()

    assert [r["id"] for r in results] == [session.pk]
    assert "<mark>Tax</mark>" in results[0]["snippet"]


def test_search_never_shows_other_users_chats(api_client, other_user):
    ChatMessageFactory(session=ChatSessionFactory(user=other_user, title="secret"), content="secret plans")

    assert api_client.get("/api/chat-sessions/search/?q=secret").json() == []


def test_search_respects_limit(api_client, user):
    for _ in range(3):
        ChatMessageFactory(session=ChatSessionFactory(user=user), content="common words about gardening")

    assert len(api_client.get("/api/chat-sessions/search/?q=gardening&limit=2").json()) == 2


def test_search_treats_query_syntax_as_text(api_client, chat_session):
    for query in ["a & b | !c", "'quoted", "100%_", ":*", "(", "\\"]:
        response = api_client.get("/api/chat-sessions/search/", {"q": query})
        assert response.status_code == 200, query


@pytest.mark.skipif(connection.vendor != "postgresql", reason="full-text search needs PostgreSQL")
def test_search_on_postgres_uses_stemming_and_the_gin_index(api_client, chat_session):
    ChatMessageFactory(session=chat_session, content="She was running through the park")

    results = api_client.get("/api/chat-sessions/search/?q=runs").json()

    assert [r["id"] for r in results] == [chat_session.pk]
    assert "<mark>running</mark>" in results[0]["snippet"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'message_search_vector_idx'")
        assert "gin (search_vector)" in cursor.fetchone()[0]


def test_export_json_is_a_download_with_every_message(api_client, chat_session):
    send(api_client, chat_session, "export me")

    response = api_client.get(f"/api/chat-sessions/{chat_session.pk}/export/?format=json")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response["Content-Disposition"].startswith("attachment;")
    document = json.loads(response.content)
    assert document["session"]["id"] == chat_session.pk
    assert document["messages"][0]["content"] == "export me"


def test_export_markdown_has_the_conversation(api_client, chat_session):
    send(api_client, chat_session, "export me")

    response = api_client.get(f"/api/chat-sessions/{chat_session.pk}/export/?format=markdown")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/markdown")
    text = response.content.decode()
    assert text.startswith("# export me")
    assert "## You" in text and "export me" in text and "## General Assistant" in text


def test_cleanup_empty_deletes_only_my_empty_chats(api_client, user, other_user, chat_session):
    ChatMessageFactory(session=chat_session)
    ChatSessionFactory.create_batch(2, user=user)
    theirs = ChatSessionFactory(user=other_user)

    response = api_client.post("/api/chat-sessions/cleanup-empty/")

    assert response.status_code == 200
    assert response.json() == {"deleted": 2, "message": "Deleted 2 empty chats"}
    assert list(ChatSession.objects.filter(user=user)) == [chat_session]
    assert ChatSession.objects.filter(pk=theirs.pk).exists()


def test_send_to_a_chat_whose_model_was_retired_is_refused_and_saves_nothing(api_client, chat_session, ai_model):
    ai_model.is_active = False
    ai_model.save()

    response = send(api_client, chat_session)

    assert response.status_code == 400
    assert response.json()["code"] == "inactive_model"
    assert ChatMessage.objects.count() == 0
    assert UsageEvent.objects.count() == 0


def test_send_with_verification_required_refuses_unverified_users(api_client, chat_session, settings):
    settings.REQUIRE_VERIFIED = True

    response = send(api_client, chat_session)

    assert response.status_code == 403
    assert response.json()["code"] == "unverified"
    assert ChatMessage.objects.count() == 0


def test_failed_regenerate_brings_the_old_reply_back(api_client, chat_session, user, default_tier):
    first_reply = send(api_client, chat_session).json()["assistant_message"]
    # With no subscription and no default tier the reservation inside generation is refused.
    user.subscriptions.all().delete()
    default_tier.is_default = False
    default_tier.save()

    response = api_client.post(f"/api/chat-sessions/{chat_session.pk}/regenerate/")

    assert response.status_code == 403
    assert response.json()["code"] == "no_subscription"
    assert ChatMessage.objects.get(message_id=first_reply["message_id"]).disabled is False
    assert ChatMessage.objects.filter(session=chat_session).count() == 2
