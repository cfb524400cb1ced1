from datetime import timedelta

import pytest

from billing.models import ChatSessionUsage, UsageEvent, UserSubscription
from billing.tests.factories import SubscriptionTypeFactory, UsageEventFactory, UserSubscriptionFactory
from sessions_app.tests.factories import ChatSessionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def usage_event(chat_session, ai_model):
    return UsageEventFactory(user=chat_session.user, session=chat_session, ai_model=ai_model)


@pytest.fixture
def rows(user, default_tier, usage_event, chat_session):
    """One row of every billing model."""
    return {
        "subscriptiontype": default_tier,
        "usersubscription": UserSubscription.objects.get(user=user),
        "usageevent": usage_event,
        "chatsessionusage": ChatSessionUsage.objects.create(user=user, session=chat_session, tokens_count=30),
    }


@pytest.mark.parametrize("model", ["subscriptiontype", "usersubscription", "usageevent", "chatsessionusage"])
def test_billing_changelist_and_change_page_answer_200(admin_client, rows, model):
    assert admin_client.get(f"/admin/billing/{model}/").status_code == 200
    assert admin_client.get(f"/admin/billing/{model}/{rows[model].pk}/change/").status_code == 200


@pytest.mark.parametrize("model", ["subscriptiontype", "usersubscription"])
def test_billing_add_page_answers_200(admin_client, model):
    assert admin_client.get(f"/admin/billing/{model}/add/").status_code == 200


@pytest.mark.parametrize("model", ["usageevent", "chatsessionusage"])
def test_ledger_admins_refuse_add_change_and_delete(admin_client, rows, model):
    pk = rows[model].pk

    assert admin_client.get(f"/admin/billing/{model}/add/").status_code == 403
    assert admin_client.post(f"/admin/billing/{model}/{pk}/change/", {"state": "released"}).status_code == 403
    assert admin_client.get(f"/admin/billing/{model}/{pk}/delete/").status_code == 403
    assert admin_client.post(f"/admin/billing/{model}/{pk}/delete/", {"post": "yes"}).status_code == 403
    assert type(rows[model]).objects.filter(pk=pk).exists()


def test_ledger_changelist_offers_no_bulk_delete(admin_client, usage_event):
    response = admin_client.get("/admin/billing/usageevent/")

    assert "delete_selected" not in response.context["cl"].model_admin.get_actions(response.wsgi_request)


def test_ledger_changelist_of_50_rows_costs_a_constant_number_of_queries(
    admin_client, default_tier, django_assert_max_num_queries
):
    for _ in range(50):
        session = ChatSessionFactory()
        UsageEventFactory(user=session.user, session=session, ai_model=session.ai_model)

    # session, admin user, AI models for the filter, the count (no second, unfiltered count),
    # the page of events joined to user, session and AI model, and two for the date hierarchy
    # (the first and last date, the days that have events)
    with django_assert_max_num_queries(7):
        response = admin_client.get("/admin/billing/usageevent/")

    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 50


def test_ledger_changelist_filters_by_kind_and_searches_by_exact_email(admin_client, user, other_user):
    mine = UsageEventFactory(user=user, kind=UsageEvent.Kind.IMAGE)
    UsageEventFactory(user=user, kind=UsageEvent.Kind.MESSAGE)
    UsageEventFactory(user=other_user, kind=UsageEvent.Kind.IMAGE)

    response = admin_client.get("/admin/billing/usageevent/", {"kind__exact": "image", "q": "OWNER@example.com"})

    assert list(response.context["cl"].result_list) == [mine]


def test_session_usage_changelist_costs_a_constant_number_of_queries(
    admin_client, default_tier, django_assert_max_num_queries
):
    for _ in range(50):
        session = ChatSessionFactory()
        ChatSessionUsage.objects.create(user=session.user, session=session)

    # session, admin user, the filtered count, the page of rows joined to user and session
    with django_assert_max_num_queries(4):
        response = admin_client.get("/admin/billing/chatsessionusage/")

    assert response.status_code == 200


