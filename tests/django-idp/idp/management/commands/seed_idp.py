"""Creates the test users (password = name; roles as Django groups) and the
gateway's confidential client, then prints `USERS {"alice": "<sub>", ...}`:
DOT's `sub` is the user's primary key."""

import json

from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand
from oauth2_provider.models import Application

USERS = [("alice", ["admin", "hr"]), ("bob", ["hr"]), ("carol", [])]


class Command(BaseCommand):
    help = "Create users alice/bob/carol and the gateway's OIDC client."

    def add_arguments(self, parser):
        parser.add_argument("--client-id", default="portal")
        parser.add_argument("--client-secret", default="portal-secret")
        parser.add_argument("--redirect-uri", action="append", default=[])
        parser.add_argument("--post-logout-redirect-uri", action="append", default=[])

    def handle(self, *args, **opts):
        subs = {}
        for name, roles in USERS:
            user = User.objects.create_user(name, f"{name}@example.com", name)
            for role in roles:
                user.groups.add(Group.objects.get_or_create(name=role)[0])
            subs[name] = str(user.pk)
        Application.objects.create(
            name="portcullis",
            client_id=opts["client_id"],
            # Saved hashed (hash_client_secret defaults to true since DOT 2).
            client_secret=opts["client_secret"],
            client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
            redirect_uris=" ".join(opts["redirect_uri"]) or "http://127.0.0.1/unused-callback",
            post_logout_redirect_uris=" ".join(opts["post_logout_redirect_uri"]),
            # No consent page: the gateway is a first-party client.
            skip_authorization=True,
            # Without an algorithm DOT issues no ID token for the client.
            algorithm=Application.RS256_ALGORITHM,
        )
        self.stdout.write("USERS " + json.dumps(subs))
