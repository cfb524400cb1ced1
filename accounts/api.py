from django.contrib.auth import authenticate, login, logout
from django.middleware.csrf import get_token
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_protect, ensure_csrf_cookie
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import services
from accounts.models import User
from accounts.serializers import AdminUserSerializer, LoginInput, RegisterInput, RoleInput, UserSerializer, VerifyInput
from accounts.throttle import throttle_hit
from billing.selectors import usage_summary
from billing.serializers import LimitUsageSerializer, UsageOutput, UserSubscriptionSerializer
from billing.services import subscription_current
from chatsite.errors import InvalidInput, NotFound
from chatsite.schema import error_responses, pagination
from sessions_app import selectors as session_selectors
from sessions_app.api import int_param, validated
from sessions_app.serializers import ChatMessageSerializer, ChatSessionSerializer, MessagesOutput


@method_decorator(ensure_csrf_cookie, name="dispatch")
class CsrfView(APIView):
    """Set the CSRF cookie and return its token, for clients that are not pages."""

    permission_classes = [AllowAny]

    @extend_schema(responses=inline_serializer("CsrfToken", {"csrfToken": serializers.CharField()}))
    def get(self, request):
        return Response({"csrfToken": get_token(request)})


# Anonymous POSTs get CSRF checks too (DRF only checks signed-in users), so a
# cross-site form cannot sign a visitor into someone else's account.
@method_decorator(csrf_protect, name="dispatch")
class RegisterView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(request=RegisterInput, responses={201: UserSerializer})
    def post(self, request):
        if request.user.is_authenticated:
            # As the sign-up page does: registering must not quietly switch the session to a new account.
            raise InvalidInput(
                "You are signed in already; log out to create another account.", code="already_signed_in"
            )
        data = validated(RegisterInput, request.data)
        user = services.user_register(**data, base_url=request.build_absolute_uri("/").rstrip("/"))
        login(request, user, backend="accounts.backends.EmailOrPhoneBackend")
        return Response(UserSerializer(user).data, status=status.HTTP_201_CREATED)


@method_decorator(csrf_protect, name="dispatch")
class LoginView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(request=LoginInput, responses={200: UserSerializer, **error_responses(429)})
    def post(self, request):
        data = validated(LoginInput, request.data)
        identifier = data.get("email") or data.get("phone_number")
        user = authenticate(request, username=identifier, password=data["password"])
        if user is None:
            raise InvalidInput("Wrong email, phone number or password.", code="invalid_credentials")
        login(request, user)
        return Response(UserSerializer(user).data)


@method_decorator(csrf_protect, name="dispatch")
class LogoutView(APIView):
    """End the signed-in session (anonymous callers get a 401 like every other private endpoint)."""

    @extend_schema(request=None, responses=inline_serializer("LogoutOutput", {"success": serializers.BooleanField()}))
    def post(self, request):
        logout(request)
        return Response({"success": True})


@method_decorator(csrf_protect, name="dispatch")
class VerifyView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(request=VerifyInput, responses=UserSerializer)
    def post(self, request):
        user = services.user_verify(token=validated(VerifyInput, request.data)["token"])
        return Response(UserSerializer(user).data)


class VerifyResendView(APIView):
    @extend_schema(
        request=None,
        responses={
            200: inline_serializer("ResendOutput", {"success": serializers.BooleanField()}),
            **error_responses(429),
        },
    )
    def post(self, request):
        if not request.user.is_verified:
            throttle_hit(request, "verification", account=f"user:{request.user.pk}")
            services.verification_send(user=request.user, base_url=request.build_absolute_uri("/").rstrip("/"))
        return Response({"success": True})


class CurrentUserView(APIView):
    @extend_schema(responses=UserSerializer)
    def get(self, request):
        return Response(UserSerializer(request.user).data)


class SubscriptionView(APIView):
    @extend_schema(responses=UserSubscriptionSerializer)
    def get(self, request):
        return Response(UserSubscriptionSerializer(subscription_current(user=request.user)).data)


class UsageView(APIView):
    @extend_schema(responses=UsageOutput)
    def get(self, request):
        subscription = subscription_current(user=request.user)
        limits = usage_summary(subscription=subscription)
        return Response(
            {
                "subscription": UserSubscriptionSerializer(subscription).data,
                "limits": LimitUsageSerializer(limits, many=True).data,
            }
        )


class AdminUserListView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(parameters=pagination(100, 1000), responses=AdminUserSerializer(many=True))
    def get(self, request):
        limit = int_param(request, "limit", 100, minimum=1, maximum=1000)
        offset = int_param(request, "offset", 0)
        users = User.objects.order_by("id")
        page = list(users[offset : offset + limit])
        return Response(AdminUserSerializer(page, many=True).data, headers={"X-Total-Count": str(users.count())})


def _user_or_404(user_id: int) -> User:
    user = User.objects.filter(pk=user_id).first()
    if user is None:
        raise NotFound("User not found.")
    return user


class AdminUserRoleView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(request=RoleInput, responses=AdminUserSerializer)
    def patch(self, request, user_id: int):
        user = _user_or_404(user_id)
        role = validated(RoleInput, request.data)["role"]
        return Response(AdminUserSerializer(services.user_set_role(actor=request.user, user=user, role=role)).data)


class AdminUserChatsView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(responses=ChatSessionSerializer(many=True))
    def get(self, request, user_id: int):
        sessions = session_selectors.session_list(user=_user_or_404(user_id))
        return Response(ChatSessionSerializer(sessions, many=True).data)


class AdminChatMessagesView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(responses=MessagesOutput)
    def get(self, request, session_id: int):
        session = session_selectors.session_any(session_id=session_id)
        if session is None:
            raise NotFound("Chat not found.")
        messages = session_selectors.message_list(session=session)
        return Response({"messages": ChatMessageSerializer(messages, many=True).data})
