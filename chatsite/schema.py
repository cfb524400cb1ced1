"""drf-spectacular extensions for chatsite's own API classes."""

from drf_spectacular.authentication import SessionScheme


class ChatsiteSessionScheme(SessionScheme):
    target_class = "chatsite.authentication.SessionAuthentication"
