"""The migration that links messages into versions, run on chats made before it."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("sessions_app", "0005_reply_pieces")]
AFTER = [("sessions_app", "0006_message_versions_and_pins")]


@pytest.mark.django_db(transaction=True)
def test_old_messages_are_linked_each_to_the_one_before_and_replies_to_what_they_answer(user, chatbot, ai_model):
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    Session, Message = old.get_model("sessions_app", "ChatSession"), old.get_model("sessions_app", "ChatMessage")
    session = Session.objects.create(user_id=user.pk, chatbot_id=chatbot.pk, ai_model_id=ai_model.pk)
    question = Message.objects.create(session=session, message_type="user", content="Q")
    replaced = Message.objects.create(session=session, message_type="assistant", content="A1", reply_to=question,
                                      disabled=True)  # fmt: skip
    answer = Message.objects.create(session=session, message_type="assistant", content="A2", reply_to=question)
    follow_up = Message.objects.create(session=session, message_type="user", content="Q2")

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)

    new = executor.loader.project_state(AFTER).apps.get_model("sessions_app", "ChatMessage")
    parents = dict(new.objects.values_list("message_id", "parent_message_id"))
    assert parents[question.message_id] is None
    # Both replies answer the question: versions of one place.
    assert parents[replaced.message_id] == question.message_id
    assert parents[answer.message_id] == question.message_id
    assert parents[follow_up.message_id] == answer.message_id
