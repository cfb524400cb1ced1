from django import forms
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm

from accounts.forms import AdminLoginForm
from accounts.models import User, normalize_phone
from billing.admin import UserSubscriptionInline, usage_table
from billing.selectors import subscription_current_get


class UserCreationAdminForm(AdminUserCreationForm):
    class Meta:
        model = User
        fields = ("email",)

    def clean_email(self) -> str:
        # The model stores emails lower-cased, so check uniqueness the same way.
        email = User.objects.normalize_email(self.cleaned_data["email"]).strip().lower()
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("A user with this email already exists.", code="unique")
        return email


class UserChangeAdminForm(UserChangeForm):
    # Longer than the column: people type spaces and brackets, which are stripped before saving.
    phone_number = forms.CharField(
        max_length=32, required=False, empty_value=None, help_text=User._meta.get_field("phone_number").help_text
    )

    class Meta:
        model = User
        fields = "__all__"

    def clean_email(self) -> str:
        email = User.objects.normalize_email(self.cleaned_data["email"]).strip().lower()
        if User.objects.filter(email__iexact=email).exclude(pk=self.instance.pk).exists():
            raise forms.ValidationError("A user with this email already exists.", code="unique")
        return email

    def clean_phone_number(self) -> str | None:
        # Normalise before the unique check, which compares the stored (normalised) form.
        return normalize_phone(self.cleaned_data.get("phone_number"))


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    form = UserChangeAdminForm
    add_form = UserCreationAdminForm
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Personal info", {"fields": ("name", "phone_number")}),
        (
            "Permissions",
            {"fields": ("is_active", "is_verified", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
        ("Usage now", {"fields": ("current_usage",)}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "usable_password", "password1", "password2")}),)
    inlines = [UserSubscriptionInline]
    list_display = ("email", "name", "phone_number", "is_verified", "is_staff", "date_joined")
    list_filter = ("is_staff", "is_superuser", "is_active", "is_verified", "groups")
    search_fields = ("email", "name", "phone_number")
    ordering = ("email",)
    readonly_fields = ("last_login", "date_joined", "current_usage")

    def get_readonly_fields(self, request, obj=None):
        # Roles are the superuser's to give: other staff see them but cannot change them, their own included.
        fields = tuple(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            fields += ("is_staff", "is_superuser", "groups", "user_permissions")
        return fields

    def get_inlines(self, request, obj):
        # A new user gets the default tier on first use; subscriptions are edited once the user exists.
        return self.inlines if obj is not None else []

    @admin.display(description="Usage")
    def current_usage(self, obj: User):
        # A read only: opening the page must not start a default-tier period as subscription_current would.
        return usage_table(subscription_current_get(user=obj))


# The admin's sign-in goes through the same throttle as the others; its refusal shows on the form.
admin.site.login_form = AdminLoginForm
