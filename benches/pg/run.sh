#!/usr/bin/env bash
# PostgreSQL benchmark: Cairn (cairn-basebackup, cairn-wal) against pg_basebackup and pgBackRest
# on one throw-away PostgreSQL cluster, in one run. See benches/README.md, "PostgreSQL".
#
#   bash benches/pg/run.sh
#
# Steps (all in the same run, one after the other):
#   1. full base backup: pg_basebackup -Ft -X none -c fast | cairn-basebackup push |
#      pgbackrest backup --type=full (default compression, gz in 2.45; with PGB_EXTRA also zst,
#      none, gz with process-max=2, and Cairn with 8 KiB blocks)
#   2. pgbench -T PGB_SECONDS -c 2, then a second backup: pgbackrest --type=incr vs
#      cairn-basebackup push; bytes added to each repository (du -sb before/after)
#   2b. the same at a low rate (pgbench -R PGB_LOW_TPS -T PGB_SECONDS), a third backup of each
#   3. WAL push rate: the same PGB_SEGMENTS real segments pushed one process per segment (as
#      archive_command does) by cairn-wal push (key file) and pgbackrest archive-push, fresh
#      repositories, PGB_WAL_ROUNDS rounds (tool order alternating)
#   4. restore of the latest base backup: tar -x | cairn-basebackup restore | pgbackrest restore
#
# Environment (defaults in brackets):
#   PGB_SCALE       pgbench -i scale [100] (~1.5 GB; 50 on small disks)
#   PGB_SECONDS     pgbench -T before the second backups [60]
#   PGB_CLIENTS     pgbench -c/-j [2]
#   PGB_LOW_TPS     pgbench -R of step 2b; 0 skips it [50]
#   PGB_SEGMENTS    WAL segments to push [50]
#   PGB_WAL_ROUNDS  rounds of the WAL push measurement; the median ratio is reported [5]
#   PGB_EXTRA       1: also pgBackRest full backups with compress-type=zst, none, and gz with
#                   process-max=2, incr with zst, and Cairn with --block-size 8192 [1]
#   PGB_RESTORE     1: measure restores [1]
#   PGB_BUILD       1: cargo build --release first [1]
#   PGB_KEEP        1: keep the scratch folder (and leave the cluster stopped) [0]
#   PGB_OUT         results markdown [benches/pg/results-<UTC date>.md, -<time> added when taken]
#   PGB_TMP         parent of the scratch folder [/tmp]
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SCALE=${PGB_SCALE:-100}
SECONDS_RUN=${PGB_SECONDS:-60}
CLIENTS=${PGB_CLIENTS:-2}
LOW_TPS=${PGB_LOW_TPS:-50}
NSEG=${PGB_SEGMENTS:-50}
WAL_ROUNDS=${PGB_WAL_ROUNDS:-5}
EXTRA=${PGB_EXTRA:-1}
DO_RESTORE=${PGB_RESTORE:-1}
BUILD=${PGB_BUILD:-1}
KEEP=${PGB_KEEP:-0}
OUT=${PGB_OUT:-$HERE/results-$(date -u +%Y-%m-%d).md}
# Never overwrite an earlier result of the same day: add the time.
if [ -z "${PGB_OUT:-}" ] && [ -e "$OUT" ]; then
  OUT=$HERE/results-$(date -u +%Y-%m-%d-%H%M).md
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TIME=/usr/bin/time
PGUSER_OS=postgres

