from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import purchases, selectors
from billing.models import Payment
from billing.serializers import ChatSessionUsageSerializer, CheckoutInput, PaymentSerializer, RedirectOutput
from chatbots.services import model_test_usage
from chatsite.errors import InvalidInput
from chatsite.schema import REPLY_ERRORS, error_responses, text_parameter
from sessions_app.api import validated


class ChatSessionUsageViewSet(viewsets.ReadOnlyModelViewSet):
    """Token totals per chat of the signed-in user (kept after a chat is deleted)."""

    serializer_class = ChatSessionUsageSerializer
    pagination_class = None
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        return selectors.session_usage_list(user=self.request.user)


class TestModelUsageView(APIView):
    """Staff only: one short call through a model; its usage is recorded and returned."""

    permission_classes = [IsAdminUser]

    @extend_schema(
        request=None,
        parameters=[text_parameter("model_name", "model_id or name.", max_length=255)],
        responses={
            200: inline_serializer(
                "TestModelUsageOutput",
                {
                    "success": serializers.BooleanField(),
                    "message": serializers.CharField(),
                    "response": serializers.CharField(),
                    "usage_recorded": inline_serializer(
                        "UsageRecorded",
                        {
                            "usage_id": serializers.IntegerField(),
                            "model_name": serializers.CharField(),
                            "tokens": serializers.IntegerField(),
                            "cost": serializers.FloatField(),
                            "timestamp": serializers.DateTimeField(),
                        },
                    ),
                },
            ),
            **REPLY_ERRORS,
        },
    )
    def post(self, request):
        model_name = request.query_params.get("model_name", "").strip()
        if not model_name:
            raise InvalidInput("Give `model_name`.", code="required")
        result = model_test_usage(user=request.user, model_name=model_name)
        event = result.event
        return Response(
            {
                "success": True,
                "message": "Model usage tracking test completed",
                "response": result.response,
                "usage_recorded": {
                    "usage_id": event.pk,
                    "model_name": event.ai_model.model_id,
                    "tokens": event.prompt_tokens + event.completion_tokens,
                    "cost": float(event.cost_usd),
                    "timestamp": event.created_at.isoformat().replace("+00:00", "Z"),
                },
            }
        )


class CheckoutView(APIView):
    """Start buying a plan: the URL of the payment provider's checkout page to send the browser to."""

    @extend_schema(request=CheckoutInput, responses={201: RedirectOutput, **error_responses(502)})
    def post(self, request):
        data = validated(CheckoutInput, request.data)
        url = purchases.checkout_begin(
            user=request.user,
            subscription_type_id=data["subscription_type_id"],
            base_url=purchases.site_base_url(request),
        )
        return Response({"url": url}, status=status.HTTP_201_CREATED)


class PortalView(APIView):
    """The payment provider's page where the user manages cards, invoices and cancellation."""

    @extend_schema(request=None, responses={200: RedirectOutput, **error_responses(400, 502)})
    def post(self, request):
        return Response({"url": purchases.portal_begin(user=request.user, base_url=purchases.site_base_url(request))})


class PaymentListView(APIView):
    """The signed-in user's payments, newest first."""

    @extend_schema(responses=PaymentSerializer(many=True))
    def get(self, request):
        payments = Payment.objects.filter(user=request.user).select_related("subscription_type")[:100]
        return Response(PaymentSerializer(payments, many=True).data)
