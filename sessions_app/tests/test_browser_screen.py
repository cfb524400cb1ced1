"""The chat screen of issue 11 in headless Chromium, at desktop and phone size: the chat list beside the
conversation, scrolling, Markdown while it streams, the model switch, shortcuts, theme, landing page,
usage hint, demo replies and axe-core."""

import re
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from django.test import Client
from playwright.sync_api import expect

from accounts.tests.factories import PASSWORD
from chatbots.models import AIModel
from chatbots.tests.factories import AIModelFactory
from chatsite.testing.browser import axe_violations, screenshot
from sessions_app.models import ChatSession
from sessions_app.tests.factories import ChatMessageFactory, ChatSessionFactory

pytestmark = pytest.mark.django_db(transaction=True)

ASSISTANTS = '.message[data-message-type="assistant"]'
USERS = '.message[data-message-type="user"]'
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
SIZES = pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
# Whether an element is inside the visible part of the message list.
IN_SCROLLER_VIEW = """(node) => {
  const box = node.getBoundingClientRect(), view = document.getElementById("scroller").getBoundingClientRect();
  return box.bottom > view.top && box.top < view.bottom;
}"""
AT_BOTTOM = "(s) => s.scrollHeight - s.scrollTop - s.clientHeight < 4"


@pytest.fixture
def screen(browser, live_server):
    """Open a page at a viewport size (and colour scheme), signed in as a user if one is given."""
    contexts = []

    def open_page(viewport=DESKTOP, *, user=None, **options):
        phone = viewport["width"] < 500
        context = browser.new_context(
            base_url=live_server.url, viewport=viewport, is_mobile=phone, has_touch=phone, **options
        )
        contexts.append(context)
        if user is not None:
            client = Client()
            client.force_login(user)
            name = django_settings.SESSION_COOKIE_NAME
            context.add_cookies([{"name": name, "value": client.cookies[name].value, "url": live_server.url}])
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.problems = []
        page.on("pageerror", lambda error: page.problems.append(f"script error: {error}"))
        return page

    yield open_page
    for context in contexts:
        context.close()


def _long_chat(session, turns=25):
    for n in range(turns):
        ChatMessageFactory(session=session, content=f"Question number {n}")
        ChatMessageFactory(
            session=session, message_type="assistant", content=f"Answer number {n}.\n\n" + "Words. " * 60
        )


def _until(page, check, timeout=20.0):
    """Wait until `check()` is true (the page's CSP forbids the string predicates of wait_for_function)."""
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        page.wait_for_timeout(50)
    raise AssertionError("timed out")


def _generating(page):
    return page.locator(f"{ASSISTANTS}[data-status=generating]").count() == 1


def _send(page, text):
    # While a reply is written Enter sends nothing (the text waits in the box): wait for Send to be back.
    expect(page.get_by_role("button", name="Send", exact=True)).to_be_enabled(timeout=20_000)
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")


# ---- Scrolling --------------------------------------------------------------------------------


@SIZES
def test_a_chat_opens_at_its_latest_message_and_a_new_message_and_its_reply_come_into_view(
    screen, user, chat_session, viewport
):
    _long_chat(chat_session)
    page = screen(viewport, user=user)
    page.goto(f"/chat/{chat_session.pk}/")

    scroller = page.locator("#scroller")
    expect(page.locator(ASSISTANTS).last).to_contain_text("Answer number 24")
    assert page.locator(ASSISTANTS).last.evaluate(IN_SCROLLER_VIEW)
    assert not page.locator(USERS).first.evaluate(IN_SCROLLER_VIEW)
    assert scroller.evaluate(AT_BOTTOM)

    _send(page, "A new line\nand a second one")

    reply = page.locator(ASSISTANTS).last
    expect(reply).to_have_attribute("data-status", "complete")
    expect(reply).to_contain_text("A new line")
    assert reply.evaluate(IN_SCROLLER_VIEW)
    assert page.locator(USERS).last.evaluate(IN_SCROLLER_VIEW)
    # The user's own line breaks are kept on screen.
    assert page.locator(USERS).last.locator(".message-body").inner_text() == "A new line\nand a second one"
    # Nothing sticks out sideways.
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    screenshot(page, f"screen-after-send-{viewport['width']}")
    assert page.problems == []


