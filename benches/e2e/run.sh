#!/usr/bin/env bash
# End-to-end benchmark: Cairn (cairn-files) against restic (and rustic when installed) on the
# same data, in the same run. See benches/README.md.
#
#   bash benches/e2e/run.sh            everything: tools, data sets, stage benches, e2e runs, report
#   bash benches/e2e/run.sh prepare    only install tools, build, and create the data sets
#   bash benches/e2e/run.sh report F   re-print the report of a results .jsonl file
#   bash benches/e2e/run.sh profile    perf stat + callgrind of a small cairn backup
#
# Environment (defaults in brackets):
#   E2E_WORK      scratch dir for data, repositories, restores, logs [/tmp/cairn-e2e]
#   E2E_RUNS      repetitions; medians are reported [3]
#   E2E_MIXED_MIB size of the generated "mixed" data set in MiB [1024]
#   E2E_DATASETS  data sets to run [doc mixed]
#   E2E_TOOLS     tools to compare; missing ones are skipped [cairn restic rustic]
#   E2E_STAGES    1: run the criterion format benches (pipeline stages) once per run [1]
#   E2E_BUILD     1: cargo build --release -p cairn-files first [1]
#   E2E_TMPFS     also restore into this tmpfs directory (empty: skip) [/dev/shm/cairn-e2e]
#   E2E_SETTLE    seconds between deleting trees (leftovers, or a previous run's) and measuring [360]
#   E2E_OUT       results path prefix [benches/e2e/results/<UTC date>, -<time> added when taken]
#   CAIRN_BIN, RESTIC_BIN, RUSTIC_BIN   binaries [target/release/cairn-files, restic, rustic]
#
# Results: <prefix>.jsonl (one JSON record per measured operation, plus data set, tool, stage
# and machine records) and <prefix>.md (the markdown tables, also printed).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${E2E_WORK:-/tmp/cairn-e2e}
RUNS=${E2E_RUNS:-3}
MIXED_MIB=${E2E_MIXED_MIB:-1024}
DATASETS=${E2E_DATASETS:-doc mixed}
TOOLS=${E2E_TOOLS:-cairn restic rustic}
STAGES=${E2E_STAGES:-1}
BUILD=${E2E_BUILD:-1}
SETTLE=${E2E_SETTLE:-360}
TMPFS=${E2E_TMPFS-/dev/shm/cairn-e2e}
OUT=${E2E_OUT:-$HERE/results/$(date -u +%Y-%m-%d)}
# Never overwrite an earlier result of the same day: add the time.
if [ -z "${E2E_OUT:-}" ] && [ -e "$OUT.jsonl" ]; then
  OUT=$HERE/results/$(date -u +%Y-%m-%d-%H%M)
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CAIRN_BIN=${CAIRN_BIN:-$TARGET_DIR/release/cairn-files}
RESTIC_BIN=${RESTIC_BIN:-restic}
RUSTIC_BIN=${RUSTIC_BIN:-rustic}
PY=${PYTHON:-python3}
SUMMARIZE="$PY $HERE/summarize.py"
TIME=/usr/bin/time

# Throwaway passwords of throwaway benchmark repositories.
export CAIRN_PASSWORD=e2e-bench-password RESTIC_PASSWORD=e2e-bench-password
export RUSTIC_PASSWORD=e2e-bench-password
unset CAIRN_REPOSITORY CAIRN_PASSWORD_FILE CAIRN_PASSWORD_COMMAND RESTIC_REPOSITORY
unset RESTIC_PASSWORD_FILE RESTIC_PASSWORD_COMMAND