def test_subscription_changelist_costs_a_constant_number_of_queries(
    admin_client, default_tier, django_assert_max_num_queries
):
    UserSubscriptionFactory.create_batch(50, subscription_type=default_tier)

    # session, admin user, tiers for the filter, the filtered and the full count,
    # the page joined to user and tier, and two for the date hierarchy (first and last date, the days)
    with django_assert_max_num_queries(8):
        response = admin_client.get("/admin/billing/usersubscription/")

    assert response.status_code == 200


def test_extend_action_moves_the_end_date_by_30_days(admin_client, user):
    subscription = UserSubscription.objects.get(user=user)
    untouched = UserSubscriptionFactory(is_active=False)
    end = subscription.end_date

    response = admin_client.post(
        "/admin/billing/usersubscription/", {"action": "extend_30_days", "_selected_action": [subscription.pk]}
    )

    assert response.status_code == 302
    subscription.refresh_from_db()
    assert subscription.end_date == end + timedelta(days=30)
    assert UserSubscription.objects.get(pk=untouched.pk).end_date == untouched.end_date


def test_deactivate_action_deactivates_the_selected_subscriptions(admin_client, user, other_user):
    subscription = UserSubscription.objects.get(user=user)

    response = admin_client.post(
        "/admin/billing/usersubscription/", {"action": "deactivate", "_selected_action": [subscription.pk]}
    )

    assert response.status_code == 302
    assert list(UserSubscription.objects.filter(is_active=True).values_list("user", flat=True)) == [other_user.pk]


def test_subscription_added_in_the_admin_with_blank_end_gets_start_plus_duration(admin_client, user):
    tier = SubscriptionTypeFactory(duration_days=7)

    response = admin_client.post(
        "/admin/billing/usersubscription/add/",
        {
            "user": str(user.pk),
            "subscription_type": str(tier.pk),
            "is_active": "on",
            "start_date_0": "2030-05-01",
            "start_date_1": "08:00:00",
            "end_date_0": "",
            "end_date_1": "",
        },
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    subscription = UserSubscription.objects.get(user=user, subscription_type=tier)
    assert subscription.end_date - subscription.start_date == timedelta(days=7)


def test_subscription_ending_before_it_starts_is_refused(admin_client, user):
    tier = SubscriptionTypeFactory()

    response = admin_client.post(
        "/admin/billing/usersubscription/add/",
        {
            "user": str(user.pk),
            "subscription_type": str(tier.pk),
            "is_active": "on",
            "start_date_0": "2030-05-01",
            "start_date_1": "08:00:00",
            "end_date_0": "2030-04-01",
            "end_date_1": "08:00:00",
        },
    )

    assert response.status_code == 200
    assert "end_date" in response.context["adminform"].form.errors
    assert not UserSubscription.objects.filter(subscription_type=tier).exists()


def test_subscription_type_change_page_groups_quotas_by_window(admin_client, default_tier):
    response = admin_client.get(f"/admin/billing/subscriptiontype/{default_tier.pk}/change/")

    names = [fieldset.name for fieldset in response.context["adminform"]]
    assert names == [
        "General",
        "Subscription period",
        "Hourly",
        "Three hours",
        "Twelve hours",
        "Daily",
        "Weekly",
        "Monthly",
        "Images",
    ]


def test_making_a_second_tier_the_default_is_refused_with_a_form_error(admin_client, default_tier):
    other = SubscriptionTypeFactory(name="Pro", sku="PRO")
    data = {
        field: value
        for field, value in admin_client.get(f"/admin/billing/subscriptiontype/{other.pk}/change/")
        .context["adminform"]
        .form.initial.items()
        if value is not None and field != "id"
    }
    data.update(is_default="on", is_active="on")

    response = admin_client.post(f"/admin/billing/subscriptiontype/{other.pk}/change/", data)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "is_default": ["“Free” is the default tier; untick it there first."]
    }
    other.refresh_from_db()
    assert not other.is_default
