"""Quotas hold exactly when sends race across two real app servers (SPEC 3 and 8).

Two app servers (gunicorn, 2 uvicorn workers each) serve the test
database; 100 sends of one user who has 7 messages left hit them at once, half
each. Exactly 7 may pass, whichever process or thread takes them, because every
reservation queues on the lock of the user's subscription row in PostgreSQL.
"""

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.contrib.auth.hashers import PBKDF2PasswordHasher, make_password
from django.db import connection

from accounts.tests.factories import PASSWORD, UserFactory
from billing.models import Payment, UsageBucket, UsageEvent
from billing.quotas import floor_hour
from billing.services import subscription_assign
from billing.tests.factories import SubscriptionTypeFactory, UsageEventFactory
from chatbots.tests.factories import AIModelFactory, ChatbotFactory
from chatsite.testing.appserver import AppServer, production_env, serving, sign_in
from chatsite.testing.stripe_stub import SECRET_KEY, WEBHOOK_SECRET, StripeStub, event, signed_event
from sessions_app.models import ChatMessage
from sessions_app.tests.factories import ChatSessionFactory

pytestmark = [
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="Row locks shared by several app servers need PostgreSQL."
    ),
    pytest.mark.django_db(transaction=True),
]

LIMIT, USED_BEFORE = 10, 3
LEFT = LIMIT - USED_BEFORE
SENDS = 100
ROUNDS = 3
REQUEST_SECONDS = 30


@pytest.fixture
def servers(transactional_db, tmp_path):
    yield from _two_servers(tmp_path)


@pytest.fixture
def selling_servers(transactional_db, tmp_path):
    """Two app servers that sell plans through a local Stripe-compatible server."""
    with StripeStub() as stub:
        yield from _two_servers(tmp_path, STRIPE_SECRET_KEY=SECRET_KEY, STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
                                STRIPE_API_BASE=stub.base_url)  # fmt: skip


def _two_servers(tmp_path, **extra_env):
    """Two app servers on the test database, stopped (and their connections gone) after the test."""
    env = production_env(
        tmp_path / "media",
        # Connections close after each request, so none idle on between rounds.
        GUNICORN_WORKERS="2",
        # Every send of the race is in flight at once: only the quota may refuse them here.
        MAX_ACTIVE_REPLIES_PER_USER="0",
        # The sign-in throttle's windows are fixed (django-ratelimit): with the default 15
        # minutes, one that ended during the guesses would split them between two counts.
        THROTTLE_LOGIN_ACCOUNT="10/1d",
        **extra_env,
    )
    pair = [AppServer(name=f"gunicorn-{n}", env=env, log_dir=tmp_path) for n in (1, 2)]
    with serving(*pair):
        yield pair


def _sign_in(server: AppServer, email: str) -> dict[str, str]:
    return sign_in(server.url, email, PASSWORD)


def _burst(pair: list[AppServer], cookies: dict[str, str], session_pk: int, *, beside=None) -> list[requests.Response]:
    """SENDS sends at once, alternating between the servers; each thread has its own HTTP session.

    `beside`, if given, is called at the same moment, on a thread of its own.
    """
    barrier = threading.Barrier(SENDS + (beside is not None), timeout=REQUEST_SECONDS)
    if beside is not None:
        thread = threading.Thread(target=lambda: (barrier.wait(), beside()))
        thread.start()

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
        responses = list(pool.map(send, range(SENDS)))
    if beside is not None:
        thread.join(REQUEST_SECONDS)
    return responses


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
    cookies = _sign_in(servers[0], user.email)

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