log() { printf '[e2e %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  command -v apt-get >/dev/null || die "install $* by hand (no apt-get)"
  $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# ---------------------------------------------------------------------------------------------
# Tools

ensure_tools() {
  [ -x "$TIME" ] || apt_install time
  command -v "$PY" >/dev/null || die "python3 is needed"
  command -v diff >/dev/null || apt_install diffutils
  if [[ " $TOOLS " == *" restic "* ]] && ! command -v "$RESTIC_BIN" >/dev/null; then
    log "installing restic (Debian package)"
    apt_install restic
  fi
  if [[ " $TOOLS " == *" cairn "* ]] && [ "$BUILD" = 1 ]; then
    log "building cairn-files (release)"
    (cd "$ROOT" && cargo build --release -q -p cairn-files)
  fi
}

# Is this tool usable here? (cairn: needs the backup and restore commands.)
have_tool() {
  case "$1" in
    cairn)
      [ -x "$CAIRN_BIN" ] || return 1
      local h
      h=$("$CAIRN_BIN" --help 2>/dev/null) || return 1
      grep -qE '^  backup ' <<<"$h" && grep -qE '^  restore ' <<<"$h" ;;
    restic) command -v "$RESTIC_BIN" >/dev/null ;;
    rustic) command -v "$RUSTIC_BIN" >/dev/null ;;
    *) return 1 ;;
  esac
}

tool_version() {
  case "$1" in
    cairn) "$CAIRN_BIN" --version 2>/dev/null | head -1 | tr -d '"' || true
           printf ' (git %s)' "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
           git -C "$ROOT" diff --quiet HEAD 2>/dev/null || printf '+dirty' ;;
    restic) "$RESTIC_BIN" version | head -1 | tr -d '"' ;;
    rustic) "$RUSTIC_BIN" --version | head -1 | tr -d '"' ;;
  esac
}

# tool_cmd TOOL OP REPO SRC DST -> prints nothing; sets the CMD array.
tool_cmd() {
  local tool=$1 op=$2 repo=$3 src=$4 dst=$5 cache=$3.cache
  # Cairn's local cache ($XDG_CACHE_HOME/cairn) lives and dies with the repository, like
  # restic's --cache-dir.
  local cairn_env=(env XDG_CACHE_HOME="$cache")
  case "$tool/$op" in
    cairn/init) CMD=("${cairn_env[@]}" "$CAIRN_BIN" --repo "$repo" --kdf-memory-kib 65536 --kdf-passes 3 init) ;;
    cairn/backup | cairn/rebackup) CMD=("${cairn_env[@]}" "$CAIRN_BIN" --repo "$repo" --json backup "$src") ;;
    cairn/backup_keyfile) CMD=("${cairn_env[@]}" "$CAIRN_BIN" --repo "$repo" --key-file "$repo.key" --json backup "$src") ;;
    cairn/rebackup_keyfile) CMD=("${cairn_env[@]}" "$CAIRN_BIN" --repo "$repo" --key-file "$repo.key" --json backup "$src") ;;
    cairn/open) CMD=("${cairn_env[@]}" "$CAIRN_BIN" --repo "$repo" --json snapshots) ;;
    cairn/restore | cairn/restore_tmpfs) CMD=("${cairn_env[@]}" "$CAIRN_BIN" --repo "$repo" restore latest --target "$dst") ;;
    restic/init) CMD=("$RESTIC_BIN" -r "$repo" --cache-dir "$cache" init) ;;
    restic/backup | restic/rebackup) CMD=("$RESTIC_BIN" -r "$repo" --cache-dir "$cache" backup "$src") ;;
    restic/open) CMD=("$RESTIC_BIN" -r "$repo" --cache-dir "$cache" snapshots --json) ;;
    restic/restore | restic/restore_tmpfs) CMD=("$RESTIC_BIN" -r "$repo" --cache-dir "$cache" restore latest --target "$dst") ;;
    rustic/init) CMD=("$RUSTIC_BIN" -r "$repo" --cache-dir "$cache" --no-progress init) ;;
    rustic/backup | rustic/rebackup) CMD=("$RUSTIC_BIN" -r "$repo" --cache-dir "$cache" --no-progress backup "$src") ;;
    rustic/open) CMD=("$RUSTIC_BIN" -r "$repo" --cache-dir "$cache" --no-progress snapshots) ;;
    rustic/restore | rustic/restore_tmpfs) CMD=("$RUSTIC_BIN" -r "$repo" --cache-dir "$cache" --no-progress restore latest "$dst") ;;
    *) die "unknown $tool/$op" ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# Data sets

dataset_dir() { echo "$WORK/data/$1"; }

