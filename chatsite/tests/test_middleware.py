"""What the middleware chain gives every answer."""

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_a_message_reaches_the_next_page_and_every_answer_denies_framing(client, user, chat_session):
    client.force_login(user)
    renamed = client.post(reverse("chat:rename", args=[chat_session.pk]), {"title": "Renamed"})
    page = client.get(renamed["Location"])
    api = client.get(f"/api/chat-sessions/{chat_session.pk}/")

    assert renamed.status_code == 302
    assert page.status_code == 200
    assert "Chat renamed." in page.content.decode()
    assert renamed["X-Frame-Options"] == page["X-Frame-Options"] == api["X-Frame-Options"] == "DENY"
