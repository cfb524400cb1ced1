"""The hot reads and inserts written as SQL once (chatsite.rows): the same instances as the ORM's, the same lock."""

import os
import uuid

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction

from billing.models import UserSubscription
from billing.selectors import subscription_current_get
from chatsite.database import conninfo
from chatsite.rows import Inserted
from sessions_app import selectors
from sessions_app.models import ChatMessage, ChatSession
from sessions_app.tests.factories import ChatMessageFactory


def _postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the SQL of chatsite.rows is PostgreSQL's; SQLite reads through the ORM")


def _fields(instance) -> dict:
    return {field.attname: getattr(instance, field.attname) for field in instance._meta.concrete_fields}


def test_a_chat_is_read_with_its_chatbot_and_model_in_one_statement_as_the_orm_reads_it(
    chat_session, django_assert_num_queries
):
    expected = ChatSession.objects.select_related("chatbot", "ai_model").get(pk=chat_session.pk)
    with django_assert_num_queries(1):
        found = selectors.session_get(user=chat_session.user, session_id=chat_session.pk)
        chatbot, ai_model = found.chatbot, found.ai_model
    assert _fields(found) == _fields(expected)
    assert _fields(chatbot) == _fields(expected.chatbot)
    assert _fields(ai_model) == _fields(expected.ai_model)
    assert found._state.adding is False and found._state.db == "default"


def test_another_users_chat_and_an_id_past_the_columns_range_are_none(chat_session, other_user):
    assert selectors.session_get(user=other_user, session_id=chat_session.pk) is None
    assert selectors.session_get(user=chat_session.user, session_id=2**70) is None


def test_an_id_past_the_columns_range_is_a_404_with_a_code(api_client):
    response = api_client.get(f"/api/chat-sessions/{2**70}/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_the_current_subscription_comes_with_its_tier_in_one_statement(user, django_assert_num_queries):
    expected = UserSubscription.objects.select_related("subscription_type").get(user=user)
    with django_assert_num_queries(1):
        found = subscription_current_get(user=user)
        tier = found.subscription_type
        assert found.user.pk == user.pk
    assert _fields(found) == _fields(expected)
    assert _fields(tier) == _fields(expected.subscription_type)
    # By id (the admin's call): the same row.
    assert subscription_current_get(user=user.pk).pk == expected.pk


@pytest.mark.django_db(transaction=True)
def test_the_locked_read_holds_the_row_until_the_transaction_ends(user):
    _postgresql()
    pk = subscription_current_get(user=user).pk
    probe = "SELECT id FROM billing_usersubscription WHERE id = %s FOR UPDATE NOWAIT"
    with psycopg.connect(conninfo(), autocommit=True) as other:
        with transaction.atomic():
            subscription_current_get(user=user, lock=True)
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute(probe, [pk])
        assert other.execute(probe, [pk]).fetchone() == (pk,)
        with transaction.atomic():
            subscription_current_get(user=user)  # without `lock`, nothing is held
            assert other.execute(probe, [pk]).fetchone() == (pk,)


def test_a_statement_run_often_on_a_connection_is_prepared_there(chat_session):
    _postgresql()
    if os.environ.get("DB_SERVER_SIDE_BINDING") == "0" or os.environ.get("DB_PREPARE_THRESHOLD") == "-1":
        pytest.skip("turned off in this environment")
    for _ in range(6):  # DB_PREPARE_THRESHOLD (5) runs, then prepared
        assert selectors.session_get(user=chat_session.user, session_id=chat_session.pk) is not None
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [statement for (statement,) in cursor.fetchall()]
    # Prepared with its parameters apart ($1, $2): server-side binding.
    assert any("WHERE m.id = $1 AND m.user_id = $2" in statement for statement in prepared), prepared


def test_an_inserted_message_is_saved_in_one_statement_as_create_saves_it(chat_session, django_assert_num_queries):
    # On SQLite as well: the values are prepared by the fields, as the ORM prepares them.
    user_message = ChatMessage.objects.filter(session=chat_session).first() or ChatMessageFactory(session=chat_session)
    fields = {
        "session": chat_session, "message_type": ChatMessage.Type.ASSISTANT, "ai_model": chat_session.ai_model,
        "status": ChatMessage.Status.GENERATING, "reply_to": user_message,
        "parent_message_id": user_message.message_id, "content": "ünï <b>", "request_hash": "ab" * 32,
    }  # fmt: skip
    created = ChatMessage.objects.create(**fields, client_message_id=uuid.uuid4())
    key = uuid.uuid4()
    inserted = ChatMessage(**fields, client_message_id=key)
    with django_assert_num_queries(1):
        Inserted(ChatMessage).save(inserted)

    assert inserted.pk > created.pk
    assert inserted._state.adding is False and inserted._state.db == "default"
    assert inserted.created_at and inserted.updated_at  # the auto_now fields filled as save() fills them
    saved = _fields(ChatMessage.objects.get(pk=inserted.pk))
    assert saved == _fields(inserted)
    assert saved["client_message_id"] == key
    differ = {"id", "message_id", "client_message_id", "created_at", "updated_at"}  # keys, a default, clocks
    assert {k: v for k, v in saved.items() if k not in differ} == {
        k: v for k, v in _fields(ChatMessage.objects.get(pk=created.pk)).items() if k not in differ
    }


def test_a_message_and_its_reply_are_saved_in_one_statement_the_reply_linked_to_it(
    chat_session, django_assert_num_queries
):
    question = ChatMessage(session=chat_session, message_type=ChatMessage.Type.USER, content="Where to?")
    reply = ChatMessage(
        session=chat_session, message_type=ChatMessage.Type.ASSISTANT, ai_model=chat_session.ai_model,
        status=ChatMessage.Status.GENERATING, reply_to=question, parent_message_id=question.message_id,
    )  # fmt: skip
    # Two statements on SQLite, which has no INSERT in a WITH.
    with django_assert_num_queries(1 if connection.vendor == "postgresql" else 2):
        Inserted(ChatMessage).save_linked(question, reply, "reply_to")

    assert question.pk and reply.pk and reply.reply_to_id == question.pk
    assert reply.reply_to is question
    for instance in (question, reply):
        assert instance._state.adding is False and instance._state.db == "default"
        assert _fields(ChatMessage.objects.get(pk=instance.pk)) == _fields(instance)
    # The question first, as history orders them.
    assert question.created_at <= reply.created_at and question.pk < reply.pk
    assert list(ChatMessage.objects.get(pk=question.pk).replies.all()) == [reply]


def test_a_failing_link_saves_neither(chat_session):
    _postgresql()
    taken = ChatMessageFactory(session=chat_session, client_message_id=uuid.uuid4())
    question = ChatMessage(
        session=chat_session, message_type=ChatMessage.Type.USER, content="Again",
        client_message_id=taken.client_message_id,
    )  # fmt: skip
    reply = ChatMessage(session=chat_session, message_type=ChatMessage.Type.ASSISTANT, reply_to=question)
    count = ChatMessage.objects.count()
    with pytest.raises(IntegrityError), transaction.atomic():
        Inserted(ChatMessage).save_linked(question, reply, "reply_to")
    assert ChatMessage.objects.count() == count
