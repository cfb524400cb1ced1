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
]
