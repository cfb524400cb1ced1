import pytest
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from billing.services import subscription_current
from billing.tests.factories import SubscriptionTypeFactory
from chatbots.tests.factories import AIModelFactory, ChatbotFactory
from sessions_app.tests.factories import ChatSessionFactory


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


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
