"""The middleware chain under ASGI: one stretch of synchronous calls, so one hop to the request's thread."""

import inspect

from asgiref.sync import SyncToAsync, iscoroutinefunction
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler


def _chain(handler: ASGIHandler) -> list:
    """The middleware instances of a loaded handler, outermost first."""
    found, current = [], handler._middleware_chain
    if isinstance(current, SyncToAsync):  # a synchronous chain, adapted for the ASGI handler once
        current = current.func
    while inspect.isfunction(current):
        # Django wraps each middleware in convert_exception_to_response, which keeps it as get_response.
        instance = inspect.getclosurevars(current).nonlocals.get("get_response")
        if instance is None or not hasattr(instance, "get_response"):
            break
        found.append(instance)
        current = instance.get_response
    return found


def test_every_middleware_runs_synchronously_under_asgi():
    handler = ASGIHandler()  # loads the middleware as the ASGI server does
    chain = _chain(handler)

    assert [f"{type(m).__module__}.{type(m).__name__}" for m in chain] == settings.MIDDLEWARE
    # A middleware called as a coroutine runs on the loop and hops to a thread for each method.
    assert [type(m).__name__ for m in chain if iscoroutinefunction(m)] == []
