#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster for the tests under target/pg, on loopback
# only, and exports its URL as ORDERBRIDGE_TEST_DATABASE_URL (each test creates its
# own database in it). Source it from bash (scripts/test.sh does): the cluster stops
# when the sourcing shell exits. Installs Debian's `postgresql` package when no
# PostgreSQL server is installed (as root; otherwise it says what to install).
#
#   source scripts/test-postgres.sh && cargo test --test api store::
#
# The cluster is for tests only: trust authentication on 127.0.0.1, fsync off unless PG_FSYNC=on (it is
# deleted at exit; what PostgreSQL does on a power cut is not what the tests check).

pg_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return; fi
  command -v initdb >/dev/null 2>&1 && dirname "$(command -v initdb)"
}

PG_BIN=$(pg_bin || true)
if [ -z "$PG_BIN" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing PostgreSQL (Debian package postgresql)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    PG_BIN=$(pg_bin)
  else
    echo "PostgreSQL is required for the tests (Debian: apt-get install postgresql)" >&2
    return 1 2>/dev/null || exit 1
  fi
fi

PG_DIR="$PWD/target/pg"
# PostgreSQL refuses to run as root: as root, the cluster runs as the `postgres`
# user (the Debian package creates it) in a directory that user owns.
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir "$PG_DIR" --shell /usr/sbin/nologin postgres
  PG_AS=(runuser -u postgres --)
else
  PG_AS=()
fi
rm -rf "$PG_DIR"
mkdir -p "$PG_DIR"
[ "$(id -u)" = 0 ] && chown postgres: "$PG_DIR"
PG_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 >"$PG_DIR/initdb.log" 2>&1 \
  || { cat "$PG_DIR/initdb.log" >&2; return 1 2>/dev/null || exit 1; }
"${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c fsync=${PG_FSYNC:-off} -c max_connections=400" start >/dev/null \
  || { cat "$PG_DIR/server.log" >&2; return 1 2>/dev/null || exit 1; }
stop_test_postgres() {
  "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
}
trap stop_test_postgres EXIT
export ORDERBRIDGE_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
echo "== PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') for the tests at $ORDERBRIDGE_TEST_DATABASE_URL (log: $PG_DIR/server.log)"
