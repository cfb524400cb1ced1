"""HTML pages of accounts: sign up, verification and the account page (log-in and resets are Django's views)."""

import math
from decimal import Decimal

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import services
from accounts.forms import LoginForm, SignupForm, ThrottledPasswordResetForm
from accounts.throttle import throttle_hit
from billing.models import BillingCustomer, Payment
from billing.payments import payments_configured
from billing.selectors import usage_event_recent, usage_per_day, usage_summary
from billing.services import subscription_current
from chatsite.errors import InvalidInput, NoSubscription, TooManyAttempts

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
        return redirect("account")
    try:
        throttle_hit(request, "verification", account=f"user:{request.user.pk}")
    except TooManyAttempts as exc:
        messages.error(request, exc.detail)
    else:
        services.verification_send(user=request.user, base_url=_base_url(request))
        messages.success(request, f"We sent a new verification link to {request.user.email}.")
    return redirect("account")


class _Throttled:
    """A form view answering 429 with Retry-After when its form was refused by a throttle."""

    def form_invalid(self, form):
        response = super().form_invalid(form)
        if form.throttled is not None:
            response.status_code = 429
            response["Retry-After"] = str(form.throttled.retry_after)
        return response


class LoginView(_Throttled, auth_views.LoginView):
    template_name = "accounts/login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True


class PasswordResetView(_Throttled, auth_views.PasswordResetView):
    template_name = "accounts/password_reset_form.html"
    email_template_name = "registration/password_reset_email.txt"
    subject_template_name = "registration/password_reset_subject.txt"
    form_class = ThrottledPasswordResetForm
    success_url = reverse_lazy("accounts:password_reset_done")

    def get_form_kwargs(self):
        return {**super().get_form_kwargs(), "request": self.request}


def _amount(value, *, money: bool) -> str:
    if money:
        return f"${value:,.2f}" if value >= 1 or not value else f"${value:,.4f}"
    return f"{value:,}"


def _meter(usage) -> dict:
    money = "cost" in usage.name
    return {
        "usage": usage,
        "label": limit_label(usage.name, usage.window),
        "used": _amount(usage.used, money=money),
        "limit": _amount(usage.limit, money=money),
        "remaining": _amount(usage.remaining, money=money) if usage.remaining is not None else None,
        "near": usage.used >= usage.limit * Decimal("0.9"),
    }


CHART_WIDTH, CHART_HEIGHT = 400, 190
CHART_LEFT, CHART_RIGHT, CHART_TOP, CHART_BOTTOM = 44, 6, 10, 40


def _axis_step(peak: int) -> int:
    """A round step giving at most four gridlines above zero."""
    for magnitude in (10**n for n in range(12)):
        for step in (magnitude, 2 * magnitude, 5 * magnitude):
            if peak <= 4 * step:
                return step
    return peak


def usage_chart(days: list) -> dict:
    """The geometry of an SVG bar chart of messages per day, one bar a day, for the template to draw."""
    peak = max((count for _, count in days), default=0)
    step = _axis_step(max(peak, 1))
    top = step * math.ceil(max(peak, 1) / step)
    plot_w = CHART_WIDTH - CHART_LEFT - CHART_RIGHT
    plot_h = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
    slot = plot_w / max(len(days), 1)
    base = CHART_TOP + plot_h
    bars, labels = [], []
    for index, (day, count) in enumerate(days):
        height = plot_h * count / top
        x = CHART_LEFT + index * slot
        bars.append(
            {
                "day": day,
                "messages": count,
                "x": round(x + slot * 0.15, 1),
                "y": round(base - height, 1),
                "width": round(slot * 0.7, 1),
                "height": round(height, 1),
            }
        )
        if (len(days) - 1 - index) % 7 == 0:  # weekly, ending today's at the right edge
            last = index == len(days) - 1
            labels.append(
                {"day": day, "x": CHART_WIDTH - CHART_RIGHT if last else round(x + slot / 2, 1), "last": last}
            )
    ticks = [{"value": value, "y": round(base - plot_h * value / top, 1)} for value in range(0, top + 1, step)]
    busiest = max(days, key=lambda item: item[1]) if peak else None
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "left": CHART_LEFT,
        "right": CHART_WIDTH - CHART_RIGHT,
        "base": base,
        "bars": bars,
        "labels": labels,
        "ticks": ticks,
        "total": sum(c for _, c in days),
        "busiest": busiest,
        "first": days[0][0] if days else None,
        "last": days[-1][0] if days else None,
        "axis_y": CHART_HEIGHT - 4,
        "axis_mid": CHART_LEFT + plot_w / 2,
        "label_y": base + 14,
    }


@login_required
@require_GET
def account(request):
    try:
        subscription = subscription_current(user=request.user)
    except NoSubscription as exc:
        subscription, summary, no_subscription = None, [], exc.detail
    else:
        no_subscription = ""
        summary = usage_summary(subscription=subscription)
    # One meter per limit the tier sets; what an unlimited limit has used is still worth a line.
    meters = [_meter(usage) for usage in summary if usage.limit]
    unlimited = [
        {"label": limit_label(usage.name, usage.window), "used": _amount(usage.used, money="cost" in usage.name)}
        for usage in summary
        if not usage.limit
    ]
    # The period's upstream cost: free models cost nothing, so the cost limit's usage is all of it.
    period_cost = next((usage.used for usage in summary if usage.name == "max_openrouter_cost_usd"), None)
    context = {
        "subscription": subscription,
        "meters": meters,
        "unlimited": unlimited,
        "no_subscription": no_subscription,
        "period_cost": _amount(period_cost, money=True) if period_cost is not None else None,
        "recent": [
            {
                "event": event,
                "tokens": _amount(event.billed_tokens, money=False),
                "cost": _amount(event.cost_usd, money=True),
            }
            for event in usage_event_recent(user=request.user, limit=20)
        ],
        "chart": usage_chart(usage_per_day(user=request.user, days=30)),
        "payments": list(Payment.objects.filter(user=request.user).select_related("subscription_type")[:50]),
        "can_manage_billing": payments_configured() and BillingCustomer.objects.filter(user=request.user).exists(),
        "checkout_success": request.GET.get("checkout") == "success",
    }
    return render(request, "accounts/account.html", context)
