from django.urls import re_path

from apikeys.v1 import urlpatterns_views

app_name = "v1"

# OpenAI's clients call these without a trailing slash; one is accepted too.
urlpatterns = [
    re_path(r"^models/?$", urlpatterns_views["models"], name="models"),
    re_path(r"^chat/completions/?$", urlpatterns_views["chat/completions"], name="chat-completions"),
    re_path(r"^images/generations/?$", urlpatterns_views["images/generations"], name="image-generations"),
]
