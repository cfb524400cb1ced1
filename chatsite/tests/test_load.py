"""A short soak in every test run (SPEC 8 load; `make load` is the long one): nothing lost under load.

locust's Soak clients (bench/locustfile.py) chat and read through a real gunicorn on the test
database, with a real local upstream: plain and streamed sends, chat lists, a chat's messages,
search. No request may fail, and afterwards every message a 2xx send answered with is in the
database as the client saw it.
"""

import json

import pytest
from django.db import connection

from accounts.tests.factories import UserFactory
from bench import common, load
from billing.services import subscription_assign
from billing.tests.factories import SubscriptionTypeFactory
from chatbots.tests.factories import AIModelFactory, ChatbotFactory
from chatsite.testing.appserver import AppServer, production_env, serving
from chatsite.testing.upstream import StubUpstream
from sessions_app.tests.factories import ChatMessageFactory, ChatSessionFactory

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="gunicorn shares the test database: PostgreSQL."),
    pytest.mark.django_db(transaction=True),
]

CLIENTS = 20
SECONDS = 12


@pytest.fixture
def stub():
    with StubUpstream(record=False, stamped=(4, 0.005)) as stub:
        yield stub


@pytest.fixture
def server(transactional_db, tmp_path, settings):
    # The same SECRET_KEY as this process, which signs the clients' sessions.
    env = production_env(tmp_path / "media", SECRET_KEY=settings.SECRET_KEY, GUNICORN_WORKERS="2")
    app = AppServer(name="gunicorn", env=env, log_dir=tmp_path)
    with serving(app):
        yield app


def test_a_short_soak_has_no_errors_and_loses_no_message(stub, server, tmp_path):
    tier = SubscriptionTypeFactory()  # every limit 0: unlimited
    chatbot = ChatbotFactory()
    model = AIModelFactory(provider="openai", api_base=stub.base_url, is_free=False)
    users = UserFactory.create_batch(CLIENTS)
    for user in users:
        subscription_assign(user=user, subscription_type=tier)
        chat = ChatSessionFactory(user=user, chatbot=chatbot, ai_model=model)
        ChatMessageFactory.create_batch(20, session=chat, content="Notes on zanzibar and the sea")
    clients_file = tmp_path / "clients.json"
    clients_file.write_text(json.dumps(load.sign_in(users, chatbot=chatbot, model=model)))
    record = tmp_path / "records.jsonl"

    run = common.run_locust(
        "Soak", host=server.url, clients_file=clients_file, users=CLIENTS, seconds=SECONDS, record=record, work=tmp_path
    )

    assert run["errors"] == {}, server.stderr()
    samples = run["samples"]
    for name in ("send (plain)", "send (streamed): first byte", "list sessions", "list messages", "search"):
        assert samples.get(name), f"no {name!r} request succeeded: {sorted(samples)}"
    records = load.read_records(record)
    # Each client finishes the request it is in when the run ends, so every 2xx send has its record.
    assert len(records) == len(samples["send (plain)"]) + len(samples["send (streamed): first byte"])
    assert load.verify(records) == []
