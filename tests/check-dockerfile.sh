#!/usr/bin/env bash
# The Dockerfile's cached dependency layer copies each workspace member's
# manifest and stands in an empty src/ for it: a member added to the
# workspace but not to the Dockerfile would break the image build. This
# rebuilds that stand-in tree as the Dockerfile does and checks that cargo
# loads it with the same Cargo.lock (`--locked`). Docker itself is not needed.
# Also: the image's health check uses `portcullis health`.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp Cargo.toml Cargo.lock "$tmp/"
members=$(cargo metadata --no-deps --format-version 1 --locked |
  python3 -c 'import json,os,sys; m=json.load(sys.stdin); root=m["workspace_root"]
for p in m["packages"]: print(os.path.relpath(os.path.dirname(p["manifest_path"]), root))')
failed=0
for member in $members; do
  if ! grep -q "^COPY $member/Cargo.toml" Dockerfile; then
    echo "check-dockerfile: the Dockerfile does not copy $member/Cargo.toml" >&2
    failed=1
  fi
  mkdir -p "$tmp/$member/src"
  cp "$member/Cargo.toml" "$tmp/$member/"
  if [ -f "$member/src/lib.rs" ]; then
    grep -q "$member/src/lib.rs" Dockerfile || { echo "check-dockerfile: no stand-in lib.rs for $member" >&2; failed=1; }
    touch "$tmp/$member/src/lib.rs"
  fi
  if [ -f "$member/src/main.rs" ]; then
    grep -q "$member/src/main.rs" Dockerfile || { echo "check-dockerfile: no stand-in main.rs for $member" >&2; failed=1; }
    echo 'fn main() {}' >"$tmp/$member/src/main.rs"
  fi
  if [ -f "$member/build.rs" ]; then
    grep -q "$member/build.rs" Dockerfile || { echo "check-dockerfile: the Dockerfile does not copy $member/build.rs" >&2; failed=1; }
    cp "$member/build.rs" "$tmp/$member/"
  fi
done
if ! (cd "$tmp" && cargo metadata --locked --format-version 1 >/dev/null); then
  echo "check-dockerfile: the stand-in workspace does not load with Cargo.lock" >&2
  failed=1
fi
if ! grep -A2 '^HEALTHCHECK' Dockerfile | grep -q 'CMD \["/usr/local/bin/portcullis", "health"'; then
  echo "check-dockerfile: no HEALTHCHECK with portcullis health" >&2
  failed=1
fi
[ "$failed" -eq 0 ]
echo "check-dockerfile: OK ($(echo $members | wc -w) workspace members)"
