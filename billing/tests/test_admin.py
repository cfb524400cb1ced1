import re
from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import ChatSessionUsage, UsageBucket, UsageEvent, UserSubscription
from billing.tests.factories import SubscriptionTypeFactory, UsageEventFactory, UserSubscriptionFactory
from chatbots.tests.factories import AIModelFactory
from sessions_app.tests.factories import ChatSessionFactory

pytestmark = pytest.mark.django_db

XSS = "<script>alert(1)</script>"


def usage_row(response, limit: str) -> list[str]:
    """The cells of one limit's row in the usage table: name, window, limit, used, remaining, resets at."""
    row = re.search(rf'<tr data-limit="{limit}">(.*?)</tr>', response.content.decode())
    assert row is not None, limit
    return re.findall(r"<td>(.*?)</td>", row.group(1))


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
        "usagebucket": UsageBucket.objects.get(user=user, span="hour"),
    }


@pytest.mark.parametrize(
    "model", ["subscriptiontype", "usersubscription", "usageevent", "chatsessionusage", "usagebucket"]
)
def test_billing_changelist_and_change_page_answer_200(admin_client, rows, model):
    assert admin_client.get(f"/admin/billing/{model}/").status_code == 200
    assert admin_client.get(f"/admin/billing/{model}/{rows[model].pk}/change/").status_code == 200


@pytest.mark.parametrize("model", ["subscriptiontype", "usersubscription"])
def test_billing_add_page_answers_200(admin_client, model):
    assert admin_client.get(f"/admin/billing/{model}/add/").status_code == 200


@pytest.mark.parametrize("model", ["usageevent", "chatsessionusage", "usagebucket"])
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
    # the page of events joined to user, session and AI model; the user filter is a text box
    with django_assert_max_num_queries(5):
        response = admin_client.get("/admin/billing/usageevent/")

    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 50


def test_ledger_changelist_filters_by_kind_and_searches_by_exact_email(admin_client, user, other_user):
    mine = UsageEventFactory(user=user, kind=UsageEvent.Kind.IMAGE)
    UsageEventFactory(user=user, kind=UsageEvent.Kind.MESSAGE)
    UsageEventFactory(user=other_user, kind=UsageEvent.Kind.IMAGE)

    response = admin_client.get("/admin/billing/usageevent/", {"kind__exact": "image", "q": "OWNER@example.com"})

    assert list(response.context["cl"].result_list) == [mine]


def test_ledger_changelist_filtered_by_user_email_costs_the_same_queries(
    admin_client, user, django_assert_max_num_queries
):
    UsageEventFactory.create_batch(30, user=user)
    UsageEventFactory.create_batch(20)

    # session, admin user, AI models for the filter, the count and the page, both joined to the user by email
    with django_assert_max_num_queries(5):
        response = admin_client.get("/admin/billing/usageevent/", {"user_email": "owner@example.com"})

    assert len(response.context["cl"].result_list) == 30


def test_ledger_user_filter_is_a_text_box_that_keeps_the_other_filters(admin_client, user, other_user):
    UsageEventFactory(user=other_user)

    response = admin_client.get("/admin/billing/usageevent/", {"kind__exact": "image", "user_email": "x@example.com"})

    body = response.content.decode()
    assert '<input type="text" name="user_email" value="x@example.com"' in body
    assert '<input type="hidden" name="kind__exact" value="image">' in body
    # No dropdown of users: nobody's email is listed.
    assert "other@example.com" not in body


