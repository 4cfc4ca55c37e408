#!/usr/bin/env bash
# The whole test suite, as README.md and CI run it. Installs what the tests
# need (the pinned npm packages of the test IdP) and then runs every test.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v node >/dev/null 2>&1; then
  echo "test.sh: Node.js is required for the OpenID Provider used by the integration tests" >&2
  exit 1
fi
# The real OpenID Provider (npm oidc-provider, pinned by package-lock.json).
if [ ! -d tests/oidc-provider/node_modules ] || [ tests/oidc-provider/package-lock.json -nt tests/oidc-provider/node_modules ]; then
  (cd tests/oidc-provider && npm ci --no-audit --no-fund --loglevel=error)
fi

cargo test --workspace --all-targets "$@"
