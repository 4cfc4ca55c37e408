"""The login form at LOGIN_URL and DOT under /o/ (so the issuer is
http://127.0.0.1:<port>/o, discovery at /o/.well-known/openid-configuration)."""

from django.contrib.auth.views import LoginView
from django.urls import include, path

urlpatterns = [
    path("accounts/login/", LoginView.as_view(), name="login"),
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
]