log() { printf '[pg-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (the cluster runs as '$PGUSER_OS' through runuser)"
getent passwd "$PGUSER_OS" >/dev/null || die "no '$PGUSER_OS' user (install postgresql-15)"
command -v pg_config >/dev/null || die "pg_config not found (install postgresql-15)"
BINDIR=$(pg_config --bindir)
[ -x "$BINDIR/initdb" ] || die "$BINDIR/initdb not found"
export PATH="$BINDIR:$PATH"

apt_install() {
  command -v apt-get >/dev/null || die "install $* by hand (no apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# ---------------------------------------------------------------------------------------------
# Tools

[ -x "$TIME" ] || apt_install time
command -v python3 >/dev/null || apt_install python3
if ! command -v pgbackrest >/dev/null; then
  log "installing pgbackrest (Debian package)"
  apt_install pgbackrest
fi
if [ "$BUILD" = 1 ]; then
  log "building cairn-basebackup, cairn-wal, cairn-files (release)"
  (cd "$ROOT" && cargo build --release -q -p cairn-basebackup -p cairn-wal -p cairn-files)
fi
for b in cairn-basebackup cairn-wal cairn-files; do
  [ -x "$TARGET_DIR/release/$b" ] || die "$TARGET_DIR/release/$b missing (PGB_BUILD=1)"
done

# ---------------------------------------------------------------------------------------------
# Scratch folder, owned by postgres (initdb and postgres refuse to run as root)

W=$(mktemp -d "${PGB_TMP:-/tmp}/cairn-pgbench.XXXXXX")
chmod 755 "$W"
mkdir -p "$W/bin" "$W/home" "$W/logs" "$W/keys" "$W/walsample" "$W/pgbr-log" "$W/pgbr-lock" \
  "$W/pgbr-spool"
chmod 700 "$W/keys"
# Binaries copied in: postgres must reach them, and other engineers may rebuild target/.
for b in cairn-basebackup cairn-wal cairn-files; do cp "$TARGET_DIR/release/$b" "$W/bin/"; done
printf 'pg-bench-throwaway-password\n' >"$W/keys/password"
chmod 600 "$W/keys/password"
chown -R "$PGUSER_OS:" "$W"
PGDATA="$W/pgdata"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
CONNINFO="host=$W port=$PORT user=postgres dbname=postgres"
CB="$W/bin/cairn-basebackup"
CW="$W/bin/cairn-wal"
CF="$W/bin/cairn-files"
cd "$W"

# Runs a command as postgres, with a HOME of its own (cairn's index cache, pgbench's history).
as_pg() { runuser -u "$PGUSER_OS" -- env HOME="$W/home" XDG_CACHE_HOME="$W/home/.cache" PATH="$PATH" "$@"; }
psql_c() { as_pg psql -X -A -t -q -v ON_ERROR_STOP=1 -h "$W" -p "$PORT" -U postgres -d postgres -c "$1"; }

CLUSTER_UP=0
cleanup() {
  local rc=$?
  if [ "$CLUSTER_UP" = 1 ]; then
    as_pg pg_ctl -D "$PGDATA" -w -t 60 -m fast stop >/dev/null 2>&1 || \
      as_pg pg_ctl -D "$PGDATA" -m immediate stop >/dev/null 2>&1 || true
  fi
  if [ "$KEEP" = 1 ] || [ "$rc" != 0 ]; then
    log "scratch folder kept: $W"
  else
    rm -rf "$W"
  fi
  exit "$rc"
}
trap cleanup EXIT

# set_archive_command CMD: change archive_command and reload.
set_archive_command() {
  psql_c "ALTER SYSTEM SET archive_command = '${1//\'/\'\'}'" >/dev/null
  psql_c "SELECT pg_reload_conf()" >/dev/null
  sleep 1
}

bytes() { du -sb "$1" 2>/dev/null | cut -f1; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }
# Reads every file of a tree once (warm page cache before each backup; caches are never dropped).
warm() { tar -C "$1" -cf - . 2>/dev/null | cat >/dev/null || true; }

# measure NAME CMD...: runs CMD as postgres under /usr/bin/time -v; sets WALL[NAME] (s),
# RSS[NAME] (MiB, the largest process in CMD's tree that was waited for), CPU[NAME] (user+sys of
# the client side only: PostgreSQL's own walsender work is not counted), RC[NAME].
declare -A WALL RSS CPU RC SIZE ADDED NOTE
measure() {
  local name=$1; shift
  local tf="$W/logs/$name.time" lf="$W/logs/$name.log" t0 t1 rc=0
  t0=$(date +%s%N)
  as_pg "$TIME" -v -o "$tf" "$@" >"$lf" 2>&1 || rc=$?
  t1=$(date +%s%N)
  WALL[$name]=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", (b - a) / 1e9}')
  RSS[$name]=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2 / 1024}' "$tf" 2>/dev/null || echo 0)
  CPU[$name]=$(awk -F': ' '/User time \(seconds\)/ {u=$2} /System time \(seconds\)/ {s=$2} END {printf "%.1f", u + s}' "$tf" 2>/dev/null || echo 0)
  RC[$name]=$rc
  if [ "$rc" = 0 ]; then
    log "  $name: ${WALL[$name]} s, peak RSS ${RSS[$name]} MiB, client CPU ${CPU[$name]} s"
  else
    NOTE[$name]="exit $rc: $({ grep -v '^[[:space:]]' "$lf" | grep -v '^Command exited' | tail -3 | tr '\n|' '  ' | cut -c1-300; } || true)"
    log "  $name FAILED (exit $rc), see $lf:"
    tail -5 "$lf" >&2
  fi
  return 0
}
ok() { [ "${RC[$1]:-1}" = 0 ]; }

# ---------------------------------------------------------------------------------------------
# The cluster

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "scratch folder $W; PostgreSQL $(pg_config --version | awk '{print $2}'), port $PORT"
as_pg initdb -D "$PGDATA" --auth=trust -U postgres -E UTF8 --no-instructions >"$W/logs/initdb.log"
cat >>"$PGDATA/postgresql.conf" <<EOF

# cairn pg benchmark
listen_addresses = ''
port = $PORT
unix_socket_directories = '$W'
wal_level = replica
archive_mode = on
archive_command = '/bin/true'
max_wal_senders = 4
max_wal_size = 2GB
shared_buffers = 256MB
synchronous_commit = off
autovacuum = off
log_min_messages = info
EOF
as_pg pg_ctl -D "$PGDATA" -l "$W/logs/postgres.log" -w -t 120 start >/dev/null
CLUSTER_UP=1

# pgbench -i. The disk must hold the cluster, its WAL, a pg_basebackup tar, the repositories and
# one restore at a time: about 5x the data.
need=$(( SCALE * 16 * 1024 * 1024 * 6 ))
avail=$(( $(df -Pk "$W" | awk 'NR == 2 {print $4}') * 1024 ))
if [ "$avail" -lt "$need" ] && [ "$SCALE" -gt 50 ]; then
  log "only $(mib "$avail") MiB free: scale $SCALE needs ~$(mib "$need"); using scale 50"
  SCALE=50
fi
log "pgbench -i -s $SCALE"
t0=$(date +%s)
as_pg pgbench -i -s "$SCALE" -q -h "$W" -p "$PORT" -U postgres postgres >"$W/logs/pgbench-init.log" 2>&1
INIT_S=$(( $(date +%s) - t0 ))
psql_c "CHECKPOINT" >/dev/null
DB_BYTES=$(psql_c "SELECT pg_database_size('postgres')")
PGDATA_BYTES=$(bytes "$PGDATA")
log "  ${INIT_S}s; database $(mib "$DB_BYTES") MiB, PGDATA $(mib "$PGDATA_BYTES") MiB"

# ---------------------------------------------------------------------------------------------
# Repositories

# Cairn: one repository for base backups, created with cairn-files (zstd 2, the default), and
# a key file for it (key-export), so no Argon2id runs inside the measured commands.
CREPO="$W/cairn-repo"
as_pg "$CF" --repo "$CREPO" --password-file "$W/keys/password" init >"$W/logs/cairn-init.log" 2>&1
as_pg "$CW" --repo "$CREPO" --password-file "$W/keys/password" key-export "$W/keys/base.key" \
  >>"$W/logs/cairn-init.log" 2>&1
CREPO_EMPTY=$(bytes "$CREPO")
# With PGB_EXTRA: a second Cairn repository whose backups use 8 KiB blocks (one page per block).
CREPO8="$W/cairn-repo-8k"
if [ "$EXTRA" = 1 ]; then
  as_pg "$CF" --repo "$CREPO8" --password-file "$W/keys/password" init >>"$W/logs/cairn-init.log" 2>&1
  as_pg "$CW" --repo "$CREPO8" --password-file "$W/keys/password" key-export "$W/keys/base8k.key" \
    >>"$W/logs/cairn-init.log" 2>&1
  CREPO8_EMPTY=$(bytes "$CREPO8")
fi

# pgBackRest: a config per repository (pgbr_conf NAME COMPRESS-TYPE|default [PROCESS-MAX]).
pgbr_conf() {
  local name=$1 compress=$2 pmax=${3:-1} conf="$W/pgbackrest-$1.conf"
  {
    echo "[global]"
    echo "repo1-path=$W/pgbr-$name"
    [ "$compress" = default ] || echo "compress-type=$compress"
    echo "process-max=$pmax"
    echo "log-path=$W/pgbr-log"
    echo "lock-path=$W/pgbr-lock"
    echo "spool-path=$W/pgbr-spool"
    echo "log-level-console=warn"
    echo "log-level-file=info"
    echo "start-fast=y"
    echo ""
    echo "[global:backup]"
    # The archive during this benchmark is /bin/true (WAL is measured on its own, step 3).
    echo "archive-check=n"
    echo ""
    echo "[bench]"
    echo "pg1-path=$PGDATA"
    echo "pg1-socket-path=$W"
    echo "pg1-port=$PORT"
    echo "pg1-user=postgres"
  } >"$conf"
  chown "$PGUSER_OS:" "$conf"
  echo "$conf"
}
pgbr() { local conf=$1; shift; as_pg pgbackrest --config="$conf" --stanza=bench "$@"; }
pgbr_bytes() { bytes "$W/pgbr-$1/backup"; }

# Variants: default compression (gz), zst, none, and default compression with process-max=2 (one
# process per CPU, as Cairn uses).
PGBR_VARIANTS="default"
[ "$EXTRA" = 1 ] && PGBR_VARIANTS="default zst none p2"
declare -A PGBR_CONF
for v in $PGBR_VARIANTS; do
  case $v in
    p2) PGBR_CONF[$v]=$(pgbr_conf "$v" default 2) ;;
    *) PGBR_CONF[$v]=$(pgbr_conf "$v" "$v") ;;
  esac
  pgbr "${PGBR_CONF[$v]}" stanza-create >"$W/logs/pgbr-$v-stanza.log" 2>&1 || {
    cat "$W/logs/pgbr-$v-stanza.log" >&2; die "pgbackrest stanza-create ($v) failed"; }
