"""Fuzz the API from its own OpenAPI schema: no input gives a 5xx, and every response is one the schema states.

schemathesis reads /api/schema/ from the WSGI app and calls each operation in process, signed
in, with boundary values (its coverage phase) and random valid and invalid requests (its
fuzzing phase); each response must have a documented status, content type, headers and body.
`make test` runs 20 random requests per operation, the same ones every time; `make fuzz` sets
FUZZ_EXAMPLES and runs that many, new ones each run (a failure names the FUZZ_SEED that repeats it).

Streams are not fuzzed: a streamed reply runs in a thread of its own, on its own database
connection, which cannot see the rows of the test's transaction (sessions_app's streaming tests
cover them). So a request for a stream (`"stream": true`) is sent as a plain one; following a
finished reply (GET .../stream/) answers at once and is fuzzed like the rest.
"""

import os
import random
from contextlib import contextmanager

import pytest
import schemathesis
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from chatsite.wsgi import application
from sessions_app.models import ChatMessage

LONG_RUN = "FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
SEED = int(os.environ.get("FUZZ_SEED") or random.SystemRandom().randrange(2**32))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not LONG_RUN,
    database=None,
    # The fixtures are made once per operation, and all its requests share them (and what they change).
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

schema = schemathesis.openapi.from_wsgi("/api/schema/", application, headers={"Accept": "application/json"})
if LONG_RUN:
    schema.config.seed = SEED

# The fixture's objects, so that generated ids and names sometimes hit real ones.
KNOWN: dict[str, list] = {}
ID_OWNERS = {
    "/api/chat-sessions/": "session",
    "/api/chatbots/": "chatbot",
    "/api/ai-models/": "ai_model",
    "/api/chat-session-usages/": "usage",
}


def known_values(path: str, name: str) -> list:
    if name == "id":
        key = next((key for prefix, key in ID_OWNERS.items() if path.startswith(prefix)), "")
    else:
        key = {"session_id": "session", "user_id": "user", "message_id": "message"}.get(name, name)
    return KNOWN.get(key, [])


def _sometimes_known(path: str, values: dict | None):
    if not values:
        return st.just(values)
    return st.fixed_dictionaries(
        {name: st.sampled_from([value, *known_values(path, name)]) for name, value in values.items()}
    )


# By OpenAPI's rules a concrete path wins over a template: /api/chat-sessions/search/ is the search
# operation, not chat-sessions/{id} with id "search", and must not be judged as the latter's answer.
ROUTE_WORDS = {part for path in schema.raw_schema["paths"] for part in path.split("/") if part and part[0] != "{"}


@schema.hook
def filter_path_parameters(context, path_parameters):
    return not any(str(value) in ROUTE_WORDS for value in (path_parameters or {}).values())


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    return _sometimes_known(context.operation.path, path_parameters)


@schema.hook
def flatmap_query(context, query):
    return _sometimes_known(context.operation.path, query)


@schema.hook
def flatmap_body(context, body):
    return _sometimes_known(context.operation.path, body) if isinstance(body, dict) else st.just(body)


def prepare(case) -> None:
    """Point a coverage case's path at the fixture's objects, and ask for no stream."""
    phase = case.meta.phase if case.meta else None
    # The coverage phase varies one part of a request at a time; unless that part is the
    # path, a made-up id would make every such request a 404 that never reaches the view.
    if phase is not None and phase.name == "coverage" and phase.data.parameter_location != "path":
        for name in case.path_parameters or {}:
            case.path_parameters[name] = next(iter(known_values(case.operation.path, name)), case.path_parameters[name])
    if isinstance(case.body, dict) and case.body.get("stream") is True:
        case.body["stream"] = False


@contextmanager
def requests_in_process():
    """Keep the test's database connection across requests, as Django's test client does.

    At the start and end of every request Django closes a connection left inside a
    transaction, which would end the test's transaction on PostgreSQL.
    """
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def known_objects(user, chatbot, ai_model, chat_session):
    """A chat with one exchange, sent through the API so that its usage rows exist too."""
    client = Client()
    client.force_login(user)
    response = client.post(
        f"/api/chat-sessions/{chat_session.pk}/send/", {"message": "Hello there"}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    KNOWN.update(
        session=[chat_session.pk],
        chatbot=[chatbot.pk],
        ai_model=[ai_model.pk],
        usage=[chat_session.usage.pk],
        user=[user.pk],
        message=[str(message_id) for message_id in ChatMessage.objects.values_list("message_id", flat=True)],
        chatbot_id=[chatbot.pk],
        ai_model_id=[ai_model.model_id, ai_model.pk],
        model_name=[ai_model.model_id],
    )
    yield
    KNOWN.clear()


def signed_in(user):
    """Sign `user` in; yield the cookies and CSRF header that `case.call` takes, while requests run in process.

    A generated logout or sign-in may end this session: the rest of that operation's
    requests are then answered as anonymous, which the schema documents too.
    """
    client = Client()
    client.force_login(user)
    token = client.get("/api/auth/csrf/").json()["csrfToken"]
    auth = {
        "cookies": {name: morsel.value for name, morsel in client.cookies.items()},
        "headers": {"X-CSRFToken": token},
    }
    if LONG_RUN:
        print(f"FUZZ_SEED={SEED} repeats this run.")  # shown with a failure, as its captured setup output
    # After the test client's requests: each one connects Django's handler again when it ends.
    with requests_in_process():
        yield auth


# Billing talks to the local Stripe-compatible server, so checkout and the portal answer as configured.
@pytest.fixture
def as_user(user, known_objects, stripe_stub):
    yield from signed_in(user)


@pytest.fixture
def as_staff(staff, known_objects, stripe_stub):
    yield from signed_in(staff)


@schema.parametrize()
@FUZZ_SETTINGS
@pytest.mark.django_db
def test_every_operation_answers_a_user_as_its_schema_says(case, as_user):
    prepare(case)
    case.call_and_validate(checks=CHECKS, **as_user)


# The staff-only operations again, signed in as staff, so that they get past their permission check.
# The debug call goes through the offline demo provider (tests set no AI_API_KEY).
staff_schema = schema.include(path_regex=r"^/api/(admin|debug)/")


@staff_schema.parametrize()
@FUZZ_SETTINGS
@pytest.mark.django_db
def test_every_staff_operation_answers_staff_as_its_schema_says(case, as_staff):
    prepare(case)
    case.call_and_validate(checks=CHECKS, **as_staff)


def test_schema_validates_without_warnings():
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", os.devnull)


# Every query parameter a read takes is declared with the bounds the server holds it to, so a client
# built from the schema never sends one the server refuses: valid requests only, each must be accepted.
reads = schemathesis.openapi.from_wsgi("/api/schema/", application, headers={"Accept": "application/json"})
reads.config.generation.update(modes=[schemathesis.GenerationMode.POSITIVE])
reads = reads.include(
    method="GET",
    path_regex=r"^/api/(chat-sessions/(\{id\}/messages/|search/|\{id\}/export/)?|admin/users/|chatbots/|ai-models/)$",
)


@reads.parametrize()
@FUZZ_SETTINGS
@pytest.mark.django_db
def test_every_request_the_schema_allows_is_accepted(case, as_staff):
    prepare(case)
    response = case.call(**as_staff)
    assert response.status_code != 400, (case.path, case.query, response.text)
    case.validate_response(response, checks=[positive_data_acceptance, not_a_server_error])
