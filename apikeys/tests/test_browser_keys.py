"""The API keys section of /account/ in a real browser: create (shown once, copied), use, revoke."""

import pytest
import requests

from accounts.tests.factories import PASSWORD
from apikeys.models import ApiKey
from apikeys.tests.factories import make_key
from billing.tests.factories import UsageEventFactory
from chatbots.tests.factories import AIModelFactory
from chatsite.testing.browser import screenshot

pytestmark = pytest.mark.django_db(transaction=True)
XSS = '<img src=x onerror="window.pwned=1">'


def _log_in(page, username="owner@example.com", password=PASSWORD):
    page.goto("/accounts/login/")
    page.get_by_label("Email or phone number").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/chat/")


def test_a_key_made_on_the_account_page_is_shown_once_works_and_can_be_revoked(page, user, live_server):
    AIModelFactory(model_id="vendor/listed")
    _log_in(page)
    page.goto("/account/")
    section = page.locator("#api-keys")
    assert section.get_by_text("No keys yet").is_visible()

    section.get_by_label("Name of a new key").fill(XSS)
    section.get_by_role("button", name="Create key").click()

    shown = section.get_by_label("Your new API key")
    shown.wait_for()
    key = shown.input_value()
    assert key.startswith("cs-")
    assert section.get_by_text("it is shown only this once").is_visible()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    section.get_by_role("button", name="Copy").click()
    section.get_by_role("button", name="Copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == key
    row = section.locator("tr", has_text=XSS)  # the name as text, never as markup
    assert row.locator("code").inner_text() == key[:9] + "…"
    assert page.evaluate("window.pwned") is None
    # The key opens the API.
    answer = requests.get(f"{live_server.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert answer.status_code == 200

    # Shown once: after a reload the page lists the key but holds it nowhere.
    page.reload()
    assert key not in page.content()
    assert section.locator("tr", has_text=XSS).is_visible()
    assert "Never" not in section.locator("tr", has_text=XSS).inner_text()  # it was used just now

    page.once("dialog", lambda dialog: dialog.accept())
    section.locator("tr", has_text=XSS).get_by_role("button", name="Revoke").click()
    section.get_by_text("No keys yet").wait_for()
    assert ApiKey.objects.get().revoked_at is not None
    answer = requests.get(f"{live_server.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert answer.status_code == 401


def test_each_key_shows_its_usage_and_when_it_was_last_used(page, user):
    model = AIModelFactory()
    used, _ = make_key(user, name="editor")
    make_key(user, name="script")
    UsageEventFactory.create_batch(2, user=user, ai_model=model, api_key=used, billed_tokens=1500)
    ApiKey.objects.filter(pk=used.pk).update(last_used_at=used.created_at)
    _log_in(page)

    page.goto("/account/")

    editor = page.locator("#api-keys tr", has_text="editor")
    assert "2 msg · 3,000 tokens" in editor.inner_text()
    assert "Never" not in editor.inner_text()
    script = page.locator("#api-keys tr", has_text="script")
    assert "0 msg · 0 tokens" in script.inner_text() and "Never" in script.inner_text()


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize(("device", "size"), [("desktop", (1440, 900)), ("phone", (390, 844))])
def test_the_keys_section_screenshots(browser, live_server, user, scheme, device, size):
    model = AIModelFactory()
    used, _ = make_key(user, name="Laptop (VS Code)")
    make_key(user, name="nightly-report.py", store_chats=True)
    UsageEventFactory.create_batch(3, user=user, ai_model=model, api_key=used, billed_tokens=2400)
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": size[0], "height": size[1]}, color_scheme=scheme
    )
    page = context.new_page()
    try:
        _log_in(page)
        page.goto("/account/")
        page.locator("#api-keys").get_by_label("Name of a new key").fill("CI runner")
        page.locator("#api-keys").get_by_role("button", name="Create key").click()
        page.locator("#key-value").wait_for()
        page.locator("#api-keys").scroll_into_view_if_needed()
        # Nothing wider than the screen: the table scrolls inside its own box.
        assert page.evaluate("document.documentElement.scrollWidth") <= size[0]
        screenshot(page, f"account-keys-{device}-{scheme}")
    finally:
        context.close()
