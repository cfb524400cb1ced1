"""chatsite settings: everything configurable comes from the environment."""

from pathlib import Path
from urllib.parse import urlsplit

import environ
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("Set SECRET_KEY (or DEBUG=1 for local development).")
    SECRET_KEY = "insecure-development-key-only-used-when-DEBUG-is-on"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_ratelimit",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "chatsite",
    "accounts",
    "chatbots",
    "sessions_app",
    "billing",
    "apikeys",
]

MIDDLEWARE = [
    # Under ASGI the whole chain runs synchronously in one step on the request's thread
    # (chatsite.asgi.RequestThreadsHandler), not one hop to a thread per middleware method.
    "chatsite.middleware.DatabaseUnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "chatsite.middleware.PrivateAnswersMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatsite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "chatbots.context_processors.provider",
            ],
        },
    },
]

WSGI_APPLICATION = "chatsite.wsgi.application"

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
# Under ASGI a request's thread lives only as long as the request: connections are not kept
# per thread but borrowed from a pool (PostgreSQL) and given back after each use.
DATABASES["default"]["CONN_MAX_AGE"] = 0
DB_POOL_MAX_SIZE = env.int("DB_POOL_MAX_SIZE", default=12)
# A connection that died with a PostgreSQL restart is replaced, not handed out (with a pool: checked as it
# leaves it, by a round trip only when the server has sent something since: chatsite/postgresql/base.py).
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("CONN_HEALTH_CHECKS", default=True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["ENGINE"] = "chatsite.postgresql"
if DATABASES["default"]["ENGINE"] == "chatsite.postgresql" and DB_POOL_MAX_SIZE > 0:
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DB_POOL_MIN_SIZE", default=2),
        "max_size": DB_POOL_MAX_SIZE,
        # A request waits this long for a connection before it is answered 503.
        "timeout": env.float("DB_POOL_TIMEOUT", default=10.0),
    }
# Parameters sent apart from the statement (not quoted into it by the client), and each
# statement a connection has run DB_PREPARE_THRESHOLD times prepared on it, so PostgreSQL
# plans it once. Behind PgBouncer in transaction mode older than 1.21, set
# DB_PREPARE_THRESHOLD=-1 (never prepare).
if DATABASES["default"]["ENGINE"] == "chatsite.postgresql" and env.bool("DB_SERVER_SIDE_BINDING", default=True):
    DATABASES["default"].setdefault("OPTIONS", {})["server_side_binding"] = True
    threshold = env.int("DB_PREPARE_THRESHOLD", default=5)
    DATABASES["default"]["OPTIONS"]["prepare_threshold"] = threshold if threshold >= 0 else None
# Threads an ASGI worker runs the synchronous part of requests on (views, middleware, the ORM),
# each a request's whole step at a time. Every runnable one competes with the loop for the
# interpreter: with 6, at 2,000 replies at once /health/ waited up to 2.8 s; with 2, the
# sends queued behind them until 35 of 2,000 clients gave up (BENCHMARKS.md). A slow page
# (a long chat's export) holds one meanwhile; raise it where those are common.
REQUEST_THREADS = env.int("REQUEST_THREADS", default=3)
# Threads a process uses for its replies' database calls (each borrows one pooled connection at a time).
DB_THREADS = env.int("DB_THREADS", default=4)
# LISTEN needs a session of its own: behind PgBouncer in transaction mode, point this at PostgreSQL itself.
DATABASE_LISTEN_URL = env("DATABASE_LISTEN_URL", default="")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = ["accounts.backends.EmailOrPhoneBackend"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    {"NAME": "accounts.validators.VisiblePasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "chat:index"
LOGOUT_REDIRECT_URL = "accounts:login"
# Unverified users may chat unless the operator requires verification.
REQUIRE_VERIFIED = env.bool("REQUIRE_VERIFIED", default=False)

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env("STATIC_ROOT", default=str(BASE_DIR / "staticfiles"))
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = env("MEDIA_URL", default="/media/")
MEDIA_ROOT = env("MEDIA_ROOT", default=str(BASE_DIR / "media"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": env(
            "STATICFILES_STORAGE",
            default="whitenoise.storage.CompressedManifestStaticFilesStorage"
            if not DEBUG
            else "django.contrib.staticfiles.storage.StaticFilesStorage",
        )
    },
}

# Email and SMS: console backends by default so a fresh machine needs nothing.
EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="chatsite <noreply@localhost>")
SMS_BACKEND = env("SMS_BACKEND", default="accounts.sms.ConsoleSMSBackend")