prepare_dataset() {
  local ds=$1 dir meta
  dir=$(dataset_dir "$ds")
  meta="$WORK/data/$ds.json"
  local want="$ds"
  [ "$ds" = mixed ] && want="mixed-$MIXED_MIB"
  if [ -f "$meta" ] && [ -d "$dir" ] && grep -q "\"stamp\": \"$want\"" "$meta"; then
    return
  fi
  rm -rf "$dir" "$meta"
  mkdir -p "$WORK/data"
  case "$ds" in
    doc)
      log "copying /usr/share/doc to $dir"
      cp -a /usr/share/doc "$dir" ;;
    mixed)
      log "generating mixed data set ($MIXED_MIB MiB) in $dir"
      "$PY" "$HERE/gen_mixed.py" "$dir" "$MIXED_MIB" > "$WORK/data/mixed.gen.json" ;;
    *) die "unknown data set $ds" ;;
  esac
  local files dirs links share
  files=$(find "$dir" -type f | wc -l)
  dirs=$(find "$dir" -type d | wc -l)
  links=$(find "$dir" -type l | wc -l)
  share=$($SUMMARIZE share "$dir")
  "$PY" - "$ds" "$want" "$files" "$dirs" "$links" "$share" > "$meta" <<'EOF'
import json, sys
ds, stamp, files, dirs, links, share = sys.argv[1:]
s = json.loads(share)
print(json.dumps({"kind": "dataset", "dataset": ds, "stamp": stamp, "bytes": s["bytes"],
                  "files": int(files), "dirs": int(dirs), "symlinks": int(links),
                  "compressible_share": s["compressible_share"]}))
EOF
}

# Reads every byte of the tree (GNU tar skips file contents when writing to /dev/null itself).
warm() { tar -C "$1" -cf - . | cat >/dev/null; }

# ---------------------------------------------------------------------------------------------
# Measurement

# measure RUN DS TOOL OP REPO SRC DST: runs the op under /usr/bin/time -v, appends a JSON record.
# Returns the op's exit status.
measure() {
  local run=$1 ds=$2 tool=$3 op=$4 repo=$5 src=$6 dst=$7
  local logf="$WORK/logs/r$run-$ds-$tool-$op.log" tf="$WORK/logs/r$run-$ds-$tool-$op.time"
  tool_cmd "$tool" "$op" "$repo" "$src" "$dst"
  local load t0 t1 rc=0
  # Flush dirty pages first (a plain sync, no cache drop): otherwise a tool that fsyncs pays for
  # the writeback of whatever the previous operation (or tool) left dirty.
  sync
  load=$(cut -d' ' -f1 /proc/loadavg)
  t0=$(date +%s%N)
  "$TIME" -v -o "$tf" "${CMD[@]}" >"$logf" 2>&1 || rc=$?
  t1=$(date +%s%N)
  local rss user sys
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tf")
  user=$(awk -F': ' '/User time \(seconds\)/ {print $2}' "$tf")
  sys=$(awk -F': ' '/System time \(seconds\)/ {print $2}' "$tf")
  LAST_WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.4f", (b - a) / 1e9}')
  local ok=true note=""
  if [ "$rc" != 0 ]; then
    ok=false
    note="exit $rc: $(tail -c 300 "$logf" | tr -c '[:print:]' ' ' | tr '"\\' '  ')"
  fi
  printf '{"kind":"op","run":%d,"dataset":"%s","tool":"%s","op":"%s","ok":%s,"rc":%d,"wall_s":%s,"cpu_s":%s,"user_s":%s,"sys_s":%s,"max_rss_kib":%s,"load1":%s,"note":"%s"}\n' \
    "$run" "$ds" "$tool" "$op" "$ok" "$rc" "$LAST_WALL" \
    "$(awk -v u="${user:-0}" -v s="${sys:-0}" 'BEGIN {printf "%.2f", u + s}')" \
    "${user:-0}" "${sys:-0}" "${rss:-0}" "$load" "$note" >>"$JSONL"
  log "  r$run $ds $tool $op: ${LAST_WALL}s rss=$(( ${rss:-0} / 1024 ))MiB rc=$rc"
  return "$rc"
}

# Where inside DST did the tool put the restored SRC? (restic: DST/<absolute SRC>.)
restored_root() {
  local src=$1 dst=$2 c
  for c in "$dst$src" "$dst/$(basename "$src")" "$dst"; do
    if [ -d "$c" ] && [ -n "$(ls -A "$c" 2>/dev/null)" ] && \
       [ "$(ls -A "$c" | head -50)" = "$(ls -A "$src" | head -50)" ]; then
      echo "$c"; return 0
    fi
  done
  return 1
}

