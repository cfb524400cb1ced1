from django.urls import path

from sessions_app import views

app_name = "chat"

urlpatterns = [
    path("", views.index, name="index"),
    path("new/", views.create, name="create"),
    path("<int:session_id>/", views.detail, name="detail"),
    path("<int:session_id>/send/", views.send, name="send"),
    path("<int:session_id>/regenerate/", views.regenerate, name="regenerate"),
    path("<int:session_id>/rename/", views.rename, name="rename"),
    path("<int:session_id>/delete/", views.delete, name="delete"),
    path("<int:session_id>/messages/<uuid:message_id>/edit/", views.edit, name="edit"),
    path("<int:session_id>/messages/<uuid:message_id>/switch/", views.switch_version, name="switch"),
    path("<int:session_id>/pin/", views.pin, name="pin"),
    path("<int:session_id>/usage-hint/", views.usage_hint, name="usage_hint"),
    path("<int:session_id>/model/", views.switch_model, name="model"),
]