# Upstream AI provider. With no API key every model answers through the demo provider.
AI_BASE_URL = env("AI_BASE_URL", default="https://openrouter.ai/api/v1")
AI_API_KEY = env("AI_API_KEY", default="") or env("OPENROUTER_API_KEY", default="")
AI_TIMEOUT = env.float("AI_TIMEOUT", default=60.0)
AI_CONNECT_TIMEOUT = env.float("AI_CONNECT_TIMEOUT", default=10.0)
# The shared clients' pools, per worker: every streaming reply holds a connection for as long as it runs.
# They are split in AI_CLIENT_SHARDS pools (chatbots/providers/http.py), each with its share of both limits.
AI_MAX_CONNECTIONS = env.int("AI_MAX_CONNECTIONS", default=2000)
AI_MAX_KEEPALIVE = env.int("AI_MAX_KEEPALIVE", default=1000)
AI_CLIENT_SHARDS = env.int("AI_CLIENT_SHARDS", default=32)
# Retries happen only before the first token: a reply is never sent twice.
AI_MAX_RETRIES = env.int("AI_MAX_RETRIES", default=2)
AI_RETRY_BACKOFF = env.float("AI_RETRY_BACKOFF", default=0.5)
# "images" (POST /images/generations), "chat" (chat completions with image output) or "auto".
AI_IMAGE_API = env("AI_IMAGE_API", default="auto")
# Sent to OpenRouter as HTTP-Referer and X-Title, which it shows in its rankings.
AI_APP_URL = env("AI_APP_URL", default="")
AI_APP_NAME = env("AI_APP_NAME", default="chatsite")
TITLE_MODEL = env("TITLE_MODEL", default="")
# Seconds between the demo provider's words, so streaming is visible offline.
DEMO_STREAM_DELAY = env.float("DEMO_STREAM_DELAY", default=0.03)
MAX_MESSAGE_CHARS = env.int("MAX_MESSAGE_CHARS", default=32000)
# A fair share for every user: replies generating at once (across all servers), and open
# follow streams (per app server process). 0 means no cap.
MAX_ACTIVE_REPLIES_PER_USER = env.int("MAX_ACTIVE_REPLIES_PER_USER", default=3)
MAX_FOLLOW_STREAMS_PER_USER = env.int("MAX_FOLLOW_STREAMS_PER_USER", default=10)
# Personal API keys (the OpenAI-compatible API under /v1/) a user may hold at once.
MAX_API_KEYS_PER_USER = env.int("MAX_API_KEYS_PER_USER", default=10)
# While notifications run, the database is still read this often for what one may have missed
# (a follower on another server than the reply's; stops, by the server running the reply).
REPLY_RECHECK_SECONDS = env.float("REPLY_RECHECK_SECONDS", default=1.0)
# A server stopping (a deploy, a recycled worker) first waits for its open streams (half of
# GUNICORN_GRACEFUL_TIMEOUT), then lets the replies left running finish for this long, then ends the rest.
REPLY_GRACE_SECONDS = env.float("REPLY_GRACE_SECONDS", default=7.0)
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=1024 * 1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["chatsite.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["chatsite.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "chatsite.api.exception_handler",
    # `?format=` belongs to the export endpoint, not to renderer negotiation.
    "URL_FORMAT_OVERRIDE": None,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "chatsite API",
    "DESCRIPTION": (
        "Multi-user AI chat with exact quotas. Session authentication with CSRF. Personal API keys "
        "(/api/api-keys/) open the OpenAI-compatible API under /v1/ (models, chat/completions, "
        "images/generations) with `Authorization: Bearer cs-...`, under the same quotas; see the README."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"ContentTypeEnum": "chatbots.models.ContentType"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "chatsite.schema.add_error_responses",
    ],
}

