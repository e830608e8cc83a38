#!/usr/bin/env bash
# Installs what the tests and the demo need when it is missing, with apt-get
# (Debian/Ubuntu) and npm: the PostgreSQL server binaries (initdb, pg_ctl,
# psql, pgbench), redis-server (result cache tests), and the client libraries the integration tests drive
# (psycopg 3, the JDBC driver, node-postgres). Used by make test/demo/bench.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
have_pg() { command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }
have_pg && command -v psql >/dev/null 2>&1 && command -v pgbench >/dev/null 2>&1 || missing+=(postgresql postgresql-contrib)
if [ "${1:-}" != "--server-only" ]; then
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)   # the result cache's Redis backend tests
  /usr/bin/python3 -c 'import psycopg' >/dev/null 2>&1 || missing+=(python3-psycopg)
  /usr/bin/python3 -c 'import psycopg2' >/dev/null 2>&1 || missing+=(python3-psycopg2)
  /usr/bin/python3 -c 'import sqlalchemy' >/dev/null 2>&1 || missing+=(python3-sqlalchemy)
  /usr/bin/python3 -c 'import django' >/dev/null 2>&1 || missing+=(python3-django)
  [ -f /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java)
  command -v java >/dev/null 2>&1 || missing+=(default-jdk-headless)
  command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
fi

if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing: ${missing[*]}; install them (PostgreSQL 13+ server binaries at least) and retry." >&2
    exit 1
  fi
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
      echo "missing: ${missing[*]}: run 'apt-get install -y ${missing[*]}' as root and retry." >&2
      exit 1
    fi
  fi
  echo "installing ${missing[*]} ..."
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ "${1:-}" != "--server-only" ] && { [ ! -d integration/testdata/clients/node_modules/pg ] || [ ! -d integration/testdata/clients/node_modules/pg-copy-streams ] \
  || [ ! -d integration/testdata/clients/node_modules/pg-cursor ] || [ ! -d integration/testdata/clients/node_modules/pg-query-stream ] \
  || [ ! -d integration/testdata/clients/node_modules/sequelize ] || [ ! -d integration/testdata/clients/node_modules/knex ]; }; then
  (cd integration/testdata/clients && npm install --silent --no-audit --no-fund >/dev/null)
fi