@SIZES
def test_a_streaming_reply_is_followed_only_from_the_bottom_otherwise_jump_to_latest_appears(
    screen, user, chat_session, settings, viewport
):
    settings.DEMO_STREAM_DELAY = 0.05
    _long_chat(chat_session)
    page = screen(viewport, user=user)
    page.goto(f"/chat/{chat_session.pk}/")
    scroller = page.locator("#scroller")
    jump = page.get_by_role("button", name="Jump to latest")

    # At the bottom: the view follows the reply as it grows, with no button.
    _send(page, "Follow me please")
    _until(page, lambda: len(page.locator(ASSISTANTS).last.inner_text()) > 200)
    assert scroller.evaluate(AT_BOTTOM)
    expect(jump).to_be_hidden()
    expect(page.locator(ASSISTANTS).last).to_have_attribute("data-status", "complete", timeout=20_000)

    # Scrolled up to read: the view stays put and offers the jump instead.
    _send(page, "Now I scroll up while you answer")
    _until(page, lambda: _generating(page))
    scroller.evaluate("(s) => { s.scrollTop = 0; }")
    expect(jump).to_be_visible()
    page.wait_for_timeout(500)
    assert scroller.evaluate("(s) => s.scrollTop") == 0
    screenshot(page, f"screen-jump-to-latest-{viewport['width']}")
    jump.click()
    assert scroller.evaluate(AT_BOTTOM)
    expect(jump).to_be_hidden()
    expect(page.locator(ASSISTANTS).last).to_have_attribute("data-status", "complete", timeout=20_000)
    assert page.problems == []


# ---- Errors and typed text --------------------------------------------------------------------


@SIZES
def test_a_quota_refusal_shows_by_the_composer_in_view_with_the_reset_time_and_the_plans_link(
    screen, user, chat_session, default_tier, viewport
):
    _long_chat(chat_session)
    default_tier.hourly_max_messages = 1
    default_tier.save()
    page = screen(viewport, user=user)
    page.goto(f"/chat/{chat_session.pk}/")
    _send(page, "The first message")
    expect(page.locator(ASSISTANTS).last).to_have_attribute("data-status", "complete")

    _send(page, "One more please")

    alert = page.locator("#chat-alerts [role=alert]")
    expect(alert).to_contain_text("It resets at")
    expect(alert.get_by_role("link", name="See your plan and limits")).to_have_attribute("href", "/account/")
    expect(alert.get_by_role("link", name="see the plans")).to_have_attribute("href", "/pricing/")
    assert alert.evaluate(
        "(n) => { const r = n.getBoundingClientRect(); return r.top >= 0 && r.bottom <= innerHeight; }"
    )
    expect(page.get_by_label("Message", exact=True)).to_have_value("One more please")
    expect(page.locator("#chat-alerts [role=alert]")).to_have_count(1)
    screenshot(page, f"screen-quota-{viewport['width']}")
    assert page.problems == []


def test_typed_text_survives_a_reload(screen, user, chat_session):
    page = screen(DESKTOP, user=user)
    page.goto(f"/chat/{chat_session.pk}/")
    page.get_by_label("Message", exact=True).fill("A long question I have not sent yet")
    page.reload()
    expect(page.get_by_label("Message", exact=True)).to_have_value("A long question I have not sent yet")
    _send(page, "A long question I have not sent yet")
    expect(page.locator(ASSISTANTS).last).to_have_attribute("data-status", "complete")
    page.reload()
    expect(page.get_by_label("Message", exact=True)).to_have_value("")


# ---- Markdown while it streams ----------------------------------------------------------------


