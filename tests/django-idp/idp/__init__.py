"""A minimal Django project around django-oauth-toolkit: the second real
OpenID Provider of the portcullis integration tests. Run by serve.py."""
