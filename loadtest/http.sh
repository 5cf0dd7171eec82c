#!/usr/bin/env bash
# loadtest/http.sh — HTTP load benchmark of the OPD Token Engine.
#
# One command, one run: installs wrk if missing, builds the bare axum baseline
# (loadtest/baseline) and the project in release mode, then for each mode
#   baseline | in-memory | durable (--data-dir, fresh temp dir) | postgres
#   | postgres+one-call (--one-call-bookings)
#   (the postgres modes only when DATABASE_URL is set and points at this
#   machine)
# starts the server on a free 127.0.0.1 port, waits for /healthz, creates a
# schedule (BENCH_GROUPS groups of BENCH_DOCTORS doctors x 8 hourly slots
# 08:00-16:00, capacity BENCH_CAPACITY, all on BENCH_DATE), warms up, and runs wrk
# for BENCH_SECONDS with loadtest/wrk/bookings-only.lua and then
# loadtest/wrk/bookings.lua. The modes take turns for BENCH_ROUNDS rounds, each
# on a fresh server, so that every project run has a baseline run minutes
# away; a ratio is the median of the rounds' ratios. Finally, on a
# fresh server per mode, a latency pass runs bookings.lua paced at half of the
# mode's median peak (a MODE+subscribers mode at half of MODE's peak when MODE
# runs too, so that both carry the same offered load). Prints a table with
# ratios to the baseline.
#
# Environment (all optional):
#   BENCH_SECONDS=10          duration of each measured wrk run
#   BENCH_ROUNDS=3            peak runs per mode, the modes taking turns
#   BENCH_CONNECTIONS=64      wrk connections for the peak runs (threads: 2)
#   BENCH_LAT_CONNECTIONS=32  wrk connections for the paced latency pass
#   BENCH_WARMUP=2            warm-up seconds before measuring (per server)
#   BENCH_PIN=1               1: server on CPU 0, wrk on CPU 1 (taskset); 0: share
#   BENCH_MODES="baseline in-memory durable [postgres]"  subset/order of modes
#   BENCH_DOCTORS=20 BENCH_CAPACITY=50
#   BENCH_DATE                the schedule's date (default: today in OPD_TIMEZONE, else UTC,
#                             the server's "today": no-shows are taken only on a slot's date)
#   BENCH_GROUPS              groups of doctors (default: enough that no waitlist fills)
#   BENCH_SKIP_BUILD=1        do not run cargo build (use existing binaries)
#   BENCH_OUT=target/bench-http/<UTC timestamp>   raw wrk and server logs
#   DATABASE_URL              enables the postgres mode (loopback hosts only);
#                             each server start gets a fresh schema
#                             (--database-schema), dropped on exit with psql
#                             unless BENCH_PG_KEEP=1
#
# Only 127.0.0.1 is ever targeted; every wait and every run is bounded in
# time; servers started here are stopped on exit (trap).
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-64}
BENCH_LAT_CONNECTIONS=${BENCH_LAT_CONNECTIONS:-32}
BENCH_WARMUP=${BENCH_WARMUP:-2}
BENCH_PIN=${BENCH_PIN:-1}
BENCH_DOCTORS=${BENCH_DOCTORS:-20}
BENCH_CAPACITY=${BENCH_CAPACITY:-50}
# Today in the zone the servers started here take "today" in: a no-show on
# another date is refused (409 NOT_TODAY) on a cheaper path than a real one.
BENCH_DATE=${BENCH_DATE:-$(TZ=${OPD_TIMEZONE:-UTC} date +%F)}
THREADS=2
OUT=${BENCH_OUT:-$ROOT/target/bench-http/$(date -u +%Y%m%dT%H%M%SZ)}
BASELINE_BIN=$ROOT/target/release/opd-bench-baseline
SUBSCRIBERS_BIN=$ROOT/target/release/opd-bench-subscribers
# MODE+subscribers: MODE with event streams open while it is measured.
BENCH_SUBSCRIBERS_FILTERED=${BENCH_SUBSCRIBERS_FILTERED:-950}
BENCH_SUBSCRIBERS_UNFILTERED=${BENCH_SUBSCRIBERS_UNFILTERED:-50}
PROJECT_BIN=$ROOT/target/release/opd-token-engine

die() { echo "http.sh: $*" >&2; exit 1; }
note() { echo "== $*"; }

for v in BENCH_SECONDS BENCH_ROUNDS BENCH_CONNECTIONS BENCH_LAT_CONNECTIONS BENCH_WARMUP \
         BENCH_DOCTORS BENCH_CAPACITY; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
((BENCH_SECONDS >= 1)) || die "BENCH_SECONDS must be >= 1"
((BENCH_ROUNDS >= 1 && BENCH_ROUNDS <= 9)) || die "BENCH_ROUNDS must be 1..9"
((BENCH_CONNECTIONS >= THREADS && BENCH_LAT_CONNECTIONS >= THREADS)) ||
  die "connections must be >= $THREADS (wrk threads)"
