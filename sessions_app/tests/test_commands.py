from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.utils import timezone

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


def test_reap_stale_replies_ends_abandoned_replies_and_settles_their_usage(user, chat_session, ai_model):
    from billing.models import UsageEvent
    from billing.services import usage_reserve
    from sessions_app.models import ChatMessage

    with time_machine.travel(timezone.now() - timedelta(minutes=30), tick=False):
        half = ChatMessage.objects.create(
            session=chat_session, message_type="assistant", status="generating", content="Half an answer"
        )
        empty = ChatMessage.objects.create(session=chat_session, message_type="assistant", status="generating")
        for reply in (half, empty):
            usage_reserve(user=user, session=chat_session, ai_model=ai_model, message=reply, prompt_tokens=10)
    fresh = ChatMessage.objects.create(session=chat_session, message_type="assistant", status="generating")

    out = StringIO()
    call_command("reap_stale_replies", "--older-than", "15", stdout=out)

    assert "Ended 2 abandoned replies" in out.getvalue()
    half.refresh_from_db()
    empty.refresh_from_db()
    fresh.refresh_from_db()
    assert (half.status, half.content, half.error_code) == ("partial", "Half an answer", "interrupted")
    assert (empty.status, empty.disabled) == ("failed", True)
    assert fresh.status == "generating"
    assert UsageEvent.objects.get(message=half).state == "settled"
    assert UsageEvent.objects.get(message=half).completion_tokens == 4
    assert UsageEvent.objects.get(message=empty).state == "released"
