from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import ShowFacets
from django.contrib.admin.utils import display_for_value, flatten_fieldsets
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import capfirst

from billing.models import (
    BillingCustomer,
    ChatSessionUsage,
    Payment,
    SubscriptionType,
    UsageBucket,
    UsageEvent,
    UserSubscription,
    WebhookEvent,
)
from billing.selectors import subscription_current_get, usage_summary
from billing.services import subscription_extend

EXTEND_DAYS = 30
EMPTY = "—"
WINDOW_LABELS = {
    "hourly": "Last hour",
    "three_hours": "Last 3 hours",
    "twelve_hours": "Last 12 hours",
    "daily": "Last 24 hours",
    "weekly": "Last 7 days",
    "monthly": "Last 30 days",
    "period": "This subscription period",
}


def _limits(window: str) -> tuple[str, str]:
    return f"{window}_max_messages", f"{window}_max_tokens"


TIER_FIELDSETS = (
    ("General", {"fields": ("name", "description", "price", "duration_days", "sku", "is_active", "is_default")}),
    (
        "Subscription period",
        {
            "fields": ("max_tokens", "max_tokens_free", "max_openrouter_cost_usd"),
            "description": "Totals from the start to the end of each subscription. 0 means unlimited.",
        },
    ),
    ("Hourly", {"fields": _limits("hourly")}),
    ("Three hours", {"fields": _limits("three_hours")}),
    ("Twelve hours", {"fields": _limits("twelve_hours")}),
    ("Daily", {"fields": _limits("daily")}),
    ("Weekly", {"fields": _limits("weekly")}),
    (
        "Monthly",
        {"fields": (*_limits("monthly"), "monthly_free_model_messages", "monthly_free_model_tokens")},
    ),
    (
        "Images",
        {
            "fields": (
                "daily_image_generation_limit",
                "weekly_image_generation_limit",
                "monthly_image_generation_limit",
            )
        },
    ),
)


class SubscriptionTypeForm(forms.ModelForm):
    class Meta:
        model = SubscriptionType
        fields = flatten_fieldsets(TIER_FIELDSETS)

    def clean_is_default(self) -> bool:
        # Say which tier holds the default, rather than naming the database constraint.
        is_default = self.cleaned_data["is_default"]
        current = SubscriptionType.objects.filter(is_default=True).exclude(pk=self.instance.pk).first()
        if is_default and current is not None:
            raise forms.ValidationError(
                f"“{current}” is the default tier; untick it there first.", code="default_taken"
            )
        return is_default


@admin.register(SubscriptionType)
class SubscriptionTypeAdmin(admin.ModelAdmin):
    form = SubscriptionTypeForm
    fieldsets = TIER_FIELDSETS
    list_display = ("name", "sku", "price", "duration_days", "is_default", "is_active")
    list_filter = ("is_active", "is_default")
    search_fields = ("name", "sku")


class UserSubscriptionForm(forms.ModelForm):
    class Meta:
        model = UserSubscription
        fields = ("user", "subscription_type", "is_active", "start_date", "end_date")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # UserSubscription.save() fills a blank end with start + the tier's duration.
        self.fields["end_date"].required = False
        self.fields["end_date"].help_text = "Leave blank for the start plus the tier's duration."

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("start_date"), cleaned.get("end_date")
        if start and end and end <= start:
            self.add_error("end_date", "The end must be after the start.")
        return cleaned


def usage_table(subscription: UserSubscription | None) -> SafeString | str:
    """Every limit of the subscription's tier with what is used of it now, as an HTML table."""
    if subscription is None:
        return "No current subscription"
    tier = subscription.subscription_type
    rows = format_html_join(
        "",
        '<tr data-limit="{}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
        (
            (
                row.name,
                capfirst(SubscriptionType._meta.get_field(row.name).verbose_name),
                WINDOW_LABELS[row.window],
                display_for_value(row.limit, EMPTY) if row.limit else "Unlimited",
                display_for_value(row.used, EMPTY),
                display_for_value(row.remaining, EMPTY),
                display_for_value(row.resets_at, EMPTY),
            )
            for row in usage_summary(subscription=subscription)
        ),
    )
    ledger = reverse("admin:billing_usageevent_changelist") + "?" + urlencode({"user_email": subscription.user.email})
    return format_html(
        '<p>{}: {} to {} · <a href="{}">Ledger of this user</a></p>'
        '<table class="usage-table"><thead><tr><th scope="col">Limit</th><th scope="col">Window</th>'
        '<th scope="col">Limit value</th><th scope="col">Used</th><th scope="col">Remaining</th>'
        '<th scope="col">Resets at</th></tr></thead><tbody>{}</tbody></table>',
        tier.name,
        display_for_value(subscription.start_date, EMPTY),
        display_for_value(subscription.end_date, EMPTY),
        ledger,
        rows,
    )


class UserEmailFilter(admin.ListFilter):
    """One user's rows by exact email, typed in a box: a dropdown would load every user."""

    title = "user email"
    parameter_name = "user_email"
    template = "admin/billing/input_filter.html"

    def __init__(self, request, params, model, model_admin):
        super().__init__(request, params, model, model_admin)
        if self.parameter_name in params:
            # Emails are stored lower-cased; an exact match uses the unique index.
            self.used_parameters[self.parameter_name] = params.pop(self.parameter_name)[-1].strip().lower()

    def value(self) -> str | None:
        return self.used_parameters.get(self.parameter_name) or None

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str]:
        return [self.parameter_name]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(user__email=value) if value else queryset

    def choices(self, changelist):
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "All",
            # The other filters and the search, kept when the box is submitted.
            "hidden": [(name, value) for name, value in changelist.params.items() if name != self.parameter_name],
        }