def test_password_guesses_racing_across_two_app_servers_get_exactly_the_accounts_limit(servers):
    user = UserFactory()
    user.password = make_password(PASSWORD, hasher=PBKDF2PasswordHasher())
    user.save(update_fields=["password"])
    guesses = 30

    def guess(n: int) -> requests.Response:
        with requests.Session() as http:
            base = servers[n % 2].url
            http.get(f"{base}/api/auth/csrf/", timeout=10).raise_for_status()
            return http.post(
                f"{base}/api/auth/login/", json={"email": user.email, "password": f"wrong guess {n}"},
                headers={"X-CSRFToken": http.cookies["csrftoken"]}, timeout=REQUEST_SECONDS,
            )  # fmt: skip

    with ThreadPoolExecutor(max_workers=guesses) as pool:
        responses = list(pool.map(guess, range(guesses)))

    # The account's limit (THROTTLE_LOGIN_ACCOUNT, 10 a window) is shared by both servers and exact.
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {400: 10, 429: guesses - 10}, statuses
    assert {r.json()["code"] for r in responses if r.status_code == 429} == {"too_many_attempts"}
    assert all(int(r.headers["Retry-After"]) > 0 for r in responses if r.status_code == 429)
    # Now the right password is refused too, on either server, until the window ends.
    for server in servers:
        with requests.Session() as http:
            http.get(f"{server.url}/api/auth/csrf/", timeout=10)
            response = http.post(
                f"{server.url}/api/auth/login/", json={"email": user.email, "password": PASSWORD},
                headers={"X-CSRFToken": http.cookies["csrftoken"]}, timeout=REQUEST_SECONDS,
            )  # fmt: skip
        assert response.status_code == 429, response.text


def test_a_plan_bought_while_sends_race_on_two_servers_leaves_the_ledger_exact(selling_servers, default_tier):
    small = SubscriptionTypeFactory(name="Small", hourly_max_messages=LIMIT)  # 10 an hour, 3 used: 7 left
    big = SubscriptionTypeFactory(name="Big", price="9.00", duration_days=45, hourly_max_messages=2 * LIMIT)
    user = UserFactory()
    user.password = make_password(PASSWORD, hasher=PBKDF2PasswordHasher())
    user.save(update_fields=["password"])
    subscription_assign(user=user, subscription_type=small)
    model = AIModelFactory(provider="demo", is_free=False)
    UsageEventFactory.create_batch(USED_BEFORE, user=user, ai_model=model)
    chat = ChatSessionFactory(user=user, chatbot=ChatbotFactory(), ai_model=model)
    cookies = _sign_in(selling_servers[0], user.email)
    body, signature = signed_event(
        event("checkout.session.completed", {
            "id": "cs_race", "object": "checkout.session", "client_reference_id": str(user.pk),
            "metadata": {"subscription_type_id": str(big.pk)}, "amount_total": 900, "currency": "usd",
            "customer": "cus_race", "payment_intent": "pi_race", "payment_status": "paid", "mode": "payment",
        })
    )  # fmt: skip
    hook: list[requests.Response] = []

    def buy() -> None:
        hook.append(requests.post(
            f"{selling_servers[1].url}/billing/stripe/webhook/", data=body,
            headers={"Stripe-Signature": signature, "Content-Type": "application/json"}, timeout=REQUEST_SECONDS,
        ))  # fmt: skip

    responses = _burst(selling_servers, cookies, chat.pk, beside=buy)

    assert hook[0].status_code == 200, hook[0].text
    passed = [r for r in responses if r.status_code == 201]
    assert {r.status_code for r in responses} <= {201, 429}
    # Each send was checked against the tier of its moment: under the small one, at most its 7 left;
    # in all, at most the big one's 20 less the 3 used. Each success saw every earlier one.
    under_small = [r for r in passed if r.headers["X-RateLimit-Limit"] == str(LIMIT)]
    assert len(under_small) <= LIMIT - USED_BEFORE
    assert len(passed) <= 2 * LIMIT - USED_BEFORE
    counted = UsageEvent.objects.filter(user=user).exclude(state=UsageEvent.State.RELEASED).count()
    assert counted == USED_BEFORE + len(passed)
    # The rolling hour kept counting across the change: what is left now is exactly the big tier's rest.
    again = _burst(selling_servers, cookies, chat.pk)
    assert sum(r.status_code == 201 for r in again) == 2 * LIMIT - counted
    assert UsageEvent.objects.filter(user=user).exclude(state=UsageEvent.State.RELEASED).count() == 2 * LIMIT
    assert Payment.objects.filter(user=user).count() == 1