# Metadata listing: type, mode, size (files), mtime (seconds), link target, path.
listing() {
  (cd "$1" && find . -mindepth 1 \( -type f -printf '%y %m %s %TY%Tm%Td%TH%TM%.2TS %p\n' \) -o \
     \( -type l -printf '%y %l %p\n' \) -o \( -type d -printf '%y %m %p\n' \) | LC_ALL=C sort)
}

# verify RUN DS TOOL SRC DST: appends the verification result to the last restore record.
verify() {
  local run=$1 ds=$2 tool=$3 src=$4 dst=$5 root diffs meta_diffs vlog
  vlog="$WORK/logs/r$run-$ds-$tool-verify.log"
  if ! root=$(restored_root "$src" "$dst"); then
    echo "restored tree not found under $dst" >"$vlog"
    VERIFY_OK=false VERIFY_NOTE="restored tree not found"; META_DIFFS=-1; return
  fi
  diffs=$(diff -r --no-dereference -q "$src" "$root" 2>&1 | tee "$vlog" | wc -l)
  meta_diffs=$(diff <(listing "$src") <(listing "$root") | tee -a "$vlog" | grep -c '^[<>]' || true)
  META_DIFFS=$meta_diffs
  if [ "$diffs" = 0 ]; then
    VERIFY_OK=true VERIFY_NOTE=""
  else
    VERIFY_OK=false VERIFY_NOTE="restore differs from source: $diffs diff -r lines (see $vlog)"
  fi
}

# restore_verified RUN DS TOOL OP REPO SRC DST: measures a restore into DST, then compares the
# restored tree with SRC; a difference turns the record into a failure with a note.
restore_verified() {
  local run=$1 ds=$2 tool=$3 op=$4 repo=$5 src=$6 dst=$7
  mkdir -p "$dst"
  measure "$run" "$ds" "$tool" "$op" "$repo" "$src" "$dst" || return 0
  verify "$run" "$ds" "$tool" "$src" "$dst"
  if [ "$VERIFY_OK" = true ]; then
    sed -i '$ s/}$/,"meta_diffs":'"$META_DIFFS"'}/' "$JSONL"
  else
    sed -i '$ s/"ok":true/"ok":false/; $ s/"note":""/"note":"'"${VERIFY_NOTE//\//\\/}"'"/; $ s/}$/,"meta_diffs":'"$META_DIFFS"'}/' "$JSONL"
    log "  r$run $ds $tool: $op DIFFERS ($VERIFY_NOTE)"
  fi
}