class UserSubscriptionInline(admin.TabularInline):
    model = UserSubscription
    form = UserSubscriptionForm
    fields = ("subscription_type", "is_active", "start_date", "end_date")
    extra = 0
    ordering = ("-start_date", "-id")

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "subscription_type":
            # Read the tiers once for the page, not once per subscription row.
            field.choices = list(field.choices)
        return field


@admin.register(UserSubscription)
class UserSubscriptionAdmin(admin.ModelAdmin):
    form = UserSubscriptionForm
    list_display = ("id", "user", "subscription_type", "is_active", "start_date", "end_date")
    list_display_links = ("id", "user")
    list_select_related = ("user", "subscription_type")
    list_filter = ("is_active", "subscription_type", "end_date")
    search_fields = ("user__email",)
    autocomplete_fields = ("user",)
    date_hierarchy = "start_date"
    readonly_fields = ("current_usage",)
    actions = ["extend_30_days", "deactivate"]

    def get_fieldsets(self, request: HttpRequest, obj=None):
        fieldsets = [(None, {"fields": UserSubscriptionForm.Meta.fields})]
        if obj is not None:
            fieldsets.append(("Usage now", {"fields": ("current_usage",)}))
        return fieldsets

    @admin.display(description="Usage")
    def current_usage(self, obj: UserSubscription) -> SafeString | str:
        current = subscription_current_get(user=obj.user_id)
        if current is None:
            return "Not current, and the user has no current subscription."
        if current.pk != obj.pk:
            # Quotas count against the user's current subscription only.
            url = reverse("admin:billing_usersubscription_change", args=[current.pk])
            return format_html('Not current: the user\'s usage counts against <a href="{}">{}</a>.', url, current)
        return usage_table(current)

    @admin.action(description=f"Extend by {EXTEND_DAYS} days", permissions=["change"])
    def extend_30_days(self, request: HttpRequest, queryset: QuerySet[UserSubscription]) -> None:
        count = 0
        for subscription in queryset:
            subscription_extend(subscription=subscription, days=EXTEND_DAYS)
            count += 1
        self.message_user(request, f"Extended {count} subscription(s) by {EXTEND_DAYS} days.", messages.SUCCESS)

    @admin.action(description="Deactivate", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet[UserSubscription]) -> None:
        count = queryset.filter(is_active=True).update(is_active=False)
        self.message_user(request, f"Deactivated {count} subscription(s).", messages.SUCCESS)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by the application: staff may look, never add, edit or delete."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(UsageEvent)
class UsageEventAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "user",
        "session",
        "ai_model",
        "kind",
        "is_free_model",
        "prompt_tokens",
        "completion_tokens",
        "billed_tokens",
        "cost_usd",
        "state",
    )
    # No RelatedOnlyFieldListFilter: its DISTINCT runs over the whole ledger on every page.
    list_filter = (UserEmailFilter, "ai_model", "kind", "state", "is_free_model", "created_at")
    list_select_related = ("user", "ai_model", "session")
    # Exact match: a substring search would scan the whole ledger.
    search_fields = ("=user__email",)
    search_help_text = "Exact email address of the user."
    # No date_hierarchy: its drill-down scans the whole ledger on every page; the
    # created_at filter (today, past 7 days, this month, this year) does not.
    # The ledger grows large: skip the unfiltered COUNT(*) on every page, and the
    # per-choice counts facets would add.
    show_full_result_count = False
    show_facets = ShowFacets.NEVER


@admin.register(ChatSessionUsage)
class ChatSessionUsageAdmin(ReadOnlyAdmin):
    list_display = ("id", "user", "session", "tokens_count", "free_model_tokens_count", "is_free_model", "updated_at")
    list_select_related = ("user", "session")
    list_filter = ("is_free_model",)
    search_fields = ("=user__email",)
    search_help_text = "Exact email address of the user."
    show_full_result_count = False
    show_facets = ShowFacets.NEVER


@admin.register(UsageBucket)
class UsageBucketAdmin(ReadOnlyAdmin):
    list_display = ("user", "span", "hour", "klass", "messages", "tokens", "cost_usd")
    list_select_related = ("user",)
    list_filter = (UserEmailFilter, "span", "klass", "hour")
    search_fields = ("=user__email",)
    search_help_text = "Exact email address of the user."
    show_full_result_count = False
    show_facets = ShowFacets.NEVER


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "user", "subscription_type", "amount", "currency", "status", "refunded_at")
    list_filter = ("status", "subscription_type")
    search_fields = ("user__email", "stripe_checkout_session_id", "stripe_invoice_id", "stripe_payment_intent_id")
    list_select_related = ("user", "subscription_type")
    actions = ["end_subscription"]

    @admin.action(description="End the plan these payments bought, now (the default tier follows)")
    def end_subscription(self, request: HttpRequest, queryset: QuerySet) -> None:
        from billing.purchases import subscription_end_now

        ended = 0
        for payment in queryset.select_related("subscription__user"):
            if payment.subscription is not None:
                subscription_end_now(subscription=payment.subscription)
                ended += 1
        self.message_user(request, f"Ended {ended} plan(s).", messages.SUCCESS)

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        # The list's action needs it; every field stays read-only.
        return request.user.has_perm("billing.change_payment")

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    list_display = ("received_at", "type", "event_id", "processed_at", "outcome")
    list_filter = ("type",)
    search_fields = ("event_id", "outcome")
    readonly_fields = ("event_id", "type", "received_at", "processed_at", "outcome", "payload")


@admin.register(BillingCustomer)
class BillingCustomerAdmin(ReadOnlyAdmin):
    list_display = ("user", "stripe_customer_id", "created_at")
    search_fields = ("user__email", "stripe_customer_id")
