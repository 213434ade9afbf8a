#!/usr/bin/env bash
# Runs the whole test suite. Installs whatever the tests need first, so it works on a
# fresh machine: the Rust toolchain must be there; the test SMTP server (Python's
# aiosmtpd, started by the tests themselves on loopback), Prism and the vendors'
# signing libraries (Node.js) are installed here, and PostgreSQL and Chromium (Debian's
# packages) when missing: a throwaway cluster under target/pg serves the tests that need
# it, headless Chromium takes the screenshots of mail and pages.
set -euo pipefail
cd "$(dirname "$0")/.."

# Installs the Debian packages named when the shell test `present` fails (as root, with
# apt-get), or says what is required and stops.
#   need_packages WHAT PRESENT PACKAGE…
need_packages() {
  local what=$1 present=$2
  shift 2
  if eval "$present" >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing $what (Debian: $*)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  else
    echo "$what is required (Debian: apt-get install $*)" >&2
    exit 1
  fi
}

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is required (the test SMTP server runs on it)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "openssl is required (tests make throwaway TLS certificates)" >&2; exit 1; }
command -v npm >/dev/null || { echo "Node.js 20 and npm are required (Prism and the vendors' signing libraries run on it)" >&2; exit 1; }

# The test SMTP server: aiosmtpd, pinned, installed into target/ (no root, no venv).
PYDEPS="$PWD/target/pydeps"
if ! PYTHONPATH="$PYDEPS" python3 -c 'import aiosmtpd' 2>/dev/null; then
  echo "== installing aiosmtpd into $PYDEPS"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$PYDEPS" 'aiosmtpd==1.4.6'
fi
if ! PYTHONPATH="$PYDEPS" python3 -c 'import pyarrow' 2>/dev/null; then
  echo "== installing pyarrow into $PYDEPS (reads the warehouse export back in the tests)"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$PYDEPS" 'pyarrow==26.0.1'
fi
export PYTHONPATH="$PYDEPS${PYTHONPATH:+:$PYTHONPATH}"

# Prism (serves the vendors' OpenAPI specs to validate our requests), the vendors'
# own webhook-signing libraries, oidc-provider (the console's sign-in tests) and
# axe-core (the console's accessibility scan), pinned by tests/support/node/package-lock.json,
# installed into target/node. Reinstalled only when the lock file changes.
NODE_DIR="$PWD/target/node"
if ! cmp -s tests/support/node/package-lock.json "$NODE_DIR/package-lock.json" || [ ! -x "$NODE_DIR/node_modules/.bin/prism" ]; then
  echo "== installing Prism and signing libraries into $NODE_DIR"
  mkdir -p "$NODE_DIR"
  cp tests/support/node/package.json tests/support/node/package-lock.json "$NODE_DIR/"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
fi

# PostgreSQL for the store conformance suite on the postgres backend: a cluster of
# its own under target/pg on loopback, stopped when this script exits.
# shellcheck source=scripts/test-postgres.sh
source scripts/test-postgres.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== pure modules: no file, network, store or server crates in domain, engine, mapping, analytics"
pure_dirs=""
for d in src/domain src/engine src/mapping src/analytics; do [ -d "$d" ] && pure_dirs="$pure_dirs $d"; done
# shellcheck disable=SC2086
if impure=$(grep -rnE '\b(std::fs|tokio|reqwest|sled|axum|lettre)\b' $pure_dirs); then
  echo "$impure" >&2
  echo "domain, engine, mapping and analytics are pure: read files, talk to the network or the store outside them (invariant 6)" >&2
  exit 1
fi
echo "== the store keeps persistence verbs only: no rules and no decisions under src/store"
if deciding=$(grep -rnE 'engine::(decide|rules)\b|\bRules\b|\bdecide(_new)?\(' src/store); then
  echo "$deciding" >&2
  echo "src/store decides nothing: deciding belongs to the engine, called from the application layer (src/orders)" >&2
  exit 1
fi
echo "== structure: no import cycles between modules, no file under src/ over 800 lines"
# Functions over 80 lines are refused by clippy above (clippy.toml, [lints] in Cargo.toml).
TOOLS="$PWD/target/tools"
if [ ! -x "$TOOLS/bin/cargo-cycles" ]; then
  echo "== installing cargo-cycles into $TOOLS"
  cargo install --locked --quiet cargo-cycles --version 0.2.0 --root "$TOOLS"
fi
if ! cycles=$("$TOOLS/bin/cargo-cycles" 2>&1); then
  echo "$cycles" | grep -v ' INFO ' >&2
  echo "modules import each other in a loop (above): give what they share a module of its own below both" >&2
  exit 1
fi
big=$(find src -name '*.rs' -exec wc -l {} + | awk '$2 != "total" && $1 > 800')
if [ -n "$big" ]; then
  echo "$big" >&2
  echo "files over 800 lines (above): split them by concern" >&2
  exit 1
fi
echo "== orderbridge check on the example configuration"
DEMO_CRM_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw DEMO_ERP_TOKEN=example ORDERBRIDGE_ADMIN_TOKEN=example \
  SERVICE_DESK_TOKEN=example ORDERBRIDGE_LINK_SECRET=example-link-key-0123456789abcdef0123 \
  ORDERBRIDGE_EVIDENCE_KEY=29218f698af6658ffd99d22334e3f7b400c3176fd69f3005272aebdc9d63eb97 \
  DEMO_FINANCE_TOKEN=example DEMO_ERP_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw DEMO_FINANCE_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw \
  cargo run --locked -q -- check --config-dir .
# promtool (Debian package prometheus) checks and unit-tests the alert rules.
need_packages "promtool (checks deploy/prometheus-rules.yml)" "command -v promtool" prometheus
# Headless Chromium and chromedriver (Debian packages chromium, chromium-driver) for
# the screenshot tests of mail and pages (tests/api/screens.rs; PNGs in target/screens).
need_packages "Chromium and chromedriver (the screenshot tests)" \
  "command -v chromedriver && { command -v chromium || command -v chromium-browser; }" \
  chromium chromium-driver fonts-noto-cjk
echo "== promtool: the alert rules in deploy/"
promtool check rules deploy/prometheus-rules.yml
promtool test rules deploy/prometheus-rules.test.yml
# systemd-analyze (Debian package systemd) expands the unit's system-call filter groups.
need_packages "systemd-analyze (checks deploy/orderbridge.service)" "command -v systemd-analyze" systemd
echo "== systemd: the unit's system-call filter allows the calls the daemon makes"
# prctl: no transparent huge pages (src/allocator.rs); get/setpriority: the background
# threads' nice value (src/startup.rs); statfs: the disk gauges; fsync/fdatasync: the store.
python3 scripts/check-unit-syscalls.py deploy/orderbridge.service prctl getpriority setpriority statfs fsync fdatasync
echo "== orderbridge check on the peer benchmark configuration (bench/peers)"
# A fresh secret, as scripts/bench-peers.sh makes for each run (published values are refused).
BENCH_CRM_SECRET="whsec_$(openssl rand -base64 32)" cargo run --locked -q -- check --config-dir bench/peers
echo "== cargo test"
cargo test --locked --all-targets -- --test-threads "${TEST_THREADS:-4}"
cargo test --locked --doc
echo "== the book (docs/): built with mdBook, every link checked"
# After the tests: the staff guides show the screenshots they took (target/screens).
scripts/book.sh