# One tool on one data set: init, backup, re-backup, open, restore, verify.
bench_tool() {
  local run=$1 ds=$2 tool=$3 src repo dst
  src=$(dataset_dir "$ds")
  # Nothing is deleted until every run is over: on ext4 without a journal, creating files
  # within 60 s (360 s while the inode table is dirty) of deleting many others makes the kernel
  # scan for recently deleted inodes (`recently_deleted`: up to 40 % of a restore's samples),
  # which would charge one tool for the clean-up of the one before it.
  repo="$WORK/repos/r$run-$ds-$tool"
  dst="$WORK/restore/r$run-$ds-$tool"
  mkdir -p "$WORK/repos" "$WORK/restore" "$WORK/logs"
  warm "$src"
  if [ "$tool" = cairn ]; then
    # First, the first backup opened with a key file (no Argon2id), into a repository of its own.
    local kf="$WORK/repos/r$run-$ds-cairn-kf"
    env XDG_CACHE_HOME="$kf.cache" "$CAIRN_BIN" --repo "$kf" --kdf-memory-kib 65536 --kdf-passes 3 init >/dev/null
    env XDG_CACHE_HOME="$kf.cache" "$CAIRN_BIN" --repo "$kf" key export "$kf.key" >/dev/null
    warm "$src"
    measure "$run" "$ds" "$tool" backup_keyfile "$kf" "$src" "$dst" || true
  fi
  measure "$run" "$ds" "$tool" init "$repo" "$src" "$dst" || return 0
  warm "$src"
  # The repository size is known only after the backup: measure, then patch the record.
  if ! measure "$run" "$ds" "$tool" backup "$repo" "$src" "$dst"; then return 0; fi
  local size
  size=$(du -sb "$repo" | cut -f1)
  sed -i '$ s/}$/,"repo_bytes":'"$size"'}/' "$JSONL"
  warm "$src"
  measure "$run" "$ds" "$tool" rebackup "$repo" "$src" "$dst" || return 0
  if [ "$tool" = cairn ]; then
    # The same unchanged re-backup opened with a key file (`key export`): no Argon2id, as a
    # scheduled backup would run. restic and rustic have no such option.
    rm -f "$repo.key"
    env XDG_CACHE_HOME="$repo.cache" "$CAIRN_BIN" --repo "$repo" key export "$repo.key" >/dev/null
    warm "$src"
    measure "$run" "$ds" "$tool" rebackup_keyfile "$repo" "$src" "$dst" || true
  fi
  # Opening the repository (key derivation, index) and listing snapshots: the fixed cost inside
  # every operation, to tell it apart from the re-backup's own work.
  measure "$run" "$ds" "$tool" open "$repo" "$src" "$dst" || true
  # Restores read a warm repository, for every tool alike: Cairn writes packs to local
  # directories past the page cache (O_DIRECT) while restic's stay cached from its backup, and
  # the comparison is of the tools, not of the disk.
  warm "$repo"
  restore_verified "$run" "$ds" "$tool" restore "$repo" "$src" "$dst"
  # The same restore into tmpfs: the tool's own cost without ext4's inode allocation, whose
  # cost on this machine swings with what was deleted in the last minutes (see README).
  if [ -n "$TMPFS" ]; then
    local tdst="$TMPFS/r$run-$ds-$tool"
    warm "$repo"
    restore_verified "$run" "$ds" "$tool" restore_tmpfs "$repo" "$src" "$tdst"
    # tmpfs has no such allocator cost: free the memory at once.
    rm -rf "$tdst"
  fi
}

machine_record() {
  local when=$1
  "$PY" - "$when" "$RUNS" <<'EOF'
import json, os, platform, sys, time
cpu = "?"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip(); break
mem = int(open("/proc/meminfo").readline().split()[1]) / (1 << 20)
print(json.dumps({"kind": "machine", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "cpus": os.cpu_count(), "cpu": cpu, "mem_gib": round(mem, 1),
                  "kernel": platform.release(), "runs": int(sys.argv[2]),
                  "load_" + sys.argv[1]: open("/proc/loadavg").read().split()[0]}))
EOF
}

STAGE_FILTER='chunker/|id/keyed_blake3|envelope/(seal|open)/zstd2|envelope/seal/raw/random'

# run_stages RUN: the criterion benches of the pipeline stages, tagged with the run number (the
# machine is noisy: stages are measured once per run, next to the end-to-end operations).
run_stages() {
  local run=$1
  [ "$STAGES" = 1 ] || return 0
  log "run $run: criterion format benches (per-stage throughput)"
  if (cd "$ROOT" && cargo bench -q -p cairn-benches --bench format -- \
       --measurement-time 3 --warm-up-time 1 "$STAGE_FILTER") >"$WORK/logs/bench-format-r$run.log" 2>&1; then
    $SUMMARIZE stages "$TARGET_DIR/criterion" "$run" >>"$JSONL"
  else
    log "criterion benches failed (see $WORK/logs/bench-format-r$run.log)"
  fi
}