done
# `check` needs a working archive: point archive_command at pgbackrest for it, then back.
set_archive_command "pgbackrest --config=${PGBR_CONF[default]} --stanza=bench archive-push %p"
if pgbr "${PGBR_CONF[default]}" check >"$W/logs/pgbr-check.log" 2>&1; then
  PGBR_CHECK="ok"
else
  PGBR_CHECK="failed: $(tail -2 "$W/logs/pgbr-check.log" | tr '\n' ' ')"
  log "pgbackrest check $PGBR_CHECK"
fi
set_archive_command "/bin/true"

# ---------------------------------------------------------------------------------------------
# 1. Full base backups

log "step 1: full base backups (${PGDATA_BYTES} bytes of PGDATA)"
warm "$PGDATA"
measure full_pgbb pg_basebackup -h "$W" -p "$PORT" -U postgres -Ft -D "$W/pgbb" -X none -c fast
ok full_pgbb && SIZE[full_pgbb]=$(bytes "$W/pgbb")

warm "$PGDATA"
measure full_cairn "$CB" --repo "$CREPO" --key-file "$W/keys/base.key" --json push \
  --conninfo "$CONNINFO" --pgdata "$PGDATA" --label full
SIZE[full_cairn]=$(( $(bytes "$CREPO") - CREPO_EMPTY ))
ADDED[full_cairn]=${SIZE[full_cairn]}

