"""The middleware as the ASGI server runs it: what runs on the loop, and what every answer carries."""

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.sessions.backends.db import SessionStore
from django.http import HttpResponse
from django.test import AsyncClient, RequestFactory
from django.urls import reverse

from chatsite.middleware import LoopMessageMiddleware

pytestmark = pytest.mark.django_db(transaction=True)


class Watched(LoopMessageMiddleware):
    """The middleware, noting the thread its response step runs in."""

    def process_response(self, request, response):
        self.thread = threading.get_ident()
        return super().process_response(request, response)


def _answer(add_message: bool):
    async def view(request):
        if add_message:
            messages.info(request, "Saved.")
        return HttpResponse("ok")

    return view


@pytest.mark.parametrize("add_message", [False, True])
def test_messages_stay_on_the_loop_unless_a_request_has_some_to_store(add_message):
    middleware = Watched(_answer(add_message))
    request = RequestFactory().get("/")
    request.session = SessionStore()

    async def scenario():
        response = await middleware(request)
        return response, threading.get_ident()

    response, loop_thread = asyncio.run(scenario())

    assert response.content == b"ok"
    if add_message:
        # Stored as Django stores them (a cookie here), from a thread: the session may be written.
        assert middleware.thread != loop_thread
        assert "messages" in response.cookies
    else:
        assert middleware.thread == loop_thread
        assert "messages" not in response.cookies


def test_through_the_async_handler_a_message_reaches_the_next_page_and_every_answer_denies_framing(user, chat_session):
    async def scenario():
        client = AsyncClient()
        await sync_to_async(client.force_login)(user)
        renamed = await client.post(reverse("chat:rename", args=[chat_session.pk]), {"title": "Renamed"})
        page = await client.get(renamed["Location"])
        api = await client.get(f"/api/chat-sessions/{chat_session.pk}/")
        return renamed, page, api

    renamed, page, api = asyncio.run(scenario())

    assert renamed.status_code == 302
    assert page.status_code == 200
    assert "Chat renamed." in page.content.decode()
    assert renamed["X-Frame-Options"] == page["X-Frame-Options"] == api["X-Frame-Options"] == "DENY"
