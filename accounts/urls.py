from django.urls import path

app_name = "accounts"
urlpatterns: list = [path("verify/<str:token>/", lambda r, token: None, name="verify")]
