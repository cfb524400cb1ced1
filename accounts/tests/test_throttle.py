"""Throttles on sign-in and on the emails anyone can ask for (accounts/throttle.py).

Each test comes from an address of its own, so the per-address counts of one do not reach
another; the counts are rows of the database cache, rolled back with each test.
"""

import itertools

import pytest
from django.core import mail
from django.test import Client, override_settings
from rest_framework.test import APIClient

from accounts.tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

_addresses = (f"10.9.{n // 250}.{n % 250 + 1}" for n in itertools.count())


@pytest.fixture
def address():
    return next(_addresses)


def _api(address: str) -> APIClient:
    client = APIClient(enforce_csrf_checks=True, REMOTE_ADDR=address)
    client.credentials(HTTP_X_CSRFTOKEN=client.get("/api/auth/csrf/").json()["csrfToken"])
    return client


def _login(client: APIClient, email: str, password: str):
    return client.post("/api/auth/login/", {"email": email, "password": password}, format="json")


def test_wrong_passwords_past_the_accounts_limit_are_429_and_then_so_is_the_right_one(address, default_tier):
    user, other = UserFactory(), UserFactory()
    client = _api(address)

    statuses = [_login(client, user.email, f"guess {n}").status_code for n in range(10)]
    refused = _login(client, user.email, "guess 11")
    right = _login(client, user.email.upper(), PASSWORD)  # the same account, typed differently

    assert statuses == [400] * 10
    for response in (refused, right):
        assert response.status_code == 429
        assert response.json()["code"] == "too_many_attempts"
        assert 0 < int(response["Retry-After"]) <= 15 * 60
    assert "Try again in" in right.json()["detail"]
    # Another account from the same address is not held back by this one's limit.
    assert _login(client, other.email, PASSWORD).status_code == 200


def test_right_passwords_do_not_use_up_the_accounts_limit(address, default_tier):
    user = UserFactory()
    client = _api(address)
    for _ in range(15):
        assert _login(client, user.email, PASSWORD).status_code == 200
        client.post("/api/auth/logout/")
        client.credentials(HTTP_X_CSRFTOKEN=client.get("/api/auth/csrf/").json()["csrfToken"])
    assert _login(client, user.email, "a wrong one").status_code == 400


@override_settings(THROTTLE_LOGIN_ADDRESS="5/15m")
def test_failures_from_one_address_across_accounts_are_limited_per_address(address, default_tier):
    client = _api(address)
    statuses = [_login(client, f"nobody{n}@example.com", "guess").status_code for n in range(6)]
    assert statuses == [400] * 5 + [429]
    # Another address is not.
    assert _login(_api(next(_addresses)), "nobody9@example.com", "guess").status_code == 400


def test_the_login_page_says_so_with_a_429(address, default_tier):
    user = UserFactory()
    client = Client(REMOTE_ADDR=address)
    for n in range(10):
        assert client.post("/accounts/login/", {"username": user.email, "password": f"guess {n}"}).status_code == 200
    response = client.post("/accounts/login/", {"username": user.email, "password": PASSWORD})
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert "Too many failed sign-ins" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_the_admin_login_is_throttled_too(address, default_tier):
    staff = UserFactory(is_staff=True)
    client = Client(REMOTE_ADDR=address)
    for n in range(10):
        client.post("/admin/login/", {"username": staff.email, "password": f"guess {n}"})
    response = client.post("/admin/login/", {"username": staff.email, "password": PASSWORD})
    assert response.status_code == 200
    assert "Too many failed sign-ins" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_password_reset_emails_are_limited_per_address_typed(address, default_tier):
    user = UserFactory()
    client = Client(REMOTE_ADDR=address)
    for _ in range(3):
        assert client.post("/accounts/password-reset/", {"email": user.email}).status_code == 302
    response = client.post("/accounts/password-reset/", {"email": user.email})
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert "Too many password reset requests" in response.content.decode()
    assert len(mail.outbox) == 3


@override_settings(THROTTLE_PASSWORD_RESET_ADDRESS="4/h")
def test_password_reset_requests_are_limited_per_client_address(address, default_tier):
    client = Client(REMOTE_ADDR=address)
    statuses = [client.post("/accounts/password-reset/", {"email": f"p{n}@example.com"}).status_code for n in range(5)]
    assert statuses == [302] * 4 + [429]


def test_verification_emails_are_limited_in_the_api_and_on_the_page(address, default_tier):
    user = UserFactory(is_verified=False)
    client = _api(address)
    client.force_login(user)
    client.credentials(HTTP_X_CSRFTOKEN=client.get("/api/auth/csrf/").json()["csrfToken"])
    statuses = [client.post("/api/auth/verify/resend/").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert len(mail.outbox) == 3

    page = Client(REMOTE_ADDR=address)
    page.force_login(user)
    response = page.post("/accounts/verification/resend/", follow=True)
    assert "Too many verification emails" in response.content.decode()
    assert len(mail.outbox) == 3


@pytest.mark.parametrize("trusted", [False, True])
def test_behind_a_proxy_the_address_is_the_one_it_appended(settings, default_tier, trusted):
    settings.USE_X_FORWARDED_FOR = trusted
    settings.THROTTLE_LOGIN_ADDRESS = "2/15m"
    proxy = next(_addresses)

    def attempt(client_address: str) -> int:
        # What a client claims comes first; the proxy appends the address it saw.
        client = APIClient(
            enforce_csrf_checks=True, REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=f"6.6.6.6, {client_address}"
        )
        client.credentials(HTTP_X_CSRFTOKEN=client.get("/api/auth/csrf/").json()["csrfToken"])
        return _login(client, "nobody@example.com", "guess").status_code

    first = [attempt("203.0.113.7") for _ in range(3)]
    other = attempt("203.0.113.8")
    assert first == [400, 400, 429]
    # Trusted, each client behind the proxy has its own count; not, they all share the proxy's.
    assert other == (400 if trusted else 429)


def test_a_client_without_an_address_or_with_a_forged_one_is_still_counted(settings, default_tier):
    settings.USE_X_FORWARDED_FOR = True
    client = APIClient(enforce_csrf_checks=True, REMOTE_ADDR="", HTTP_X_FORWARDED_FOR="not an address")
    client.credentials(HTTP_X_CSRFTOKEN=client.get("/api/auth/csrf/").json()["csrfToken"])
    assert _login(client, "nobody@example.com", "guess").status_code == 400
