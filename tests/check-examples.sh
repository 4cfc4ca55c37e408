#!/usr/bin/env bash
# `portcullis check` on every examples/*.toml with the real binary, in an
# environment that holds only the secrets the example's header documents
# (`#   PORTCULLIS__…  meaning` lines). An example that needs anything else, or
# that the binary refuses, fails the run; so does a secret that `--print`
# shows instead of "***".
#
# Binary: $PORTCULLIS_BIN, else target/debug/portcullis (CARGO_TARGET_DIR honoured).
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${PORTCULLIS_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/portcullis}"
if ! [ -x "$bin" ]; then
  echo "check-examples: no portcullis binary at $bin (build it or set PORTCULLIS_BIN)" >&2
  exit 1
fi

passed=0
failed=0
for example in examples/*.toml; do
  # The documented variables, e.g. "#   PORTCULLIS__OIDC__CLIENT_SECRET   the secret".
  vars=$(sed -n 's/^#[[:space:]]\{1,\}\(PORTCULLIS__[A-Z0-9_]\{1,\}\)[[:space:]].*/\1/p' "$example" | sort -u)
  if [ -z "$vars" ]; then
    echo "check-examples: $example documents no PORTCULLIS__ secrets in its header" >&2
    failed=$((failed + 1))
    continue
  fi
  # Placeholder values that are valid and recognisable in the output.
  envs=()
  secrets=()
  for var in $vars; do
    case "$var" in
      *ENCRYPTION_KEYS) value="[\"$("$bin" keygen)\"]" ;;
      *) value="placeholder-${var,,}" ;;
    esac
    envs+=("$var=$value")
    secrets+=("$value")
  done
  # Only PATH and the documented variables: nothing leaks in from the caller.
  if out=$(env -i PATH="$PATH" "${envs[@]}" "$bin" check --config "$example" --print 2>&1); then
    leaked=""
    for value in "${secrets[@]}"; do
      case "$value" in
        \[*) value=${value:2:-2} ;; # the key inside '["…"]'
      esac
      if grep -qF -- "$value" <<<"$out"; then
        leaked=yes
      fi
    done
    if [ -n "$leaked" ]; then
      echo "check-examples: $example: --print shows a secret" >&2
      failed=$((failed + 1))
    else
      echo "check-examples: $example OK"
      passed=$((passed + 1))
    fi
  else
    echo "check-examples: $example FAILED:" >&2
    echo "$out" >&2
    failed=$((failed + 1))
  fi
done
echo "check-examples: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
