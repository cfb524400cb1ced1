"""What a send costs on the wire to PostgreSQL: every statement between a real app server and the database.

Django's query log sees only what Django runs; the tap (chatsite/testing/pgwire.py) also sees
psycopg's BEGIN and COMMIT and the connection pool's own checks.
"""

import math
import time
from datetime import timedelta

import pytest
import requests
from django.contrib.auth.hashers import PBKDF2PasswordHasher, make_password
from django.db import connection

from accounts.tests.factories import PASSWORD, UserFactory
from billing.models import UsageEvent
from billing.quotas import GENERIC_PLAN
from billing.services import subscription_assign
from billing.tests.factories import SubscriptionTypeFactory
from chatbots.tests.factories import AIModelFactory, ChatbotFactory
from chatsite.testing.appserver import AppServer, http_session, production_env, serving, sign_in
from chatsite.testing.pgwire import StatementTap
from chatsite.testing.upstream import StubUpstream
from sessions_app.runtime import listener_name
from sessions_app.tests.factories import ChatSessionFactory

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="The tap speaks PostgreSQL's protocol."),
    pytest.mark.django_db(transaction=True),
]
TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK")
# A reply's usual end: one statement of its own, with no transaction around it.
REPLY_END = "WITH completed AS (UPDATE sessions_app_chatmessage"


@pytest.fixture
def tapped_server(tmp_path):
    """An app server (gunicorn, pooled connections) whose every statement to PostgreSQL passes the tap."""
    db = connection.settings_dict
    with StatementTap(host=db["HOST"] or "127.0.0.1", port=int(db["PORT"] or 5432)) as tap, StubUpstream() as stub:
        env = production_env(
            tmp_path / "media",
            DATABASE_URL=f"postgres://{db['USER']}:{db['PASSWORD']}@127.0.0.1:{tap.port}/{db['NAME']}",
            AI_BASE_URL=stub.base_url, AI_API_KEY="test-key", GUNICORN_WORKERS="1",
        )  # fmt: skip
        server = AppServer(name="tapped", env=env, log_dir=tmp_path)
        with serving(server):
            yield server, tap


@pytest.fixture
def chat():
    user = UserFactory(email="wire@example.com")
    # The server runs production settings, which do not know the tests' fast MD5 hasher.
    user.password = make_password(PASSWORD, hasher=PBKDF2PasswordHasher())
    user.save(update_fields=["password"])
    subscription_assign(user=user, subscription_type=SubscriptionTypeFactory(hourly_max_messages=100))
    model = AIModelFactory(model_id="vendor/chat", provider="openai")
    return ChatSessionFactory(user=user, chatbot=ChatbotFactory(), ai_model=model)


def is_stop_poll(sql: str) -> bool:
    # Now and then a worker asks which of all its running replies were stopped: one statement for
    # all of them, on a clock of its own, not a part of any one send. The status is a bound
    # parameter ($2) when the server binds them, a literal when the client does.
    return sql.startswith('SELECT "sessions_app_chatmessage"."id" AS "pk"') and '"status" = ' in sql


def sent_statements(tap: StatementTap) -> list[str]:
    """What reached PostgreSQL since the tap was cleared, once the reply has ended."""
    seen, settled_at = None, time.monotonic()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = tap.statements()
        if now != seen:
            seen, settled_at = now, time.monotonic()
        elif time.monotonic() - settled_at > 0.5 and now and now[-1][2].startswith(("COMMIT", REPLY_END)):
            break
        time.sleep(0.05)
    return [sql for _, application, sql in seen if application != listener_name() and not is_stop_poll(sql)]


def send(server: AppServer, http: requests.Session, chat, text: str) -> requests.Response:
    response = http.post(f"{server.url}/api/chat-sessions/{chat.pk}/send/", json={"message": text}, timeout=20)
    assert response.status_code == 201, response.text
    assert response.json()["assistant_message"]["status"] == "complete"
    return response


def test_a_send_reaches_postgresql_as_9_statements_besides_begin_and_commit(tapped_server, chat):
    server, tap = tapped_server
    http = http_session(sign_in(server.url, chat.user.email, PASSWORD))

    tap.clear()
    send(server, http, chat, "Plan a trip")
    first = sent_statements(tap)
    tap.clear()
    answer = send(server, http, chat, "And back")
    later = sent_statements(tap)

    # No statement checks a pooled connection that the server has not spoken on since its last use.
    assert "" not in first + later
    # One transaction: the user's message, the reply and its reservation. The reply's end and its
    # charge are one statement, the last.
    assert [sql for sql in first if sql in TRANSACTION_CONTROL] == ["BEGIN", "COMMIT"]
    assert first[-1].startswith(REPLY_END), first[-1][:120]
    # The session, the user, the chat with chatbot and model; the history, the user message with its empty
    # reply (one statement), the locked subscription setting the generic plan, the quota sums run on it,
    # the ledger row with its buckets; then in one statement the reply written, the usage settled with its
    # buckets and the chat's totals, the chat touched and named.
    data = [sql for sql in first if sql not in TRANSACTION_CONTROL]
    assert len(data) == 9, "\n".join(sql[:120] for sql in data)
    assert data[4].startswith('WITH made AS (INSERT INTO "sessions_app_chatmessage"'), data[4][:120]
    assert GENERIC_PLAN in data[5] and data[5].endswith("FOR UPDATE OF m"), data[5]
    assert data[6].startswith("SELECT piece,klass"), data[6][:120]
    # Later the same, the chat only touched: the tightest limit (hourly messages) counts the first send
    # from its hour bucket, and when that send leaves the window (X-RateLimit-Reset) came with the sums.
    data = [sql for sql in later if sql not in TRANSACTION_CONTROL]
    assert len(data) == 9, "\n".join(sql[:120] for sql in data)
    assert not [sql for sql in data if sql.startswith('SELECT MIN("billing_usageevent"."created_at")')]
    oldest = UsageEvent.objects.filter(user=chat.user).earliest("created_at")
    assert answer.headers["X-RateLimit-Reset"] == str(math.ceil((oldest.created_at + timedelta(hours=1)).timestamp()))


def test_a_pooled_connection_whose_backend_was_ended_is_replaced_before_a_request_uses_it(tapped_server, chat):
    server, tap = tapped_server
    http = http_session(sign_in(server.url, chat.user.email, PASSWORD))
    with connection.cursor() as cursor:
        # Every pooled connection of the server; its listener keeps its own.
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend' AND application_name <> %s",
            [listener_name()],
        )
        pids = [pid for (pid,) in cursor.fetchall()]
        assert pids
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM unnest(%s::int[]) AS pid", [pids])
        # Ended, as after a restart: their FATAL notices are sent (a request in between would fail, checked or not).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [pids])
            if cursor.fetchone()[0] == 0:
                break
            time.sleep(0.05)
    tap.clear()

    for _ in range(3):
        response = http.get(f"{server.url}/api/users/", timeout=10)
        assert response.status_code == 200, response.text

    # The server had spoken on the ended connection: the pool checked it by a round trip, which failed.
    assert "" in [sql for _, _, sql in tap.statements()]
