#!/usr/bin/env bash
# callgrind-bookings.sh: CPU instructions per booking of the in-memory
# server, counted by valgrind's callgrind, for each set of server flags
# given (default: metrics on, then `--metrics off`). Unlike req/s, an
# instruction count does not move with other work on the machine.
#
# For each set of flags the release binary runs under callgrind twice, with
# SMALL and LARGE bookings sent one after another over one keep-alive
# connection (every thread's instructions counted, start-up and schedule
# included); the difference of the two totals divided by LARGE - SMALL is
# the cost of one booking, everything it sets off included (the metrics'
# event follower too), with start-up cancelled out. One request at a time
# is the worst case for work done beside the request (each booking wakes
# the metrics' follower on its own), so a third run measures saturation:
# wrk with 64 connections for SATURATED seconds (valgrind runs the server
# some 50 times slower, so 64 connections keep it busy), its instructions
# less the start-up the first two runs give, divided by wrk's requests.
#
#   bash loadtest/callgrind-bookings.sh                     # on, then off
#   SMALL=500 LARGE=3000 bash loadtest/callgrind-bookings.sh "" "--metrics off"
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/opd-token-engine}
SMALL=${SMALL:-1000}
LARGE=${LARGE:-6000}
SATURATED=${SATURATED:-20}
OUT=${OUT:-target/callgrind-bookings}
[[ -x $BIN ]] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
(($# > 0)) || set -- "" "--metrics off"
mkdir -p "$OUT"

# Sends `count` bookings (20 slots of 50 seats today, sources in turn) and
# prints nothing; fails on any answer but 201.
client() {
  python3 - "$1" "$2" <<'EOF'
import http.client, json, sys, datetime
port, count = int(sys.argv[1]), int(sys.argv[2])
# count < 0: the schedule only, its slot ids printed for wrk.
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
def send(path, body):
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    reply = conn.getresponse()
    reply.read()
    if reply.status != 201:
        sys.exit(f"{path}: {reply.status}")
today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
for s in range(20):
    send("/slots", {"slotId": f"CG-{s}", "doctorId": f"CG{s}", "date": today,
                    "startTime": "08:00", "endTime": "16:00", "capacity": 50})
if count < 0:
    print(",".join(f"CG-{s}" for s in range(20)))
    sys.exit(0)
sources = ["WALK_IN", "ONLINE", "FOLLOW_UP", "PAID", "WALK_IN", "ONLINE", "EMERGENCY"]
for n in range(count):
    send("/tokens", {"patientId": f"P{n}", "slotId": f"CG-{n % 20}", "source": sources[n % len(sources)]})
EOF
}

# Runs the server under callgrind with flags $1 for $2 bookings (or, with
# "wrk", SATURATED seconds of wrk; then prints its request count too);
# prints the instruction total.
measure() {
  local flags=$1 count=$2 port file pid
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  file=$OUT/callgrind.$(tr -c 'a-z0-9' '_' <<<"${flags:-on}").$count
  # shellcheck disable=SC2086
  env OPD_RATE_LIMIT_PER_SECOND=0 RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$file" \
    "$BIN" --in-memory --listen "127.0.0.1:$port" $flags >"$file.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  local requests=""
  if [[ $count == wrk ]]; then
    BENCH_SLOTS=$(client "$port" -1) wrk -t1 -c64 -d"${SATURATED}s" -s loadtest/wrk/bookings-only.lua \
      "http://127.0.0.1:$port" >"$file.wrk" 2>&1
    requests=$(grep -o 'requests=[0-9]*' "$file.wrk" | head -1 | cut -d= -f2)
  else
    client "$port" "$count"
  fi
  kill -TERM "$pid"
  wait "$pid" || true
  echo "$(awk '/^(summary|totals):/ {print $2; exit}' "$file") $requests"
}

for flags in "$@"; do
  read -r small _ < <(measure "$flags" "$SMALL")
  read -r large _ < <(measure "$flags" "$LARGE")
  read -r busy requests < <(measure "$flags" wrk)
  awk -v f="${flags:-(metrics on)}" -v s="$small" -v l="$large" -v b="$busy" -v r="$requests" \
    -v small="$SMALL" -v large="$LARGE" 'BEGIN {
      per = (l - s) / (large - small); startup = s - small * per
      printf "%-16s one at a time: %6.0f instructions per booking; saturated: %6.0f (%d requests)\n",
        f, per, (b - startup) / r, r }'
done
