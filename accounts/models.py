import re

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

_PHONE_PUNCTUATION = re.compile(r"[\s\-().]")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def normalize_phone(value: str | None) -> str | None:
    """Return `value` in E.164 form (`+` and digits), or None when blank."""
    if value is None:
        return None
    value = _PHONE_PUNCTUATION.sub("", str(value))
    if value.startswith("00"):
        value = "+" + value[2:]
    return value or None


def validate_e164(value: str) -> None:
    if not _E164.match(normalize_phone(value) or ""):
        raise ValidationError("Enter a phone number in international format, e.g. +14155550123.", code="invalid_phone")


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create_user(self, email: str, password: str | None, **extra):
        if not email:
            raise ValueError("Users need an email address.")
        user = self.model(email=self.normalize_email(email), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra):
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra):
        extra["is_staff"] = True
        extra["is_superuser"] = True
        extra.setdefault("is_verified", True)
        return self._create_user(email, password, **extra)

    def get_by_natural_key(self, username):
        return self.get(email__iexact=username)


class User(AbstractBaseUser, PermissionsMixin):
    email = models.EmailField(unique=True)
    phone_number = models.CharField(
        max_length=16,
        unique=True,
        null=True,
        blank=True,
        validators=[validate_e164],
        help_text="E.164, e.g. +14155550123. Optional; also a login.",
    )
    name = models.CharField(max_length=150, blank=True)
    is_verified = models.BooleanField(default=False)
    is_staff = models.BooleanField(
        default=False, help_text="Staff can use Django admin and the admin API (role 'admin')."
    )
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    EMAIL_FIELD = "email"
    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.email

    def save(self, *args, **kwargs):
        # One canonical form, so uniqueness holds however people type them.
        self.email = self.email.strip().lower()
        self.phone_number = normalize_phone(self.phone_number)
        super().save(*args, **kwargs)

    @property
    def role(self) -> str:
        return "admin" if self.is_staff else "user"

    def get_full_name(self) -> str:
        return self.name or self.email

    def get_short_name(self) -> str:
        return self.name or self.email
