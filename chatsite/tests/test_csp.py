"""The Content-Security-Policy: on every response, and no page of ours (or the API docs) breaks it."""

import os
import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.db import OperationalError
from django.test import Client
from playwright.sync_api import expect

from accounts.tests.factories import PASSWORD
from chatbots.tests.factories import AIModelFactory, ChatbotFactory
from chatsite.urls import REDOC_CSP
from sessions_app import selectors
from sessions_app.tests.factories import ChatSessionFactory

POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}
ASSISTANTS = '.message[data-message-type="assistant"]'

# Runs in every document before its own scripts: report each violation to the test.
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolation(`${event.effectiveDirective} refused ${event.blockedURI || "inline"} on ${event.documentURI}`);
});
"""


def policy_of(response) -> dict[str, list[str]]:
    directives = [part.split() for part in response["Content-Security-Policy"].split(";") if part.strip()]
    return {name: sources for name, *sources in directives}


def nonce_in(sources: list[str]) -> str:
    [nonce] = [source for source in sources if source.startswith("'nonce-")]
    return nonce.removeprefix("'nonce-").removesuffix("'")


def _raise(exc):
    def view_body(*args, **kwargs):
        raise exc

    return view_body


@pytest.mark.django_db
def test_a_page_carries_the_policy(client):
    response = client.get("/accounts/login/")

    assert response.status_code == 200
    assert policy_of(response) == POLICY


def test_api_json_answers_carry_the_policy(api_client, anon_client):
    signed_in = api_client.get("/api/users/")
    refused = anon_client.get("/api/users/")

    assert (signed_in.status_code, refused.status_code) == (200, 401)
    for response in (signed_in, refused):
        assert response["Content-Type"] == "application/json"
        assert policy_of(response) == POLICY


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/no-such-page/", "/api/no-such-endpoint/"])
def test_not_found_answers_carry_the_policy(client, path):
    response = client.get(path)

    assert response.status_code == 404
    assert policy_of(response) == POLICY


@pytest.mark.parametrize("path", ["/chat/", "/api/chat-sessions/"])
def test_server_errors_and_outages_carry_the_policy(user, monkeypatch, path):
    client = Client(raise_request_exception=False)
    client.force_login(user)

    monkeypatch.setattr(selectors, "session_list", _raise(RuntimeError("a bug")))
    crashed = client.get(path)
    monkeypatch.setattr(selectors, "session_list", _raise(OperationalError("server closed the connection")))
    outage = client.get(path)

    assert (crashed.status_code, outage.status_code) == (500, 503)
    assert policy_of(crashed) == POLICY
    assert policy_of(outage) == POLICY


def test_media_on_an_origin_of_its_own_may_be_shown_as_images():
    environment = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    result = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; "
         "print(' '.join(settings.CONTENT_SECURITY_POLICY['DIRECTIVES']['img-src']))"],
        env={**environment, "DJANGO_SETTINGS_MODULE": "chatsite.settings", "DEBUG": "1",
             "MEDIA_URL": "https://media.example.com/chatsite/"},
        cwd=django_settings.BASE_DIR, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert result.stdout.strip() == "'self' data: https://media.example.com", result.stderr


@pytest.mark.django_db
def test_swagger_ui_widens_the_policy_only_by_a_nonce_for_its_init_script(client):
    page = client.get("/api/docs/")
    other_page = client.get("/api/docs/")

    policy = policy_of(page)
    nonce = nonce_in(policy["script-src"])
    assert policy == {**POLICY, "script-src": ["'self'", f"'nonce-{nonce}'"]}
    assert nonce != nonce_in(policy_of(other_page)["script-src"])
    assert page.text.count("<script") == 3
    assert f'<script nonce="{nonce}">' in page.text
    assert "SwaggerUIBundle(" in page.text
    assert "<style" not in page.text


@pytest.mark.django_db
def test_redoc_widens_the_policy_only_by_a_nonce_two_hashes_and_blob_workers(client):
    page = client.get("/api/redoc/")
    other_page = client.get("/api/redoc/")

    policy = policy_of(page)
    nonce = nonce_in(policy["style-src"])
    assert policy == {
        **POLICY,
        "style-src": ["'self'", f"'nonce-{nonce}'", *REDOC_CSP["style-src"][1:]],
        "worker-src": ["'self'", "blob:"],
    }
    assert all(source.startswith("'sha256-") for source in REDOC_CSP["style-src"][1:])
    assert f'<script src="/static/chatsite/redoc.js" nonce="{nonce}"></script>' in page.text
    assert nonce != nonce_in(policy_of(other_page)["style-src"])
    assert "<style" not in page.text
    assert "<script>" not in page.text


# In a real browser, with the policy enforced.


@pytest.fixture
def violations(page) -> list[str]:
    """Every CSP violation the page's documents report, and every console line about one (across navigations)."""
    found: list[str] = []

    def report(violation: str) -> None:
        found.append(violation)

    page.expose_function("cspViolation", report)
    page.add_init_script(REPORT_VIOLATIONS)

    def on_console(message):
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            found.append(f"console: {message.text}")

    page.on("console", on_console)
    return found


