"""The personal API keys endpoints (session auth, like the rest of /api/); the keys open /v1/ (apikeys/v1.py)."""

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.response import Response

from apikeys import selectors, services
from apikeys.serializers import ApiKeyCreatedSerializer, ApiKeyCreateInput, ApiKeySerializer, ApiKeyUpdateInput


class ApiKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Your personal API keys for the OpenAI-compatible API under /v1/. Another user's key is a 404.

    A key is shown in full only in the answer that creates it; only its hash is kept.
    """

    serializer_class = ApiKeySerializer
    pagination_class = None
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        return selectors.api_key_list(user=self.request.user)

    @extend_schema(responses=ApiKeySerializer(many=True))
    def list(self, request):
        # Query: the user's keys left-joined to their ledger rows, summed per key.
        return Response(ApiKeySerializer(self.get_queryset(), many=True).data)

    @extend_schema(request=ApiKeyCreateInput, responses={201: ApiKeyCreatedSerializer})
    def create(self, request):
        serializer = ApiKeyCreateInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        api_key, key = services.api_key_create(user=request.user, **serializer.validated_data)
        api_key.key = key
        return Response(ApiKeyCreatedSerializer(api_key).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ApiKeyUpdateInput, responses=ApiKeySerializer)
    def partial_update(self, request, pk=None):
        api_key = self.get_object()
        serializer = ApiKeyUpdateInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        api_key = services.api_key_update(api_key=api_key, **serializer.validated_data)
        return Response(ApiKeySerializer(api_key).data)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request, pk=None):
        api_key = self.get_object()
        services.api_keys_revoke(keys=type(api_key).objects.filter(pk=api_key.pk))
        return Response(status=status.HTTP_204_NO_CONTENT)
