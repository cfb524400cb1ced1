from rest_framework import authentication, exceptions

from apikeys import services


class MissingApiKey(exceptions.NotAuthenticated):
    default_detail = "Give your chatsite API key as `Authorization: Bearer cs-...` (make one on your account page)."
    default_code = "missing_api_key"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <key>` with a personal API key; no session, so no CSRF. Read on every call."""

    def authenticate(self, request):
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise MissingApiKey()
        api_key = services.api_key_authenticate(key=key.strip())
        if api_key is None:
            raise exceptions.AuthenticationFailed(
                "The API key is not valid, or it was revoked.", code="invalid_api_key"
            )
        return api_key.user, api_key

    def authenticate_header(self, request):
        return 'Bearer realm="chatsite"'