@SIZES
def test_markdown_renders_while_a_reply_streams_with_the_saved_replies_sanitizer(
    screen, user, chat_session, upstream, viewport
):
    AIModel.objects.filter(pk=chat_session.ai_model_id).update(provider="openai")
    pieces = [
        "## Steps\n\n",
        "Run **this**:\n\n",
        "```python\n",
        "import os\n",
        "print(os.getcwd())\n",
        "```\n\n",
        "<img src=x onerror=alert(1)> done ",
        "[link](javascript:alert(1))",
    ]
    upstream.enqueue_text("".join(pieces), chunks=pieces, delay=0.6)
    page = screen(viewport, user=user)
    page.goto(f"/chat/{chat_session.pk}/")

    _send(page, "Show me")

    reply = page.locator(ASSISTANTS).last
    # Before the reply ends: the heading, the bold and the code block are already HTML, highlighted;
    # no raw Markdown marks show.
    code = reply.locator("pre code.language-python")
    expect(code).to_contain_text("import os")
    assert reply.get_attribute("data-status") == "generating"
    expect(reply.locator("h2")).to_have_text("Steps")
    expect(reply.locator(".message-body strong")).to_have_text("this")
    expect(code.locator("span.kn")).to_have_text("import")
    assert "```" not in reply.locator(".message-body").inner_text()
    assert "**" not in reply.locator(".message-body").inner_text()
    screenshot(page, f"screen-streaming-markdown-{viewport['width']}")

    expect(reply).to_have_attribute("data-status", "complete")
    # Sanitized while streaming exactly as saved: no image from the text, no javascript: link.
    assert page.locator('img[src="x"]').count() == 0
    assert page.evaluate("document.querySelectorAll('[onerror]').length") == 0
    assert page.evaluate("[...document.querySelectorAll('a')].every((a) => !a.href.startsWith('javascript:'))")
    streamed_html = reply.locator(".message-body").inner_html()
    page.reload()
    assert page.locator(ASSISTANTS).last.locator(".message-body").inner_html() == streamed_html
    assert page.problems == []


# ---- Versions -------------------------------------------------------------------------------------


@SIZES
def test_after_an_edit_and_a_regenerate_the_versions_switch_in_place(screen, user, chat_session, viewport):
    page = screen(viewport, user=user)
    page.goto(f"/chat/{chat_session.pk}/")
    _send(page, "Tell me about cats")
    expect(page.locator(ASSISTANTS).last).to_have_attribute("data-status", "complete")
    _send(page, "And dogs?")
    expect(page.locator(ASSISTANTS).nth(1)).to_have_attribute("data-status", "complete")

    # Edit the first question: the new reply comes directly under it, the rest is the other version.
    first = page.locator(USERS).first
    first.get_by_role("button", name="Edit").click()
    page.get_by_label("Edit message").fill("Tell me about birds")
    page.get_by_label("Edit message").press("Enter")
    expect(page.locator(ASSISTANTS)).to_have_count(1, timeout=20_000)
    expect(page.locator(ASSISTANTS).first).to_have_attribute("data-status", "complete")
    expect(page.locator(ASSISTANTS).first).to_contain_text("Tell me about birds")
    expect(page.locator(USERS)).to_have_count(1)
    versions = first.get_by_role("navigation", name="Versions")
    expect(versions).to_contain_text("2/2")
    screenshot(page, f"screen-versions-edit-{viewport['width']}")

    # Regenerate the reply: 2/2 at the reply, 2/2 still at the question.
    page.locator(ASSISTANTS).first.get_by_role("button", name="Regenerate this reply").click()
    expect(page.locator(ASSISTANTS).first.get_by_role("navigation", name="Versions")).to_contain_text("2/2")
    expect(page.locator(ASSISTANTS).first).to_have_attribute("data-status", "complete")

    # Back to the first question: its whole continuation (dogs too) is shown again.
    page.locator(USERS).first.get_by_role("button", name="Previous version").click()
    expect(page.locator(USERS)).to_have_count(2)
    expect(page.locator(USERS).first.locator(".message-body")).to_have_text("Tell me about cats")
    expect(page.locator(USERS).nth(1).locator(".message-body")).to_have_text("And dogs?")
    expect(page.locator(USERS).first.get_by_role("navigation", name="Versions")).to_contain_text("1/2")
    # The version switched to is in view.
    assert page.locator(USERS).first.evaluate(IN_SCROLLER_VIEW)
    screenshot(page, f"screen-versions-switched-{viewport['width']}")
    page.locator(USERS).first.get_by_role("button", name="Next version").press("Enter")
    expect(page.locator(USERS)).to_have_count(1)
    expect(page.locator(ASSISTANTS).first.get_by_role("navigation", name="Versions")).to_contain_text("2/2")
    assert page.problems == []


