#!/usr/bin/env bash
# Installs the pinned django-oauth-toolkit (requirements.txt) into
# tests/django-idp/.venv when it is missing or differs from requirements.txt.
# ./test.sh runs this before `cargo test`; the Rust fixture
# (crates/portcullis/tests/common/django_idp.rs) fails with a pointer here
# when the virtualenv is missing.
set -euo pipefail
cd "$(dirname "$0")"

stamp=.venv/installed-requirements.txt
if [ -x .venv/bin/python ] && cmp -s requirements.txt "$stamp"; then
  exit 0
fi
echo "django-idp: installing requirements.txt into tests/django-idp/.venv"
rm -rf .venv
# The interpreter's own pip installs into the venv (`--python`): seeding the
# venv with a pip of its own (ensurepip) would double the install time.
if python3 -m pip --version >/dev/null 2>&1; then
  python3 -m venv --without-pip .venv
  pip=(python3 -m pip --python .venv/bin/python)
else
  python3 -m venv .venv
  pip=(.venv/bin/pip)
fi
"${pip[@]}" install --quiet --disable-pip-version-check --no-input -r requirements.txt
cp requirements.txt "$stamp"
echo "django-idp: installed in ${SECONDS}s"