for v in $PGBR_VARIANTS; do
  warm "$PGDATA"
  measure "full_pgbr_$v" pgbackrest --config="${PGBR_CONF[$v]}" --stanza=bench backup --type=full
  SIZE[full_pgbr_$v]=$(pgbr_bytes "$v")
done
# Full-only variants: free their space.
rm -rf "$W/pgbr-none" "$W/pgbr-p2"

if [ "$EXTRA" = 1 ]; then
  warm "$PGDATA"
  measure full_cairn8k "$CB" --repo "$CREPO8" --key-file "$W/keys/base8k.key" --json push \
    --conninfo "$CONNINFO" --pgdata "$PGDATA" --label full --block-size 8192
  SIZE[full_cairn8k]=$(( $(bytes "$CREPO8") - CREPO8_EMPTY ))
fi

# ---------------------------------------------------------------------------------------------
# 2. pgbench, then second backups. WAL written meanwhile is sampled for step 3: the archiver
#    copies the first PGB_SEGMENTS completed segments into walsample/ (as archive_command would
#    see them) and reports success for all.

cat >"$W/bin/sample-wal.sh" <<EOF
#!/bin/sh
# archive_command for the benchmark: keep the first $NSEG completed segments, drop the rest.
case "\$2" in *.*) exit 0 ;; esac
[ "\$(ls "$W/walsample" | grep -cv '\.tmp\$')" -lt $NSEG ] || exit 0
cp "\$1" "$W/walsample/\$2.tmp" && mv "$W/walsample/\$2.tmp" "$W/walsample/\$2"
EOF
chmod 755 "$W/bin/sample-wal.sh"
chown "$PGUSER_OS:" "$W/bin/sample-wal.sh"
set_archive_command "$W/bin/sample-wal.sh %p %f"

log "step 2: pgbench -T $SECONDS_RUN -c $CLIENTS"
as_pg pgbench -T "$SECONDS_RUN" -c "$CLIENTS" -j "$CLIENTS" -h "$W" -p "$PORT" -U postgres postgres \
  >"$W/logs/pgbench-run.log" 2>&1
TPS=$(awk '/^tps = / {printf "%.0f", $3}' "$W/logs/pgbench-run.log")
TXNS=$(awk -F': ' '/number of transactions actually processed/ {print $2}' "$W/logs/pgbench-run.log")
log "  $TPS tps, $TXNS transactions"
psql_c "CHECKPOINT" >/dev/null
ACCT_BYTES=$(psql_c "SELECT pg_relation_size('pgbench_accounts')")

warm "$PGDATA"
before=$(pgbr_bytes default)
measure incr_pgbr_default pgbackrest --config="${PGBR_CONF[default]}" --stanza=bench backup --type=incr
ADDED[incr_pgbr_default]=$(( $(pgbr_bytes default) - before ))

warm "$PGDATA"
before=$(bytes "$CREPO")
measure incr_cairn "$CB" --repo "$CREPO" --key-file "$W/keys/base.key" --json push \
  --conninfo "$CONNINFO" --pgdata "$PGDATA" --label second
