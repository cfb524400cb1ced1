from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import viewsets

from chatbots import selectors
from chatbots.models import ContentType
from chatbots.serializers import AIModelSerializer, ChatbotSerializer
from chatsite.errors import InvalidInput


class ChatbotViewSet(viewsets.ReadOnlyModelViewSet):
    """Active chatbots; an inactive one is a 404."""

    serializer_class = ChatbotSerializer
    pagination_class = None
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        return selectors.chatbot_list()


@extend_schema_view(
    list=extend_schema(
        parameters=[OpenApiParameter("model_type", str, enum=ContentType.values, description="Only this type.")]
    )
)
class AIModelViewSet(viewsets.ReadOnlyModelViewSet):
    """Active AI models, optionally of one `model_type`."""

    serializer_class = AIModelSerializer
    pagination_class = None
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        model_type = self.request.query_params.get("model_type") or None
        if model_type is not None and model_type not in ContentType.values:
            raise InvalidInput(
                f"`model_type` must be one of {', '.join(ContentType.values)}.", code="invalid_parameter"
            )
        return selectors.ai_model_list(model_type=model_type)