# ---- The chat list ----------------------------------------------------------------------------


def test_the_chat_list_renames_pins_and_deletes_from_the_list(screen, user, chatbot, ai_model):
    first = ChatSessionFactory(user=user, chatbot=chatbot, ai_model=ai_model, title="Garden planning")
    ChatSessionFactory(user=user, chatbot=chatbot, ai_model=ai_model, title="Bread recipes")
    doomed = ChatSessionFactory(user=user, chatbot=chatbot, ai_model=ai_model, title="Old notes")
    page = screen(DESKTOP, user=user)
    page.goto(f"/chat/{first.pk}/")
    chats = page.get_by_role("navigation", name="Your chats")
    expect(chats.get_by_role("link", name="Garden planning")).to_have_attribute("aria-current", "page")

    # Rename from the list, from the keyboard.
    menu = chats.get_by_label("Actions for “Bread recipes”")
    menu.focus()
    page.keyboard.press("Enter")
    chats.get_by_role("link", name="Rename").click()
    field = page.get_by_label("New title (Enter saves, Escape cancels)")
    expect(field).to_be_focused()
    field.fill("Sourdough bread")
    field.press("Enter")
    expect(chats.get_by_role("link", name="Sourdough bread")).to_be_visible()
    assert ChatSession.objects.filter(title="Sourdough bread").exists()

    # Pin: the chat moves to the top, under "Pinned".
    chats.get_by_label("Actions for “Old notes”").click()
    chats.get_by_role("button", name="Pin", exact=True).click()
    pinned = page.locator("section.day", has=page.get_by_role("heading", name="Pinned"))
    expect(pinned.get_by_role("link", name="Old notes")).to_be_visible()
    assert page.locator("a.session-title").first.inner_text().endswith("Old notes")
    screenshot(page, "screen-chat-list-pinned")

    # Delete after confirming in the page's own dialog.
    page.get_by_role("navigation", name="Your chats").get_by_label("Actions for “Old notes”").click()
    page.get_by_role("navigation", name="Your chats").get_by_role("link", name="Delete").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Old notes")
    dialog.get_by_role("button", name="Delete", exact=True).click()
    expect(page.get_by_text("Deleted the chat")).to_be_visible()
    assert not ChatSession.objects.filter(pk=doomed.pk).exists()
    assert page.problems == []


def test_on_a_phone_the_chat_list_opens_behind_a_button(screen, user, chatbot, ai_model):
    sessions = [ChatSessionFactory(user=user, chatbot=chatbot, ai_model=ai_model, title=f"Chat {n}") for n in range(3)]
    page = screen(PHONE, user=user)
    page.goto(f"/chat/{sessions[0].pk}/")
    chats = page.get_by_role("navigation", name="Your chats")
    expect(chats).to_be_hidden()
    toggle = page.get_by_role("button", name="Chats")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    toggle.click()
    expect(chats).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    screenshot(page, "screen-phone-chat-list")
    chats.get_by_role("link", name="Chat 2").click()
    expect(page).to_have_url(re.compile(rf"/chat/{sessions[2].pk}/$"))
    expect(page.get_by_role("navigation", name="Your chats")).to_be_hidden()
    # The composer takes a small part of the screen.
    height = page.locator(".composer-area").evaluate("(n) => n.getBoundingClientRect().height")
    assert height < PHONE["height"] / 6, height
    assert page.problems == []


# ---- The model switch -------------------------------------------------------------------------


