"""The async views that finish a DRF part's Started answer on the loop (sessions_app/streams.py)."""

import asyncio
import json

import pytest
from django.db import OperationalError
from rest_framework.permissions import AllowAny
from rest_framework.views import APIView

from apikeys.errors import openai_exception_handler
from chatsite import deferred
from chatsite.api import exception_handler
from chatsite.errors import UpstreamError
from sessions_app.streams import started_endpoint


class Begun(APIView):
    """A DRF part that begins its work and answers Started, with rate limits of its own."""

    authentication_classes = []
    permission_classes = [AllowAny]

    def post(self, request):
        return deferred.Started(status=201, headers={"X-RateLimit-Remaining": "4"}, stream=False)


def answered(view, rf, *, on_loop: bool):
    """The answer as the server sends it: finished by the view, or (on the loop) after the middleware."""
    request = rf.post("/begun/", data={}, content_type="application/json")
    if on_loop:
        setattr(request, deferred.ON_LOOP, True)
    response = asyncio.run(view(request))
    response.render()
    if on_loop:
        asyncio.run(response.finish_on_loop())
    return response


@pytest.mark.parametrize("on_loop", [False, True], ids=["finished-in-the-view", "finished-after-the-middleware"])
@pytest.mark.parametrize(
    ("raised", "errors", "status", "body"),
    [
        (UpstreamError(), exception_handler, 502, {"code": "upstream_error"}),
        (
            OperationalError("the server closed the connection"),
            exception_handler,
            503,
            {"code": "database_unavailable"},
        ),
        # The OpenAI-compatible API answers in OpenAI's shape, a database outage too.
        (OperationalError("gone"), openai_exception_handler, 503, {"error": {"code": "database_unavailable"}}),
    ],
)
def test_an_error_met_after_the_drf_part_is_one_answer_whichever_way_it_is_finished(
    rf, on_loop, raised, errors, status, body
):
    async def finish(request, started):
        raise raised

    response = answered(started_endpoint(Begun.as_view(), finish=finish, errors=errors), rf, on_loop=on_loop)

    assert response.status_code == status
    data = json.loads(response.content)
    for key, value in body.items():
        assert (data[key] if not isinstance(value, dict) else {k: data[key][k] for k in value}) == value
    # The endpoint's own headers stay on its error.
    assert response["X-RateLimit-Remaining"] == "4"
    assert response["Content-Type"] == "application/json"


@pytest.mark.parametrize("on_loop", [False, True], ids=["finished-in-the-view", "finished-after-the-middleware"])
def test_a_finished_answer_is_what_finish_made(rf, on_loop):
    async def finish(request, started):
        started.data = {"done": True}
        return started

    response = answered(started_endpoint(Begun.as_view(), finish=finish, errors=exception_handler), rf, on_loop=on_loop)

    assert (response.status_code, json.loads(response.content)) == (201, {"done": True})
    assert response["X-RateLimit-Remaining"] == "4"


def test_anything_the_handler_does_not_answer_is_raised(rf):
    async def finish(request, started):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        answered(started_endpoint(Begun.as_view(), finish=finish, errors=exception_handler), rf, on_loop=False)