ADDED[incr_cairn]=$(( $(bytes "$CREPO") - before ))
CAIRN2_SUMMARY=$(grep '^{' "$W/logs/incr_cairn.log" | tail -1 | python3 -c '
import json, sys
try:
    v = json.loads(sys.stdin.read())
    m = lambda b: "%.1f MiB" % (b / 1048576)
    print("read %s, new plain %s, new stored %s, %.1f s" % (m(v["bytes"]), m(v["bytes_added_plain"]),
          m(v["bytes_added_stored"]), v["duration_seconds"]))
except Exception:
    pass' || true)

if [ "$EXTRA" = 1 ]; then
  warm "$PGDATA"
  before=$(pgbr_bytes zst)
  measure incr_pgbr_zst pgbackrest --config="${PGBR_CONF[zst]}" --stanza=bench backup --type=incr
  ADDED[incr_pgbr_zst]=$(( $(pgbr_bytes zst) - before ))
  warm "$PGDATA"
  before=$(bytes "$CREPO8")
  measure incr_cairn8k "$CB" --repo "$CREPO8" --key-file "$W/keys/base8k.key" --json push \
    --conninfo "$CONNINFO" --pgdata "$PGDATA" --label second --block-size 8192
  ADDED[incr_cairn8k]=$(( $(bytes "$CREPO8") - before ))
fi

# ---------------------------------------------------------------------------------------------
# 2b. A low rate of change: pgbench -R, then a third backup of each (same repositories).

if [ "$LOW_TPS" != 0 ]; then
  log "step 2b: pgbench -R $LOW_TPS -T $SECONDS_RUN -c $CLIENTS"
  as_pg pgbench -R "$LOW_TPS" -T "$SECONDS_RUN" -c "$CLIENTS" -j "$CLIENTS" -h "$W" -p "$PORT" \
    -U postgres postgres >"$W/logs/pgbench-low.log" 2>&1
  LOW_TXNS=$(awk -F': ' '/number of transactions actually processed/ {print $2}' "$W/logs/pgbench-low.log")
  log "  $LOW_TXNS transactions"
  psql_c "CHECKPOINT" >/dev/null
  warm "$PGDATA"
  before=$(pgbr_bytes default)
  measure low_pgbr_default pgbackrest --config="${PGBR_CONF[default]}" --stanza=bench backup --type=incr
  ADDED[low_pgbr_default]=$(( $(pgbr_bytes default) - before ))
  warm "$PGDATA"
  before=$(bytes "$CREPO")
  measure low_cairn "$CB" --repo "$CREPO" --key-file "$W/keys/base.key" --json push \
    --conninfo "$CONNINFO" --pgdata "$PGDATA" --label third
  ADDED[low_cairn]=$(( $(bytes "$CREPO") - before ))
  if [ "$EXTRA" = 1 ]; then
    warm "$PGDATA"
    before=$(bytes "$CREPO8")
    measure low_cairn8k "$CB" --repo "$CREPO8" --key-file "$W/keys/base8k.key" --json push \
      --conninfo "$CONNINFO" --pgdata "$PGDATA" --label third --block-size 8192
    ADDED[low_cairn8k]=$(( $(bytes "$CREPO8") - before ))
  fi
fi

# ---------------------------------------------------------------------------------------------
# 3. WAL push rate

nsampled() { find "$W/walsample" -maxdepth 1 -type f -name '[0-9A-F]*' ! -name '*.tmp' | wc -l; }
extra_runs=0
while [ "$(nsampled)" -lt "$NSEG" ] && [ "$extra_runs" -lt 12 ]; do
  log "  $(nsampled)/$NSEG segments sampled: pgbench 10 s more"
  as_pg pgbench -T 10 -c "$CLIENTS" -j "$CLIENTS" -h "$W" -p "$PORT" -U postgres postgres \
    >>"$W/logs/pgbench-extra.log" 2>&1
  psql_c "SELECT pg_switch_wal()" >/dev/null
  sleep 2
  extra_runs=$((extra_runs + 1))
done
set_archive_command "/bin/true"
NSAMPLED=$(nsampled)
[ "$NSAMPLED" -gt 0 ] || die "no WAL segments sampled"
SEGS=$(find "$W/walsample" -maxdepth 1 -type f -name '[0-9A-F]*' ! -name '*.tmp' | sort | head -n "$NSEG")
SEG_BYTES=$(cat $SEGS | wc -c)
log "step 3: WAL push of $NSAMPLED segments ($(mib "$SEG_BYTES") MiB), $WAL_ROUNDS round(s)"

# The loops run as postgres, one process per segment, like the archiver's calls.
cat >"$W/bin/push-cairn.sh" <<EOF
#!/bin/bash
set -e
repo=\$1; shift
for f in "\$@"; do
  "$CW" --repo "\$repo" --key-file "$W/keys/wal-\$(basename "\$repo").key" --pgdata "$PGDATA" push "\$f"
done
EOF
cat >"$W/bin/push-pgbr.sh" <<EOF
#!/bin/bash
set -e
conf=\$1; shift
for f in "\$@"; do
  pgbackrest --config="\$conf" --stanza=bench archive-push "\$f"
done
EOF
chmod 755 "$W/bin/push-cairn.sh" "$W/bin/push-pgbr.sh"
chown "$PGUSER_OS:" "$W/bin/push-cairn.sh" "$W/bin/push-pgbr.sh"

declare -A WAL_OK
for r in $(seq 1 "$WAL_ROUNDS"); do
  crepo="$W/cairn-wal-r$r"
  as_pg "$CF" --repo "$crepo" --password-file "$W/keys/password" init >>"$W/logs/cairn-init.log" 2>&1
  as_pg "$CW" --repo "$crepo" --password-file "$W/keys/password" key-export \
    "$W/keys/wal-cairn-wal-r$r.key" >>"$W/logs/cairn-init.log" 2>&1
  cempty=$(bytes "$crepo")
  pconf=$(pgbr_conf "wal-r$r" default)
  pgbr "$pconf" stanza-create >"$W/logs/pgbr-wal-r$r-stanza.log" 2>&1 || {
    cat "$W/logs/pgbr-wal-r$r-stanza.log" >&2; die "pgbackrest stanza-create (wal) failed"; }
  pempty=$(bytes "$W/pgbr-wal-r$r/archive")
  order="cairn pgbr"
  [ $((r % 2)) = 0 ] && order="pgbr cairn"
  for tool in $order; do
    cat $SEGS >/dev/null
    if [ "$tool" = cairn ]; then
      # shellcheck disable=SC2086
      measure "wal_cairn_r$r" "$W/bin/push-cairn.sh" "$crepo" $SEGS
      SIZE[wal_cairn_r$r]=$(( $(bytes "$crepo") - cempty ))
      WAL_OK[cairn_r$r]=$(as_pg "$CW" --repo "$crepo" --key-file "$W/keys/wal-cairn-wal-r$r.key" \
        --pgdata "$PGDATA" list 2>/dev/null | grep -c '^[0-9A-F]\{24\}' || true)
    else
      # shellcheck disable=SC2086
      measure "wal_pgbr_r$r" "$W/bin/push-pgbr.sh" "$pconf" $SEGS
      SIZE[wal_pgbr_r$r]=$(( $(bytes "$W/pgbr-wal-r$r/archive") - pempty ))
      WAL_OK[pgbr_r$r]=$(find "$W/pgbr-wal-r$r/archive" -type f -name '0*-*' | wc -l)
    fi
  done
done

# ---------------------------------------------------------------------------------------------
# 4. Restores of the latest base backup of each (pg_basebackup: the tar of step 1)

if [ "$DO_RESTORE" = 1 ]; then
  log "step 4: restores"
  restore_one() {
    local name=$1 dir=$2; shift 2
    measure "$name" "$@"
    ok "$name" && SIZE[$name]=$(bytes "$dir")
  }
  mkdir -p "$W/restore-pgbb" && chown "$PGUSER_OS:" "$W/restore-pgbb" && chmod 700 "$W/restore-pgbb"
  restore_one restore_pgbb "$W/restore-pgbb" tar -C "$W/restore-pgbb" -xf "$W/pgbb/base.tar"
  rm -rf "$W/restore-pgbb"
  restore_one restore_cairn "$W/restore-cairn" "$CB" --repo "$CREPO" --key-file "$W/keys/base.key" \
    restore latest --target "$W/restore-cairn"
  mkdir -p "$W/restore-pgbr" && chown "$PGUSER_OS:" "$W/restore-pgbr" && chmod 700 "$W/restore-pgbr"
  restore_one restore_pgbr "$W/restore-pgbr" pgbackrest --config="${PGBR_CONF[default]}" \
    --stanza=bench --pg1-path="$W/restore-pgbr" restore
  # Both restored the backup taken after pgbench (nothing wrote in between, autovacuum is off):
  # relation files should match byte for byte.
  RESTORE_DIFF="n/a"
  if [ -d "$W/restore-cairn/base" ] && [ -d "$W/restore-pgbr/base" ]; then
    RESTORE_DIFF=$( (diff -rq "$W/restore-cairn/base" "$W/restore-pgbr/base" 2>&1 || true) | wc -l)
    (diff -rq "$W/restore-cairn" "$W/restore-pgbr" 2>&1 || true) >"$W/logs/restore-diff.txt"
  fi
  rm -rf "$W/restore-cairn" "$W/restore-pgbr"
fi

# ---------------------------------------------------------------------------------------------
# Report

cell() { ok "$1" && echo "${WALL[$1]}" || echo "failed"; }
sizecell() { [ -n "${SIZE[$1]:-}" ] && mib "${SIZE[$1]}" || echo "n/a"; }
vs() { ok "$1" && ok "$2" && ratio "${WALL[$1]}" "${WALL[$2]}" || echo "n/a"; }
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
MEM_GIB=$(awk '/MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)
GIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
git -C "$ROOT" diff --quiet HEAD 2>/dev/null || GIT="$GIT+dirty"
PGVER=$(as_pg postgres --version | awk '{print $3}')
PGBRVER=$(pgbackrest version | awk '{print $2}')
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR] = $1} END {if (NR == 0) print "n/a"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

{
  echo "# PostgreSQL benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Machine: $(nproc) CPUs ($CPU_MODEL), ${MEM_GIB} GiB RAM, $(uname -r), shared and noisy (load"
  echo "average $LOAD_START at the start, $LOAD_END at the end):"
  echo "one run, only ratios within it mean much. PostgreSQL $PGVER, pgBackRest $PGBRVER (Debian),"
  echo "Cairn git $GIT (release build). Data: \`pgbench -i -s $SCALE\` ($(mib "$DB_BYTES") MiB database,"
  echo "PGDATA $(mib "$PGDATA_BYTES") MiB), \`shared_buffers = 256MB\`, \`autovacuum = off\`, archive_command"
  echo "\`/bin/true\` while backing up; all repositories on the same local disk as PGDATA, page cache"
  echo "warmed before each backup. Wall time around each command; peak RSS and CPU of the client"
  echo "process tree (\`/usr/bin/time -v\`; pg_basebackup's work is mostly in the server's walsender)."
  echo "Cairn: zstd 2 (default), 64 KiB blocks, key file (no Argon2id). pgBackRest: process-max=1,"
  echo "start-fast=y, archive-check=n; default compression (gz level 6 in $PGBRVER). pgBackRest check: $PGBR_CHECK."
  echo
  echo "## 1. Full base backup"
  echo
  echo "| tool | wall s | x Cairn | peak RSS MiB | client CPU s | stored MiB |"
  echo "|---|---:|---:|---:|---:|---:|"
  echo "| pg_basebackup -Ft -X none -c fast (uncompressed tar) | $(cell full_pgbb) | $(vs full_pgbb full_cairn) | ${RSS[full_pgbb]:-} | ${CPU[full_pgbb]:-} | $(sizecell full_pgbb) |"
  echo "| cairn-basebackup push | $(cell full_cairn) | 1.00 | ${RSS[full_cairn]:-} | ${CPU[full_cairn]:-} | $(sizecell full_cairn) |"
  if [ "$EXTRA" = 1 ]; then
    echo "| cairn-basebackup push --block-size 8192 | $(cell full_cairn8k) | $(vs full_cairn8k full_cairn) | ${RSS[full_cairn8k]:-} | ${CPU[full_cairn8k]:-} | $(sizecell full_cairn8k) |"
  fi
  for v in $PGBR_VARIANTS; do
    case $v in
      default) label="default (gz)" ;;
      p2) label="default (gz), process-max=2" ;;
      *) label="compress-type=$v" ;;
    esac
    echo "| pgbackrest backup --type=full, $label | $(cell "full_pgbr_$v") | $(vs "full_pgbr_$v" full_cairn) | ${RSS[full_pgbr_$v]:-} | ${CPU[full_pgbr_$v]:-} | $(sizecell "full_pgbr_$v") |"
  done
  echo
  echo "## 2. Second backup after \`pgbench -T $SECONDS_RUN -c $CLIENTS\` ($TPS tps, $TXNS transactions)"
  echo
  echo "| tool | wall s | peak RSS MiB | bytes added MiB (du -sb delta) | added / Cairn's |"
  echo "|---|---:|---:|---:|---:|"
  echo "| cairn-basebackup push (second: dedup and patches against the first) | $(cell incr_cairn) | ${RSS[incr_cairn]:-} | $(mib "${ADDED[incr_cairn]:-0}") | 1.00 |"
  echo "| pgbackrest backup --type=incr, default (gz) | $(cell incr_pgbr_default) | ${RSS[incr_pgbr_default]:-} | $(mib "${ADDED[incr_pgbr_default]:-0}") | $(ratio "${ADDED[incr_pgbr_default]:-0}" "${ADDED[incr_cairn]:-0}") |"
  if [ "$EXTRA" = 1 ]; then
    echo "| pgbackrest backup --type=incr, compress-type=zst | $(cell incr_pgbr_zst) | ${RSS[incr_pgbr_zst]:-} | $(mib "${ADDED[incr_pgbr_zst]:-0}") | $(ratio "${ADDED[incr_pgbr_zst]:-0}" "${ADDED[incr_cairn]:-0}") |"
    echo "| cairn-basebackup push --block-size 8192 (own repository) | $(cell incr_cairn8k) | ${RSS[incr_cairn8k]:-} | $(mib "${ADDED[incr_cairn8k]:-0}") | $(ratio "${ADDED[incr_cairn8k]:-0}" "${ADDED[incr_cairn]:-0}") |"
  fi
  echo
  echo "Cairn's second backup added $(ratio "${ADDED[incr_cairn]:-0}" "${ADDED[incr_pgbr_default]:-0}")x what pgBackRest's incremental (default compression) added (target: <= 0.5)$([ "$EXTRA" = 1 ] && echo "; with 8 KiB blocks $(ratio "${ADDED[incr_cairn8k]:-0}" "${ADDED[incr_pgbr_default]:-0}")x")."
  [ -n "$CAIRN2_SUMMARY" ] && echo "Cairn's own summary of its second backup: $CAIRN2_SUMMARY."
  awk -v a="${ACCT_BYTES:-0}" -v t="${TXNS:-0}" 'BEGIN {
    if (a > 0) printf "pgbench_accounts was %.0f MiB after the run: %.1f updates per 64 KiB block and %.1f per 8 KiB page on average (uniformly random rows), so about %.0f %% of its 64 KiB blocks and %.0f %% of its pages stayed unchanged.\n", a / 1048576, t / (a / 65536), t / (a / 8192), 100 * exp(-t / (a / 65536)), 100 * exp(-t / (a / 8192)) }'
  if [ "$LOW_TPS" != 0 ]; then
    echo
    echo "### 2b. Third backup after \`pgbench -R $LOW_TPS -T $SECONDS_RUN -c $CLIENTS\` ($LOW_TXNS transactions)"
    echo
    echo "| tool | wall s | bytes added MiB | added / pgBackRest incr's |"
    echo "|---|---:|---:|---:|"
    echo "| pgbackrest backup --type=incr, default (gz) | $(cell low_pgbr_default) | $(mib "${ADDED[low_pgbr_default]:-0}") | 1.00 |"
    echo "| cairn-basebackup push | $(cell low_cairn) | $(mib "${ADDED[low_cairn]:-0}") | $(ratio "${ADDED[low_cairn]:-0}" "${ADDED[low_pgbr_default]:-0}") |"
    if [ "$EXTRA" = 1 ]; then
      echo "| cairn-basebackup push --block-size 8192 | $(cell low_cairn8k) | $(mib "${ADDED[low_cairn8k]:-0}") | $(ratio "${ADDED[low_cairn8k]:-0}" "${ADDED[low_pgbr_default]:-0}") |"
    fi
  fi
  echo
  echo "## 3. WAL push, $NSAMPLED segments ($(mib "$SEG_BYTES") MiB) from the pgbench run, one process per segment"
  echo
  echo "| round | tool | wall s | segments/s | peak RSS MiB | stored MiB | archived | Cairn rate / pgBackRest rate |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
  RATIOS=""
  for r in $(seq 1 "$WAL_ROUNDS"); do
    for tool in cairn pgbr; do
      n="wal_${tool}_r$r"
      name="cairn-wal push (key file)"; [ "$tool" = pgbr ] && name="pgbackrest archive-push (gz)"
      rate="n/a"; ok "$n" && rate=$(awk -v n="$NSAMPLED" -v s="${WALL[$n]}" 'BEGIN {printf "%.1f", n / s}')
      rr=""
      if [ "$tool" = pgbr ] && ok "wal_cairn_r$r" && ok "$n"; then
        rr=$(ratio "${WALL[$n]}" "${WALL[wal_cairn_r$r]}"); RATIOS="$RATIOS $rr"
      fi
      echo "| $r | $name | $(cell "$n") | $rate | ${RSS[$n]:-} | $(sizecell "$n") | ${WAL_OK[${tool}_r$r]:-?} | $rr |"
    done
  done
  echo
  echo "Cairn's WAL push rate / pgBackRest's, per round:${RATIOS:- n/a}; median $(echo "$RATIOS" | median) (target: >= 5)."
  if [ "$DO_RESTORE" = 1 ]; then
    echo
    echo "## 4. Restore of the latest base backup of each (files only; no WAL replay)"
    echo
    echo "| tool | wall s | x Cairn | peak RSS MiB | restored MiB |"
    echo "|---|---:|---:|---:|---:|"
    echo "| tar -xf base.tar (pg_basebackup, step 1) | $(cell restore_pgbb) | $(vs restore_pgbb restore_cairn) | ${RSS[restore_pgbb]:-} | $(sizecell restore_pgbb) |"
    echo "| cairn-basebackup restore latest | $(cell restore_cairn) | 1.00 | ${RSS[restore_cairn]:-} | $(sizecell restore_cairn) |"
    echo "| pgbackrest restore (latest incr on full, gz) | $(cell restore_pgbr) | $(vs restore_pgbr restore_cairn) | ${RSS[restore_pgbr]:-} | $(sizecell restore_pgbr) |"
    echo
    echo "Files under base/ that differ between the Cairn and pgBackRest restores (same cluster state): $RESTORE_DIFF."
  fi
  failed=""
  for k in "${!NOTE[@]}"; do failed="$failed
