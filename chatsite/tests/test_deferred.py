"""An answer completed on the loop after the middleware: its data, or the error it ran into."""

import asyncio

import pytest
from django.db import OperationalError
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from chatsite import deferred
from chatsite.api import exception_handler
from chatsite.errors import UpstreamError


def unfinished(**headers) -> Response:
    """An answer as the middleware leaves it: negotiated, rendered empty, with headers of its own and theirs."""
    response = Response(None, status=201, headers={"X-RateLimit-Remaining": "4", **headers})
    response.accepted_renderer = JSONRenderer()
    response.accepted_media_type = "application/json"
    response.renderer_context = {}
    response.render()
    response["Content-Length"] = str(len(response.content))
    response["X-Frame-Options"] = "DENY"
    return response


def finished(response: Response, fill) -> Response:
    deferred.finish_later(response, fill, exception_handler)
    asyncio.run(response.finish_on_loop())
    return response


def test_the_answer_gets_its_data_and_its_length():
    response = unfinished()

    async def fill():
        response.data = {"assistant_message": {"content": "Hello"}}

    finished(response, fill)

    assert response.status_code == 201
    assert response.content == b'{"assistant_message":{"content":"Hello"}}'
    assert response["Content-Length"] == str(len(response.content))
    assert response["Content-Type"] == "application/json"
    assert (response["X-Frame-Options"], response["X-RateLimit-Remaining"]) == ("DENY", "4")


@pytest.mark.parametrize(
    ("raised", "status", "code", "retry_after"),
    [
        (UpstreamError(), 502, "upstream_error", None),
        (OperationalError("the server closed the connection"), 503, "database_unavailable", "5"),
    ],
)
def test_an_error_met_while_waiting_becomes_the_answer(raised, status, code, retry_after):
    response = unfinished()

    async def fill():
        raise raised

    finished(response, fill)

    assert response.status_code == status
    assert response.data["code"] == code and f'"code":"{code}"'.encode() in response.content
    assert response["Content-Length"] == str(len(response.content))
    assert response["Content-Type"] == "application/json"
    assert response.get("Retry-After") == retry_after
    assert response["X-Frame-Options"] == "DENY"


def test_anything_else_is_raised():
    response = unfinished()

    async def fill():
        raise KeyError("a bug")

    deferred.finish_later(response, fill, exception_handler)
    with pytest.raises(KeyError):
        asyncio.run(response.finish_on_loop())