cmd_all() {
  ensure_tools
  local ds tool
  for ds in $DATASETS; do prepare_dataset "$ds"; done
  mkdir -p "$(dirname "$OUT")" "$WORK/logs"
  JSONL="$OUT.jsonl"
  : >"$JSONL"
  local active=()
  for tool in $TOOLS; do
    if have_tool "$tool"; then
      active+=("$tool")
      printf '{"kind":"tool","tool":"%s","version":"%s"}\n' "$tool" "$(tool_version "$tool" | tr -d '\n')" >>"$JSONL"
    else
      if [ "$tool" = cairn ]; then
        log "skipping cairn: cairn-files needs 'backup' and 'restore' commands"
      else
        log "skipping $tool: not installed (see benches/README.md)"
      fi
    fi
  done
  [ "${#active[@]}" -gt 0 ] || die "no tool to benchmark"
  local start
  start=$(machine_record start)
  for ds in $DATASETS; do
    cat "$WORK/data/$ds.json" >>"$JSONL"
  done
  # Leftovers of an interrupted run: delete them, then let the deletions age (see bench_tool).
  if [ -d "$WORK/repos" ] || [ -d "$WORK/restore" ]; then
    rm -rf "$WORK/repos" "$WORK/restore"
    sync
    date +%s >"$WORK/.deleted-at"
  fi
  # The same after the clean-up at the end of a previous run, when it was recent.
  if [ -f "$WORK/.deleted-at" ]; then
    local since
    since=$(( $(date +%s) - $(cat "$WORK/.deleted-at") ))
    if [ "$since" -lt "$SETTLE" ]; then
      log "waiting $((SETTLE - since))s: a previous run deleted its trees ${since}s ago (ext4 recently-deleted inode scans)"
      sleep $((SETTLE - since))
    fi
  fi
  local run i n=${#active[@]}
  for run in $(seq 1 "$RUNS"); do
    run_stages "$run"
    for ds in $DATASETS; do
      # Rotate the tool order from run to run so no tool always goes first.
      for i in $(seq 0 $((n - 1))); do
        tool=${active[$(( (i + run - 1) % n ))]}
        log "run $run/$RUNS: $ds with $tool"
        bench_tool "$run" "$ds" "$tool"
      done
    done
  done
  # One machine record: start fields plus the end load.
  "$PY" - "$start" "$(cut -d' ' -f1 /proc/loadavg)" >>"$JSONL" <<'EOF'
import json, sys
r = json.loads(sys.argv[1]); r["load_end"] = sys.argv[2]; print(json.dumps(r))
EOF
  $SUMMARIZE report "$JSONL" | tee "$OUT.md"
  rm -rf "$WORK/repos" "$WORK/restore"
  sync
  date +%s >"$WORK/.deleted-at"
  log "results: $OUT.jsonl, $OUT.md"
}

# perf stat and callgrind on a small cairn backup (a subset of the mixed data set).
cmd_profile() {
  ensure_tools
  command -v valgrind >/dev/null || apt_install valgrind
  have_tool cairn || die "cairn-files has no backup command yet"
  export XDG_CACHE_HOME="$WORK/profile-cache"
  prepare_dataset mixed
  local sub="$WORK/profile-src" repo="$WORK/repos/profile" mixed
  mixed=$(dataset_dir mixed)
  rm -rf "$sub" "$repo"
  mkdir -p "$sub" "$WORK/logs"
  head -c $((24 << 20)) "$mixed/big/app.log" >"$sub/app.log"
  head -c $((24 << 20)) "$mixed/big/media.bin" >"$sub/media.bin"
  cp -a "$mixed/small/d00" "$sub/small"
  "$CAIRN_BIN" --repo "$repo" init >/dev/null
  if command -v perf >/dev/null; then
    perf stat -e task-clock,cycles,instructions,context-switches,cpu-migrations \
      -o "$WORK/logs/perf-stat.txt" "$CAIRN_BIN" --repo "$repo" backup "$sub" >/dev/null 2>&1 || true
    cat "$WORK/logs/perf-stat.txt"
  fi
  rm -rf "$repo"
  "$CAIRN_BIN" --repo "$repo" init >/dev/null
  valgrind --tool=callgrind --callgrind-out-file="$WORK/logs/callgrind.out" \
    "$CAIRN_BIN" --repo "$repo" backup "$sub" >/dev/null 2>"$WORK/logs/callgrind.log"
  callgrind_annotate --inclusive=no "$WORK/logs/callgrind.out" 2>/dev/null | head -40
  rm -rf "$repo" "$sub" "$XDG_CACHE_HOME"
}

case "${1:-all}" in
  all) cmd_all ;;
  prepare) ensure_tools; for ds in $DATASETS; do prepare_dataset "$ds"; done ;;
  report) $SUMMARIZE report "${2:?results .jsonl file}" ;;
  profile) cmd_profile ;;
  *) sed -n '2,25p' "$0"; exit 2 ;;
esac
