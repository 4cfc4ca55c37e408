#!/usr/bin/env bash
# The whole test suite, as README.md and CI run it. Installs what the tests
# need (the pinned npm packages and PyPI packages of the test IdPs) and then
# runs every test.
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
# The second real OpenID Provider (django-oauth-toolkit from PyPI, pinned by
# tests/django-idp/requirements.txt) in tests/django-idp/.venv, installed when
# missing or stale. Without it the django_idp_flow tests fail, saying so.
if ! command -v python3 >/dev/null 2>&1; then
  echo "test.sh: Python 3 is required for the django-oauth-toolkit IdP used by the integration tests" >&2
  exit 1
fi
tests/django-idp/install.sh

cargo test --workspace --all-targets "$@"

# ---------------------------------------------------------------------------
# Browser security (issue 5): real-browser e2e tests of `portcullis demo` in
# Debian's headless Chromium, driven by playwright-core (pinned in
# tests/e2e/package-lock.json; it never downloads a browser). Login through
# the IdP form, API calls with CSRF, no token visible to JS, cross-origin
# attacks refused, logout. Screenshots in tests/e2e/artifacts/.
if ! [ -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
if [ ! -d tests/e2e/node_modules ] || [ tests/e2e/package-lock.json -nt tests/e2e/node_modules ]; then
  (cd tests/e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi
# The binary the cargo tests above built (portcullis-cli's integration tests need it).
export PORTCULLIS_BIN="${PORTCULLIS_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/portcullis}"
[ -x "$PORTCULLIS_BIN" ] || cargo build -p portcullis-cli --bin portcullis

# Architecture (issue 17, docs/architecture.md): no crate's modules form an
# import cycle.
echo "== architecture: no import cycle between modules"
for src in crates/*/src; do python3 tests/check-module-cycles.py "$src"; done
# Every sample config in examples/ passes `portcullis check` with only the
# secrets its header documents (the provider guides in docs/providers/ use them).
echo "== examples: portcullis check on examples/*.toml"
tests/check-examples.sh
# Deployment files: the Dockerfile's stand-in workspace of its cached
# dependency layer loads with Cargo.lock; the Kubernetes manifests against the Kubernetes schemas
# (kubernetes-validate, installed into a virtualenv when missing), their
# consistency and the ConfigMap's config; the systemd unit with
# `systemd-analyze verify` where systemd is installed.
echo "== deploy: Dockerfile dependency layer and health check"
tests/check-dockerfile.sh
echo "== deploy: Kubernetes manifests (deploy/kubernetes)"
tests/check-kubernetes.sh
echo "== deploy: systemd unit (deploy/systemd)"
tests/check-systemd.sh
# Observability (issue 21): the Prometheus alert rules and their unit tests,
# the Grafana dashboard's queries and series names, checked with promtool.
echo "== observability: deploy/prometheus and deploy/grafana (promtool)"
tests/check-observability.sh
# The benchmark chart (issue 19): bench/chart.sh draws a fixed sample of
# results with Debian's gnuplot (installed when missing); the SVG must parse
# and name every row. No benchmark runs here.
echo "== bench: chart from a sample of results (bench/chart.sh)"
tests/check-bench-chart.sh
echo "== e2e: browser security (tests/e2e)"
node tests/e2e/run.mjs

# ---------------------------------------------------------------------------
# Front-end kit (issues 9 and 20): the JS client's typecheck, build and unit tests
# (incl. the per-entry size budgets), `npm pack` with a check of the tarball, and for
# each example app (Vue, React): install, the packed client, typecheck, build, and a
# Chromium (Debian package, never downloaded) e2e test of the built app against
# `portcullis demo --spa` (the binary the cargo tests built).
# Every step runs; the block ends with `frontend: N passed, N failed`.
frontend_passed=0
frontend_failed=0
frontend_step() {
  local name=$1
  shift
  echo "== frontend: $name"
  if "$@"; then
    frontend_passed=$((frontend_passed + 1))
  else
    echo "== frontend: $name FAILED" >&2
    frontend_failed=$((frontend_failed + 1))
  fi
}
npm_ci_if_stale() {
  if [ ! -d "$1/node_modules" ] || [ "$1/package-lock.json" -nt "$1/node_modules" ]; then
    (cd "$1" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  fi
}
# The examples get the client as a user would: the tarball `npm pack` made, not a path
# link to clients/js. It is in no package.json or lockfile of theirs, since its bytes
# (and so its integrity hash) change with every client change and `npm ci` would then
# refuse the lockfile. So: `npm ci` from the examples' own lockfiles (deterministic),
# then the tarball on top with `--no-save` (lockfile and package.json untouched).
client_tgz="$PWD/clients/js/pack/portcullis-client.tgz"
example_install() {
  npm_ci_if_stale "$1" && (cd "$1" && npm install --no-save --no-audit --no-fund --loglevel=error "$client_tgz")
}
frontend_step "clients/js npm ci" npm_ci_if_stale clients/js
frontend_step "clients/js typecheck + build" bash -c 'cd clients/js && npx --no-install tsc -p tsconfig.json --noEmit && npm run -s build'
frontend_step "clients/js vitest" bash -c 'cd clients/js && npx --no-install vitest run'
frontend_step "clients/js npm pack + tarball check" bash -c 'cd clients/js && node scripts/pack.mjs'
frontend_step "examples/vue-spa npm ci + packed client" example_install examples/vue-spa
frontend_step "examples/vue-spa typecheck + vite build" bash -c 'cd examples/vue-spa && npx --no-install vue-tsc --noEmit -p tsconfig.json && npx --no-install vite build'
frontend_step "examples/vue-spa e2e (Chromium)" node examples/vue-spa/e2e/run.mjs
frontend_step "examples/react-spa npm ci + packed client" example_install examples/react-spa
frontend_step "examples/react-spa typecheck + vite build" bash -c 'cd examples/react-spa && npx --no-install tsc --noEmit -p tsconfig.json && npx --no-install vite build'
frontend_step "examples/react-spa e2e (Chromium)" node examples/react-spa/e2e/run.mjs
echo "frontend: $frontend_passed passed, $frontend_failed failed"
[ "$frontend_failed" -eq 0 ]

# ---------------------------------------------------------------------------
# Documentation site (issue 21): `mdbook build` of docs/ (book.toml) and a
# check of every internal link in README.md, docs/ and the built site
# (.ci/check_links.py). Installs the pinned mdBook when missing.
bash .ci/docs.sh
