from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from billing.services import subscription_current
from billing.tests.factories import SubscriptionTypeFactory
from chatbots.tests.factories import AIModelFactory, ChatbotFactory
from chatsite.testing.quiet import wait_quiet
from sessions_app.tests.factories import ChatSessionFactory


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(autouse=True)
def _replies_finish():
    """Let the test's replies end, and the live server answer what a closed page asked last, before the
    test's database is emptied (chatsite.testing.quiet says why)."""
    yield
    assert wait_quiet(timeout=30), "a reply or a live server request still ran 30 s after its test"


@pytest.fixture(scope="session", autouse=True)
def _reply_runtime(django_db_setup, django_db_blocker):
    """Stop the runtime thread (its listener and database threads hold connections) before the test database goes."""
    yield
    from sessions_app.runtime import runtime

    with django_db_blocker.unblock():
        runtime().shutdown_thread()


@pytest.fixture
def default_tier(db):
    return SubscriptionTypeFactory(name="Free", sku="FREE", is_default=True)


def _registered(**kwargs):
    """A user on the default tier from now on, as registration leaves one."""
    user = UserFactory(**kwargs)
    subscription_current(user=user)
    return user


@pytest.fixture
def user(default_tier):
    return _registered(email="owner@example.com")


@pytest.fixture
def other_user(default_tier):
    return _registered(email="other@example.com")


@pytest.fixture
def staff(default_tier):
    return _registered(email="staff@example.com", is_staff=True)


@pytest.fixture
def superuser(default_tier):
    return _registered(email="root@example.com", is_staff=True, is_superuser=True)


@pytest.fixture
def anon_client():
    return APIClient(enforce_csrf_checks=True)


@pytest.fixture
def api_client(user):
    """An API client signed in as `user`, with CSRF checks on as in production."""
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    return _with_csrf(client)


@pytest.fixture
def other_client(other_user):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(other_user)
    return _with_csrf(client)


@pytest.fixture
def staff_client(staff):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(staff)
    return _with_csrf(client)


@pytest.fixture
def superuser_client(superuser):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(superuser)
    return _with_csrf(client)


def _with_csrf(client):
    token = client.get("/api/auth/csrf/").json()["csrfToken"]
    client.credentials(HTTP_X_CSRFTOKEN=token)
    return client


@pytest.fixture
def chatbot(db):
    return ChatbotFactory(name="General Assistant", system_prompt="You are a helpful assistant.")


@pytest.fixture
def ai_model(db):
    return AIModelFactory(name="GPT-4", model_id="openai/gpt-4")


@pytest.fixture
def chat_session(user, chatbot, ai_model):
    return ChatSessionFactory(user=user, chatbot=chatbot, ai_model=ai_model)


@pytest.fixture
def upstream_chat(user, chatbot):
    """A chat of `user` on a priced model that the `upstream` server answers (provider "openai")."""
    model = AIModelFactory(
        model_id="vendor/chat",
        provider="openai",
        prompt_price_per_million=Decimal("1"),
        completion_price_per_million=Decimal("2"),
    )
    return ChatSessionFactory(user=user, chatbot=chatbot, ai_model=model)


@pytest.fixture
def upstream(settings):
    """A real OpenAI-compatible server on 127.0.0.1 that replies as the test scripts it; settings point at it.

    Models must have provider="openai" to be answered by it (AIModelFactory makes demo models).
    """
    from chatsite.testing.upstream import StubUpstream

    with StubUpstream() as stub:
        settings.AI_BASE_URL = stub.base_url
        settings.AI_API_KEY = "test-key"
        settings.AI_RETRY_BACKOFF = 0
        yield stub


@pytest.fixture
def stripe_stub(settings):
    """A local Stripe-compatible server on 127.0.0.1 (chatsite.testing.stripe_stub); settings point at it."""
    from chatsite.testing.stripe_stub import SECRET_KEY, WEBHOOK_SECRET, StripeStub

    with StripeStub() as stub:
        settings.STRIPE_SECRET_KEY = SECRET_KEY
        settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
        settings.STRIPE_API_BASE = stub.base_url
        yield stub


@pytest.fixture
def refused_base_url():
    """An http://127.0.0.1:PORT/v1 URL where nothing listens."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, for one test module (skipped where it is not installed).

    Not for the whole run: playwright's sync API keeps an event loop running in this thread,
    and the test client cannot run the async reply views beside one.
    """
    import os

    from chatsite.testing.browser import CHROMIUM, CHROMIUM_ARGS, chromium_available

    if not chromium_available():
        if os.environ.get("BROWSER_TESTS") == "required":
            pytest.fail(f"Chromium is not installed at {CHROMIUM}; .ci/run installs Debian's chromium.")
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    # playwright's sync API runs an event loop in this thread; the ORM calls the tests make
    # beside it are ordinary synchronous ones.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, live_server):
    """A fresh browser page (1280 x 800) whose relative URLs go to the live server."""
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()
