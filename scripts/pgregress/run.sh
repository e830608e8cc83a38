#!/usr/bin/env bash
# run.sh - PostgreSQL 15's own regression suite (pg_regress, the `make installcheck`
# schedule) through a middleman, from a clean state. See README.md.
#
#   run.sh TARGET [TARGET...]   TARGET: direct pgb-tx pgb-session sp1 sp4, each
#                               optionally with the suffix -iso (sp1-iso ...);
#                               `all` = the five plain ones, `all-iso` = the five -iso ones
#   run.sh stop                 stop whatever a previous run left running
#   run.sh report               rebuild results/summary.md from results/*/summary.json
#
# Plain TARGET (what the score is): destroy and initdb fresh clusters (1, or 4 for
# sp4), create the `regression` database on each the way pg_regress itself would,
# start the middleman, run `pg_regress --use-existing --schedule=parallel_schedule
# --max-connections=1` (= `make installcheck`) through it, keep regression.diffs /
# regression.out / per-test status, classify the failures, stop everything.
#
# TARGET-iso (diagnostic, no cascades): test_setup is run once DIRECTLY on every
# shard into a template database; then for each test of the schedule, in order:
# stop the middleman, recreate `regression` from that template on every shard,
# start the middleman, run that one test through it. A test then fails only for
# what it does itself, not because an earlier test failed to create or load
# something (or, as with shardproxy, an earlier test running as superuser
# instead of an unprivileged role wrecked the database's catalog).
#
# Environment (defaults):
#   WORK=/tmp/pgregress                  scratch: source tree, regress.so, outputs, configs
#   PGSRC_TARBALL=/tmp/pgsrc/postgresql-15_15.18.orig.tar.bz2
#   SHARDPROXY_SRC=.                     built with `go build -o $WORK/bin/shardproxy`
#                                        (writes nothing into the source tree)
#   SHARDPROXY_BIN=                      use this binary instead of building one
#   RESULTS=/tmp/pgregress/results where per-target results are copied
#   PGC_ROOT=/tmp/regress-shards  PGC_BASE_PORT=27432   (clusters: 27432..27435)
#   MW_PORT=27500                        the middleman's port (pgbouncer / shardproxy)
#   MAX_CONNECTIONS=1                    pg_regress --max-connections (1 = `make installcheck`;
#                                        0 = unlimited = installcheck-parallel)
#   SCHEDULE=parallel_schedule           or a path to another schedule file
#   TESTS=                               -iso only: run just these tests (space separated)
#   TEST_TIMEOUT=300                     a psql (one test) running longer is killed
#   KEEP=0                               1: leave clusters and middleman running afterwards
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=${WORK:-/tmp/pgregress}
PGSRC_TARBALL=${PGSRC_TARBALL:-/tmp/pgsrc/postgresql-15_15.18.orig.tar.bz2}
SHARDPROXY_SRC=${SHARDPROXY_SRC:-$PWD}
SHARDPROXY_BIN=${SHARDPROXY_BIN:-}
RESULTS=${RESULTS:-/tmp/pgregress/results}
export PGC_ROOT=${PGC_ROOT:-/tmp/regress-shards}
export PGC_BASE_PORT=${PGC_BASE_PORT:-27432}
export PGC_USER=postgres
MW_PORT=${MW_PORT:-27500}
MAX_CONNECTIONS=${MAX_CONNECTIONS:-1}
SCHEDULE=${SCHEDULE:-parallel_schedule}
TESTS=${TESTS:-}
TEST_TIMEOUT=${TEST_TIMEOUT:-300}
KEEP=${KEEP:-0}

PGBIN=/usr/lib/postgresql/15/bin
PG_REGRESS=/usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress
PGCLUSTER=${PGCLUSTER:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/pgcluster.sh}
SRC=$WORK/src/postgresql-15.18
REGDIR=$SRC/src/test/regress
LIBDIR=$WORK/lib
RUNDIR=$WORK/run
MAX_SHARDS=4

die() { echo "run.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*"; }
[[ $(id -u) == 0 ]] || die "run as root (servers and pg_regress are dropped to the postgres user)"
AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups --)

[[ $PGC_ROOT == /tmp/?* && $WORK == /tmp/?* ]] || die "PGC_ROOT and WORK must be under /tmp (they are deleted and recreated)"

