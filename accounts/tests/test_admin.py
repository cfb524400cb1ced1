import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission

from accounts.models import User
from accounts.tests.factories import UserFactory
from billing.models import UsageEvent, UserSubscription
from billing.tests.factories import SubscriptionTypeFactory, UsageEventFactory, UserSubscriptionFactory

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "a long passphrase for admin"
XSS = "<script>alert(1)</script>"


def _usage_row(response, limit: str) -> list[str]:
    """The cells of one limit's row in the usage table: name, window, limit, used, remaining, resets at."""
    row = re.search(rf'<tr data-limit="{limit}">(.*?)</tr>', response.content.decode())
    assert row is not None, limit
    return re.findall(r"<td>(.*?)</td>", row.group(1))


def test_user_changelist_add_and_change_pages_answer_200(admin_client, user):
    UserSubscriptionFactory(user=user)

    assert admin_client.get("/admin/accounts/user/").status_code == 200
    assert admin_client.get("/admin/accounts/user/add/").status_code == 200
    assert admin_client.get(f"/admin/accounts/user/{user.pk}/change/").status_code == 200
    assert admin_client.get(f"/admin/accounts/user/{user.pk}/password/").status_code == 200


def test_user_changelist_searches_by_email_name_and_phone(admin_client):
    UserFactory(email="ada@example.com", name="Ada Lovelace", phone_number="+14155550123")
    UserFactory(email="bob@example.com", name="Bob")

    for term in ("ada@", "Lovelace", "4155550123"):
        response = admin_client.get("/admin/accounts/user/", {"q": term})
        assert [u.email for u in response.context["cl"].result_list] == ["ada@example.com"]


def test_adding_a_user_through_the_admin_hashes_the_password(admin_client):
    response = admin_client.post(
        "/admin/accounts/user/add/",
        {
            "email": "New.Person@Example.com",
            "usable_password": "true",
            "password1": NEW_PASSWORD,
            "password2": NEW_PASSWORD,
        },
    )

    assert response.status_code == 302
    created = User.objects.get(email="new.person@example.com")
    assert created.password != NEW_PASSWORD
    assert created.password.startswith("md5$")
    assert created.check_password(NEW_PASSWORD)
    assert not created.is_staff


