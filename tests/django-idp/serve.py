#!/usr/bin/env python3
"""Runs the test IdP (django-oauth-toolkit with OIDC) on 127.0.0.1.

    .venv/bin/python serve.py --port 0 --data-dir DIR \
        --redirect-uri http://127.0.0.1:PORT/auth/callback [--post-logout-redirect-uri URI] \
        [--client-id portal --client-secret portal-secret] [--access-token-seconds 300]

Each run is fresh: a sqlite database in DIR, a new Django secret key and a
new RSA signing key, the users and client of `seed_idp`. Prints
`USERS {...}` and then `LISTENING <port>` (port 0: the system picks one)
and serves until killed or until its stdin closes (the test process gone).
"""

import argparse
import os
import secrets
import sys
import threading
from pathlib import Path


def rsa_private_key_pem():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def exit_on_stdin_eof():
    sys.stdin.read()
    os._exit(0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--client-id", default="portal")
    parser.add_argument("--client-secret", default="portal-secret")
    parser.add_argument("--redirect-uri", action="append", default=[])
    parser.add_argument("--post-logout-redirect-uri", action="append", default=[])
    parser.add_argument("--access-token-seconds", type=int, default=300)
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ["DJANGO_SETTINGS_MODULE"] = "idp.settings"
    os.environ["DJANGO_IDP_DB"] = str(Path(args.data_dir) / "idp.sqlite3")
    os.environ["DJANGO_IDP_SECRET_KEY"] = secrets.token_urlsafe(50)
    os.environ["DJANGO_IDP_RSA_KEY"] = rsa_private_key_pem()
    os.environ["DJANGO_IDP_ACCESS_TOKEN_SECONDS"] = str(args.access_token_seconds)

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
    seed = ["--client-id", args.client_id, "--client-secret", args.client_secret]
    for uri in args.redirect_uri:
        seed += ["--redirect-uri", uri]
    for uri in args.post_logout_redirect_uri:
        seed += ["--post-logout-redirect-uri", uri]
    call_command("seed_idp", *seed)

    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application

    server = ThreadedWSGIServer(("127.0.0.1", args.port), WSGIRequestHandler)
    server.set_app(get_wsgi_application())
    print(f"LISTENING {server.server_address[1]}", flush=True)
    threading.Thread(target=exit_on_stdin_eof, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