# Django's database sessions, read without compiling a queryset at every request.
SESSION_ENGINE = "chatsite.sessions"

# Security: secure by default whenever DEBUG is off.
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SESSION_COOKIE_HTTPONLY = True
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy on every response: nothing inline, nothing from another origin
# (the API docs pages widen it for themselves in chatsite/urls.py).
_MEDIA_ORIGIN = urlsplit(MEDIA_URL)
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        # data: for the inline SVG favicon; media may live on an origin of its own.
        "img-src": [SELF, "data:"]
        + ([f"{_MEDIA_ORIGIN.scheme}://{_MEDIA_ORIGIN.netloc}"] if _MEDIA_ORIGIN.netloc else []),
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}
# Behind a proxy that sets X-Forwarded-Proto (and removes what clients sent): that one header, and no
# other, says whether the request came over HTTPS. Off, nothing a client sends makes HTTP count as HTTPS.
if env.bool("USE_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Behind a proxy that appends the client's address to X-Forwarded-For: the throttles count that last
# entry (the one the proxy saw); off, the address the connection came from.
USE_X_FORWARDED_FOR = env.bool("USE_X_FORWARDED_FOR", default=False)
RATELIMIT_IP_META_KEY = "accounts.throttle.client_address"
# django-ratelimit warns about any cache but memcached and Redis; chatsite.cache makes the database
# cache's increment exact, which is what the warning is about.
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.W001", *env.list("SILENCED_SYSTEM_CHECKS", default=[])]

# Selling plans (billing/purchases.py): both keys, or plans are assigned by staff only.
STRIPE_SECRET_KEY = env.str("STRIPE_SECRET_KEY", default="")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="")
# Stripe's API, or a Stripe-compatible server (the tests' local one).
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="https://api.stripe.com")
STRIPE_CURRENCY = env.str("STRIPE_CURRENCY", default="usd").lower()

# Throttles (accounts/throttle.py): counts every app server shares, in a table of the database.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "throttle": {"BACKEND": "chatsite.cache.AtomicDatabaseCache", "LOCATION": "chatsite_throttle"},
}
RATELIMIT_USE_CACHE = "throttle"
# "count/period": failed sign-ins per account typed and per client address; password reset emails and
# verification emails asked for, per address typed (or user) and per client address.
THROTTLE_LOGIN_ACCOUNT = env.str("THROTTLE_LOGIN_ACCOUNT", default="10/15m")
THROTTLE_LOGIN_ADDRESS = env.str("THROTTLE_LOGIN_ADDRESS", default="50/15m")
THROTTLE_PASSWORD_RESET_ACCOUNT = env.str("THROTTLE_PASSWORD_RESET_ACCOUNT", default="3/h")
THROTTLE_PASSWORD_RESET_ADDRESS = env.str("THROTTLE_PASSWORD_RESET_ADDRESS", default="20/h")
THROTTLE_VERIFICATION_ACCOUNT = env.str("THROTTLE_VERIFICATION_ACCOUNT", default="3/h")
THROTTLE_VERIFICATION_ADDRESS = env.str("THROTTLE_VERIFICATION_ADDRESS", default="20/h")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    # The Stripe client logs every request and answer at INFO; its failures are logged by billing.
    # httpx logs every upstream request at INFO: thousands a second under load. Failures are logged by the adapters.
    "loggers": {"stripe": {"level": "WARNING"}, "httpx": {"level": "WARNING"}},
}
CSRF_FAILURE_VIEW = "chatsite.views.csrf_failure"