@SIZES
def test_the_model_can_be_switched_inside_a_chat_and_the_picker_shows_descriptions_and_prices(
    screen, user, chat_session, viewport
):
    AIModel.objects.filter(pk=chat_session.ai_model_id).update(
        name="Demo Free", description="Offline, costs nothing.", is_free=True
    )
    AIModelFactory(
        name="Big Brain", description="Careful answers to hard questions.", provider="openai", is_free=False,
        prompt_price_per_million=Decimal("3"), completion_price_per_million=Decimal("15"),
    )  # fmt: skip
    AIModelFactory(name="Painter", model_type="image")
    page = screen(viewport, user=user)
    page.goto(f"/chat/{chat_session.pk}/")
    if viewport is PHONE:
        page.get_by_role("button", name="Options").click()

    picker = page.get_by_label("Model", exact=True)
    options = picker.locator("option").all_inner_texts()
    assert options == ["Big Brain · paid, $3.00 in / $15.00 out per 1M tokens", "Demo Free · free"]
    expect(page.locator("#model-description")).to_contain_text("Offline, costs nothing.")
    expect(page.locator("#chat-demo-banner")).to_be_visible()

    picker.select_option(label="Big Brain · paid, $3.00 in / $15.00 out per 1M tokens")

    expect(page.locator("#model-description")).to_contain_text("Careful answers to hard questions.")
    expect(page.locator("#model-description")).to_contain_text("$3.00 in / $15.00 out")
    expect(page.locator("#chat-demo-banner")).to_be_hidden()
    expect(page.locator("#chat-status")).to_contain_text("Big Brain")
    chat_session.refresh_from_db()
    assert chat_session.ai_model.name == "Big Brain"
    page.reload()
    assert (
        page.get_by_label("Model", exact=True)
        .evaluate("(s) => s.selectedOptions[0].textContent")
        .startswith("Big Brain")
    )
    screenshot(page, "screen-model-switched")
    assert page.problems == []


# ---- Keyboard ---------------------------------------------------------------------------------


def test_shortcuts_search_start_a_new_chat_and_stop_a_reply(screen, user, chat_session, settings):
    settings.DEMO_STREAM_DELAY = 0.25
    page = screen(DESKTOP, user=user)
    page.goto(f"/chat/{chat_session.pk}/")

    page.keyboard.press("Control+k")
    expect(page.get_by_label("Search chats")).to_be_focused()

    page.get_by_label("Message", exact=True).focus()
    _send(page, "Write a long answer")
    _until(page, lambda: _generating(page))
    page.keyboard.press("Escape")
    reply = page.locator(ASSISTANTS).last
    expect(reply).to_have_attribute("data-status", "stopped")

    page.keyboard.press("Control+Shift+O")
    expect(page).to_have_url(re.compile(r"/chat/\?new=1$"))
    expect(page.get_by_label("Chatbot")).to_be_focused()
    page.get_by_role("button", name="Start chat").press("Enter")
    expect(page).to_have_url(re.compile(r"/chat/\d+/$"))
    expect(page.get_by_label("Message", exact=True)).to_be_focused()
    assert page.problems == []


# ---- Around the chat --------------------------------------------------------------------------