- $k: ${NOTE[$k]}"; done
  if [ -n "$failed" ]; then
    echo
    echo "Failures:$failed"
  fi
  echo
  echo "## Against the targets"
  echo
  echo "- Second backup, bytes added, Cairn / pgBackRest incr (target <= 0.5): $(ratio "${ADDED[incr_cairn]:-0}" "${ADDED[incr_pgbr_default]:-0}") after full-speed pgbench$([ "$LOW_TPS" != 0 ] && echo ", $(ratio "${ADDED[low_cairn]:-0}" "${ADDED[low_pgbr_default]:-0}") after pgbench -R $LOW_TPS")."
  echo "- WAL push rate, Cairn / pgBackRest archive-push (target >= 5): median $(echo "$RATIOS" | median) of $WAL_ROUNDS rounds (${RATIOS# })."
  echo "- Full base backup wall time, pgBackRest (gz) / Cairn: $(vs full_pgbr_default full_cairn); pg_basebackup / Cairn: $(vs full_pgbb full_cairn)."
  echo
  echo "Reproduce: \`bash benches/pg/run.sh\` (as root; PGB_SCALE=$SCALE, PGB_SECONDS=$SECONDS_RUN, PGB_SEGMENTS=$NSEG)."
} >"$OUT"
cat "$OUT"
log "results: $OUT"
