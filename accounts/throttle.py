"""Throttles on signing in and on the emails anyone can ask for, shared by every app server.

Each action is limited per account (the email or phone number typed, or the signed-in user)
and per client address. The counts live in the `throttle` cache, Django's database cache
(PostgreSQL in production, so every app server sees the same counts; chatsite.cache makes
its increment exact), through django-ratelimit, in fixed windows. Past a limit:
TooManyAttempts, a 429 with Retry-After.

Sign-in: an attempt on an account is counted before its password is checked, and given back
when the password was right. So however many guesses race in parallel, on however many
servers, an account gets exactly its limit of wrong ones per window; past it even the right
password is refused until the window ends. Per client address only failures count (checked
before, counted after): a coarse limit on one address trying many accounts.
"""

import contextlib
import ipaddress

from django.conf import settings
from django.core.cache import caches
from django_ratelimit.core import ALL, _get_window, _make_cache_key, _split_rate, get_usage

from chatsite.errors import TooManyAttempts

RATES = {  # action -> (per account, per client address), names of settings
    "login": ("THROTTLE_LOGIN_ACCOUNT", "THROTTLE_LOGIN_ADDRESS"),
    "password-reset": ("THROTTLE_PASSWORD_RESET_ACCOUNT", "THROTTLE_PASSWORD_RESET_ADDRESS"),
    "verification": ("THROTTLE_VERIFICATION_ACCOUNT", "THROTTLE_VERIFICATION_ADDRESS"),
}
MESSAGES = {
    "login": "Too many failed sign-ins. Try again in {wait}.",
    "password-reset": "Too many password reset requests. Try again in {wait}.",
    "verification": "Too many verification emails asked for. Try again in {wait}.",
}


def login_begin(request, account: str) -> None:
    """Before a password is checked: count the attempt on the account; raise past either limit."""
    account_rate, address_rate = _rates("login")
    wait = _over(_usage(request, "login", "account", account, account_rate, count=True), counted=True)
    if request is not None:
        wait = max(wait, _over(_usage(request, "login", "address", "ip", address_rate, count=False), counted=False))
    _raise_if(wait, "login")


def login_end(request, account: str, *, succeeded: bool) -> None:
    """After the check: a right password gives the account's attempt back; a wrong one counts for the address."""
    account_rate, address_rate = _rates("login")
    if succeeded:
        _give_back("login", "account", account, account_rate)
    elif request is not None:
        _usage(request, "login", "address", "ip", address_rate, count=True)


def throttle_hit(request, action: str, *, account: str) -> None:
    """Count one request for `action` (an email asked for); raise TooManyAttempts past either limit."""
    account_rate, address_rate = _rates(action)
    wait = _over(_usage(request, action, "account", account, account_rate, count=True), counted=True)
    if request is not None:
        wait = max(wait, _over(_usage(request, action, "address", "ip", address_rate, count=True), counted=True))
    _raise_if(wait, action)


def client_address(request) -> str:
    """The client's address: the proxy's last X-Forwarded-For entry when one is trusted, else the peer's.

    A peer without an address (a Unix socket) counts as 0.0.0.0: all such share one count.
    """
    if settings.USE_X_FORWARDED_FOR:
        forwarded = _address(request.META.get("HTTP_X_FORWARDED_FOR", "").rsplit(",", 1)[-1])
        if forwarded:
            return forwarded
    return _address(request.META.get("REMOTE_ADDR", "")) or "0.0.0.0"  # noqa: S104 (an address, not a bind)


def _address(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def _rates(action: str) -> tuple[str, str]:
    return tuple(getattr(settings, name) for name in RATES[action])


def _usage(request, action: str, what: str, key: str, rate: str, *, count: bool) -> dict | None:
    if what == "account":
        value = _account(key)
        key = lambda group, request: value  # noqa: E731
    return get_usage(request, group=f"{action}:{what}", key=key, rate=rate, increment=count)


def _account(value: str) -> str:
    return value.strip().lower()


def _over(usage: dict | None, *, counted: bool) -> int:
    """Seconds until the window ends if this is past the limit, else 0."""
    if usage is None:
        return 0
    # Counted first, one past the limit is over; looked at before, the limit reached is.
    over = usage["count"] > usage["limit"] if counted else usage["count"] >= usage["limit"]
    return max(int(usage["time_left"]), 0) + 1 if over else 0


def _raise_if(wait: int, action: str) -> None:
    if wait:
        raise TooManyAttempts(MESSAGES[action].format(wait=_duration(wait)), retry_after=wait)


def _give_back(action: str, what: str, account: str, rate: str) -> None:
    # The key django-ratelimit (pinned in requirements.txt) counted this window's attempts under.
    value = _account(account)
    _, period = _split_rate(rate)
    key = _make_cache_key(f"{action}:{what}", _get_window(value, period), rate, value, ALL)
    with contextlib.suppress(ValueError):  # the window ended meanwhile: nothing to give back
        caches[settings.RATELIMIT_USE_CACHE].decr(key)


def _duration(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} seconds"
    return f"{round(seconds / 60)} minutes"
