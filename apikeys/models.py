import hashlib

from django.conf import settings
from django.db import models
from django.db.models import Q

# Every key starts with this, so people (and secret scanners) recognise one.
KEY_PREFIX = "cs-"
# How much of a key is kept in clear to tell keys apart: the prefix and a few characters.
SHOWN_CHARS = len(KEY_PREFIX) + 6


def key_hash(key: str) -> str:
    """The stored form of a key: SHA-256 of a 256-bit random secret needs no salt nor slow hash."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class ApiKey(models.Model):
    """A personal key for the OpenAI-compatible API. Only its hash is kept; revoked keys stay for the ledger."""

    # Indexed by the index below, which leads with the user.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys", db_index=False
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="The first characters of the key, to tell keys apart.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    store_chats = models.BooleanField(
        default=False, help_text="Keep this key's calls as chats (a call's own `store` field wins)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="apikey_user_live_idx", condition=Q(revoked_at=None)),
        ]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
