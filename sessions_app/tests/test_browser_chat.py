"""The conversation page driven end to end in headless Chromium against the live server."""

import re
from datetime import datetime
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings as django_settings
from django.test import Client
from playwright.sync_api import expect

from accounts.tests.factories import PASSWORD
from chatbots.models import AIModel
from chatbots.tests.factories import AIModelFactory, ChatbotFactory
from chatsite.testing.browser import screenshot
from sessions_app.models import ChatMessage, ChatSession
from sessions_app.tests.factories import ChatMessageFactory, ChatSessionFactory

pytestmark = pytest.mark.django_db(transaction=True)

IMG = "<img src=x onerror=alert(1)>"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
IN_VIEW = "(node) => { const r = node.getBoundingClientRect(); return r.top >= 0 && r.bottom <= innerHeight; }"
SCRIPT = "<script>alert(1)</script>"
ASSISTANTS = '.message[data-message-type="assistant"]'
USERS = '.message[data-message-type="user"]'

# Started before a reply begins, resolved when it ends: the length of the reply's text at
# every 15 ms while it is being generated, so a test can tell it arrived piece by piece.
START_SAMPLING = """(index) => {
  window.__sampled = (async () => {
    const lengths = [];
    const started = Date.now();
    let seen = null;  // the reply being generated at that index (not one it replaces)
    while (Date.now() - started < 30000) {
      const reply = document.querySelectorAll('.message[data-message-type="assistant"]')[index];
      if (reply && (seen === reply || reply.dataset.status === "generating")) {
        seen = reply;
        if (reply.dataset.status !== "generating") return {lengths, status: reply.dataset.status};
        lengths.push(reply.querySelector(".message-body").textContent.length);
      }
      await new Promise((resolve) => setTimeout(resolve, 15));
    }
    return {lengths, status: "timeout"};
  })();
}"""


