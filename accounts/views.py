"""HTML pages of accounts: sign up, verification and the account page (log-in and resets are Django's views)."""

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import services
from accounts.forms import SignupForm
from billing.selectors import usage_summary
from billing.services import subscription_current
from chatsite.errors import InvalidInput, NoSubscription

WINDOW_LABELS = {
    "hourly": "per hour",
    "three_hours": "per 3 hours",
    "twelve_hours": "per 12 hours",
    "daily": "per day",
    "weekly": "per week",
    "monthly": "per 30 days",
    "period": "this subscription period",
}


def _base_url(request) -> str:
    return request.build_absolute_uri("/").rstrip("/")


def limit_label(name: str, window: str) -> str:
    """A person's words for a limit of billing.selectors.LIMITS, e.g. "Messages per hour"."""
    if "image" in name:
        what = "Images"
    elif "cost" in name:
        what = "Upstream cost (USD)"
    elif "free" in name:
        what = "Free-model messages" if "messages" in name else "Free-model tokens"
    else:
        what = "Messages" if "messages" in name else "Tokens"
    return f"{what} {WINDOW_LABELS.get(window, window)}"


@sensitive_post_parameters("password1", "password2")
@never_cache
@require_http_methods(["GET", "POST"])
def signup(request):
    if request.user.is_authenticated:
        return redirect("chat:index")
    form = SignupForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            user = services.user_register(
                email=data["email"],
                password=data["password1"],
                name=data["name"],
                phone_number=data["phone_number"] or None,
                base_url=_base_url(request),
            )
        except InvalidInput as exc:
            form.add_service_error(exc)
        else:
            login(request, user, backend="accounts.backends.EmailOrPhoneBackend")
            messages.success(request, "Welcome! We sent you an email with a link to verify your address.")
            return redirect("chat:index")
    return render(request, "accounts/signup.html", {"form": form}, status=400 if form.errors else 200)


@never_cache
@require_GET
def verify(request, token: str):
    try:
        verified = services.user_verify(token=token)
    except InvalidInput as exc:
        return render(request, "accounts/verify.html", {"error": exc.detail}, status=400)
    return render(request, "accounts/verify.html", {"verified_user": verified})


@login_required
@require_POST
def verification_resend(request):
    if request.user.is_verified:
        messages.info(request, "Your email address is already verified.")
    else:
        services.verification_send(user=request.user, base_url=_base_url(request))
        messages.success(request, f"We sent a new verification link to {request.user.email}.")
    return redirect("account")


@login_required
@require_GET
def account(request):
    try:
        subscription = subscription_current(user=request.user)
    except NoSubscription as exc:
        subscription, limits, no_subscription = None, [], exc.detail
    else:
        no_subscription = ""
        limits = [
            {"label": limit_label(usage.name, usage.window), "usage": usage}
            for usage in usage_summary(subscription=subscription)
        ]
        limits.sort(key=lambda row: not row["usage"].limit)  # the limits that bind first, unlimited ones after
    context = {"subscription": subscription, "limits": limits, "no_subscription": no_subscription}
    return render(request, "accounts/account.html", context)
