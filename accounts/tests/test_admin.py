from datetime import UTC, datetime, timedelta

import pytest

from accounts.models import User
from accounts.tests.factories import UserFactory
from billing.models import UserSubscription
from billing.tests.factories import SubscriptionTypeFactory, UserSubscriptionFactory

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "a long passphrase for admin"


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