def test_ledger_changelist_filters_by_user_model_state_and_date(admin_client, user, other_user):
    model = AIModelFactory()
    now = timezone.now()
    mine = UsageEventFactory(user=user, ai_model=model)
    UsageEventFactory(user=user, ai_model=model, state=UsageEvent.State.RELEASED)
    UsageEventFactory(user=user, ai_model=model, created_at=now - timedelta(days=10))
    UsageEventFactory(user=user, ai_model=AIModelFactory())
    UsageEventFactory(user=other_user, ai_model=model)
    # A range as the date filter's links send it.
    week = {"created_at__gte": str(now - timedelta(days=7)), "created_at__lt": str(now + timedelta(days=1))}

    response = admin_client.get(
        "/admin/billing/usageevent/",
        {"user_email": " OWNER@example.com ", "ai_model__id__exact": model.pk, "state__exact": "settled", **week},
    )

    assert list(response.context["cl"].result_list) == [mine]


def test_ledger_admin_has_no_date_hierarchy_facets_or_full_count(admin_client):
    cl = admin_client.get("/admin/billing/usageevent/").context["cl"]

    assert cl.date_hierarchy is None
    assert not cl.show_full_result_count
    assert not cl.is_facets_optional


def test_usage_bucket_changelist_costs_a_constant_number_of_queries(
    admin_client, default_tier, django_assert_max_num_queries
):
    for _ in range(50):
        UsageEventFactory()

    # session, admin user, the filtered count, the page of buckets joined to their user
    with django_assert_max_num_queries(4):
        response = admin_client.get("/admin/billing/usagebucket/")

    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 100  # an hour and a day bucket each


def test_usage_bucket_changelist_filters_by_class_and_user(admin_client, user, other_user):
    UsageEventFactory(user=user, kind=UsageEvent.Kind.IMAGE)
    UsageEventFactory(user=user)
    UsageEventFactory(user=other_user, kind=UsageEvent.Kind.IMAGE)

    response = admin_client.get(
        "/admin/billing/usagebucket/", {"klass__exact": "image", "span__exact": "hour", "user_email": user.email}
    )

    buckets = list(response.context["cl"].result_list)
    assert [(b.user_id, b.klass, b.messages) for b in buckets] == [(user.pk, "image", 1)]


def test_subscription_change_page_shows_usage_per_window(admin_client, user, default_tier):
    default_tier.hourly_max_messages = 10
    default_tier.max_tokens = 1000
    default_tier.save()
    UsageEventFactory.create_batch(3, user=user, billed_tokens=30)
    UsageEventFactory(user=user, is_free_model=True, billed_tokens=5)
    UsageEventFactory(user=user, state=UsageEvent.State.RELEASED, billed_tokens=0)
    subscription = UserSubscription.objects.get(user=user)

    response = admin_client.get(f"/admin/billing/usersubscription/{subscription.pk}/change/")

    assert usage_row(response, "hourly_max_messages")[:5] == ["Hourly max messages", "Last hour", "10", "3", "7"]
    assert usage_row(response, "hourly_max_tokens")[2:5] == ["Unlimited", "90", "—"]
    assert usage_row(response, "max_tokens")[1:5] == ["This subscription period", "1000", "90", "910"]
    assert usage_row(response, "monthly_free_model_messages")[3] == "1"
    assert usage_row(response, "daily_image_generation_limit")[3:] == ["0", "—", "—"]


def test_a_past_subscription_points_at_the_current_one_instead_of_a_usage_table(admin_client, user):
    current = UserSubscription.objects.get(user=user)
    past = UserSubscriptionFactory(user=user, is_active=False)

    response = admin_client.get(f"/admin/billing/usersubscription/{past.pk}/change/")

    body = response.content.decode()
    assert "Not current: the user's usage counts against" in body
    assert f'href="/admin/billing/usersubscription/{current.pk}/change/"' in body
    assert "usage-table" not in body


def test_usage_table_escapes_the_tier_name(admin_client, user, default_tier):
    default_tier.name = f"Tier {XSS}"
    default_tier.save()
    subscription = UserSubscription.objects.get(user=user)

    body = admin_client.get(f"/admin/billing/usersubscription/{subscription.pk}/change/").content.decode()

    assert XSS not in body
    assert "<p>Tier &lt;script&gt;alert(1)&lt;/script&gt;: " in body


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