@pytest.mark.django_db(transaction=True)
def test_the_watch_catches_a_violation(page, violations):
    page.goto("/accounts/login/")

    page.evaluate("""() => {
      const script = document.createElement("script");
      script.textContent = "window.ran = true";
      document.body.append(script);
    }""")

    for _ in range(50):
        if len(violations) >= 2:
            break
        page.wait_for_timeout(100)
    assert page.evaluate("window.ran") is None
    assert f"script-src-elem refused inline on {page.url}" in violations
    assert any(v.startswith("console: Executing inline script violates") for v in violations), violations


@pytest.mark.django_db(transaction=True)
def test_no_page_breaks_the_policy(page, violations, user, chatbot, ai_model, settings):
    settings.DEMO_STREAM_DELAY = 0.01
    session = ChatSessionFactory(user=user, chatbot=chatbot, ai_model=ai_model)
    painter = ChatbotFactory(name="Painter", chatbot_type="image")
    drawing = ChatSessionFactory(user=user, chatbot=painter, ai_model=AIModelFactory(model_type="image"))

    page.goto("/accounts/login/")
    page.get_by_label("Email or phone number").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/chat/")
    expect(page.get_by_role("button", name="Start chat")).to_be_visible()

    # A conversation: the reply streams in through fetch, rendered as sanitized HTML.
    page.goto(f"/chat/{session.pk}/")
    box = page.get_by_label("Message", exact=True)
    box.fill("Tell me **something**")
    box.press("Enter")
    reply = page.locator(ASSISTANTS).first
    expect(reply).to_have_attribute("data-status", "complete")
    expect(reply.locator(".message-body")).not_to_be_empty()
    expect(reply.locator(".message-body strong").first).to_have_text("Demo reply")

    # An image reply's <img> points at media on this origin, which img-src lets it ask for.
    page.goto(f"/chat/{drawing.pk}/")
    page.get_by_label("Message", exact=True).fill("a red bicycle")
    page.get_by_label("Message", exact=True).press("Enter")
    expect(page.locator(ASSISTANTS).first.get_by_role("img")).to_be_visible()

    page.goto("/account/")
    expect(page.get_by_role("heading", level=1)).to_be_visible()

    page.goto("/api/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("chatsite API")
    expect(page.locator(".opblock").first).to_be_visible()

    page.goto("/api/redoc/")
    expect(page.locator(".api-info h1")).to_contain_text("chatsite API")
    expect(page.locator("[data-section-id]").first).to_be_visible()
    # Its search runs in a worker made from a blob: URL; its scrollbars come from the hashed CSS.
    page.get_by_placeholder("Search...").fill("chat sessions")
    expect(page.locator('[data-role="search:results"] [role="menuitem"]').first).to_be_visible()
    assert page.locator(".ps__rail-y").first.evaluate("rail => getComputedStyle(rail).position") == "absolute"
    # Redoc's sidebar asks cdn.redoc.ly for a logo: the policy keeps the docs offline, the logo hides itself.
    expect(page.get_by_role("img", name="redocly logo")).to_have_count(0)
    logo = [v for v in violations if "https://cdn.redoc.ly/redoc/logo-mini.svg" in v]
    assert f"img-src refused https://cdn.redoc.ly/redoc/logo-mini.svg on {page.url}" in logo, violations

    assert [v for v in violations if v not in logo] == []


@pytest.mark.django_db(transaction=True)
def test_the_error_pages_are_styled_without_inline_styles(page, violations, live_server, user, monkeypatch):
    page.goto("/no-such-page/")
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()

    # The standalone outage page (no site chrome) takes its style from a file now.
    monkeypatch.setattr(selectors, "session_list", _raise(OperationalError("server closed the connection")))
    client = Client()
    client.force_login(user)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    page.context.add_cookies([{"name": cookie.key, "value": cookie.value, "url": live_server.url}])
    answer = page.goto("/chat/")

    assert answer.status == 503
    expect(page.get_by_role("heading", name="Back in a moment")).to_be_visible()
    assert page.locator("body").evaluate("body => getComputedStyle(body).maxWidth") == "640px"
    assert violations == []
