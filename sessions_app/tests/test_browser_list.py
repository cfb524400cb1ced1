"""The chat list in a real browser: sign-up landing, the new-chat pickers, day groups, search, phone and dark mode."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.tests.factories import PASSWORD
from chatbots.tests.factories import AIModelFactory, ChatbotFactory
from chatsite.testing.browser import screenshot
from sessions_app.models import ChatSession
from sessions_app.tests.factories import ChatMessageFactory, ChatSessionFactory

pytestmark = pytest.mark.django_db(transaction=True)

OPTIONS_ON_OFFER = "els => els.filter(e => !e.disabled && !e.hidden).map(e => e.textContent.trim())"


def _log_in(page, email="owner@example.com"):
    page.goto("/accounts/login/")
    page.get_by_label("Email or phone number").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/chat/")


def _session(user, chatbot, ai_model, title, *, days_ago=0):
    session = ChatSessionFactory(user=user, chatbot=chatbot, ai_model=ai_model, title=title)
    if days_ago:
        # auto_now would overwrite updated_at on save(): set it with an update instead.
        ChatSession.objects.filter(pk=session.pk).update(updated_at=timezone.now() - timedelta(days=days_ago))
    return session


@pytest.fixture
def context_for(browser, live_server):
    """Make a browser context on the live server with other options (viewport, colour scheme)."""
    contexts = []

    def make(**options):
        context = browser.new_context(base_url=live_server.url, **options)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        return page

    yield make
    for context in contexts:
        context.close()


def test_signing_up_lands_on_the_empty_chat_list(page, default_tier, chatbot, ai_model):
    page.goto("/accounts/signup/")
    page.get_by_label("Email").fill("newcomer@example.com")
    page.get_by_label(re.compile(r"^Password:?$")).fill("a long and unusual passphrase")
    page.get_by_label("Password confirmation").fill("a long and unusual passphrase")
    page.get_by_role("button", name="Create account").click()

    page.wait_for_url("**/chat/")
    assert page.get_by_text("No chats yet.").is_visible()
    assert page.get_by_text("Welcome!").is_visible()
    assert page.get_by_role("button", name="Start chat").is_visible()
    screenshot(page, "chat-list-empty")


def test_the_pickers_offer_models_that_fit_the_chatbot_and_start_a_chat(page, user, chatbot, ai_model):
    ChatbotFactory(name="Painter Bot", chatbot_type="image")
    tiny = AIModelFactory(name="Tiny Llama", is_free=True)
    AIModelFactory(name="Image Maker", model_type="image")
    _log_in(page)

    models = page.get_by_label("Model")
    assert page.get_by_label("Chatbot").input_value() == str(chatbot.pk)
    assert models.locator("option").evaluate_all(OPTIONS_ON_OFFER) == ["GPT-4", "Tiny Llama (free)"]

    page.get_by_label("Chatbot").select_option(label="Painter Bot (image)")
    assert models.locator("option").evaluate_all(OPTIONS_ON_OFFER) == ["Image Maker (image)"]
    assert models.evaluate("select => select.selectedOptions[0].textContent") == "Image Maker (image)"

    page.get_by_label("Chatbot").select_option(label="General Assistant")
    models.select_option(label="Tiny Llama (free)")
    page.get_by_text("Title (optional)").click()
    page.get_by_role("textbox", name="Title").fill("Trip planning")
    page.get_by_role("button", name="Start chat").click()

    page.wait_for_url("**/chat/*/")
    session = ChatSession.objects.get()
    assert (session.user, session.chatbot, session.ai_model, session.title) == (user, chatbot, tiny, "Trip planning")
    page.goto("/chat/")
    today = page.locator("section.day", has=page.get_by_role("heading", name="Today"))
    assert today.get_by_role("link", name="Trip planning").is_visible()


def test_chats_are_grouped_by_day_newest_first(page, user, chatbot, ai_model):
    _session(user, chatbot, ai_model, "Old recipe ideas", days_ago=400)
    _session(user, chatbot, ai_model, "Last week's plans", days_ago=5)
    _session(user, chatbot, ai_model, "Yesterday's question", days_ago=1)
    _session(user, chatbot, ai_model, "This morning's chat")
    _log_in(page)

    headings = [text.strip() for text in page.locator("h2.day-heading").all_text_contents()]
    five_days_ago = timezone.localdate() - timedelta(days=5)
    old = timezone.localdate() - timedelta(days=400)
    assert headings[:2] == ["Today", "Yesterday"]
    assert headings[2] == f"{five_days_ago:%A} {five_days_ago.day} {five_days_ago:%B}" + (
        f" {five_days_ago.year}" if five_days_ago.year != timezone.localdate().year else ""
    )
    assert headings[3] == f"{old:%A} {old.day} {old:%B %Y}"
    titles = page.locator("a.session-title").all_inner_texts()
    assert titles == ["This morning's chat", "Yesterday's question", "Last week's plans", "Old recipe ideas"]
    today = page.locator("section.day", has=page.get_by_role("heading", name="Today"))
    assert today.get_by_role("link", name="This morning's chat").is_visible()
    screenshot(page, "chat-list")


def test_search_finds_a_chat_by_a_word_in_a_message_and_highlights_it(page, user, chatbot, ai_model):
    kitchen = _session(user, chatbot, ai_model, "Kitchen questions")
    ChatMessageFactory(session=kitchen, content="How ripe should a banana be for bread? <b>asap</b>")
    _session(user, chatbot, ai_model, "Unrelated chat")
    _log_in(page)

    page.get_by_label("Search chats").fill("banana")
    page.get_by_label("Search chats").press("Enter")

    page.wait_for_url("**/chat/?q=banana")
    assert page.get_by_role("heading", name="Chats matching “banana”").is_visible()
    assert page.get_by_role("link", name="Kitchen questions").is_visible()
    assert page.get_by_role("link", name="Unrelated chat").count() == 0
    assert page.locator(".snippet mark").all_inner_texts() == ["banana"]
    # The user's markup is shown as text, never as HTML.
    assert page.locator(".snippet b").count() == 0
    screenshot(page, "chat-search")

    page.get_by_label("Search chats").fill("no such words")
    page.get_by_label("Search chats").press("Enter")
    page.wait_for_url("**/chat/?q=no+such+words")
    assert page.get_by_text("No chat matches").is_visible()


def test_a_phone_screen_shows_the_list_without_horizontal_scrolling(context_for, user, staff, chatbot, ai_model):
    for n in range(6):
        _session(staff, chatbot, ai_model, f"Chat number {n} about a rather long subject", days_ago=n // 2)
    _session(staff, chatbot, ai_model, "Averyveryverylongtitlewithoutanyspacesthatmustwrapsomehowonaphone" * 2)
    page = context_for(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    _log_in(page, "staff@example.com")

    width = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert width[0] <= width[1], width
    # The new-chat form has the screen; the chat list and the site's links fold away behind "Chats".
    assert page.get_by_role("button", name="Start chat").is_visible()
    assert not page.get_by_label("Search chats").is_visible()
    page.get_by_role("button", name="Chats").click()
    for name in ["Account", "Admin", "API docs"]:
        assert page.get_by_role("navigation", name="Site").get_by_role("link", name=name).is_visible()
    assert page.get_by_role("button", name="Log out").is_visible()
    assert page.get_by_label("Search chats").is_visible()
    width = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert width[0] <= width[1], width
    screenshot(page, "chat-list-phone")

    page.goto("/account/")
    width = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert width[0] <= width[1], width
    screenshot(page, "account-phone")


def test_dark_mode_gives_a_dark_page(context_for, user, chatbot, ai_model):
    _session(user, chatbot, ai_model, "A chat seen at night")
    page = context_for(viewport={"width": 1280, "height": 800}, color_scheme="dark")
    _log_in(page)

    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    red, green, blue = (int(part) for part in background[background.index("(") + 1 : -1].split(",")[:3])
    assert max(red, green, blue) < 60, background
    text = page.evaluate("getComputedStyle(document.body).color")
    assert min(int(part) for part in text[text.index("(") + 1 : -1].split(",")[:3]) > 180, text
    screenshot(page, "chat-list-dark")

    page.goto("/account/")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == background
    screenshot(page, "account-dark")


def test_keyboard_users_get_a_skip_link_and_visible_focus(page, user, chatbot, ai_model):
    _log_in(page)

    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    assert skip.evaluate("link => link === document.activeElement")
    box = skip.bounding_box()
    assert box is not None and box["x"] >= 0 and box["y"] >= 0
    assert skip.evaluate("link => getComputedStyle(link).outlineStyle") != "none"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"

    page.get_by_label("Search chats").focus()
    page.keyboard.press("Tab")  # to the Search button, focused from the keyboard
    button = page.get_by_role("button", name="Search")
    assert button.evaluate("b => b === document.activeElement")
    assert button.evaluate("b => getComputedStyle(b).outlineStyle") == "solid"
