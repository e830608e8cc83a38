#!/usr/bin/env bash
# Installs the PostgreSQL server binaries (initdb, pg_ctl, pgbench, psql) when
# they are missing, with apt-get on Debian/Ubuntu. Used by make test/demo/bench.
set -euo pipefail
have_pg() {
  command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}
if have_pg && command -v psql >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "PostgreSQL server binaries (initdb, pg_ctl) are missing: install PostgreSQL 13+ and retry." >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "PostgreSQL is missing: run 'apt-get install -y postgresql' as root and retry." >&2
    exit 1
  fi
fi
echo "installing the postgresql package (initdb, pg_ctl, psql, pgbench) ..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql postgresql-contrib >/dev/null
