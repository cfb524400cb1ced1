"""The account pages in a real browser: usage meters, recent usage and chart, phone log-in, password reset."""

import re

import pytest
from django.core import mail
from django.db.models import Sum
from django.utils import timezone

from accounts.tests.factories import PASSWORD
from billing.models import SubscriptionType, UsageEvent
from chatbots.tests.factories import AIModelFactory
from chatsite.testing.browser import screenshot
from sessions_app import runtime, services
from sessions_app.tests.factories import ChatSessionFactory

pytestmark = pytest.mark.django_db(transaction=True)

NEW_PASSWORD = "a fresh and long passphrase"


def _log_in(page, username="owner@example.com", password=PASSWORD):
    page.goto("/accounts/login/")
    page.get_by_label("Email or phone number").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def _send(session, user, content):
    result = services.message_send(session=session, user=user, content=content)
    return runtime.reply_complete_blocking(reply=result.reply, job=result.job)


def test_the_account_page_shows_meters_recent_usage_and_a_chart(page, user, chatbot, ai_model, default_tier):
    SubscriptionType.objects.filter(pk=default_tier.pk).update(hourly_max_messages=10, daily_max_tokens=100_000)
    session = ChatSessionFactory(user=user, chatbot=chatbot, ai_model=ai_model)
    free_session = ChatSessionFactory(user=user, chatbot=chatbot, ai_model=AIModelFactory(name="Tiny", is_free=True))
    for content in ["Hello there", "What is the capital of France?", "And of Italy?"]:
        _send(session, user, content)
    _send(free_session, user, "A free question")
    paid_tokens = UsageEvent.objects.filter(user=user, is_free_model=False).aggregate(t=Sum("billed_tokens"))["t"]
    _log_in(page)
    page.wait_for_url("**/chat/")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Account").click()
    page.wait_for_url("**/account/")

    assert page.get_by_text("Free", exact=True).is_visible()
    messages = page.locator(".meter", has_text="Messages per hour")
    assert messages.locator(".meter-used").inner_text() == "3 of 10"
    assert "7 left" in messages.locator(".meter-foot").inner_text()
    assert "resets" in messages.locator(".meter-foot").inner_text()
    progress = messages.get_by_role("progressbar", name="Messages per hour")
    assert (progress.get_attribute("value"), progress.get_attribute("max")) == ("3", "10")
    tokens = page.locator(".meter", has_text="Tokens per day")
    assert tokens.locator(".meter-used").inner_text() == f"{paid_tokens:,} of 100,000"
    assert f"{100_000 - paid_tokens:,} left" in tokens.locator(".meter-foot").inner_text()
    # Only limits the tier sets get a meter.
    assert page.locator(".meter").count() == 2

    rows = page.locator("table.usage tbody tr")
    assert rows.count() == 4
    assert rows.first.locator("td").nth(1).inner_text() == "Tiny"
    assert rows.first.locator("td").nth(2).inner_text() == "Message (free)"
    assert rows.nth(1).locator("td").nth(1).inner_text() == "GPT-4"
    assert page.get_by_text("Total cost this period:").is_visible()

    chart = page.get_by_role("img", name="Messages per day, last 30 days")
    assert chart.is_visible()
    assert "4 messages" in chart.locator("desc").text_content()
    bars = chart.locator("rect[data-day]")
    assert bars.count() == 30
    today = chart.locator(f'rect[data-day="{timezone.now():%Y-%m-%d}"]')
    assert today.get_attribute("data-messages") == "4"
    assert float(today.get_attribute("height")) > 0
    assert chart.locator("text", has_text="Day (UTC)").count() == 1
    screenshot(page, "account")


def test_logging_in_with_a_phone_number_works(page, user):
    user.phone_number = "+14155550123"
    user.save()
    page.goto("/accounts/login/")
    screenshot(page, "account-login")

    _log_in(page, username="+1 (415) 555-0123")

    page.wait_for_url("**/chat/")
    assert page.get_by_role("button", name="Log out").is_visible()


def test_a_wrong_password_shows_the_error(page, user):
    _log_in(page, password="not the password")

    assert page.get_by_text("Wrong email, phone number or password.").is_visible()
    assert page.url.endswith("/accounts/login/")
    screenshot(page, "account-login-error")


def test_the_sign_up_page_explains_its_fields(page, db):
    page.goto("/accounts/signup/")

    for label in ["Email", "Name", "Phone number", "Password confirmation"]:
        assert page.get_by_label(label).is_visible()
    assert page.get_by_text("international format").is_visible()
    screenshot(page, "account-signup")


def test_the_password_reset_flow_sends_an_email_and_sets_a_new_password(page, user):
    page.goto("/accounts/login/")
    page.get_by_role("link", name="Forgot your password?").click()
    page.wait_for_url("**/accounts/password-reset/")
    screenshot(page, "password-reset")
    page.get_by_label("Email").fill("owner@example.com")
    page.get_by_role("button", name="Send the link").click()

    page.wait_for_url("**/accounts/password-reset/done/")
    assert page.get_by_role("heading", name="Check your email").is_visible()
    screenshot(page, "password-reset-done")
    # The live server runs in this process, so its locmem outbox is this one.
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["owner@example.com"]
    link = re.search(r"https?://[^/\s]+(/\S+)", mail.outbox[0].body).group(1)

    page.goto(link)
    page.wait_for_url("**/set-password/")
    assert page.get_by_role("heading", name="Choose a new password").is_visible()
    page.get_by_label("New password", exact=False).first.fill(NEW_PASSWORD)
    page.get_by_label(re.compile(r"^New password confirmation:?$")).fill(NEW_PASSWORD)
    screenshot(page, "password-reset-confirm")
    page.get_by_role("button", name="Set password").click()

    page.wait_for_url("**/accounts/reset/done/")
    assert page.get_by_role("heading", name="Password changed").is_visible()
    _log_in(page, password=NEW_PASSWORD)
    page.wait_for_url("**/chat/")
