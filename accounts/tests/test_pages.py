import re
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from accounts.models import User
from accounts.services import verification_token
from accounts.tests.factories import PASSWORD
from billing.models import SubscriptionType
from billing.tests.factories import UsageEventFactory

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "a fresh and long passphrase"


def _signup(client, **overrides):
    data = {
        "email": "new@example.com",
        "name": "New Person",
        "phone_number": "",
        "password1": NEW_PASSWORD,
        "password2": NEW_PASSWORD,
        **overrides,
    }
    return client.post("/accounts/signup/", data)


def _logged_in_user(client):
    response = client.get("/api/users/")
    return response.json()["email"] if response.status_code == 200 else None


def _link(body: str) -> str:
    """The path of the first http link in an email body."""
    return re.search(r"https?://[^/\s]+(/\S+)", body).group(1)


def test_signup_creates_a_user_and_logs_in(client, default_tier, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = _signup(client, phone_number="+1 415 555 0123")

    assert response.status_code == 302
    assert response.url == "/chat/"
    user = User.objects.get(email="new@example.com")
    assert user.name == "New Person"
    assert user.phone_number == "+14155550123"
    assert user.subscriptions.get().subscription_type == default_tier
    assert _logged_in_user(client) == "new@example.com"
    assert len(mail.outbox) == 1
    assert "/accounts/verify/" in mail.outbox[0].body


def test_signup_with_a_taken_email_shows_the_error(client, user):
    response = _signup(client, email="OWNER@example.com")

    assert response.status_code == 400
    assert "An account with this email already exists." in response.content.decode()
    assert User.objects.count() == 1
    assert _logged_in_user(client) is None


def test_signup_with_a_bad_phone_or_weak_password_shows_the_error(client, default_tier):
    response = _signup(client, phone_number="12")
    assert response.status_code == 400
    assert "international format" in response.content.decode()

    response = _signup(client, password1="password", password2="password")
    assert response.status_code == 400
    assert "This password is too common." in response.content.decode()
    assert not User.objects.exists()


def test_signup_with_mismatched_passwords_shows_the_error(client, default_tier):
    response = _signup(client, password2="something else entirely")

    assert response.status_code == 400
    assert "The two passwords do not match." in response.content.decode()
    assert not User.objects.exists()


def test_login_page_asks_for_email_or_phone_number(client, db):
    response = client.get("/accounts/login/")

    assert response.status_code == 200
    assert "Email or phone number" in response.content.decode()


def test_login_with_email(client, user):
    response = client.post("/accounts/login/", {"username": "owner@example.com", "password": PASSWORD})

    assert response.status_code == 302
    assert response.url == "/chat/"
    assert _logged_in_user(client) == "owner@example.com"


def test_login_with_phone_number(client, user):
    user.phone_number = "+14155550123"
    user.save()

    response = client.post("/accounts/login/", {"username": "+1 (415) 555-0123", "password": PASSWORD})

    assert response.status_code == 302
    assert _logged_in_user(client) == "owner@example.com"


def test_login_follows_next(client, user):
    response = client.post(
        "/accounts/login/?next=/account/", {"username": "owner@example.com", "password": PASSWORD, "next": "/account/"}
    )

    assert response.status_code == 302
    assert response.url == "/account/"


def test_login_with_a_wrong_password_shows_an_error(client, user):
    response = client.post("/accounts/login/", {"username": "owner@example.com", "password": "wrong"})

    assert response.status_code == 200
    assert "Wrong email, phone number or password." in response.content.decode()
    assert _logged_in_user(client) is None


def test_logout_is_post_only_and_logs_out(client, user):
    client.force_login(user)

    assert client.get("/accounts/logout/").status_code == 405
    assert _logged_in_user(client) == "owner@example.com"

    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert response.url == "/accounts/login/"
    assert _logged_in_user(client) is None


def test_logout_without_a_csrf_token_is_refused(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)

    response = client.post("/accounts/logout/")

    assert response.status_code == 403
    assert "This form has expired" in response.content.decode()
    assert _logged_in_user(client) == "owner@example.com"


def test_password_reset_email_link_sets_a_new_password(client, user):
    response = client.post("/accounts/password-reset/", {"email": "owner@example.com"})
    assert response.status_code == 302
    assert response.url == "/accounts/password-reset/done/"
    assert len(mail.outbox) == 1
    assert mail.outbox[0].subject == "Reset your chatsite password"
    assert mail.outbox[0].to == ["owner@example.com"]

    response = client.get(_link(mail.outbox[0].body))
    assert response.status_code == 302
    set_password_url = response.url
    assert set_password_url.endswith("/set-password/")
    assert "Choose a new password" in client.get(set_password_url).content.decode()

    response = client.post(set_password_url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert response.status_code == 302
    assert response.url == "/accounts/reset/done/"
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)
    response = client.post("/accounts/login/", {"username": "owner@example.com", "password": NEW_PASSWORD})
    assert response.status_code == 302


def test_password_reset_for_an_unknown_email_sends_nothing(client, user):
    response = client.post("/accounts/password-reset/", {"email": "nobody@example.com"})

    assert response.status_code == 302
    assert mail.outbox == []


def test_password_reset_link_with_a_bad_token_is_refused(client, user):
    response = client.get("/accounts/reset/MQ/bad-token/")

    assert response.status_code == 200
    assert "This link does not work" in response.content.decode()


def test_verify_link_sets_is_verified(client, user):
    response = client.get(f"/accounts/verify/{verification_token(user)}/")

    assert response.status_code == 200
    assert "Email verified" in response.content.decode()
    user.refresh_from_db()
    assert user.is_verified


def test_verify_link_with_a_bad_token_shows_the_error(client, user):
    response = client.get("/accounts/verify/not-a-token/")

    assert response.status_code == 400
    assert "This verification link is not valid." in response.content.decode()
    user.refresh_from_db()
    assert not user.is_verified


def test_account_page_redirects_anonymous_users_to_login(client, db):
    response = client.get("/account/")

    assert response.status_code == 302
    assert response.url == "/accounts/login/?next=/account/"


def test_account_page_shows_the_user_tier_and_limits(client, user, default_tier):
    SubscriptionType.objects.filter(pk=default_tier.pk).update(hourly_max_messages=10, monthly_max_tokens=5000)
    UsageEventFactory(user=user, billed_tokens=30)
    client.force_login(user)

    response = client.get("/account/")

    body = response.content.decode()
    assert response.status_code == 200
    assert "owner@example.com" in body
    assert "Free" in body
    assert "Messages per hour" in body
    assert '<progress value="1" max="10"' in body
    assert '<progress value="30" max="5000"' in body
    assert "Resend verification email" in body


def test_account_page_lists_recent_usage_and_charts_messages_per_day(client, user, ai_model):
    now = timezone.now()
    for _ in range(2):
        UsageEventFactory(user=user, ai_model=ai_model, created_at=now - timedelta(days=3), billed_tokens=1234)
    UsageEventFactory(user=user, ai_model=ai_model, created_at=now - timedelta(days=40))
    client.force_login(user)

    body = client.get("/account/").content.decode()

    assert body.count('<tr class="released">') == 0
    assert body.count("<td>GPT-4</td>") == 3
    assert '<td class="num">1,234</td>' in body
    assert body.count("<rect ") == 30
    assert f'data-day="{(now - timedelta(days=3)):%Y-%m-%d}" data-messages="2"' in body
    assert body.count('data-messages="0"') == 29  # the 40-day-old message is outside the chart
    assert "Total cost this period:" in body


def test_account_page_without_any_tier_says_so(client, user):
    user.subscriptions.all().delete()
    SubscriptionType.objects.all().delete()
    client.force_login(user)

    response = client.get("/account/")

    assert response.status_code == 200
    assert "You have no active subscription" in response.content.decode()


def test_resend_verification_sends_an_email(client, user):
    client.force_login(user)

    assert client.get("/accounts/verification/resend/").status_code == 405
    response = client.post("/accounts/verification/resend/", follow=True)

    assert response.redirect_chain == [("/account/", 302)]
    assert "We sent a new verification link" in response.content.decode()
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["owner@example.com"]


def test_account_page_shows_no_resend_button_once_verified(client, user):
    user.is_verified = True
    user.save()
    client.force_login(user)

    assert "Resend verification email" not in client.get("/account/").content.decode()


def test_account_page_query_count(client, user, default_tier, django_assert_max_num_queries):
    SubscriptionType.objects.filter(pk=default_tier.pk).update(hourly_max_messages=10)
    UsageEventFactory.create_batch(20, user=user)
    client.force_login(user)
    client.get("/account/")  # the first visit may start the default-tier period

    # session, user, current subscription with its tier, the hourly buckets, the ledger's edge
    # hours, the exact time of the oldest usage in whole buckets (for "resets at"), the last
    # 20 ledger rows joined to their model (recent usage), the day buckets of the last 30 days
    # (the chart), and whether any model reaches a real upstream (the demo banner)
    with django_assert_max_num_queries(9):
        response = client.get("/account/")
    assert response.status_code == 200


def test_every_form_on_the_account_pages_carries_a_csrf_token(client, user):
    client.force_login(user)
    for url in ["/account/", "/accounts/password-reset/"]:
        body = client.get(url).content.decode()
        assert body.count('method="post"') == body.count('name="csrfmiddlewaretoken"'), url
    client.logout()
    for url in ["/accounts/login/", "/accounts/signup/"]:
        body = client.get(url).content.decode()
        assert body.count('method="post"') == body.count('name="csrfmiddlewaretoken"'), url


def test_logged_in_users_skip_the_login_and_signup_pages(client, user):
    client.force_login(user)

    assert client.get("/accounts/login/").url == "/chat/"
    assert client.get("/accounts/signup/").url == "/chat/"


def test_staff_see_the_admin_link(client, staff, user):
    client.force_login(user)
    assert 'href="/admin/"' not in client.get("/account/").content.decode()

    client.force_login(staff)
    assert 'href="/admin/"' in client.get("/account/").content.decode()


def test_demo_banner_shows_when_no_api_key_is_set(client, user, settings):
    client.force_login(user)
    assert "Demo mode: replies come from the offline demo provider" in client.get("/account/").content.decode()

    settings.AI_API_KEY = "sk-test"
    assert "Demo mode" not in client.get("/account/").content.decode()


def test_unknown_html_url_is_an_html_404(client, db):
    response = client.get("/no/such/page/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
    assert "Page not found" in response.content.decode()


def test_unknown_api_url_is_a_json_404(client, db):
    response = client.get("/api/no/such/endpoint/")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found.", "code": "not_found"}
