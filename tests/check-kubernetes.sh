#!/usr/bin/env bash
# The Kubernetes manifests in deploy/kubernetes/:
#  1. every resource validates against the Kubernetes schemas (PyPI
#     `kubernetes-validate`, strict: an unknown or misspelt field fails), for
#     the oldest and the newest Kubernetes version it is checked against;
#  2. the manifests agree with each other and with the config
#     (.ci/check_kubernetes.py: grace period vs. drain, probe ports, selectors);
#  3. the ConfigMap's portcullis.toml passes `portcullis check`, with the
#     Secret's keys as the mounted files and env variables that the Deployment
#     gives it.
# `--install` only makes sure the pinned validator is there (.ci/run does
# that before the tests). It lives in a virtualenv outside the repository.
#
# Binary: $PORTCULLIS_BIN, else target/debug/portcullis (CARGO_TARGET_DIR honoured).
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VALIDATE_VERSION=1.37.0
# Oldest Kubernetes the manifests support: the preStop `sleep` action is GA
# in 1.30; 1.32 is the oldest schema the validator ships.
K8S_VERSIONS="1.32.0 1.37.0"
venv="${PORTCULLIS_CI_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/portcullis-ci/venv}"

if [ "$("$venv/bin/kubernetes-validate" --version 2>/dev/null || true)" != "$KUBERNETES_VALIDATE_VERSION" ]; then
  echo "check-kubernetes: installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
if [ "${1:-}" = "--install" ]; then
  "$venv/bin/kubernetes-validate" --version
  exit 0
fi

bin="${PORTCULLIS_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/portcullis}"
if ! [ -x "$bin" ]; then
  echo "check-kubernetes: no portcullis binary at $bin (build it or set PORTCULLIS_BIN)" >&2
  exit 1
fi

# kustomization.yaml is kustomize's, not a Kubernetes resource.
manifests=()
for f in deploy/kubernetes/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
for version in $K8S_VERSIONS; do
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "${manifests[@]}"
  echo "check-kubernetes: ${#manifests[@]} files valid for Kubernetes $version"
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Consistency checks; writes the ConfigMap's config and the Secret's files
# (placeholders replaced by valid values) into $tmp for `portcullis check`.
"$venv/bin/python" .ci/check_kubernetes.py deploy/kubernetes "$tmp" "$("$bin" keygen)"
env -i PATH="$PATH" "PORTCULLIS__SESSION__STORE=$(cat "$tmp/secrets/store-url")" \
  "$bin" check --config "$tmp/portcullis.toml"
echo "check-kubernetes: OK"
