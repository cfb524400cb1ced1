"""Writes of accounts: registration, verification, roles."""

from django.contrib.auth.password_validation import validate_password
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.urls import reverse

from accounts.models import User, normalize_phone, validate_e164
from billing.models import SubscriptionType
from billing.services import subscription_assign
from chatsite.errors import InvalidInput, PermissionDenied

VERIFY_SALT = "accounts.verify"
VERIFY_MAX_AGE = 3 * 24 * 3600


def _clean_phone(phone_number: str | None) -> str | None:
    phone = normalize_phone(phone_number)
    if phone is None:
        return None
    try:
        validate_e164(phone)
    except ValidationError as exc:
        raise InvalidInput(exc.messages[0], code="invalid_phone") from None
    return phone


def user_register(
    *, email: str, password: str, name: str = "", phone_number: str | None = None, base_url: str = ""
) -> User:
    """Create an account on the default tier and send it a verification link."""
    email = User.objects.normalize_email(email.strip()).lower()
    phone = _clean_phone(phone_number)
    if User.objects.filter(email__iexact=email).exists():
        raise InvalidInput("An account with this email already exists.", code="email_taken")
    if phone and User.objects.filter(phone_number=phone).exists():
        raise InvalidInput("An account with this phone number already exists.", code="phone_taken")
    candidate = User(email=email, name=name, phone_number=phone)
    try:
        validate_password(password, user=candidate)
    except ValidationError as exc:
        raise InvalidInput(" ".join(exc.messages), code="weak_password") from None
    try:
        with transaction.atomic():
            user = User.objects.create_user(email=email, password=password, name=name, phone_number=phone)
            default = SubscriptionType.objects.filter(is_default=True, is_active=True).first()
            if default is not None:
                subscription_assign(user=user, subscription_type=default)
    except IntegrityError:
        raise InvalidInput("An account with this email or phone number already exists.", code="email_taken") from None
    transaction.on_commit(lambda: verification_send(user=user, base_url=base_url))
    return user


def verification_token(user: User) -> str:
    return signing.dumps({"uid": user.pk, "email": user.email}, salt=VERIFY_SALT, compress=True)


def verification_send(*, user: User, base_url: str = "") -> None:
    """Email the user a link that verifies their address."""
    link = base_url + reverse("accounts:verify", args=[verification_token(user)])
    send_mail(
        "Verify your chatsite email address",
        f"Hello {user.get_short_name()},\n\nOpen this link to verify your email address:\n{link}\n\n"
        "The link works for three days.",
        None,
        [user.email],
    )


def user_verify(*, token: str) -> User:
    """Mark the account named by a verification token as verified."""
    try:
        data = signing.loads(token, salt=VERIFY_SALT, max_age=VERIFY_MAX_AGE)
    except signing.SignatureExpired:
        raise InvalidInput("This verification link has expired.", code="token_expired") from None
    except signing.BadSignature:
        raise InvalidInput("This verification link is not valid.", code="invalid_token") from None
    user = User.objects.filter(pk=data.get("uid"), email=data.get("email")).first()
    if user is None:
        raise InvalidInput("This verification link is not valid.", code="invalid_token")
    if not user.is_verified:
        user.is_verified = True
        user.save(update_fields=["is_verified"])
    return user


def user_set_role(*, actor: User, user: User, role: str) -> User:
    """Make `user` an admin (staff) or a plain user; only a superuser may, and never for a superuser or themselves."""
    if not actor.is_superuser:
        raise PermissionDenied("Only a superuser can change roles.", code="superuser_required")
    if user.pk == actor.pk:
        raise InvalidInput("You cannot change your own role.", code="cannot_change_own_role")
    if user.is_superuser:
        raise InvalidInput("A superuser's role cannot be changed here.", code="superuser_role_fixed")
    user.is_staff = role == "admin"
    user.save(update_fields=["is_staff"])
    return user
