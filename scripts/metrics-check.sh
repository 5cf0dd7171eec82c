#!/usr/bin/env bash
# metrics-check.sh BASE_URL: checks a running OPD Token Engine's GET /metrics
# with `promtool check metrics` (Prometheus's own parser and linter: the text
# format, HELP and TYPE lines, counter and histogram naming).
#
# First it makes a little of everything happen, so that every metric the
# service has is rendered with a value: a slot of its own for today, a
# booking, a check-in and a call (the call estimate's error), an event
# stream open meanwhile (subscribers, delivery delay), an unknown path (the
# one "unmatched" route label). Then it checks the output with promtool and
# that every metric the README lists is there.
#
# Installs Debian's `prometheus` package (which ships promtool) when
# promtool is missing; run as root, as CI does. Point it only at a server
# you run yourself, open (no API keys) or with OPD_API_KEY set to an admin
# key, e.g.
#   target/release/opd-token-engine --in-memory --listen 127.0.0.1:8099
set -euo pipefail

if [[ $# -ne 1 || $1 == -h || $1 == --help ]]; then
  echo "Usage: ${0##*/} BASE_URL   (e.g. http://127.0.0.1:8099)" >&2
  exit 2
fi
BASE_URL=${1%/}

if ! command -v promtool >/dev/null; then
  echo "metrics-check.sh: installing promtool (Debian's prometheus package)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

AUTH=()
if [[ -n ${OPD_API_KEY:-} ]]; then
  AUTH=(-H "Authorization: Bearer $OPD_API_KEY")
fi
call() { curl -fsS "${AUTH[@]}" "$@"; }
json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]][sys.argv[2]])' "$@"; }

work=$(mktemp -d)
stream=
cleanup() {
  if [[ -n $stream ]]; then kill "$stream" 2>/dev/null || true; wait "$stream" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

suffix="$(date +%s)-$$"
slot="MC-$suffix"
doctor="MC-$suffix"
call -X POST "$BASE_URL/slots" -H 'content-type: application/json' \
  -d "{\"slotId\":\"$slot\",\"doctorId\":\"$doctor\",\"startTime\":\"00:00\",\"endTime\":\"23:59\",\"capacity\":2}" >/dev/null
# A stream open while the changes happen: it counts as a subscriber and
# its events' delivery is timed.
curl -sN "${AUTH[@]}" --max-time 5 "$BASE_URL/events" >"$work/stream" &
stream=$!
sleep 0.5
token=$(call -X POST "$BASE_URL/tokens" -H 'content-type: application/json' \
  -d "{\"patientId\":\"MC-P1\",\"slotId\":\"$slot\",\"source\":\"ONLINE\"}" | json_field token tokenId)
call -X POST "$BASE_URL/tokens/$token/check-in" >/dev/null
call -X POST "$BASE_URL/doctors/$doctor/call-next" >/dev/null
curl -s -o /dev/null "${AUTH[@]}" "$BASE_URL/metrics-check/no/such/path" || true
sleep 1
call "$BASE_URL/metrics" >"$work/metrics"

echo "metrics-check.sh: promtool check metrics on $(wc -l <"$work/metrics") lines from $BASE_URL/metrics"
promtool check metrics <"$work/metrics"

missing=0
for name in opd_http_requests_total opd_http_request_duration_seconds opd_bookings_total \
  opd_token_transitions_total opd_storage_commit_duration_seconds opd_storage_commit_batch_size \
  opd_storage_failed opd_event_subscribers opd_event_delivery_delay_seconds opd_queue_waiting \
  opd_wait_estimate_error_seconds; do
  if ! grep -q "^# TYPE $name " "$work/metrics"; then
    echo "metrics-check.sh: $name is missing" >&2
    missing=1
  fi
done
if ! grep -q 'route="unmatched"' "$work/metrics"; then
  echo "metrics-check.sh: unknown paths are not counted under route=\"unmatched\"" >&2
  missing=1
fi
if [[ $missing -ne 0 ]]; then exit 1; fi
echo "metrics-check.sh: every metric is there and promtool finds no problem"
