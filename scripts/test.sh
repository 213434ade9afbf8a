#!/usr/bin/env bash
# Runs the whole test suite. Installs and starts whatever the tests need first, so it
# works on a fresh machine (today: only the Rust toolchain; later issues add the SMTP
# server, PostgreSQL and Prism here).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== orderbridge check on the example configuration"
DEMO_CRM_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw DEMO_ERP_TOKEN=example ORDERBRIDGE_ADMIN_TOKEN=example \
  cargo run --locked -q -- check --config-dir .
echo "== cargo test"
cargo test --locked --all-targets -- --test-threads "${TEST_THREADS:-4}"
cargo test --locked --doc
