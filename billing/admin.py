from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.db.models import QuerySet
from django.http import HttpRequest

from billing.models import ChatSessionUsage, SubscriptionType, UsageEvent, UserSubscription
from billing.services import subscription_extend

EXTEND_DAYS = 30


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


class UserSubscriptionInline(admin.TabularInline):
    model = UserSubscription
    form = UserSubscriptionForm
    fields = ("subscription_type", "is_active", "start_date", "end_date")
    extra = 0
    ordering = ("-start_date", "-id")


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
    actions = ["extend_30_days", "deactivate"]

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
    list_filter = ("kind", "state", "is_free_model", "ai_model", "created_at")
    list_select_related = ("user", "ai_model", "session")
    # Exact match: a substring search would scan the whole ledger.
    search_fields = ("=user__email",)
    search_help_text = "Exact email address of the user."
    # No date_hierarchy: its drill-down scans the whole ledger on every page; the
    # created_at filter (today, past 7 days, this month, this year) does not.
    # The ledger grows large: skip the unfiltered COUNT(*) on every page.
    show_full_result_count = False


@admin.register(ChatSessionUsage)
class ChatSessionUsageAdmin(ReadOnlyAdmin):
    list_display = ("id", "user", "session", "tokens_count", "free_model_tokens_count", "is_free_model", "updated_at")
    list_select_related = ("user", "session")
    list_filter = ("is_free_model",)
    search_fields = ("=user__email",)
    search_help_text = "Exact email address of the user."
    show_full_result_count = False