def test_adding_a_user_whose_email_differs_only_in_case_is_refused(admin_client, user):
    response = admin_client.post(
        "/admin/accounts/user/add/",
        {"email": "OWNER@example.com", "usable_password": "true", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )

    assert response.status_code == 200
    assert "email" in response.context["adminform"].form.errors
    assert User.objects.filter(email__iexact="owner@example.com").count() == 1


def _change_data(user, **extra):
    return {
        "email": user.email,
        "name": user.name,
        "phone_number": "",
        "is_active": "on",
        "subscriptions-TOTAL_FORMS": "0",
        "subscriptions-INITIAL_FORMS": "0",
        "subscriptions-MIN_NUM_FORMS": "0",
        "subscriptions-MAX_NUM_FORMS": "1000",
        **extra,
    }


def test_subscription_added_through_the_user_inline_with_blank_end_gets_start_plus_duration(admin_client):
    user = UserFactory()
    tier = SubscriptionTypeFactory(name="Pro", duration_days=30)

    response = admin_client.post(
        f"/admin/accounts/user/{user.pk}/change/",
        _change_data(
            user,
            **{
                "subscriptions-TOTAL_FORMS": "1",
                "subscriptions-0-subscription_type": str(tier.pk),
                "subscriptions-0-is_active": "on",
                "subscriptions-0-start_date_0": "2030-01-01",
                "subscriptions-0-start_date_1": "12:00:00",
                "subscriptions-0-end_date_0": "",
                "subscriptions-0-end_date_1": "",
            },
        ),
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    subscription = UserSubscription.objects.get(user=user)
    assert subscription.subscription_type == tier
    assert subscription.start_date == datetime(2030, 1, 1, 12, tzinfo=UTC)
    assert subscription.end_date == subscription.start_date + timedelta(days=30)


def test_user_change_form_stores_the_phone_number_normalised(admin_client, user):
    response = admin_client.post(
        f"/admin/accounts/user/{user.pk}/change/", _change_data(user, phone_number="+1 (415) 555-0123")
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    user.refresh_from_db()
    assert user.phone_number == "+14155550123"


def test_user_change_form_refuses_a_phone_number_another_user_has(admin_client, user, other_user):
    other_user.phone_number = "+14155550123"
    other_user.save()

    response = admin_client.post(
        f"/admin/accounts/user/{user.pk}/change/", _change_data(user, phone_number="+1 415 555 0123")
    )

    assert response.status_code == 200
    assert "phone_number" in response.context["adminform"].form.errors


def test_user_changelist_costs_a_constant_number_of_queries(admin_client, django_assert_max_num_queries):
    UserFactory.create_batch(50)

    # session, admin user, groups filter, paginated count, full count, the page of users
    with django_assert_max_num_queries(6):
        response = admin_client.get("/admin/accounts/user/")

    assert response.status_code == 200


def test_user_change_page_shows_the_usage_of_the_current_subscription(admin_client, user, default_tier):
    default_tier.hourly_max_messages = 5
    default_tier.save()
    UsageEventFactory.create_batch(2, user=user, billed_tokens=40)
    UsageEventFactory(user=user, kind=UsageEvent.Kind.IMAGE)
    UsageEventFactory(user=user, created_at=datetime.now(UTC) - timedelta(hours=2))

    response = admin_client.get(f"/admin/accounts/user/{user.pk}/change/")

    assert _usage_row(response, "hourly_max_messages")[:5] == ["Hourly max messages", "Last hour", "5", "2", "3"]
    assert _usage_row(response, "three_hours_max_messages")[2:5] == ["Unlimited", "3", "—"]
    assert _usage_row(response, "daily_max_tokens")[3] == "110"
    assert _usage_row(response, "daily_image_generation_limit")[3] == "1"
    assert 'href="/admin/billing/usageevent/?user_email=owner%40example.com"' in response.content.decode()


def test_user_change_page_without_a_current_subscription_says_so_and_starts_none(admin_client, default_tier):
    user = UserFactory()
    UserSubscriptionFactory(user=user, is_active=False)

    response = admin_client.get(f"/admin/accounts/user/{user.pk}/change/")

    assert "No current subscription" in response.content.decode()
    assert "usage-table" not in response.content.decode()
    assert not UserSubscription.objects.filter(user=user, is_active=True).exists()


def test_user_change_page_escapes_the_tier_name(admin_client, user, default_tier):
    default_tier.name = f"Tier {XSS}"
    default_tier.save()

    body = admin_client.get(f"/admin/accounts/user/{user.pk}/change/").content.decode()

    assert XSS not in body
    assert "<p>Tier &lt;script&gt;alert(1)&lt;/script&gt;: " in body


def test_user_change_page_costs_a_constant_number_of_queries(admin_client, user, django_assert_max_num_queries):
    UsageEventFactory.create_batch(20, user=user)
    UserSubscriptionFactory.create_batch(5, user=user, is_active=False)

    # session, admin user, the user, the user's groups and permissions, the permissions' content type, all
    # groups, all permissions, the subscriptions of the inline, the tiers once for all its rows, the current
    # subscription joined to tier and user, two for the usage sums and one for when they reset
    with django_assert_max_num_queries(14):
        response = admin_client.get(f"/admin/accounts/user/{user.pk}/change/")

    assert response.status_code == 200


def test_staff_who_is_not_a_superuser_cannot_give_roles_in_the_admin(client, user):
    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["view_user", "change_user"]))
    client.force_login(staff)
    page = client.get(f"/admin/accounts/user/{staff.pk}/change/")
    assert page.status_code == 200
    form = {
        "email": staff.email, "name": "", "phone_number": "", "is_active": "on", "is_staff": "on",
        "is_superuser": "on", "last_login_0": "", "last_login_1": "",
        "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00",
        "subscriptions-TOTAL_FORMS": "0", "subscriptions-INITIAL_FORMS": "0",
    }  # fmt: skip
    client.post(f"/admin/accounts/user/{staff.pk}/change/", form)
    staff.refresh_from_db()
    assert not staff.is_superuser
    assert b'name="is_superuser"' not in page.content
