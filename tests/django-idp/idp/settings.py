"""Settings of the test IdP. serve.py fills the DJANGO_IDP_* variables per run
(sqlite file in a temporary directory, a fresh secret key and RSA key)."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = os.environ["DJANGO_IDP_SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "oauth2_provider",
    "idp",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "idp.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ]
        },
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["DJANGO_IDP_DB"],
    }
}
# Tables straight from the models (`migrate --run-syncdb`), as Django's test
# runner does without migrations: a fresh database in about a second instead
# of replaying every migration (about ten on a loaded CI machine).
MIGRATION_MODULES = {app: None for app in ["auth", "contenttypes", "sessions", "oauth2_provider"]}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
LOGIN_URL = "/accounts/login/"
# Test-only IdP: a fast hasher for the user passwords and the hashed client
# secret (checked on every token call); the default PBKDF2 costs about a
# second per check on a loaded CI machine.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

OAUTH2_PROVIDER = {
    "OIDC_ENABLED": True,
    "OIDC_RSA_PRIVATE_KEY": os.environ["DJANGO_IDP_RSA_KEY"],
    # RP-initiated logout (end_session_endpoint in discovery). Without a
    # prompt when the id_token_hint belongs to the user logged in here, as
    # the spec allows; DOT's default asks every time.
    "OIDC_RP_INITIATED_LOGOUT_ENABLED": True,
    "OIDC_RP_INITIATED_LOGOUT_ALWAYS_PROMPT": False,
    # Every refresh returns a new refresh token; presenting a rotated one
    # again revokes the whole token family.
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "PKCE_REQUIRED": True,
    "ACCESS_TOKEN_EXPIRE_SECONDS": int(os.environ.get("DJANGO_IDP_ACCESS_TOKEN_SECONDS", "300")),
    "ID_TOKEN_EXPIRE_SECONDS": 3600,
    # DOT knows only the scopes listed here and refuses others (so no
    # `offline_access`: it issues refresh tokens without it).
    "SCOPES": {
        "openid": "OpenID Connect",
        "profile": "Your name",
        "email": "Your email address",
        "roles": "Your roles",
    },
    "DEFAULT_SCOPES": ["openid"],
    "OAUTH2_VALIDATOR_CLASS": "idp.claims.RolesValidator",
}

# Errors to stderr, which the Rust fixture prints when a test fails.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django": {"handlers": ["console"], "level": "WARNING"},
        "oauth2_provider": {"handlers": ["console"], "level": "WARNING"},
    },
}
