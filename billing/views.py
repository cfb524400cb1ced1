"""Pages and hooks of selling plans: the pricing page and the payment provider's webhook."""

from decimal import Decimal

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from billing import purchases
from billing.models import SubscriptionType
from billing.payments import payments_configured
from billing.selectors import subscription_current_get
from chatsite.errors import ChatsiteError

# (field, what, window) for each limit a tier may set, in the order a buyer reads them.
LIMITS = [
    ("hourly_max_messages", "messages", "an hour"),
    ("three_hours_max_messages", "messages", "every 3 hours"),
    ("twelve_hours_max_messages", "messages", "every 12 hours"),
    ("daily_max_messages", "messages", "a day"),
    ("weekly_max_messages", "messages", "a week"),
    ("monthly_max_messages", "messages", "a month"),
    ("hourly_max_tokens", "tokens", "an hour"),
    ("three_hours_max_tokens", "tokens", "every 3 hours"),
    ("twelve_hours_max_tokens", "tokens", "every 12 hours"),
    ("daily_max_tokens", "tokens", "a day"),
    ("weekly_max_tokens", "tokens", "a week"),
    ("monthly_max_tokens", "tokens", "a month"),
    ("max_tokens", "tokens on paid models", "per period"),
    ("max_tokens_free", "tokens on free models", "per period"),
    ("monthly_free_model_messages", "messages on free models", "a month"),
    ("monthly_free_model_tokens", "tokens on free models", "a month"),
    ("daily_image_generation_limit", "images", "a day"),
    ("weekly_image_generation_limit", "images", "a week"),
    ("monthly_image_generation_limit", "images", "a month"),
]
PERIODS = {7: "a week", 30: "a month", 365: "a year"}


def tier_period(tier: SubscriptionType) -> str:
    return PERIODS.get(tier.duration_days, f"{tier.duration_days} days")


def tier_limits_in_words(tier: SubscriptionType) -> list[str]:
    """Every limit the tier sets, as a buyer would say it: "100 messages an hour"."""
    period = tier_period(tier)
    words = [
        f"{getattr(tier, field):,} {what} {period if window == 'per period' else window}"
        for field, what, window in LIMITS
        if getattr(tier, field)
    ]
    if tier.max_openrouter_cost_usd:
        words.append(f"{_money(tier.max_openrouter_cost_usd)} of model cost {period}")
    return words or ["No limits"]


def _money(amount: Decimal) -> str:
    return f"${amount:,.0f}" if amount == amount.to_integral_value() else f"${amount:,.2f}"


@require_GET
def pricing(request: HttpRequest):
    tiers = list(SubscriptionType.objects.filter(is_active=True).order_by("price", "id"))
    current = subscription_current_get(user=request.user) if request.user.is_authenticated else None
    plans = [
        {
            "tier": tier,
            "price": "$0" if tier.price <= 0 else _money(tier.price),
            "period": tier_period(tier),
            "limits": tier_limits_in_words(tier),
            "current": current is not None and current.subscription_type_id == tier.pk,
            "buyable": tier.price > 0,
        }
        for tier in tiers
    ]
    context = {"plans": plans, "selling": payments_configured()}
    return render(request, "billing/pricing.html", context)


@login_required
@require_POST
def pricing_checkout(request: HttpRequest):
    """The form's way to checkout when the page's script does not run: straight to the provider."""
    try:
        url = purchases.checkout_begin(
            user=request.user, subscription_type_id=int(request.POST.get("subscription_type_id") or 0),
            base_url=purchases.site_base_url(request),
        )  # fmt: skip
    except (ChatsiteError, ValueError) as exc:
        detail = exc.detail if isinstance(exc, ChatsiteError) else "There is no such plan to buy."
        response = render(request, "billing/pricing_error.html", {"detail": detail})
        response.status_code = exc.status if isinstance(exc, ChatsiteError) else 400
        return response
    return HttpResponseRedirect(url)


@csrf_exempt  # the provider signs its calls; they carry no session and no CSRF token
@require_POST
def stripe_webhook(request: HttpRequest):
    try:
        outcome = purchases.webhook_receive(payload=request.body, signature=request.headers.get("Stripe-Signature", ""))
    except ChatsiteError as exc:
        return JsonResponse(exc.as_dict(), status=exc.status)
    return JsonResponse({"received": True, "outcome": outcome})