# Refuse ports that belong to others, in case someone overrides the defaults.
for p in "$MW_PORT" $(seq "$PGC_BASE_PORT" $((PGC_BASE_PORT + MAX_SHARDS - 1))); do
  case $p in 6432|9930|1543[2-5]|26432|29930|2544[0-4]) die "port $p is reserved for others" ;; esac
  if (( p >= 16432 && p <= 16832 )); then die "port $p is reserved for others"; fi
done

# ---------------------------------------------------------------- prerequisites
setup() {
  if [[ ! -x $PG_REGRESS || ! -f $("$PGBIN/pg_config" --includedir-server)/postgres.h ]]; then
    # Pin the version of the installed server: a plain `apt-get install
    # postgresql-server-dev-15` pulls the newest point release and upgrades
    # postgresql-15, postgresql-client-15 and libpq5 along with it (for everyone
    # on this machine), and then psql/server no longer match the test files.
    local v; v=$(dpkg-query -W -f='${Version}' postgresql-15)
    log "installing postgresql-server-dev-15=$v (pg_regress, PGXS)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-upgrade "postgresql-server-dev-15=$v" "libpq-dev=$v" >/dev/null
  fi
  local sv; sv=$("$PGBIN/postgres" -V | awk '{print $3}')
  [[ $PGSRC_TARBALL == *"_$sv.orig"* ]] || log "WARNING: server is $sv but the tests come from $PGSRC_TARBALL; expect version diffs"
  mkdir -p "$WORK" "$RUNDIR" "$LIBDIR" "$WORK/bin"
  chmod 755 "$WORK"
  if [[ ! -f $REGDIR/parallel_schedule ]]; then
    if [[ ! -f $PGSRC_TARBALL ]]; then
      # The tests come from Debian's source package of the installed server.
      local dv; dv=$(dpkg-query -W -f='${Version}' postgresql-15)
      if [[ ! -f /etc/apt/sources.list.d/pgregress-src.sources ]]; then
        uri=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
        printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
          "${uri:?no Debian archive URI found}" "$(. /etc/os-release && echo "$VERSION_CODENAME")" >/etc/apt/sources.list.d/pgregress-src.sources
        apt-get update -qq >/dev/null
      fi
      log "downloading the postgresql-15=$dv source package"
      mkdir -p "$(dirname "$PGSRC_TARBALL")"
      (cd "$(dirname "$PGSRC_TARBALL")" && apt-get source --download-only "postgresql-15=$dv" >/dev/null 2>&1)
      [[ -f $PGSRC_TARBALL ]] || PGSRC_TARBALL=$(ls "$(dirname "$PGSRC_TARBALL")"/postgresql-15_*.orig.tar.bz2 2>/dev/null | head -1)
    fi
    [[ -f $PGSRC_TARBALL ]] || die "no PostgreSQL source tarball at $PGSRC_TARBALL"
    log "extracting $PGSRC_TARBALL"
    mkdir -p "$WORK/src"
    tar -xjf "$PGSRC_TARBALL" -C "$WORK/src"
  fi
  # regress.so from src/test/regress/regress.c (PGXS), plus contrib/spi's autoinc and
  # refint (the `triggers` test loads them from the same --dlpath; refint needs
  # -DREFINT_VERBOSE as in contrib/spi/Makefile, or its NOTICEs are missing).
  if [[ ! -f $LIBDIR/regress.so ]]; then
    log "building regress.so, autoinc.so, refint.so"
    local b=$WORK/build; rm -rf "$b"; mkdir -p "$b/regress" "$b/spi"
    cp "$REGDIR/regress.c" "$b/regress/"
    printf 'MODULES = regress\nPG_CONFIG = %s/pg_config\nPGXS := $(shell $(PG_CONFIG) --pgxs)\ninclude $(PGXS)\n' "$PGBIN" >"$b/regress/Makefile"
    cp "$SRC/contrib/spi/autoinc.c" "$SRC/contrib/spi/refint.c" "$b/spi/"
    printf 'MODULES = autoinc refint\nPG_CPPFLAGS = -DREFINT_VERBOSE\nPG_CONFIG = %s/pg_config\nPGXS := $(shell $(PG_CONFIG) --pgxs)\ninclude $(PGXS)\n' "$PGBIN" >"$b/spi/Makefile"
    make -s -C "$b/regress" with_llvm=no >"$b/regress.log" 2>&1 || { cat "$b/regress.log"; die "regress.so build failed"; }
    make -s -C "$b/spi" with_llvm=no >"$b/spi.log" 2>&1 || { cat "$b/spi.log"; die "spi build failed"; }
    cp "$b/regress/regress.so" "$b/spi/autoinc.so" "$b/spi/refint.so" "$LIBDIR/"
    chmod 755 "$LIBDIR" "$LIBDIR"/*.so
  fi
}

SP_BIN= SP_REV=
build_shardproxy() {
  [[ -n $SP_BIN ]] && return 0
  if [[ -n $SHARDPROXY_BIN ]]; then
    [[ -x $SHARDPROXY_BIN ]] || die "SHARDPROXY_BIN=$SHARDPROXY_BIN is not executable"
    SP_BIN=$SHARDPROXY_BIN; SP_REV="given binary $SHARDPROXY_BIN"
    return 0
  fi
  log "building shardproxy from $SHARDPROXY_SRC"
  (cd "$SHARDPROXY_SRC" && CGO_ENABLED=1 go build -o "$WORK/bin/shardproxy" ./cmd/shardproxy)
  SP_BIN=$WORK/bin/shardproxy
  SP_REV=$(cd "$SHARDPROXY_SRC" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [[ -n $(cd "$SHARDPROXY_SRC" && git status --porcelain 2>/dev/null | head -1) ]]; then SP_REV+="+dirty"; fi
}

# ---------------------------------------------------------------- stop / clean
# Daemons we start are recorded as $RUNDIR/<name>.pid with their exe path; we only
# signal a pid whose /proc/<pid>/exe still is that binary.
stop_daemon() {
  local name=$1 f=$RUNDIR/$1.pid pid exe
  [[ -f $f ]] || return 0
  read -r pid exe <"$f" || true
  if [[ -n ${pid:-} ]] && kill -0 "$pid" 2>/dev/null && [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$exe" ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.1; fi
  fi
  rm -f "$f"
}

stop_middleman() { stop_daemon pgbouncer; stop_daemon shardproxy; }
stop_all() {
  stop_middleman
  "$PGCLUSTER" stop $MAX_SHARDS >/dev/null 2>&1 || true
}

WATCHDOG_PID=
cleanup() {
  local rc=$?
  if [[ -n $WATCHDOG_PID ]]; then kill "$WATCHDOG_PID" 2>/dev/null || true; fi
  if [[ $KEEP != 1 ]]; then stop_all; fi
  exit $rc
}

# ---------------------------------------------------------------- clusters
fresh_clusters() {
  local n=$1
  stop_all
  "$PGCLUSTER" destroy $MAX_SHARDS >/dev/null
  rm -rf "$PGC_ROOT"
  # pgcluster.sh's benchmark settings (fsync=off...) are kept, but wal_level=minimal
  # would make CREATE PUBLICATION warn: use the default replica level.
  # shardproxy runs DDL on several shards (sp4) in a two-phase commit, which
  # needs prepared transactions, as docs/pooling.md asks of every shard.
  local extra=$'wal_level = replica\nmax_wal_senders = 10\nautovacuum = on'
  [[ $BASE == sp* ]] && extra+=$'\nmax_prepared_transactions = 100'
  PGC_SHARED_BUFFERS=128MB PGC_MAX_CONNECTIONS=100 \
  PGC_EXTRA_CONF=$extra \
    "$PGCLUSTER" start "$n" >/dev/null
  log "$n fresh cluster(s) on 127.0.0.1:$PGC_BASE_PORT.."
}

psql_admin() { local p=$1; shift; "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$p" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@" >/dev/null; }

# create_db NAME PORT [TEMPLATE]: what pg_regress's create_database() does when not
# --use-existing, plus $DB_EXTRA_SQL (see run_target).
create_db() {
  local db=$1 p=$2 tpl=${3:-template0} try
  # A test may have crashed the server (through shardproxy, `privileges` runs as
  # superuser and wrecks pg_class; the next backend PANICs and the postmaster
  # restarts): wait until it accepts connections again.
  for try in $(seq 120); do
    "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$p" -U postgres -d postgres -t 1 && break
    sleep 0.5
  done
  # A database that still has subscriptions cannot be dropped, not even WITH (FORCE)
  # (through shardproxy, the `subscription` test leaves some behind): drop them first.
  if [[ -n $("$PGBIN/psql" -X -At -h 127.0.0.1 -p "$p" -U postgres -d postgres \
        -c "SELECT 1 FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid WHERE d.datname = '$db'" 2>/dev/null) ]]; then
    "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$p" -U postgres -d "$db" >/dev/null 2>&1 <<'EOF' || true
DO $$ DECLARE r record; BEGIN
  FOR r IN SELECT subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid
           WHERE d.datname = current_database() LOOP
    EXECUTE format('ALTER SUBSCRIPTION %I DISABLE', r.subname);
    EXECUTE format('ALTER SUBSCRIPTION %I SET (slot_name = NONE)', r.subname);
    EXECUTE format('DROP SUBSCRIPTION %I', r.subname);
  END LOOP; END $$;
EOF
  fi
  psql_admin "$p" <<EOF
SET client_min_messages TO warning;
DROP DATABASE IF EXISTS "$db" WITH (FORCE);
CREATE DATABASE "$db" TEMPLATE="$tpl";
ALTER DATABASE "$db" SET lc_messages TO 'C';
ALTER DATABASE "$db" SET lc_monetary TO 'C';
ALTER DATABASE "$db" SET lc_numeric TO 'C';
ALTER DATABASE "$db" SET lc_time TO 'C';
ALTER DATABASE "$db" SET bytea_output TO 'hex';
ALTER DATABASE "$db" SET timezone_abbreviations TO 'Default';
${DB_EXTRA_SQL//@DB@/$db}
EOF
}

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 200); do
    if "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d regression -t 1; then return 0; fi
    sleep 0.05
  done
  die "$name did not come up on port $port"
}

# ---------------------------------------------------------------- middlemen
start_pgbouncer() {
  local mode=$1 d=$RUNDIR/pgbouncer
  mkdir -p "$d"; chown postgres: "$d"
  cat >"$d/pgbouncer.ini" <<EOF
[databases]
regression = host=127.0.0.1 port=$PGC_BASE_PORT dbname=regression

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $MW_PORT
unix_socket_dir =
auth_type = trust
auth_file = $d/userlist.txt
admin_users = postgres
pool_mode = $mode
ignore_startup_parameters = options
max_client_conn = 200
default_pool_size = 20
logfile = $d/pgbouncer.log
pidfile = $d/pgbouncer.pid
EOF
  echo '"postgres" ""' >"$d/userlist.txt"
  chown postgres: "$d"/*
  (exec "${AS_PG[@]}" /usr/sbin/pgbouncer -q "$d/pgbouncer.ini" >>"$d/stdout.log" 2>&1) &
  echo "$! /usr/sbin/pgbouncer" >"$RUNDIR/pgbouncer.pid"
  wait_port "$MW_PORT" pgbouncer
  MW_DESC="PgBouncer $(/usr/sbin/pgbouncer --version | head -1 | awk '{print $2}') pool_mode=$mode"
}

start_shardproxy() {
  local n=$1 d=$RUNDIR/shardproxy i
  mkdir -p "$d"
  {
    echo "listen: 127.0.0.1:$MW_PORT"
    echo "database: regression"
    echo "backend_roles: shared"
    echo "users: [{name: postgres, auth: trust}]"
    echo "pool: {size: 20}"
    echo "log: {level: info, max_per_second: 1000, burst: 1000}"
    echo "shards:"
    for ((i = 0; i < n; i++)); do
      echo "  - {name: s$i, dsn: \"postgres://postgres@127.0.0.1:$((PGC_BASE_PORT + i))/regression?sslmode=disable\"}"
    done
  } >"$d/shardproxy.yaml"
  "$SP_BIN" check-config "$d/shardproxy.yaml" >/dev/null || die "shardproxy check-config failed"
  (exec "$SP_BIN" -config "$d/shardproxy.yaml" >>"$d/shardproxy.log" 2>&1) &
  echo "$! $(readlink -f "$SP_BIN")" >"$RUNDIR/shardproxy.pid"
  wait_port "$MW_PORT" shardproxy
  MW_DESC="shardproxy $SP_REV, $n shard(s), no tables listed"
}

start_middleman() {  # sets PORT and MW_DESC
  case $BASE in
    direct)      PORT=$PGC_BASE_PORT; MW_DESC="direct to PostgreSQL $("$PGBIN/postgres" -V | awk '{print $3}')" ;;
    pgb-tx)      start_pgbouncer transaction; PORT=$MW_PORT ;;
    pgb-session) start_pgbouncer session; PORT=$MW_PORT ;;
    sp1|sp4)     start_shardproxy "$NSHARDS"; PORT=$MW_PORT ;;
  esac
}

# ---------------------------------------------------------------- pg_regress
# Kill a test's psql once it has run longer than TEST_TIMEOUT (pg_regress has no
# per-test timeout; a middleman that hangs would otherwise stall the whole run).
watchdog() {
  local root=$1 out=$2 pid cmd et
  while kill -0 "$root" 2>/dev/null; do
    sleep 2
    for pid in $(descendants "$root"); do
      [[ $(cat "/proc/$pid/comm" 2>/dev/null) == psql ]] || continue
      et=$(ps -o etimes= -p "$pid" 2>/dev/null | tr -d ' ') || continue
      if [[ -n $et ]] && (( et > TEST_TIMEOUT )); then
        cmd=$(basename "$(readlink "/proc/$pid/fd/0" 2>/dev/null)" 2>/dev/null || true)  # psql < sql/TEST.sql
        echo "watchdog: killed psql $pid after ${et}s ($cmd)" >>"$out"
        kill -TERM "$pid" 2>/dev/null || true
      fi
    done
  done
}
descendants() { local c; for c in $(pgrep -P "$1" 2>/dev/null); do echo "$c"; descendants "$c"; done; }

# pg_regress_run OUTDIR PORT DBNAME ARGS... ; returns pg_regress's exit status
pg_regress_run() {
  local out=$1 port=$2 db=$3 rc; shift 3
  rm -rf "$out"; mkdir -p "$out"; chown postgres: "$out"
  (cd "$out" && exec "${AS_PG[@]}" env LANG=C.UTF-8 "$PG_REGRESS" \
      --use-existing --host=127.0.0.1 --port="$port" --user=postgres --dbname="$db" \
      --bindir="$PGBIN" --inputdir="$REGDIR" --outputdir="$out" --dlpath="$LIBDIR" \
      "$@" >"$out/pg_regress.stdout" 2>&1) &
  local prpid=$!
  watchdog "$prpid" "$out/watchdog.log" & WATCHDOG_PID=$!
  set +e; wait "$prpid"; rc=$?; set -e
  kill "$WATCHDOG_PID" 2>/dev/null; wait "$WATCHDOG_PID" 2>/dev/null || true; WATCHDOG_PID=
  return $rc
}

schedule_tests() {  # the `test:` entries of a schedule, in order
  awk '/^test:/ { for (i = 2; i <= NF; i++) print $i }' "$1"
}

# ---------------------------------------------------------------- one target
run_target() {
  T=$1 BASE=${1%-iso}
  local iso=0 out res t0 t1 rc=0 i
  [[ $T == *-iso ]] && iso=1
  case $BASE in
    direct|pgb-tx|pgb-session|sp1) NSHARDS=1 ;;
    sp4) NSHARDS=4 ;;
    *) die "unknown target $T (direct pgb-tx pgb-session sp1 sp4, optionally with -iso; all; all-iso)" ;;
  esac
  [[ $BASE == sp* ]] && build_shardproxy
  log "=== $T ==="
  # pg_regress sends PGOPTIONS='-c intervalstyle=postgres_verbose' as the startup
  # parameter `options`, which PgBouncer 1.18 refuses ("unsupported startup parameter:
  # options"). For PgBouncer: ignore_startup_parameters = options, and the same
  # setting as a database default instead.
  DB_EXTRA_SQL=
  [[ $BASE == pgb-* ]] && DB_EXTRA_SQL="ALTER DATABASE \"@DB@\" SET intervalstyle TO 'postgres_verbose';"
  fresh_clusters "$NSHARDS"
  rm -rf "$RUNDIR/pgbouncer" "$RUNDIR/shardproxy"

  out=$WORK/out/$T
  local sched=$SCHEDULE; [[ $sched == /* ]] || sched=$REGDIR/$sched
  if (( ! iso )); then
    for ((i = 0; i < NSHARDS; i++)); do create_db regression $((PGC_BASE_PORT + i)); done
    start_middleman
    log "$MW_DESC on port $PORT"
    t0=$(date +%s.%N)
    pg_regress_run "$out" "$PORT" regression --schedule="$sched" \
        --max-connections="$MAX_CONNECTIONS" --max-concurrent-tests=20 || rc=$?
    t1=$(date +%s.%N)
  else
    # template: test_setup run directly on every shard
    for ((i = 0; i < NSHARDS; i++)); do
      create_db regression_tpl $((PGC_BASE_PORT + i))
      pg_regress_run "$WORK/out/$T.setup$i" $((PGC_BASE_PORT + i)) regression_tpl test_setup \
        || die "test_setup directly on shard $i failed; see $WORK/out/$T.setup$i"
    done
    log "template regression_tpl (test_setup, run directly) on $NSHARDS shard(s)"
    local tests; tests=${TESTS:-$(schedule_tests "$sched" | grep -vx test_setup)}
    rm -rf "$out"; mkdir -p "$out/tests"; : >"$out/pg_regress.stdout"; : >"$out/regression.diffs"
    local n=0 nfail=0 tr
    t0=$(date +%s.%N)
    for tr in $tests; do
      stop_middleman
      local dbok=1
      for ((i = 0; i < NSHARDS; i++)); do
        create_db regression $((PGC_BASE_PORT + i)) regression_tpl || { dbok=0; break; }
      done
      if (( ! dbok )); then
        log "could not recreate database regression before $tr; counted as failed"
        echo "test $tr ... FAILED (harness: could not recreate the database) 0 ms" >>"$out/pg_regress.stdout"
        n=$((n + 1)); nfail=$((nfail + 1))
        continue
      fi
      start_middleman
      pg_regress_run "$out/tests/$tr" "$PORT" regression "$tr" || true
      grep -E '^test ' "$out/tests/$tr/pg_regress.stdout" >>"$out/pg_regress.stdout" \
        || echo "test $tr ... FAILED (no status line from pg_regress) 0 ms" >>"$out/pg_regress.stdout"
      [[ -f $out/tests/$tr/regression.diffs ]] && cat "$out/tests/$tr/regression.diffs" >>"$out/regression.diffs"
      [[ -f $out/tests/$tr/watchdog.log ]] && cat "$out/tests/$tr/watchdog.log" >>"$out/watchdog.log"
      n=$((n + 1))
      grep -qE '^test .*\.\.\. ok' "$out/tests/$tr/pg_regress.stdout" || nfail=$((nfail + 1))
    done
    t1=$(date +%s.%N)
    if (( nfail == 0 )); then echo " All $n tests passed. " >>"$out/pg_regress.stdout"
    else echo " $nfail of $n tests failed. " >>"$out/pg_regress.stdout"; fi
    MW_DESC+=" (each test alone, on a copy of test_setup made directly)"
  fi

  res=$RESULTS/$T
  rm -rf "$res"; mkdir -p "$res"
  cp "$out/pg_regress.stdout" "$res/"
  for f in regression.diffs regression.out watchdog.log; do
    if [[ -s $out/$f ]]; then cp "$out/$f" "$res/"; fi
  done
  case $BASE in
    sp*) cp "$RUNDIR/shardproxy/shardproxy.yaml" "$res/"
         gzip -c "$RUNDIR/shardproxy/shardproxy.log" >"$res/shardproxy.log.gz" ;;
    pgb-*) cp "$RUNDIR/pgbouncer/pgbouncer.ini" "$res/" ;;
  esac
  python3 "$HERE/classify.py" summarize --target "$T" --desc "$MW_DESC" \
      --wall "$(echo "$t1 - $t0" | bc)" --rc "$rc" --dir "$res" \
      --max-connections "$MAX_CONNECTIONS" --schedule "$(basename "$sched")"
  # the diffs of a failing middleman run are megabytes: keep them gzipped (zless)
  if [[ -f $res/regression.diffs ]]; then gzip -9f "$res/regression.diffs"; fi
  log "$(tail -1 "$res/summary.txt")"
  stop_all
}

# ---------------------------------------------------------------- main
[[ $# -ge 1 ]] || { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 2; }
case $1 in
  stop) stop_all; exit 0 ;;
  report) python3 "$HERE/classify.py" report --results "$RESULTS"; exit 0 ;;
esac
targets=()
for a in "$@"; do
  case $a in
    all)     targets+=(direct pgb-tx pgb-session sp1 sp4) ;;
    all-iso) targets+=(direct-iso pgb-tx-iso pgb-session-iso sp1-iso sp4-iso) ;;
    *)       targets+=("$a") ;;
  esac
done
trap cleanup EXIT
trap 'exit 130' INT TERM
setup
for t in "${targets[@]}"; do run_target "$t"; done
python3 "$HERE/classify.py" report --results "$RESULTS"
log "done; see $RESULTS/summary.md"
