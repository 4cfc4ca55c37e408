#!/usr/bin/env bash
# deploy/systemd/portcullis.service: `systemd-analyze verify` must print
# nothing (it exits 0 even on an unknown or misspelt key, so any output
# fails), and `systemd-analyze security` must rate its exposure at most 2.0
# (`--threshold` counts tenths: 20; a hardening line lost or misspelt raises
# it). Skipped where systemd is not
# installed. ExecStart= and ExecStartPre= must name an executable, so the
# unit is checked with the built binary in their place.
#
# Binary: $PORTCULLIS_BIN, else target/debug/portcullis (CARGO_TARGET_DIR honoured).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "check-systemd: skipped (no systemd-analyze)"
  exit 0
fi
bin="${PORTCULLIS_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/portcullis}"
if ! [ -x "$bin" ]; then
  echo "check-systemd: no portcullis binary at $bin (build it or set PORTCULLIS_BIN)" >&2
  exit 1
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s#/usr/local/bin/portcullis#$bin#g" deploy/systemd/portcullis.service >"$tmp/portcullis.service"
out=$(systemd-analyze verify "$tmp/portcullis.service" 2>&1) || true
if [ -n "$out" ]; then
  echo "check-systemd: systemd-analyze verify:" >&2
  echo "$out" >&2
  exit 1
fi
if ! out=$(systemd-analyze security --offline=yes --threshold=20 "$tmp/portcullis.service" 2>&1); then
  echo "$out" | tail -n 30 >&2
  echo "check-systemd: exposure above 2.0" >&2
  exit 1
fi
echo "check-systemd: $(echo "$out" | grep -o 'Overall exposure level.*' || true)"
echo "check-systemd: OK"