((BENCH_DOCTORS >= 1 && BENCH_DOCTORS <= 99)) || die "BENCH_DOCTORS must be 1..99"
[[ $BENCH_DATE =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ ]] || die "BENCH_DATE must be YYYY-MM-DD"
[[ -z ${BENCH_DAYS:-} ]] || die "BENCH_DAYS is gone: every slot is dated BENCH_DATE; set BENCH_GROUPS instead"

# ---------------------------------------------------------------------------
# Cleanup: stop every server this script started, remove temp dirs.
# ---------------------------------------------------------------------------
SERVER_PID=""
TMP_DIRS=()
PG_SCHEMAS=()
RUN_TAG=$(date -u +%Y%m%d%H%M%S)
stop_server() {
  local pid=$SERVER_PID
  SERVER_PID=""
  [[ -n $pid ]] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do # <= 10 s
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  wait "$pid" 2>/dev/null || true
}
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
  stop_server
  local d
  for d in "${TMP_DIRS[@]+"${TMP_DIRS[@]}"}"; do rm -rf -- "$d"; done
  if ((${#PG_SCHEMAS[@]})); then
    if [[ ${BENCH_PG_KEEP:-0} != 1 ]] && command -v psql >/dev/null; then
      for d in "${PG_SCHEMAS[@]}"; do
        timeout 60 psql "$DATABASE_URL" -qc "DROP SCHEMA IF EXISTS $d CASCADE" >/dev/null 2>&1 ||
          echo "http.sh: could not drop schema $d" >&2
      done
    else
      echo "http.sh: PostgreSQL schemas left in place: ${PG_SCHEMAS[*]}" >&2
    fi
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------
# Tools.
# ---------------------------------------------------------------------------
command -v curl >/dev/null || die "curl is required"
if ! command -v wrk >/dev/null; then
  note "wrk not found: installing the Debian package"
  [[ $(id -u) == 0 ]] || die "wrk is missing; run 'apt-get install -y wrk' as root"
  timeout 600 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq wrk >/dev/null
fi
# Paced latency pass: wrk2 (constant rate, corrected for coordinated omission)
# when Debian packages it; otherwise wrk with the Lua pacer in bookings.lua.
WRK2=""
if command -v wrk2 >/dev/null; then
  WRK2=$(command -v wrk2)
elif [[ $(id -u) == 0 ]] && apt-cache show wrk2 >/dev/null 2>&1; then
  note "wrk2 is packaged: installing it for the latency pass"
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq wrk2 >/dev/null &&
    WRK2=$(command -v wrk2 || true)
fi

PIN_SERVER=()
PIN_WRK=()
NPROC=$(nproc)
if [[ $BENCH_PIN == 1 ]] && command -v taskset >/dev/null && ((NPROC >= 2)); then
  PIN_SERVER=(taskset -c 0)
  PIN_WRK=(taskset -c 1)
fi

# ---------------------------------------------------------------------------
# Build.
# ---------------------------------------------------------------------------
if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  note "building release binaries (cargo build --release -p opd-bench-baseline -p opd-bench-subscribers -p opd-token-engine)"
  cargo build --release -p opd-bench-baseline -p opd-bench-subscribers -p opd-token-engine
fi
[[ -x $BASELINE_BIN ]] || die "missing $BASELINE_BIN"

# ---------------------------------------------------------------------------
# Modes.
# ---------------------------------------------------------------------------
pg_url_is_local() {
  # Accept only this machine: localhost, 127.x, ::1, or a Unix socket.
  local rest=${1#*://}
  rest=${rest#*@} # drop credentials
  local host=${rest%%[/?]*}
  if [[ $host == \[* ]]; then host=${host%%]*}]; else host=${host%:*}; fi
  case $host in
    "" | localhost | 127.* | "[::1]") ;;
    *) return 1 ;;
  esac
  # host=... query parameters must also be local (or a socket path).
  if [[ $1 == *host=* ]]; then
    local h=${1##*host=}
    h=${h%%&*}
    case $h in /* | %2F* | %2f* | localhost | 127.* | "[::1]" | ::1) ;; *) return 1 ;; esac
  fi
  if [[ $1 == *hostaddr=* ]]; then
    local a=${1##*hostaddr=}
    a=${a%%&*}
    case $a in 127.* | ::1) ;; *) return 1 ;; esac
  fi
  return 0
}

if [[ -n ${BENCH_MODES:-} ]]; then
  read -r -a MODES <<<"$BENCH_MODES"
else
  MODES=(baseline in-memory durable)
  if [[ -n ${DATABASE_URL:-} ]]; then MODES+=(postgres); fi
fi
for m in "${MODES[@]}"; do
  case $m in
    baseline) ;;
    in-memory | durable) [[ -x $PROJECT_BIN ]] || die "missing $PROJECT_BIN" ;;
    in-memory+subscribers | durable+subscribers | in-memory+metrics-off+subscribers | durable+metrics-off+subscribers)
      [[ -x $PROJECT_BIN ]] || die "missing $PROJECT_BIN"
      [[ -x $SUBSCRIBERS_BIN ]] || die "missing $SUBSCRIBERS_BIN"
      ;;
    in-memory+metrics-off | durable+metrics-off)
      [[ -x $PROJECT_BIN ]] || die "missing $PROJECT_BIN"
      ;;
    in-memory@previous | durable@previous)
      [[ -x ${BENCH_PREVIOUS_BIN:-} ]] || die "mode $m needs BENCH_PREVIOUS_BIN, an earlier build of opd-token-engine"
      ;;
    in-memory@previous+subscribers | durable@previous+subscribers)
      [[ -x ${BENCH_PREVIOUS_BIN:-} ]] || die "mode $m needs BENCH_PREVIOUS_BIN, an earlier build of opd-token-engine"
      [[ -x $SUBSCRIBERS_BIN ]] || die "missing $SUBSCRIBERS_BIN"
      ;;
    postgres | postgres+one-call)
      [[ -n ${DATABASE_URL:-} ]] || die "postgres mode needs DATABASE_URL"
      [[ -x $PROJECT_BIN ]] || die "missing $PROJECT_BIN"
      ;;
    *) die "unknown mode '$m' (baseline, in-memory, durable, postgres, postgres+one-call, in-memory@previous, durable@previous, in-memory+subscribers, durable+subscribers, in-memory@previous+subscribers, durable@previous+subscribers, in-memory+metrics-off, durable+metrics-off, in-memory+metrics-off+subscribers, durable+metrics-off+subscribers)" ;;
  esac
done
if [[ " ${MODES[*]} " == *" postgres"* ]] && ! pg_url_is_local "$DATABASE_URL"; then
  echo "http.sh: DATABASE_URL does not point at this machine: skipping the postgres modes" >&2
  NEW=()
  for m in "${MODES[@]}"; do [[ $m == postgres* ]] || NEW+=("$m"); done
  MODES=("${NEW[@]}")
fi

# Schedule: BENCH_GROUPS groups of doctors BDnn-GG (doctor, group index), each
# with 8 hourly slots 08:00-16:00 on BENCH_DATE; slot ids BDnn-GG-HH (doctor,
# group index, hour). Every slot is dated BENCH_DATE, by default today, so that
# the mixed script's no-shows are taken rather than refused 409 NOT_TODAY (the
# groups used to be consecutive days). The "BD" prefix keeps clear of the demo
# schedule (D1-09). Each slot
# holds its capacity plus the project's waitlist limit (OPD_WAITLIST_MAX,
# default 1000) before bookings answer 409 WAITLIST_FULL — a cheaper path that
# would inflate the figures — so by default there are enough groups for every
# booking of one server session at up to BENCH_MAX_RPS (150000) req/s.
WAITLIST_MAX=${OPD_WAITLIST_MAX:-1000}
BENCH_MAX_RPS=${BENCH_MAX_RPS:-150000}
if [[ -z ${BENCH_GROUPS:-} ]]; then
  per_group=$(((BENCH_CAPACITY + WAITLIST_MAX) * BENCH_DOCTORS * 8))
  bookings=$((BENCH_MAX_RPS * (BENCH_WARMUP + 2 * BENCH_SECONDS)))
  BENCH_GROUPS=$(((bookings + per_group - 1) / per_group))
  ((BENCH_GROUPS >= 1)) || BENCH_GROUPS=1
fi
if ! [[ $BENCH_GROUPS =~ ^[0-9]+$ ]] || ((BENCH_GROUPS < 1 || BENCH_GROUPS > 99)); then
  die "BENCH_GROUPS must be 1..99"
fi
date -u -d "$BENCH_DATE" +%F >/dev/null 2>&1 || die "bad BENCH_DATE"
SLOT_IDS=()
SLOT_BODIES=()
for ((k = 0; k < BENCH_GROUPS; k++)); do
  for ((d = 1; d <= BENCH_DOCTORS; d++)); do
    doc=$(printf 'BD%02d-%02d' "$d" "$k")
    for ((h = 8; h < 16; h++)); do
      sid=$(printf '%s-%02d' "$doc" "$h")
      SLOT_IDS+=("$sid")
      SLOT_BODIES+=("$(printf '{"slotId":"%s","doctorId":"%s","date":"%s","startTime":"%02d:00","endTime":"%02d:00","capacity":%d}' \
        "$sid" "$doc" "$BENCH_DATE" "$h" $((h + 1)) "$BENCH_CAPACITY")")
    done
  done
done
SLOTS_CSV=$(IFS=,; echo "${SLOT_IDS[*]}")

# Ports below Linux's default ephemeral range (32768-60999), so that no
# client connection of an earlier run holds the chosen port.
free_port() {
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

PORT=""
# start_server MODE LOGFILE: sets SERVER_PID and PORT; returns 1 on failure.
start_server() {
  local mode=$1 log=$2 cmd bin=$PROJECT_BIN
  PORT=$(free_port) || { echo "no free port" >&2; return 1; }
  local addr=127.0.0.1:$PORT
  # MODE@previous runs MODE with the earlier binary, to compare two builds
  # side by side in one run.
  if [[ $mode == *@previous* ]]; then
    bin=$BENCH_PREVIOUS_BIN
    mode=${mode/@previous/}
  fi
  mode=${mode%+subscribers}
  # MODE+metrics-off runs MODE with --metrics off: the same build without
  # recording metrics, to measure what recording costs.
  local extra=()
  if [[ $mode == *+metrics-off ]]; then
    extra=(--metrics off)
    mode=${mode%+metrics-off}
  fi
  case $mode in
    baseline) cmd=("$BASELINE_BIN" "$addr") ;;
    in-memory) cmd=("$bin" --in-memory --listen "$addr") ;;
    durable)
      local dir
      dir=$(mktemp -d "${TMPDIR:-/tmp}/opd-bench-data.XXXXXX")
      TMP_DIRS+=("$dir")
      cmd=("$bin" --data-dir "$dir" --listen "$addr")
      ;;
    postgres | postgres+one-call)
      # A fresh schema per server start (created by the server), dropped on exit.
      local schema=opd_bench_${RUN_TAG}_${#PG_SCHEMAS[@]}
      PG_SCHEMAS+=("$schema")
      cmd=("$PROJECT_BIN" --database-url "$DATABASE_URL" --database-schema "$schema" --listen "$addr")
      if [[ $mode == postgres+one-call ]]; then cmd+=(--one-call-bookings); fi
      ;;
  esac
  # The project reads its settings from the environment too: clear those that
  # would change the mode under test, and turn the per-client rate limiter
  # off (all load comes from one address; it would answer 429 past 200 req/s)
  # and the per-address connection cap up to the connection cap (past its
  # default of 256, further wrk connections would be closed).
  env -u DATABASE_URL -u DATABASE_SCHEMA -u OPD_IN_MEMORY -u OPD_DATA_DIR -u OPD_LISTEN \
    -u OPD_API_KEYS -u OPD_API_KEYS_FILE -u OPD_STORAGE_LIMIT_MIB -u OPD_METRICS \
    OPD_RATE_LIMIT_PER_SECOND=0 OPD_MAX_CONNECTIONS_PER_ADDRESS=4096 \
    "${PIN_SERVER[@]+"${PIN_SERVER[@]}"}" "${cmd[@]}" "${extra[@]+"${extra[@]}"}" >"$log" 2>&1 </dev/null &
  SERVER_PID=$!
  local i
  for ((i = 0; i < 300; i++)); do # <= 30 s
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "server ($mode) exited during start-up; last log lines:" >&2
      tail -n 20 "$log" >&2
      SERVER_PID=""
      return 1
    fi
    if curl -sf --max-time 1 "http://$addr/healthz" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "server ($mode) did not answer /healthz within 30 s; last log lines:" >&2
  tail -n 20 "$log" >&2
  stop_server
  return 1
}

# create_schedule: POST /slots for every slot, 8 at a time over keep-alive
# connections (one curl process); 201, or 409 SLOT_EXISTS on a reused
# database, are fine.
create_schedule() {
  local cfg=$OUT/slots.curlrc codes i
  : >"$cfg"
  for ((i = 0; i < ${#SLOT_BODIES[@]}; i++)); do
    ((i == 0)) || echo next >>"$cfg"
    printf 'url = "http://127.0.0.1:%s/slots"\nrequest = "POST"\nheader = "Content-Type: application/json"\ndata-raw = "%s"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\nmax-time = 10\n' \
      "$PORT" "${SLOT_BODIES[i]//\"/\\\"}" >>"$cfg"
  done
  codes=$(timeout 300 curl -s --parallel --parallel-max 8 -K "$cfg" 2>/dev/null || true)
  local ok bad
  ok=$(grep -cE '^(201|409)$' <<<"$codes" || true)
  bad=$((${#SLOT_BODIES[@]} - ok))
  if ((bad > 0)); then
    echo "POST /slots: $bad of ${#SLOT_BODIES[@]} failed (codes: $(sort <<<"$codes" | uniq -c | tr -s ' \n' ' '))" >&2
    curl -s --max-time 5 -X POST -H 'Content-Type: application/json' --data "${SLOT_BODIES[0]}" \
      "http://127.0.0.1:$PORT/slots" | head -c 400 >&2 || true
    echo >&2
    return 1
  fi
  echo "   schedule: ${#SLOT_BODIES[@]} slots created"
}

# start_subscribers MODE SECONDS OUTFILE: for a +subscribers mode, opens the
# event streams (on the load generator's CPU) for SECONDS and waits until they
# are connected; sets SUBSCRIBERS_PID. Nothing for other modes.
start_subscribers() {
  SUBSCRIBERS_PID=""
  [[ $1 == *+subscribers ]] || return 0
  "${PIN_WRK[@]+"${PIN_WRK[@]}"}" "$SUBSCRIBERS_BIN" "127.0.0.1:$PORT" "$2" \
    "$BENCH_SUBSCRIBERS_FILTERED" "$BENCH_SUBSCRIBERS_UNFILTERED" "$BENCH_DOCTORS" "$BENCH_GROUPS" >"$3" 2>&1 &
  SUBSCRIBERS_PID=$!
  sleep 2
}

# run_wrk OUTFILE SCRIPT CONNECTIONS SECONDS [RATE]
run_wrk() {
  local outfile=$1 script=$2 conns=$3 secs=$4 rate=${5:-}
  local url=http://127.0.0.1:$PORT
  local -a cmd
  if [[ -n $rate && -n $WRK2 ]]; then
    cmd=("$WRK2" -t"$THREADS" -c"$conns" -d"${secs}s" -R"$rate" --timeout 10s -s "$script" "$url")
    rate=""
  else
    cmd=(wrk -t"$THREADS" -c"$conns" -d"${secs}s" --timeout 10s -s "$script" "$url")
  fi
  # The slot list goes through the environment (BENCH_SLOTS), not argv.
  BENCH_SLOTS=$SLOTS_CSV BENCH_RATE=$rate BENCH_THREADS=$THREADS \
    timeout $((secs + 60)) "${PIN_WRK[@]+"${PIN_WRK[@]}"}" "${cmd[@]}" >"$outfile" 2>&1 || {
    echo "wrk failed (exit $?); see $outfile" >&2
    tail -n 5 "$outfile" >&2
    return 1
  }
  grep -q '^RESULT ' "$outfile" || { echo "no RESULT line in $outfile" >&2; return 1; }
}

field() { # field FILE NAME -> value from the RESULT line
  sed -n "s/^RESULT .* $2=\([^ ]*\).*/\1/p" "$1" | tail -n 1
}

declare -A RPS P50 P99 NON2XX CPU_US
# Empty unless a +subscribers mode runs; declared empty so that `set -u`
# can count it.
declare -A DELIVERY=()

# The server's CPU time so far (all threads, user and system), in clock
# ticks. Per request, it is a steadier figure than req/s on a noisy machine:
# other work on the server's core slows a run down but adds little CPU
# time to the server itself.
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# Busy and total ticks of each CPU ("cpuN busy total ..."), and the busy
# share of each between two such readings: whether the server's core or
# the load generator's was the one that ran out during a paced run.
core_ticks() {
  awk '/^cpu[0-9]/ { busy = $2 + $3 + $4 + $7 + $8 + $9; total = busy + $5 + $6
                     printf "%s %d %d ", $1, busy, total }' /proc/stat
}
core_shares() { # core_shares BEFORE AFTER
  awk -v a="$1" -v b="$2" 'BEGIN {
    n = split(a, x, " "); split(b, y, " ")
    for (i = 1; i <= n; i += 3) {
      total = y[i + 2] - x[i + 2]
      share = 0
      if (total > 0) share = 100 * (y[i + 1] - x[i + 1]) / total
      printf "%s%s %d%%", (i > 1 ? ", " : ""), x[i], share
    }
  }'
}
declare -A LAT_TARGET LAT_RPS LAT_P50 LAT_P99 LAT_NON2XX LAT_STATUS
# For a +subscribers mode paced at its plain mode's rate: that mode.
declare -A LAT_BASE=() LAT_CORES=()
record() { # record KEY FILE
  RPS[$1]=$(field "$2" rps)
  P50[$1]=$(field "$2" p50_ms)
  P99[$1]=$(field "$2" p99_ms)
  NON2XX[$1]=$(($(field "$2" non2xx) + $(field "$2" socket_errors)))
  echo "   $(grep '^RESULT ' "$2")"
}

mkdir -p "$OUT"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
{
  echo "date:        $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit:      $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty)')"
  echo "cpu:         $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $NPROC"
  echo "wrk:         $(wrk -v 2>&1 | head -n 1)"
  echo "load avg:    $LOAD_START (anything else running skews the figures)"
  echo "runs:        ${BENCH_SECONDS}s each, $BENCH_CONNECTIONS connections, $THREADS threads; warm-up ${BENCH_WARMUP}s; $BENCH_ROUNDS rounds"
  echo "schedule:    $BENCH_GROUPS groups x $BENCH_DOCTORS doctors x 8 slots on $BENCH_DATE (${#SLOT_IDS[@]} slots), capacity $BENCH_CAPACITY"
  if ((${#PIN_SERVER[@]})); then
    echo "cpu sharing: server pinned to CPU 0, wrk to CPU 1 (taskset); tokio sizes its"
    echo "             default worker pool from the affinity mask, so servers run 1 worker"
  else
    echo "cpu sharing: server and wrk share all $NPROC CPUs (no pinning)"
  fi
  echo "modes:       ${MODES[*]}"
} | tee "$OUT/env.txt"
echo "note: on this $NPROC-core machine the load generator competes with the server"
echo "      for CPU; absolute req/s are a floor, compare modes by their ratio to baseline."
echo "raw output:  $OUT"

# ---------------------------------------------------------------------------
# Phase 1: peak throughput. This machine's speed drifts by up to a fifth
# over minutes, the baseline's as much as the project's, so the modes take
# turns: each round runs every mode once, and a mode's ratio to the baseline
# is taken within each round and then the median over the rounds.
# ---------------------------------------------------------------------------
for ((round = 1; round <= BENCH_ROUNDS; round++)); do
  for mode in "${MODES[@]}"; do
    [[ -z ${RPS[$mode,failed]:-} ]] || continue
    note "$mode: peak throughput, round $round of $BENCH_ROUNDS"
    if ! start_server "$mode" "$OUT/$mode-peak.r$round.server.log"; then
      RPS[$mode,failed]=1
      continue
    fi
    if [[ $mode != baseline ]] && ! create_schedule; then
      echo "   schedule creation failed; skipping $mode" >&2
      stop_server
      RPS[$mode,failed]=1
      continue
    fi
    ok=1
    if ((BENCH_WARMUP > 0)); then
      run_wrk "$OUT/$mode-warmup.r$round.txt" loadtest/wrk/bookings-only.lua "$BENCH_CONNECTIONS" "$BENCH_WARMUP" || ok=0
    fi
    for script in bookings-only bookings; do
      ((ok)) || break
      f=$OUT/$mode-$script.r$round.txt
      start_subscribers "$mode" $((BENCH_SECONDS + 3)) "$OUT/$mode-$script.r$round.subscribers.txt"
      cpu_before=$(cpu_ticks "$SERVER_PID")
      if run_wrk "$f" "loadtest/wrk/$script.lua" "$BENCH_CONNECTIONS" "$BENCH_SECONDS"; then
        CPU_US[$mode,$script,$round]=$(awk -v t="$(($(cpu_ticks "$SERVER_PID") - cpu_before))" \
          -v hz="$CLK_TCK" -v n="$(field "$f" requests)" 'BEGIN { if (n > 0) printf "%.2f", t * 1e6 / hz / n }')
        record "$mode,$script,$round" "$f"
      else
        ok=0
      fi
      [[ -z $SUBSCRIBERS_PID ]] || wait "$SUBSCRIBERS_PID" || true
    done
    stop_server
    ((ok)) || RPS[$mode,failed]=1
  done
done

# round_ratios MODE SCRIPT REF: MODE's req/s over REF's in each round where
# both ran, one per line.
round_ratios() {
  local round v r
  for ((round = 1; round <= BENCH_ROUNDS; round++)); do
    v=${RPS[$1,$2,$round]:-} r=${RPS[$3,$2,$round]:-}
    [[ -n $v && -n $r ]] && awk -v a="$v" -v b="$r" 'BEGIN { printf "%.4f\n", a / b }'
  done
}
# median_and_range: numbers on stdin -> "median lowest highest" (the median of
# an even count is the mean of the two middle ones), nothing for no input.
median_and_range() {
  sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.2f %.2f %.2f\n", m, v[1], v[NR] }'
}
# For each mode and script: the median run stands for the mode (its req/s
# and latencies are shown; the lower of the two middle runs for an even
# count), and RATIO_* hold the median and range of the per-round ratios.
declare -A RATIO_BASE RANGE_BASE RATIO_MEM
for mode in "${MODES[@]}"; do
  for script in bookings-only bookings; do
    mid=$(for ((round = 1; round <= BENCH_ROUNDS; round++)); do
      [[ -n ${RPS[$mode,$script,$round]:-} ]] && echo "${RPS[$mode,$script,$round]} $round"
    done | sort -g | awk '{ r[NR] = $2 } END { if (NR) print r[int((NR + 1) / 2)] }')
    [[ -n $mid ]] || continue
    RPS[$mode,$script]=${RPS[$mode,$script,$mid]}
    P50[$mode,$script]=${P50[$mode,$script,$mid]}
    P99[$mode,$script]=${P99[$mode,$script,$mid]}
    NON2XX[$mode,$script]=${NON2XX[$mode,$script,$mid]}
    read -r median lowest highest < <(round_ratios "$mode" "$script" baseline | median_and_range) || true
    if [[ -n ${median:-} ]]; then
      RATIO_BASE[$mode,$script]=$median
      RANGE_BASE[$mode,$script]=$lowest-$highest
    fi
    read -r median _ _ < <(round_ratios "$mode" "$script" in-memory | median_and_range) || true
    [[ -n ${median:-} ]] && RATIO_MEM[$mode,$script]=$median
    median=""
    read -r median lowest highest < <(for ((round = 1; round <= BENCH_ROUNDS; round++)); do
      [[ -n ${CPU_US[$mode,$script,$round]:-} ]] && echo "${CPU_US[$mode,$script,$round]}"
    done | median_and_range) || true
    [[ -n ${median:-} ]] && CPU_US[$mode,$script]="$median ($lowest-$highest)"
    median=""
  done
done

# ---------------------------------------------------------------------------
# Phase 2: latency at about half of each mode's peak (mixed traffic), on a
# fresh server.
# ---------------------------------------------------------------------------
if [[ -n $WRK2 ]]; then
  LAT_TOOL="wrk2 -R (constant rate, latency corrected for coordinated omission)"
else
  LAT_TOOL="wrk + Lua pacer (BENCH_RATE): wrk2 is not packaged here; latency is timed from the actual send, not corrected for coordinated omission"
fi
for mode in "${MODES[@]}"; do
  # A +subscribers mode is paced at half of the peak of the same mode
  # without streams when that mode runs too: the issue's measure is the
  # booking throughput the streams leave at that load, side by side.
  base=${mode%+subscribers}
  of="the mixed peak"
  if [[ $base != "$mode" && -n ${RPS[$base,bookings]:-} ]]; then
    peak=${RPS[$base,bookings]}
    of="$base's mixed peak, without streams"
    LAT_BASE[$mode]=$base
  else
    peak=${RPS[$mode,bookings]:-}
  fi
  [[ -n $peak ]] || continue
  rate=$(awk -v r="$peak" 'BEGIN { printf "%d", r / 2 }')
  ((rate >= 1)) || continue
  note "$mode: latency pass at $rate req/s (half of $of), $BENCH_LAT_CONNECTIONS connections"
  LAT_TARGET[$mode]=$rate
  LAT_STATUS[$mode]=failed
  start_server "$mode" "$OUT/$mode-latency.server.log" || continue
  if [[ $mode != baseline ]] && ! create_schedule; then stop_server; continue; fi
  if ((BENCH_WARMUP > 0)); then
    run_wrk "$OUT/$mode-latency-warmup.txt" loadtest/wrk/bookings.lua "$BENCH_LAT_CONNECTIONS" "$BENCH_WARMUP" "$rate" || true
  fi
  f=$OUT/$mode-latency.txt
  start_subscribers "$mode" $((BENCH_SECONDS + 3)) "$OUT/$mode-latency.subscribers.txt"
  cores_before=$(core_ticks)
  if run_wrk "$f" loadtest/wrk/bookings.lua "$BENCH_LAT_CONNECTIONS" "$BENCH_SECONDS" "$rate"; then
    LAT_CORES[$mode]=$(core_shares "$cores_before" "$(core_ticks)")
    LAT_RPS[$mode]=$(field "$f" rps)
    LAT_P50[$mode]=$(field "$f" p50_ms)
    LAT_P99[$mode]=$(field "$f" p99_ms)
    LAT_NON2XX[$mode]=$(($(field "$f" non2xx) + $(field "$f" socket_errors)))
    LAT_STATUS[$mode]=ok
    echo "   $(grep '^RESULT ' "$f")"
  fi
  if [[ -n $SUBSCRIBERS_PID ]]; then
    wait "$SUBSCRIBERS_PID" || true
    echo "   subscribers: $(grep '^RESULT ' "$OUT/$mode-latency.subscribers.txt" || echo 'no result')"
    DELIVERY[$mode]=$(grep '^RESULT ' "$OUT/$mode-latency.subscribers.txt" || true)
  fi
  stop_server
done

# ---------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------
ratio() { # ratio VALUE BASE
  if [[ -n $1 && -n $2 ]]; then
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'
  else
    echo "-"
  fi
}
{
  echo
  echo "Peak throughput: ${BENCH_SECONDS}s per run, $BENCH_CONNECTIONS connections, $THREADS wrk threads, median of $BENCH_ROUNDS rounds"
  printf '%-10s %-14s %10s %9s %9s %8s %12s %11s %13s  %s\n' mode script "req/s" "p50 ms" "p99 ms" "non-2xx" "vs baseline" "range" "vs in-memory" "server CPU µs/req (range)"
  for mode in "${MODES[@]}"; do
    if [[ -n ${RPS[$mode,failed]:-} && -z ${RPS[$mode,bookings-only]:-} ]]; then
      printf '%-10s %-14s %10s\n' "$mode" "-" "FAILED (see $OUT/$mode-*.log / .txt)"
      continue
    fi
    for script in bookings-only bookings; do
      k=$mode,$script
      [[ -n ${RPS[$k]:-} ]] || continue
      printf '%-10s %-14s %10.0f %9s %9s %8s %12s %11s %13s  %s\n' "$mode" "$script" "${RPS[$k]}" \
        "${P50[$k]}" "${P99[$k]}" "${NON2XX[$k]}" "${RATIO_BASE[$k]:--}" "${RANGE_BASE[$k]:--}" \
        "${RATIO_MEM[$k]:--}" "${CPU_US[$k]:--}"
    done
  done
  echo
  echo "Latency at ~half of each mode's mixed peak (bookings.lua), ${BENCH_SECONDS}s, $BENCH_LAT_CONNECTIONS connections"
  echo "tool: $LAT_TOOL"
  printf '%-10s %12s %10s %9s %9s %8s %14s  %s\n' mode "target req/s" "req/s" "p50 ms" "p99 ms" "non-2xx" "p99 vs base" "busy CPUs"
  for mode in "${MODES[@]}"; do
    [[ -n ${LAT_TARGET[$mode]:-} ]] || continue
    if [[ ${LAT_STATUS[$mode]} != ok ]]; then
      printf '%-10s %12s %10s\n' "$mode" "${LAT_TARGET[$mode]}" FAILED
      continue
    fi
    printf '%-10s %12s %10.0f %9s %9s %8s %14s  %s\n' "$mode" "${LAT_TARGET[$mode]}" "${LAT_RPS[$mode]}" \
      "${LAT_P50[$mode]}" "${LAT_P99[$mode]}" "${LAT_NON2XX[$mode]}" \
      "$(ratio "${LAT_P99[$mode]}" "${LAT_P99[baseline]:-}")" "${LAT_CORES[$mode]:-}"
  done
  echo "busy CPUs: each CPU's busy share during the paced run (with BENCH_PIN=1, cpu0 is the"
  echo "server's, cpu1 wrk's and the stream reader's): a mode below its target rate with its"
  echo "server's CPU to spare was held back by the load generator."
  for mode in "${!LAT_BASE[@]}"; do
    base=${LAT_BASE[$mode]}
    [[ ${LAT_STATUS[$mode]:-} == ok && ${LAT_STATUS[$base]:-} == ok ]] || continue
    echo "$mode paced at half of $base's peak: $(ratio "${LAT_RPS[$mode]}" "${LAT_RPS[$base]}")x of $base's req/s at the same target rate"
  done
  if ((${#DELIVERY[@]})); then
    echo
    echo "Event delivery during the latency pass: $BENCH_SUBSCRIBERS_FILTERED streams filtered by doctor and $BENCH_SUBSCRIBERS_UNFILTERED unfiltered,"
    echo "delay from a change's decision (its \"at\") to its arrival at a stream"
    for mode in "${MODES[@]}"; do
      [[ -n ${DELIVERY[$mode]:-} ]] && printf '%-22s %s\n' "$mode" "${DELIVERY[$mode]#RESULT }"
    done
  fi
  echo
  echo "req/s: the mode's median run, whose latencies are shown beside it."
  echo "vs baseline: project / baseline req/s for the same script within each round, median"
  echo "over the rounds (1.00 = as fast as the bare stack); range: the lowest and highest round."
  echo "vs in-memory: the same against the in-memory mode (the cost of durability)."
  echo "p99 ratio: project / baseline p99 at each one's own half-peak rate (lower is better)."
  echo "non-2xx counts non-2xx responses plus socket errors/timeouts (details in the .txt files)."
  if ((${#PIN_SERVER[@]})); then
    echo "CPU: server pinned to CPU 0 (1 tokio worker), wrk to CPU 1; BENCH_PIN=0 to share both."
  else
    echo "CPU: server and wrk shared the $NPROC CPUs; figures include the contention."
  fi
  echo "load avg at the end: $(cut -d' ' -f1-3 /proc/loadavg) (at the start: $LOAD_START)"
  # A full waitlist answers 409 on a cheaper path: such a run flatters the
  # project, so say so where the figures are read.
  if grep -qs 'WAITLIST_FULL' "$OUT"/*.txt; then
    echo "WARNING: some bookings met a full waitlist (409 WAITLIST_FULL), which is cheaper"
    echo "         than a real booking; raise BENCH_MAX_RPS or BENCH_GROUPS and run again."
  fi
  # So is a no-show refused because the slot is not today's (a BENCH_DATE
  # other than today, or a run past midnight).
  if grep -qs 'NOT_TODAY' "$OUT"/*.txt; then
    echo "WARNING: some no-shows were refused 409 NOT_TODAY, which is cheaper than a real"
    echo "         no-show; date the schedule today (leave BENCH_DATE unset) and run again."
  fi
} | tee "$OUT/summary.txt"

failed=0
for mode in "${MODES[@]}"; do
  if [[ -n ${RPS[$mode,failed]:-} || ${LAT_STATUS[$mode]:-ok} != ok ]]; then failed=1; fi
done
exit "$failed"
