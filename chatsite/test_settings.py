"""Test settings: only what tests truly need to differ."""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")

from chatsite.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
AI_API_KEY = ""
# Serve static files from the app folders, as in development: tests never run collectstatic.
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True
DEMO_STREAM_DELAY = 0.0
# Tests in this process hold their connection in a transaction; only the app servers they start pool.
DATABASES["default"].get("OPTIONS", {}).pop("pool", None)  # noqa: F405
# On SQLite, a file: in Django's default shared-cache in-memory test database, a read that meets a
# write in flight (the reply runtime writes from a thread of its own) fails at once with "table is
# locked", where a file makes it wait for the write, as the app's own database does.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": str(Path(tempfile.gettempdir()) / f"chatsite-test-{os.getpid()}.sqlite3"),
    }