@SIZES
def test_visitors_get_a_landing_page_with_sign_in_and_sign_up(screen, db, viewport):
    page = screen(viewport)
    page.goto("/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("chat with AI models")
    expect(page.get_by_role("link", name="Sign up free")).to_be_visible()
    expect(page.get_by_role("main").get_by_role("link", name="Log in")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    screenshot(page, f"screen-landing-{viewport['width']}")
    page.get_by_role("link", name="Sign up free").click()
    expect(page).to_have_url(re.compile(r"/accounts/signup/$"))


def test_signed_in_people_go_from_the_landing_page_to_their_chats(screen, user):
    page = screen(DESKTOP, user=user)
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/chat/$"))


def test_the_theme_toggle_goes_light_dark_and_system_and_is_remembered(screen, user, chat_session):
    page = screen(DESKTOP, user=user, color_scheme="light")
    page.goto(f"/chat/{chat_session.pk}/")

    def background():
        return max(map(int, re.findall(r"\d+", page.evaluate("getComputedStyle(document.body).backgroundColor"))))

    toggle = page.get_by_role("banner").get_by_role("button", name=re.compile("^Theme"))
    expect(toggle).to_have_text("Theme: System")
    assert background() > 200
    toggle.click()
    expect(toggle).to_have_text("Theme: Light")
    toggle.click()
    expect(toggle).to_have_text("Theme: Dark")
    assert background() < 60
    page.goto("/account/")
    assert background() < 60
    expect(page.get_by_role("banner").get_by_role("button", name=re.compile("^Theme"))).to_have_text("Theme: Dark")
    page.get_by_role("banner").get_by_role("button", name=re.compile("^Theme")).click()
    assert background() > 200  # back to the system's, light here


def test_a_usage_hint_shows_by_the_composer_when_less_than_a_fifth_is_left(screen, user, chat_session, default_tier):
    default_tier.hourly_max_messages = 10
    default_tier.save()
    page = screen(DESKTOP, user=user)
    page.goto(f"/chat/{chat_session.pk}/")
    hint = page.locator("#usage-hint")
    expect(hint).to_be_hidden()
    for n in range(9):
        _send(page, f"Message {n}")
        expect(page.locator(ASSISTANTS)).to_have_count(n + 1)
        expect(page.locator(ASSISTANTS).last).to_have_attribute("data-status", "complete")
        if n == 7:
            expect(hint).to_be_hidden()  # 2 of 10 left is a fifth, not less
    expect(hint).to_have_text("1 message left this hour.")
    page.reload()
    expect(page.locator("#usage-hint")).to_have_text("1 message left this hour.")
    screenshot(page, "screen-usage-hint")


def test_the_demo_reply_shows_a_list_a_table_and_code_in_the_language_the_message_names(
    screen, user, chat_session, settings
):
    # A real upstream is configured and a real model exists: the site is not in demo mode, yet this
    # chat's model is the demo one, and the chat says so.
    settings.AI_API_KEY = "a-real-key"
    AIModelFactory(name="Real Model", provider="openai")
    page = screen(DESKTOP, user=user)
    page.goto(f"/chat/{chat_session.pk}/")
    expect(page.locator("#chat-demo-banner")).to_be_visible()
    expect(page.locator(".site-header .demo-banner")).to_have_count(0)

    _send(page, "How do I say hello in Rust?")

    reply = page.locator(ASSISTANTS).last
    expect(reply).to_have_attribute("data-status", "complete")
    expect(reply.locator("ul li")).to_have_count(3)
    expect(reply.locator("table td").first).to_have_text("1")
    expect(reply.locator(".code-language")).to_have_text("rust")
    expect(reply.locator("pre code.language-rust span.k").first).to_be_visible()


def test_automatic_titles_are_plain_text(screen, user, chat_session):
    page = screen(DESKTOP, user=user)
    page.goto(f"/chat/{chat_session.pk}/")
    _send(page, "Some **hints** for you:\n\n```python\nprint('x')\n```")
    expect(page.locator(ASSISTANTS).last).to_have_attribute("data-status", "complete")
    expect(page.get_by_role("heading", level=1)).to_have_text("Some hints for you:")
    chat_session.refresh_from_db()
    assert chat_session.title == "Some hints for you:"


# ---- axe-core ---------------------------------------------------------------------------------


@SIZES
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_violations_on_the_chat_screen_landing_and_account_pages(
    screen, user, chat_session, viewport, scheme
):
    ChatMessageFactory(session=chat_session, content="Show me code\non two lines")
    ChatMessageFactory(
        session=chat_session, message_type="assistant",
        content="Here:\n\n```python\ndef f(x):\n    return x * 2  # double\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |",
    )  # fmt: skip
    page = screen(viewport, color_scheme=scheme)
    page.goto("/")
    assert axe_violations(page) == []
    page.goto("/accounts/login/")
    page.get_by_label("Email or phone number").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/chat/$"))
    assert axe_violations(page) == []
    page.goto(f"/chat/{chat_session.pk}/")
    expect(page.get_by_role("button", name="Copy python code")).to_be_attached()
    assert axe_violations(page) == []
    if viewport is PHONE:
        page.get_by_role("button", name="Chats").click()
        assert axe_violations(page) == []
    page.goto("/account/")
    assert axe_violations(page) == []