def _watch(page) -> list[str]:
    """Collect script errors and any alert/confirm/prompt dialog (the page must never open one)."""
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))

    def on_dialog(dialog):
        problems.append(f"{dialog.type} dialog: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return problems


def _sign_in(context, live_server, user) -> None:
    """Give the browser the session cookie of a user signed in by the test client."""
    client = Client()
    client.force_login(user)
    name = django_settings.SESSION_COOKIE_NAME
    context.add_cookies([{"name": name, "value": client.cookies[name].value, "url": live_server.url}])


def _start_sampling(page, index: int) -> None:
    page.evaluate(START_SAMPLING, index)


def _sampled(page) -> dict:
    return page.evaluate("window.__sampled")


def _growth_steps(lengths: list[int]) -> int:
    return sum(1 for before, after in pairwise(lengths) if after > before)


def _send(page, text: str) -> None:
    # While a reply is written Enter sends nothing (the text waits in the box): wait for Send to be back.
    expect(page.get_by_role("button", name="Send", exact=True)).to_be_enabled(timeout=20_000)
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")


def _wait_until_reply_has_text(page, index: int) -> None:
    page.wait_for_function(
        """(index) => {
          const reply = document.querySelectorAll('.message[data-message-type="assistant"]')[index];
          return reply && reply.querySelector(".message-body").textContent.length > 0;
        }""",
        arg=index,
    )


def test_a_whole_conversation_streams_edits_regenerates_stops_resumes_renames_and_deletes(
    page, settings, chatbot, ai_model, default_tier
):
    settings.DEMO_STREAM_DELAY = 0.03
    problems = _watch(page)

    # Sign up, then start a chat with the pickers.
    page.goto("/accounts/signup/")
    page.get_by_label(re.compile(r"^Email")).fill("walker@example.com")
    page.get_by_label(re.compile(r"^Password:?$")).fill(PASSWORD)
    page.get_by_label("Password confirmation").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(re.compile(r"/chat/$"))
    page.get_by_label("Chatbot").select_option(str(chatbot.pk))
    page.get_by_label("Model").select_option(str(ai_model.pk))
    screenshot(page, "flow-chat-list-new")
    page.get_by_role("button", name="Start chat").click()
    expect(page).to_have_url(re.compile(r"/chat/\d+/$"))
    page.wait_for_load_state()
    session = ChatSession.objects.get()
    assert session.user.email == "walker@example.com"
    # A new chat is for typing in: the composer has the focus.
    expect(page.get_by_label("Message", exact=True)).to_be_focused()
    screenshot(page, "conversation-empty")

    # Shift+Enter is a new line and sends nothing; Enter sends.
    box = page.get_by_label("Message", exact=True)
    box.fill("Plan a short trip")
    box.press("Shift+Enter")
    box.type("to the mountains")
    expect(box).to_have_value("Plan a short trip\nto the mountains")
    assert page.locator(USERS).count() == 0
    _start_sampling(page, 0)
    box.press("Enter")

    # The reply appears piece by piece, with a Stop button while it is generated.
    _wait_until_reply_has_text(page, 0)
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    screenshot(page, "conversation-streaming")
    result = _sampled(page)
    assert result["status"] == "complete"
    assert _growth_steps(result["lengths"]) >= 3, result
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    expect(box).to_have_value("")
    first_user = page.locator(USERS).first
    expect(first_user.locator(".message-body")).to_have_text("Plan a short trip\nto the mountains")
    first_reply = page.locator(ASSISTANTS).first
    # Markdown rendered by the server: the demo reply starts with **Demo reply**.
    expect(first_reply.locator(".message-body strong").first).to_have_text("Demo reply")
    expect(first_reply).to_have_attribute("data-message-id", re.compile(r"^[0-9a-f-]{36}$"))
    screenshot(page, "conversation")

    # Edit the first message inline: the old reply goes at once (it is the other version now), and
    # the new one streams in directly under the edited message.
    first_user.get_by_role("button", name="Edit").click()
    editor = page.get_by_label("Edit message")
    expect(editor).to_have_value("Plan a short trip\nto the mountains")
    editor.fill("Plan a long trip to the sea")
    screenshot(page, "conversation-inline-edit")
    _start_sampling(page, 0)
    page.get_by_role("button", name="Save").click()
    result = _sampled(page)
    assert result["status"] == "complete"
    assert _growth_steps(result["lengths"]) >= 3, result
    expect(first_user.locator(".message-body")).to_have_text("Plan a long trip to the sea")
    expect(first_user).to_contain_text("edited")
    expect(page.locator(ASSISTANTS)).to_have_count(1)
    new_reply = page.locator(ASSISTANTS).first
    expect(new_reply).to_contain_text("Plan a long trip to the sea")
    assert (
        page.evaluate("() => document.querySelector('.message-user').nextElementSibling.dataset.messageType")
        == "assistant"
    )
    expect(first_user.get_by_role("navigation", name="Versions")).to_contain_text("2/2")
    screenshot(page, "conversation-edited")

    # Switch back to the first version: its own reply comes back with it; then forward again.
    first_user.get_by_role("button", name="Previous version").click()
    expect(page.locator(USERS).first.get_by_role("navigation", name="Versions")).to_contain_text("1/2")
    expect(page.locator(USERS).first.locator(".message-body")).to_have_text("Plan a short trip\nto the mountains")
    expect(page.locator(ASSISTANTS).first).to_contain_text("Plan a short trip")
    page.locator(USERS).first.get_by_role("button", name="Next version").click()
    expect(page.locator(USERS).first.get_by_role("navigation", name="Versions")).to_contain_text("2/2")
    expect(page.locator(ASSISTANTS).first).to_contain_text("Plan a long trip to the sea")
    first_user = page.locator(USERS).first

    # Regenerate the reply, streamed too: the old one is version 1 of 2 at that place.
    _start_sampling(page, 0)
    page.locator(ASSISTANTS).first.get_by_role("button", name="Regenerate this reply").click()
    result = _sampled(page)
    assert result["status"] == "complete"
    assert _growth_steps(result["lengths"]) >= 3, result
    expect(page.locator(ASSISTANTS)).to_have_count(1)
    expect(page.locator(ASSISTANTS).first.get_by_role("navigation", name="Versions")).to_contain_text("2/2")
    assert session.messages.filter(message_type="assistant", disabled=False).count() == 1
    page.locator(ASSISTANTS).first.get_by_role("button", name="Previous version").click()
    expect(page.locator(ASSISTANTS).first.get_by_role("navigation", name="Versions")).to_contain_text("1/2")
    page.locator(ASSISTANTS).first.get_by_role("button", name="Next version").click()
    expect(page.locator(ASSISTANTS).first.get_by_role("navigation", name="Versions")).to_contain_text("2/2")
    box = page.get_by_label("Message", exact=True)

    # Stop a slow reply halfway: the partial text stays, marked stopped.
    settings.DEMO_STREAM_DELAY = 0.25
    _send(page, "Tell me everything about mountains")
    _wait_until_reply_has_text(page, 1)
    page.get_by_role("button", name="Stop").click()
    stopped = page.locator(ASSISTANTS).nth(1)
    expect(stopped).to_have_attribute("data-status", "stopped")
    expect(stopped).to_contain_text("Stopped")
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    partial = stopped.locator(".message-body").inner_text()
    assert partial.strip()
    assert "AI_API_KEY" not in partial
    reply = session.messages.filter(message_type="assistant").order_by("-created_at", "-id").first()
    assert reply.status == ChatMessage.Status.STOPPED
    assert reply.content
    screenshot(page, "conversation-stopped")

    # Reload while a reply is being generated: the page follows it to the end.
    settings.DEMO_STREAM_DELAY = 0.08
    _send(page, "One more question about rivers")
    _wait_until_reply_has_text(page, 2)
    page.reload()
    resumed = page.locator(ASSISTANTS).nth(2)
    _start_sampling(page, 2)
    result = _sampled(page)
    assert result["status"] == "complete"
    assert _growth_steps(result["lengths"]) >= 2, result
    expect(resumed).to_contain_text("AI_API_KEY")
    expect(resumed.locator(".message-body strong").first).to_have_text("Demo reply")
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()

    # Rename: the heading and the page title change.
    page.get_by_role("button", name="Rename").click()
    page.get_by_label("Title").fill("Zebra crossing trip")
    screenshot(page, "conversation-rename")
    page.get_by_role("button", name="Save title").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Zebra crossing trip")
    expect(page).to_have_title("Zebra crossing trip · chatsite")
    session.refresh_from_db()
    assert session.title == "Zebra crossing trip"

    # Find it from the list by searching.
    page.goto("/chat/")
    screenshot(page, "flow-chat-list")
    search = page.get_by_label("Search chats")
    search.fill("zebra")
    search.press("Enter")
    found = page.get_by_role("link", name=re.compile("Zebra crossing trip"))
    expect(found).to_be_visible()
    screenshot(page, "flow-chat-list-search")
    found.click()
    expect(page).to_have_url(re.compile(rf"/chat/{session.pk}/$"))

    # Delete it after confirming in the page's own dialog.
    page.get_by_role("button", name="Delete chat").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Zebra crossing trip")
    screenshot(page, "conversation-delete-dialog")
    dialog.get_by_role("button", name="Delete", exact=True).click()
    expect(page).to_have_url(re.compile(r"/chat/$"))
    expect(page.get_by_text("Deleted the chat")).to_be_visible()
    assert not ChatSession.objects.exists()
    assert problems == []


def test_a_quota_refusal_shows_inline_with_the_limit_its_local_reset_time_and_the_account_link(
    browser, live_server, user, chat_session, default_tier
):
    default_tier.hourly_max_messages = 1
    default_tier.save()
    context = browser.new_context(base_url=live_server.url, locale="en-GB", timezone_id="Asia/Kolkata")
    try:
        _sign_in(context, live_server, user)
        page = context.new_page()
        problems = _watch(page)
        page.goto(f"/chat/{chat_session.pk}/")
        _send(page, "The first message")
        expect(page.locator(ASSISTANTS).first).to_have_attribute("data-status", "complete")

        _send(page, "One more please")

        alert = page.locator("#chat-alerts [role=alert]")
        expect(alert).to_contain_text("messages per hour (1 of 1)")
        expect(alert).to_contain_text("It resets at")
        expect(alert.get_by_role("link", name="See your plan and limits")).to_have_attribute("href", "/account/")
        expect(alert.get_by_role("link", name="see the plans")).to_have_attribute("href", "/pricing/")
        expect(page.get_by_label("Message", exact=True)).to_have_value("One more please")
        # The reset time is shown in the browser's time zone (UTC+5:30 here), not the server's.
        resets = alert.locator("time")
        moment = datetime.fromisoformat(resets.get_attribute("datetime").replace("Z", "+00:00"))
        assert moment.astimezone(ZoneInfo("Asia/Kolkata")).strftime("%H:%M") in resets.inner_text()
        screenshot(page, "conversation-quota-refusal")
        assert list(chat_session.messages.filter(message_type="user").values_list("content", flat=True)) == [
            "The first message"
        ]
        assert page.locator(USERS).count() == 1
        assert problems == []
    finally:
        context.close()


def test_an_upstream_error_shows_once_by_the_composer_without_internal_addresses_and_retry_survives_a_reload(
    page, live_server, user, chat_session, upstream, settings
):
    settings.AI_MAX_RETRIES = 0
    AIModel.objects.filter(pk=chat_session.ai_model_id).update(provider="openai")
    for n in range(30):
        ChatMessageFactory(session=chat_session, content=f"Earlier question {n}")
        ChatMessageFactory(session=chat_session, message_type="assistant", content=f"Earlier answer {n}\n\n" * 3)
    upstream.enqueue_status(503)
    _sign_in(page.context, live_server, user)
    problems = _watch(page)
    page.goto(f"/chat/{chat_session.pk}/")

    _send(page, "Are you there?")

    alert = page.locator("#chat-alerts [role=alert]")
    expect(alert).to_contain_text("The AI model could not answer this time.")
    expect(alert.get_by_role("button", name="Retry")).to_be_visible()
    # Said once, beside the composer, in view however long the chat; no host or port of the upstream.
    expect(page.get_by_text("could not answer", exact=False)).to_have_count(1)
    assert "127.0.0.1" not in page.locator("body").inner_text()
    assert "HTTP 503" not in page.locator("body").inner_text()
    assert alert.evaluate(IN_VIEW)
    expect(page.locator(USERS).last.locator(".message-body")).to_have_text("Are you there?")
    screenshot(page, "conversation-upstream-error")

    # After a reload the message still waits for its reply, and Retry is still there.
    page.reload()
    alert = page.locator("#chat-alerts [role=alert]")
    expect(alert).to_contain_text("The AI model could not answer this time.")
    assert "127.0.0.1" not in page.locator("body").inner_text()
    expect(page.locator(".tag-replaced")).to_have_count(0)

    upstream.enqueue_text("Recovered")
    alert.get_by_role("button", name="Retry").click()

    retried = page.locator(ASSISTANTS).last
    expect(retried).to_have_attribute("data-status", "complete")
    expect(retried.locator(".message-body")).to_have_text("Recovered")
    expect(page.locator("#chat-alerts [role=alert]")).to_have_count(0)
    assert page.locator(USERS).count() == 31
    assert problems == []


def test_markup_in_messages_titles_and_chatbot_names_is_shown_as_text(page, live_server, user, ai_model):
    bot = ChatbotFactory(name=f"Bot {IMG}{SCRIPT}")
    session = ChatSessionFactory(
        user=user, chatbot=bot, ai_model=ai_model, title=f"Title {IMG}{SCRIPT}", auto_generate_title=False
    )
    ChatMessageFactory(session=session, content=f"Stored {IMG} {SCRIPT}")
    ChatMessageFactory(session=session, message_type="assistant", content=f"Reply {IMG} {SCRIPT}")
    _sign_in(page.context, live_server, user)
    problems = _watch(page)
    page.goto(f"/chat/{session.pk}/")

    _send(page, f"Sent {IMG} {SCRIPT}")
    expect(page.locator(ASSISTANTS).nth(1)).to_have_attribute("data-status", "complete")
    page.get_by_role("button", name="Rename").click()
    page.get_by_role("textbox", name="Title").fill(f"Renamed {IMG}{SCRIPT}")
    page.get_by_role("button", name="Save title").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Renamed {IMG}{SCRIPT}")
    page.locator(USERS).nth(1).get_by_role("button", name="Edit").click()
    expect(page.get_by_label("Edit message")).to_have_value(f"Sent {IMG} {SCRIPT}")
    page.get_by_role("button", name="Cancel").click()

    def check_inert():
        assert page.locator('img[src="x"]').count() == 0
        assert page.evaluate("[...document.scripts].every((s) => s.src.includes('/static/'))")
        assert page.evaluate("document.querySelectorAll('[onerror]').length") == 0
        users = page.locator(f"{USERS} .message-body")
        expect(users.nth(0)).to_have_text(f"Stored {IMG} {SCRIPT}")
        expect(users.nth(1)).to_have_text(f"Sent {IMG} {SCRIPT}")
        expect(page.locator(ASSISTANTS).first.locator(".message-body")).to_have_text(f"Reply {IMG} {SCRIPT}")
        # The demo reply quotes the message: as text, inside a blockquote.
        expect(page.locator(ASSISTANTS).nth(1).locator("blockquote")).to_have_text(f"Sent {IMG} {SCRIPT}")
        for author in page.locator(f"{ASSISTANTS} .message-meta strong").all():
            expect(author).to_have_text(f"Bot {IMG}{SCRIPT}")
        expect(page.get_by_role("heading", level=1)).to_have_text(f"Renamed {IMG}{SCRIPT}")

    check_inert()  # as the script inserted it
    page.reload()
    check_inert()  # as the server rendered it
    screenshot(page, "conversation-xss")
    assert problems == []


def test_a_phone_sized_screen_can_log_in_and_chat(browser, live_server, user, chat_session):
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    try:
        page = context.new_page()
        problems = _watch(page)
        page.goto(f"/chat/{chat_session.pk}/")
        page.get_by_label("Email or phone number").fill(user.email)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(re.compile(rf"/chat/{chat_session.pk}/$"))
        page.wait_for_load_state()  # the page's script is attached

        _send(page, "Hello from a phone")

        reply = page.locator(ASSISTANTS).first
        expect(reply).to_have_attribute("data-status", "complete")
        expect(reply).to_contain_text("Hello from a phone")
        for name in ["Send", "Regenerate this reply", "Copy reply", "Edit", "Chats", "Options"]:
            expect(page.get_by_role("button", name=name, exact=True)).to_be_visible()
        # The chat's options fold away on a phone, a tap away.
        expect(page.get_by_role("button", name="Rename", exact=True)).to_be_hidden()
        page.get_by_role("button", name="Options").click()
        for name in ["Rename", "Delete chat"]:
            expect(page.get_by_role("button", name=name, exact=True)).to_be_visible()
        expect(page.get_by_label("Model", exact=True)).to_be_visible()
        # Nothing sticks out sideways.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        screenshot(page, "mobile-conversation")
        page.goto("/chat/")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        screenshot(page, "mobile-chat-list")
        assert problems == []
    finally:
        context.close()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_code_is_highlighted_labelled_and_copied_with_a_button_that_covers_no_code(
    browser, live_server, user, chat_session, viewport
):
    ChatMessageFactory(session=chat_session, content="How do I print in Python?")
    ChatMessageFactory(
        session=chat_session,
        message_type="assistant",
        content="Use `print`:\n\n```python\nprint('hello')\n```\n\nThat is **all**.",
    )
    context = browser.new_context(
        base_url=live_server.url, color_scheme="dark", viewport=viewport,
        permissions=["clipboard-read", "clipboard-write"],
    )  # fmt: skip
    try:
        _sign_in(context, live_server, user)
        page = context.new_page()
        problems = _watch(page)
        page.goto(f"/chat/{chat_session.pk}/")

        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        red, green, blue = map(int, re.findall(r"\d+", background))
        assert max(red, green, blue) < 60, (red, green, blue)
        reply = page.locator(ASSISTANTS).first
        code = reply.locator("pre code")
        expect(code).to_have_text("print('hello')\n")
        # Highlighted by Pygments on the server: the builtin and the string are tokens of their own colours.
        expect(code.locator("span.nb")).to_have_text("print")
        expect(code.locator("span.s1")).to_have_text("'hello'")
        colours = code.evaluate(
            "(c) => [...c.querySelectorAll('span.nb, span.s1')].map((s) => getComputedStyle(s).color)"
        )
        assert len(set(colours)) == 2, colours
        expect(reply.locator(".code-language")).to_have_text("python")
        copy = reply.get_by_role("button", name="Copy python code")
        # The button sits in a bar above the code, never over it.
        button_box, code_box = copy.bounding_box(), reply.locator("pre").bounding_box()
        assert button_box["y"] + button_box["height"] <= code_box["y"], (button_box, code_box)
        copy.click()
        expect(reply.get_by_role("button", name="Copy python code")).to_have_text("Copied")
        assert page.evaluate("navigator.clipboard.readText()") == "print('hello')\n"
        reply.get_by_role("button", name="Copy reply").click()
        assert "That is all." in page.evaluate("navigator.clipboard.readText()")
        screenshot(page, f"dark-conversation-code-{viewport['width']}")
        assert problems == []
    finally:
        context.close()


def test_every_control_is_labelled_and_works_from_the_keyboard(page, live_server, user, chat_session):
    ChatMessageFactory(session=chat_session, content="Show me some code")
    ChatMessageFactory(session=chat_session, message_type="assistant", content="```\nls -l\n```")
    _sign_in(page.context, live_server, user)
    problems = _watch(page)
    page.goto(f"/chat/{chat_session.pk}/")
    # chat.js (deferred) adds the Copy buttons: every control is there once it has run.
    expect(page.get_by_role("button", name="Copy code")).to_be_visible()

    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll("button, a[href], textarea, input:not([type=hidden]), select")]
          .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute("aria-label") && !e.textContent.trim())
          .map((e) => e.outerHTML)"""
    )
    assert unlabelled == []
    reached = set()
    for _ in range(30):
        page.keyboard.press("Tab")
        reached.add(
            page.evaluate(
                """() => { const e = document.activeElement;
                  return ((e.labels && e.labels.length ? e.labels[0] : e).textContent || "").trim(); }"""
            )
        )
    assert {"Rename", "Markdown", "JSON", "Delete chat", "Edit", "Copy", "Message", "Regenerate", "Send"} <= reached

    # The confirmation opens and closes from the keyboard, and focus comes back.
    page.get_by_role("button", name="Delete chat").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    expect(page.get_by_role("button", name="Delete chat")).to_be_focused()
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Cancel").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog")).to_be_hidden()
    expect(page.get_by_role("button", name="Delete chat")).to_be_focused()
    # So does the inline editor.
    page.get_by_role("button", name="Edit").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_label("Edit message")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.get_by_label("Edit message")).to_have_count(0)
    expect(page.get_by_role("button", name="Edit")).to_be_focused()
    assert problems == []


def test_an_image_chatbot_reply_is_shown_as_an_image_with_alt_text(page, live_server, user):
    painter = ChatbotFactory(name="Painter", chatbot_type="image")
    session = ChatSessionFactory(user=user, chatbot=painter, ai_model=AIModelFactory(model_type="image"))
    _sign_in(page.context, live_server, user)
    problems = _watch(page)
    page.goto(f"/chat/{session.pk}/")
    expect(page.get_by_label("Message", exact=True)).to_have_accessible_description("Describe the image you want.")

    _send(page, "a red bicycle")

    reply = page.locator(ASSISTANTS).first
    expect(reply).to_have_attribute("data-status", "complete")
    image = reply.get_by_role("img", name="Image generated for: a red bicycle")
    expect(image).to_have_attribute("src", session.messages.get(message_type="assistant").image_url)
    assert problems == []
