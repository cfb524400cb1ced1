"""One quota for the pages and the API: sends and API calls racing across two app servers (SPEC 3, 7a).

Two app servers (gunicorn, 2 uvicorn workers each) serve the test database. A user with 7
messages left fires 100 requests at once: half page sends (session and CSRF), half API
calls (a Bearer key), each half alternating between the servers. Exactly 7 may pass, in
any mix, because both kinds reserve through billing.services.usage_reserve under the lock
of the user's subscription row.
"""

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.contrib.auth.hashers import PBKDF2PasswordHasher, make_password
from django.db import connection

from accounts.tests.factories import PASSWORD, UserFactory
from apikeys.tests.factories import make_key
from billing.models import UsageBucket, UsageEvent
from billing.services import subscription_assign
from billing.tests.factories import SubscriptionTypeFactory, UsageEventFactory
from chatbots.tests.factories import AIModelFactory, ChatbotFactory
from chatsite.testing.appserver import sign_in
from chatsite.tests.test_race import servers  # noqa: F401 (the fixture: two app servers)
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
REQUESTS = 100
ROUNDS = 2
REQUEST_SECONDS = 30


def test_page_sends_and_api_calls_racing_on_two_servers_share_one_exact_quota(servers):  # noqa: F811
    tier = SubscriptionTypeFactory(hourly_max_messages=LIMIT)
    user = UserFactory()
    user.password = make_password(PASSWORD, hasher=PBKDF2PasswordHasher())  # production settings' hasher
    user.save(update_fields=["password"])
    subscription_assign(user=user, subscription_type=tier)
    chatbot = ChatbotFactory()
    model = AIModelFactory(provider="demo", is_free=False)
    api_key, full_key = make_key(user)
    cookies = sign_in(servers[0].url, user.email, PASSWORD)

    for round_number in range(1, ROUNDS + 1):
        UsageEvent.objects.filter(user=user).delete()
        UsageBucket.objects.filter(user=user).delete()
        UsageEventFactory.create_batch(USED_BEFORE, user=user, ai_model=model)
        chat = ChatSessionFactory(user=user, chatbot=chatbot, ai_model=model)
        barrier = threading.Barrier(REQUESTS, timeout=REQUEST_SECONDS)

        def fire(n: int) -> tuple[str, requests.Response]:
            base = servers[(n // 2) % 2].url
            with requests.Session() as http:
                if n % 2:
                    barrier.wait()
                    return "api", http.post(
                        f"{base}/v1/chat/completions",
                        json={"model": model.model_id, "messages": [{"role": "user", "content": f"Call {n}"}]},
                        headers={"Authorization": f"Bearer {full_key}"}, timeout=REQUEST_SECONDS,
                    )  # fmt: skip
                http.cookies.update(cookies)
                barrier.wait()
                return "page", http.post(
                    f"{base}/api/chat-sessions/{chat.pk}/send/", json={"message": f"Send {n}"},
                    headers={"X-CSRFToken": cookies["csrftoken"]}, timeout=REQUEST_SECONDS,
                )  # fmt: skip

        with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
            results = list(pool.map(fire, range(REQUESTS)))

        where = f"round {round_number}"
        statuses = Counter((kind, r.status_code) for kind, r in results)
        passed = statuses[("page", 201)] + statuses[("api", 200)]
        refused = statuses[("page", 429)] + statuses[("api", 429)]
        assert (passed, refused) == (LEFT, REQUESTS - LEFT), (
            where, statuses, [r.text[:300] for _, r in results if r.status_code not in (200, 201, 429)][:3],
        )  # fmt: skip
        api_refusals = [r.json()["error"] for kind, r in results if kind == "api" and r.status_code == 429]
        assert {(e["code"], e["limit"], e["used"]) for e in api_refusals} <= {
            ("quota_exceeded", "hourly_max_messages", LIMIT)
        }, where
        page_refusals = [r.json() for kind, r in results if kind == "page" and r.status_code == 429]
        assert {(b["code"], b["limit"]) for b in page_refusals} <= {("quota_exceeded", "hourly_max_messages")}
        # Each success saw every earlier one, whichever kind: the remainders count down without a gap.
        remaining = sorted(int(r.headers["X-RateLimit-Remaining"]) for _, r in results if r.status_code in (200, 201))
        assert remaining == list(range(LEFT)), (where, remaining)

        counted = UsageEvent.objects.filter(user=user).exclude(state=UsageEvent.State.RELEASED)
        assert counted.count() == USED_BEFORE + LEFT, where
        assert counted.filter(api_key=api_key, session=None).count() == statuses[("api", 200)], where
        assert counted.filter(session=chat, api_key=None).count() == statuses[("page", 201)], where
        assert ChatMessage.objects.filter(session=chat, message_type="assistant").count() == statuses[("page", 201)]
