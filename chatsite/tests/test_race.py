"""Quotas hold exactly when sends race across two real app servers (SPEC 3 and 8).

Two gunicorn processes (gthread, 2 workers x 16 threads each) serve the test
database; 60 sends of one user who has 7 messages left hit them at once, half
each. Exactly 7 may pass, whichever process or thread takes them, because every
reservation queues on the lock of the user's subscription row in PostgreSQL.
"""

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from django.contrib.auth.hashers import PBKDF2PasswordHasher, make_password
from django.db import connection

from accounts.tests.factories import PASSWORD, UserFactory
from billing.models import UsageBucket, UsageEvent
from billing.quotas import floor_hour
from billing.services import subscription_assign
from billing.tests.factories import SubscriptionTypeFactory, UsageEventFactory
from chatbots.tests.factories import AIModelFactory, ChatbotFactory
from sessions_app.models import ChatMessage
from sessions_app.tests.factories import ChatSessionFactory

pytestmark = [
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="Row locks shared by several app servers need PostgreSQL."
    ),
    pytest.mark.django_db(transaction=True),
]

ROOT = Path(__file__).resolve().parents[2]
LIMIT, USED_BEFORE = 10, 3
LEFT = LIMIT - USED_BEFORE
SENDS = 60
ROUNDS = 3
BOOT_SECONDS = 20
REQUEST_SECONDS = 30


