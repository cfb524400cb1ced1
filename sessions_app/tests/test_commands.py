from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from sessions_app.models import ChatSession
from sessions_app.tests.factories import ChatMessageFactory, ChatSessionFactory

pytestmark = pytest.mark.django_db

START = datetime(2030, 1, 1, 12, tzinfo=UTC)


def _cleanup(*args: str) -> str:
    out = StringIO()
    call_command("cleanup_empty_chats", *args, stdout=out)
    return out.getvalue()


def test_cleanup_empty_chats_deletes_only_chats_without_messages(user, other_user):
    empty = ChatSessionFactory(user=user)
    others_empty = ChatSessionFactory(user=other_user)
    kept = ChatSessionFactory(user=user)
    ChatMessageFactory(session=kept)

    output = _cleanup()

    assert output.strip() == "Deleted 2 empty chats"
    assert list(ChatSession.objects.all()) == [kept]
    assert not ChatSession.objects.filter(pk__in=[empty.pk, others_empty.pk]).exists()


def test_cleanup_empty_chats_honours_older_than(user, time_machine):
    time_machine.move_to(START, tick=False)
    old = ChatSessionFactory(user=user)
    time_machine.move_to(START + timedelta(minutes=50), tick=False)
    recent = ChatSessionFactory(user=user)
    time_machine.move_to(START + timedelta(minutes=61), tick=False)

    output = _cleanup("--older-than", "60")

    assert output.strip() == "Deleted 1 empty chats"
    assert list(ChatSession.objects.all()) == [recent]
    assert not ChatSession.objects.filter(pk=old.pk).exists()


def test_cleanup_empty_chats_dry_run_deletes_nothing(user):
    ChatSessionFactory.create_batch(3, user=user)

    output = _cleanup("--dry-run")

    assert output.strip() == "Would delete 3 empty chats"
    assert ChatSession.objects.count() == 3


def test_cleanup_empty_chats_refuses_a_negative_age():
    with pytest.raises(CommandError):
        _cleanup("--older-than", "-5")
