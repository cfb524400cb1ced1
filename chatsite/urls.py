from csp.constants import NONCE, SELF
from csp.decorators import csp_update
from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import URLPattern, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny
from rest_framework.routers import SimpleRouter

from accounts import api as accounts_api
from accounts import views as accounts_views
from apikeys import api as apikeys_api
from billing import api as billing_api
from billing import views as billing_views
from chatbots import api as chatbots_api
from chatsite import views
from sessions_app import api as sessions_api
from sessions_app.streams import REPLY_ENDPOINTS, reply_endpoint

# The API docs widen the policy for themselves only. Swagger UI's init script is rendered inline
# with this request's CSRF token; it runs because it carries this response's nonce.
SWAGGER_CSP = {"script-src": [NONCE]}
# Redoc draws with CSS-in-JS: the <style> elements it inserts once started carry this response's
# nonce (static/chatsite/redoc.js hands it over); the scrollbar CSS it inserts while loading,
# before any nonce can reach it, is let in by its hash (and the empty element it starts as).
# Its search runs in a worker made from a blob: URL.
REDOC_CSP = {
    "style-src": [
        NONCE,
        "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='",  # ""
        "'sha256-QMIg+bpjm3JdElJ388KYke01izlUW0UoNOeKjpMxdgc='",  # perfect-scrollbar's CSS in redoc 2.5.4
    ],
    "worker-src": [SELF, "blob:"],
}

router = SimpleRouter()
router.register("chatbots", chatbots_api.ChatbotViewSet, basename="chatbot")
router.register("ai-models", chatbots_api.AIModelViewSet, basename="ai-model")
router.register("chat-sessions", sessions_api.ChatSessionViewSet, basename="chat-session")
router.register("chat-session-usages", billing_api.ChatSessionUsageViewSet, basename="chat-session-usage")
router.register("api-keys", apikeys_api.ApiKeyViewSet, basename="api-key")
# The endpoints that run replies are async views around their DRF actions.
router_urls = [
    URLPattern(url.pattern, reply_endpoint(url.callback), url.default_args, url.name)
    if url.name in REPLY_ENDPOINTS
    else url
    for url in router.urls
]

api_urlpatterns = [
    path("auth/csrf/", accounts_api.CsrfView.as_view(), name="auth-csrf"),
    path("auth/register/", accounts_api.RegisterView.as_view(), name="auth-register"),
    path("auth/login/", accounts_api.LoginView.as_view(), name="auth-login"),
    path("auth/logout/", accounts_api.LogoutView.as_view(), name="auth-logout"),
    path("auth/verify/", accounts_api.VerifyView.as_view(), name="auth-verify"),
    path("auth/verify/resend/", accounts_api.VerifyResendView.as_view(), name="auth-verify-resend"),
    path("users/", accounts_api.CurrentUserView.as_view(), name="user-current"),
    path("users/subscription/", accounts_api.SubscriptionView.as_view(), name="user-subscription"),
    path("users/usage/", accounts_api.UsageView.as_view(), name="user-usage"),
    path("admin/users/", accounts_api.AdminUserListView.as_view(), name="admin-users"),
    path("admin/users/<int:user_id>/role/", accounts_api.AdminUserRoleView.as_view(), name="admin-user-role"),
    path("admin/users/<int:user_id>/chats/", accounts_api.AdminUserChatsView.as_view(), name="admin-user-chats"),
    path(
        "admin/chats/<int:session_id>/messages/",
        accounts_api.AdminChatMessagesView.as_view(),
        name="admin-chat-messages",
    ),
    path("debug/test-model-usage/", billing_api.TestModelUsageView.as_view(), name="debug-test-model-usage"),
    path("billing/checkout/", billing_api.CheckoutView.as_view(), name="billing-checkout"),
    path("billing/portal/", billing_api.PortalView.as_view(), name="billing-portal"),
    path("billing/payments/", billing_api.PaymentListView.as_view(), name="billing-payments"),
    path("schema/", SpectacularAPIView.as_view(permission_classes=[AllowAny]), name="schema"),
    path(
        "docs/",
        csp_update(SWAGGER_CSP)(
            SpectacularSwaggerView.as_view(
                url_name="api:schema", permission_classes=[AllowAny], template_name="chatsite/swagger_ui.html"
            )
        ),
        name="docs",
    ),
    path(
        "redoc/",
        csp_update(REDOC_CSP)(
            SpectacularRedocView.as_view(
                url_name="api:schema", permission_classes=[AllowAny], template_name="chatsite/redoc.html"
            )
        ),
        name="redoc",
    ),
    *router_urls,
]

admin.site.site_header = "chatsite administration"
admin.site.site_title = "chatsite admin"
admin.site.index_title = "Plans, models, chatbots, users and chats"

urlpatterns = [
    path("", views.landing, name="landing"),
    path("api/", include((api_urlpatterns, "api"))),
    # The OpenAI-compatible API, opened by personal API keys (apikeys/v1.py).
    path("v1/", include("apikeys.urls")),
    path("health/", views.health, name="health"),
    path("health/ready/", views.ready, name="health-ready"),
    path("accounts/", include("accounts.urls")),
    path("account/", accounts_views.account, name="account"),
    path("pricing/", billing_views.pricing, name="pricing"),
    path("pricing/checkout/", billing_views.pricing_checkout, name="pricing_checkout"),
    path("billing/stripe/webhook/", billing_views.stripe_webhook, name="stripe_webhook"),
    path("chat/", include("sessions_app.urls")),
    path("admin/", admin.site.urls),
]

if settings.DEBUG:
    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)

handler400 = "chatsite.views.bad_request"
handler403 = "chatsite.views.permission_denied"
handler404 = "chatsite.views.not_found"
handler500 = "chatsite.views.server_error"
