from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm, PasswordResetForm

from accounts.throttle import throttle_hit
from chatsite.errors import InvalidInput, TooManyAttempts


class ThrottledLogin:
    """A sign-in form that shows the throttle's refusal as its error (accounts/throttle.py)."""

    throttled: TooManyAttempts | None = None

    def clean(self):
        try:
            return super().clean()
        except TooManyAttempts as exc:
            self.throttled = exc
            raise forms.ValidationError(exc.detail, code=exc.code) from None


class ThrottledPasswordResetForm(PasswordResetForm):
    """Django's reset form; each request counts per address typed and per client address."""

    def __init__(self, *args, request=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.request = request
        self.throttled: TooManyAttempts | None = None

    def clean_email(self):
        email = self.cleaned_data["email"]
        try:
            throttle_hit(self.request, "password-reset", account=email)
        except TooManyAttempts as exc:
            self.throttled = exc
            raise forms.ValidationError(exc.detail, code=exc.code) from None
        return email


class AdminLoginForm(ThrottledLogin, AdminAuthenticationForm):
    pass


class LoginForm(ThrottledLogin, AuthenticationForm):
    """Django's log-in form, where the username is an email address or a phone number."""

    username = forms.CharField(
        label="Email or phone number",
        max_length=254,
        widget=forms.TextInput(attrs={"autofocus": True, "autocomplete": "username", "autocapitalize": "none"}),
    )
    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "Wrong email, phone number or password. Note that the password is case-sensitive.",
    }


class SignupForm(forms.Form):
    email = forms.EmailField(max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "email"}))
    name = forms.CharField(max_length=150, required=False, widget=forms.TextInput(attrs={"autocomplete": "name"}))
    phone_number = forms.CharField(
        label="Phone number",
        max_length=32,
        required=False,
        help_text="Optional, in international format, e.g. +14155550123. You can log in with it too.",
        widget=forms.TextInput(attrs={"autocomplete": "tel", "inputmode": "tel"}),
    )
    password1 = forms.CharField(
        label="Password", strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"})
    )
    password2 = forms.CharField(
        label="Password confirmation",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="Enter the same password again.",
    )

    # Which field shows each error code raised by accounts.services.user_register.
    ERROR_FIELDS = {
        "email_taken": "email",
        "phone_taken": "phone_number",
        "invalid_phone": "phone_number",
        "weak_password": "password1",
    }

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("password1") and cleaned.get("password2") and cleaned["password1"] != cleaned["password2"]:
            self.add_error("password2", "The two passwords do not match.")
        return cleaned

    def add_service_error(self, exc: InvalidInput) -> None:
        self.add_error(self.ERROR_FIELDS.get(exc.code), exc.detail)
