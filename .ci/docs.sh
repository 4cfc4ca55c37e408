#!/usr/bin/env bash
# The documentation site: builds docs/ with mdBook (book.toml, output in
# target/book) and fails on a broken internal link (.ci/check_links.py).
# `--install` only makes sure the pinned mdBook is there (.ci/run does that
# before the tests, so the install's time shows on its own line).
set -euo pipefail
cd "$(dirname "$0")/.."

MDBOOK_VERSION=0.4.52
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

if [ "$(mdbook --version 2>/dev/null)" != "mdbook v$MDBOOK_VERSION" ]; then
  # Without the `serve`/`watch` features the build needs no web server or file
  # watcher crates: about 1.5 minutes on 2 cores instead of several.
  echo "docs: installing mdbook $MDBOOK_VERSION from crates.io"
  cargo install mdbook --version "$MDBOOK_VERSION" --locked \
    --no-default-features --features search
fi
if [ "${1:-}" = "--install" ]; then
  mdbook --version
  exit 0
fi

echo "== docs: mdbook build (target/book) and link check"
if ! out=$(mdbook build 2>&1); then
  echo "$out" >&2
  echo "docs: mdbook build failed; the Markdown links:" >&2
  python3 .ci/check_links.py --no-html || true
  exit 1
fi
echo "$out" | grep -v ' \[INFO\] ' || true   # warnings only
python3 .ci/check_links.py --book target/book

# Self-contained: docs and source cite nothing a user of the repository cannot
# open (no design notes kept outside it).
if git grep -n -I 'DESIGN\.md' -- ':!.ci/docs.sh' ':!**/node_modules/**'; then
  echo "docs: the lines above cite DESIGN.md, which is not in the repository" >&2
  exit 1
fi