class AppServer:
    """One gunicorn process group on 127.0.0.1 serving the test database; its output goes to files."""

    def __init__(self, *, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stdout_path = log_dir / f"{name}.out"
        self.stderr_path = log_dir / f"{name}.err"
        self.env = {**env, "GUNICORN_BIND": f"127.0.0.1:{self.port}"}
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.stdout_path, "wb") as stdout, open(self.stderr_path, "wb") as stderr:
            # A session of its own: the group id is the master's pid, so stop() reaches its workers too.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "chatsite.wsgi"],
                cwd=ROOT, env=self.env, stdout=stdout, stderr=stderr, start_new_session=True,
            )  # fmt: skip

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-5000:]

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.process.returncode} while starting:\n{self.stderr()}")
            try:
                if requests.get(f"{self.url}/health/ready/", timeout=1).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):
                pass  # not listening yet, or listening while its workers still boot
            time.sleep(0.1)
        pytest.fail(f"{self.name} was not ready on {self.url} within {BOOT_SECONDS} s:\n{self.stderr()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # gunicorn's graceful shutdown: workers finish and close their connections
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _database_url() -> str:
    db = connection.settings_dict
    credentials = f"{quote(db['USER'], safe='')}:{quote(db['PASSWORD'], safe='')}@"
    return f"postgres://{credentials}{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{quote(db['NAME'], safe='')}"


def _other_connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


@pytest.fixture
def servers(transactional_db, tmp_path):
    """Two app servers on the test database, stopped (and their connections gone) after the test."""
    env = {
        # Not the browser tests' async-unsafe allowance: these servers run as in production.
        **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        "DATABASE_URL": _database_url(),
        # Connections close after each request, so none idle on between rounds.
        "CONN_MAX_AGE": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "0",
        "SESSION_COOKIE_SECURE": "0",
        "CSRF_COOKIE_SECURE": "0",
        "STATICFILES_STORAGE": "django.contrib.staticfiles.storage.StaticFilesStorage",
        "DEMO_STREAM_DELAY": "0",
        "AI_API_KEY": "",
        "OPENROUTER_API_KEY": "",
        "TITLE_MODEL": "",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "GUNICORN_WORKERS": "2",
        "GUNICORN_THREADS": "16",
        "GUNICORN_GRACEFUL_TIMEOUT": "5",
    }
    pair = [AppServer(name=f"gunicorn-{n}", env=env, log_dir=tmp_path) for n in (1, 2)]
    try:
        for server in pair:
            server.start()
        deadline = time.monotonic() + BOOT_SECONDS
        for server in pair:
            server.wait_ready(deadline)
        yield pair
    finally:
        for server in pair:
            server.stop()
        # PostgreSQL ends a backend a moment after its client goes; the test database is dropped later.
        deadline = time.monotonic() + 10
        while _other_connections() and time.monotonic() < deadline:
            time.sleep(0.1)


def _log_in(server: AppServer, email: str) -> dict[str, str]:
    """Sign in over HTTP; return the cookies (session and the CSRF token rotated by the login)."""
    with requests.Session() as http:
        http.get(f"{server.url}/api/auth/csrf/", timeout=REQUEST_SECONDS).raise_for_status()
        response = http.post(
            f"{server.url}/api/auth/login/",
            json={"email": email, "password": PASSWORD},
            headers={"X-CSRFToken": http.cookies["csrftoken"]},
            timeout=REQUEST_SECONDS,
        )
        assert response.status_code == 200, response.text
        return http.cookies.get_dict()


def _burst(pair: list[AppServer], cookies: dict[str, str], session_pk: int) -> list[requests.Response]:
    """SENDS sends at once, alternating between the servers; each thread has its own HTTP session."""
    barrier = threading.Barrier(SENDS, timeout=REQUEST_SECONDS)

    def send(n: int) -> requests.Response:
        with requests.Session() as http:
            http.cookies.update(cookies)
            barrier.wait()
            return http.post(
                f"{pair[n % 2].url}/api/chat-sessions/{session_pk}/send/",
                json={"message": f"Race message {n}"},
                headers={"X-CSRFToken": cookies["csrftoken"]},
                timeout=REQUEST_SECONDS,
            )

    with ThreadPoolExecutor(max_workers=SENDS) as pool:
        return list(pool.map(send, range(SENDS)))


def _body(response: requests.Response) -> dict:
    try:
        return response.json()
    except ValueError:
        return {"text": response.text[:300]}


def test_concurrent_sends_across_two_app_servers_never_pass_the_quota(servers):
    tier = SubscriptionTypeFactory(hourly_max_messages=LIMIT)
    user = UserFactory()
    # The servers run production settings, which do not know the tests' fast MD5 hasher.
    user.password = make_password(PASSWORD, hasher=PBKDF2PasswordHasher())
    user.save(update_fields=["password"])
    subscription_assign(user=user, subscription_type=tier)
    chatbot = ChatbotFactory()
    model = AIModelFactory(provider="demo", is_free=False)
    cookies = _log_in(servers[0], user.email)

    for round_number in range(1, ROUNDS + 1):
        # A fresh start each round: only the USED_BEFORE messages of this hour count.
        UsageEvent.objects.filter(user=user).delete()
        UsageBucket.objects.filter(user=user).delete()
        UsageEventFactory.create_batch(USED_BEFORE, user=user, ai_model=model)
        chat = ChatSessionFactory(user=user, chatbot=chatbot, ai_model=model)

        responses = _burst(servers, cookies, chat.pk)

        where = f"round {round_number}"
        statuses = Counter(r.status_code for r in responses)
        assert statuses == {201: LEFT, 429: SENDS - LEFT}, (
            where,
            statuses,
            [_body(r) for r in responses if r.status_code not in (201, 429)][:3],
            [server.stderr()[-2000:] for server in servers],
        )
        refusals = [r.json() for r in responses if r.status_code == 429]
        assert {(body["code"], body["limit"], body["used"]) for body in refusals} == {
            ("quota_exceeded", "hourly_max_messages", LIMIT)
        }, where
        # Each success saw every earlier one committed: the remainders count down without a gap.
        remaining = sorted(int(r.headers["X-RateLimit-Remaining"]) for r in responses if r.status_code == 201)
        assert remaining == list(range(LEFT)), (where, remaining)

        counted = UsageEvent.objects.filter(user=user).exclude(state=UsageEvent.State.RELEASED)
        assert counted.count() == USED_BEFORE + LEFT, where
        assert counted.filter(session=chat, state=UsageEvent.State.SETTLED).count() == LEFT, where
        messages = Counter(ChatMessage.objects.filter(session=chat).values_list("message_type", "status"))
        assert messages == {
            (ChatMessage.Type.USER, ChatMessage.Status.COMPLETE): LEFT,
            (ChatMessage.Type.ASSISTANT, ChatMessage.Status.COMPLETE): LEFT,
        }, (where, messages)
        ledger_hours = Counter(floor_hour(created) for created in counted.values_list("created_at", flat=True))
        bucket_hours = dict(
            UsageBucket.objects.filter(user=user, span="hour", messages__gt=0).values_list("hour", "messages")
        )
        assert bucket_hours == ledger_hours, (where, bucket_hours, ledger_hours)
