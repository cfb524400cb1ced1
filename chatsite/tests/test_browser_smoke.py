import pytest

from chatsite.testing.browser import screenshot

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_real_browser_loads_the_log_in_page(page):
    page.goto("/chat/")

    assert page.url.endswith("/accounts/login/?next=/chat/")
    assert page.get_by_label("Email or phone number").is_visible()
    screenshot(page, "login")
