#!/usr/bin/env bash
# test-front-desk.sh BASE_URL: exercises every front-desk subcommand against a
# running OPD Token Engine and exits non-zero on any wrong behaviour.
#
# It creates its own slot (a unique doctor id and slot id, dated today in
# the server's zone, because check-in, call and no-show are allowed only on a
# slot's date) with curl first, so it can run any number of times against
# one server. OPD_API_KEY, when set, is sent by both curl and front-desk.
set -uo pipefail

if [[ $# -ne 1 || $1 == -h || $1 == --help ]]; then
  echo "Usage: ${0##*/} BASE_URL   (e.g. http://127.0.0.1:8080)" >&2
  exit 2
fi

BASE_URL=${1%/}
FRONT_DESK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/front-desk"
export OPD_URL=$BASE_URL

PASSED=0
FAILED=0
OUT=''
ERR=''
RC=0
WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/test-front-desk.XXXXXX")
trap 'rm -rf "$WORK_DIR"' EXIT

ok() { PASSED=$((PASSED + 1)); printf 'ok - %s\n' "$1"; }
not_ok() {
  FAILED=$((FAILED + 1))
  printf 'not ok - %s\n' "$1"
  printf '    %s\n' "${@:2}"
  printf '    --- stdout ---\n%s\n    --- stderr (exit %s) ---\n%s\n' "$OUT" "$RC" "$ERR" | sed 's/^/    /'
}

# fd ARGS...: runs front-desk, keeping stdout, stderr and the exit status.
fd() {
  "$FRONT_DESK" "$@" >"$WORK_DIR/out" 2>"$WORK_DIR/err"
  RC=$?
  OUT=$(<"$WORK_DIR/out")
  ERR=$(<"$WORK_DIR/err")
}

# check NAME [--rc N] [--out TEXT]... [--err TEXT]... [--no-out TEXT]...
# Checks the last fd run: exit status (default 0) and fixed strings in stdout/stderr.
check() {
  local name=$1 want_rc=0 problems=()
  shift
  while (($#)); do
    case $1 in
      --rc) want_rc=$2 ;;
      --out) grep -qF -- "$2" <<<"$OUT" || problems+=("stdout lacks: $2") ;;
      --err) grep -qF -- "$2" <<<"$ERR" || problems+=("stderr lacks: $2") ;;
      --no-out) ! grep -qF -- "$2" <<<"$OUT" || problems+=("stdout has: $2") ;;
    esac
    shift 2
  done
  ((RC == want_rc)) || problems+=("exit status $RC, wanted $want_rc")
  if ((want_rc != 0)) && [[ -n $OUT ]]; then problems+=("a failed command printed to stdout"); fi
  if ((${#problems[@]} == 0)); then ok "$name"; else not_ok "$name" "${problems[@]}"; fi
}

# same NAME ACTUAL EXPECTED: ok when the two texts are equal.
same() {
  if [[ $2 == "$3" ]]; then ok "$1"; else not_ok "$1" 'expected:' "$3"; fi
}

token_id() { sed -n 's/^  token id: //p' <<<"$OUT" | head -n 1; }

# --- a slot of our own ------------------------------------------------------
RUN="$(date +%s)-$RANDOM"
DOCTOR="FD-$RUN"
SLOT="FD-$RUN-09"
curl_auth=()
if [[ -n ${OPD_API_KEY-} ]]; then curl_auth=(--header "Authorization: Bearer $OPD_API_KEY"); fi
status=$(curl --silent --show-error --output "$WORK_DIR/slot" --write-out '%{http_code}' \
  "${curl_auth[@]}" --header 'Content-Type: application/json' \
  --data-binary "{\"slotId\":\"$SLOT\",\"doctorId\":\"$DOCTOR\",\"startTime\":\"09:00\",\"endTime\":\"10:00\",\"capacity\":2}" \
  "$BASE_URL/slots")
if [[ $status != 201 ]]; then
  echo "Bail out! could not create slot $SLOT at $BASE_URL: HTTP $status $(cat "$WORK_DIR/slot" 2>/dev/null)"
  exit 1
fi
DATE=$(grep -oE '"date":"[0-9-]+"' "$WORK_DIR/slot" | cut -d'"' -f4)
echo "# slot $SLOT (doctor $DOCTOR, $DATE 09:00–10:00, capacity 2) at $BASE_URL"
SUMMARY_PREFIX="Slot $SLOT (doctor $DOCTOR, $DATE 09:00–10:00):"

# --- usage ------------------------------------------------------------------
fd --help
check '--help prints usage and exits 0' --out 'Usage:' --out 'book PATIENT SLOT SOURCE [IDEMPOTENCY_KEY]' --out 'OPD_API_KEY'
fd
check 'no command is a usage error (exit 2)' --rc 2 --err 'Usage:'
fd frobnicate
check 'an unknown command is a usage error (exit 2)' --rc 2 --err 'unknown command'
fd book P1 "$SLOT"
check 'book without SOURCE is a usage error (exit 2)' --rc 2 --err 'book needs'

# --- bookings ---------------------------------------------------------------
fd book P1 "$SLOT" ONLINE
check 'book P1 ONLINE: allocated' \
  --out "Token 1 (ALLOCATED) for P1 in $SLOT — decision ALLOCATED" \
  --out "$SUMMARY_PREFIX 1/2 allocated, 0 waitlisted, 1 available" --no-out 'change:'
P1=$(token_id)

KEY="test-front-desk-$RUN-P2"
fd book P2 "$SLOT" online "$KEY"
check 'book P2 online (lower case) with an idempotency key: allocated, slot full' \
  --out "Token 2 (ALLOCATED) for P2 in $SLOT — decision ALLOCATED" \
  --out "$SUMMARY_PREFIX 2/2 allocated, 0 waitlisted, 0 available"
P2=$(token_id)
FIRST_P2=$OUT

fd book P2 "$SLOT" online "$KEY"
check 'the same booking retried with the same key: same token, nothing booked twice' --out "token id: $P2"
same 'the retry printed exactly the first answer' "$OUT" "$FIRST_P2"

fd book P3 "$SLOT" walk-in
check 'book P3 walk-in: waitlisted at position 1' \
  --out "Token 3 (WAITLISTED, waitlist position 1) for P3 in $SLOT — decision WAITLISTED" \
  --out "$SUMMARY_PREFIX 2/2 allocated, 1 waitlisted, 0 available"
P3=$(token_id)

fd book P4 "$SLOT" PAID
check 'book P4 PAID: bumps the latest ONLINE (P2) to the waitlist' \
  --out "Token 4 (ALLOCATED) for P4 in $SLOT — decision BUMPED_LOWER" \
  --out "$SUMMARY_PREFIX 2/2 allocated, 2 waitlisted, 0 available" \
  --out "  change: P2 (token $P2) ALLOCATED → WAITLISTED, reason BUMPED"
P4=$(token_id)

fd book P5 "$SLOT" EMERGENCY
check 'book P5 EMERGENCY: overbooks' \
  --out "Token 5 (ALLOCATED) for P5 in $SLOT — decision OVERBOOKED" \
  --out "$SUMMARY_PREFIX 3/2 allocated, 2 waitlisted, 0 available — OVERBOOKED by 1" --no-out 'change:'
P5=$(token_id)

# --- status -----------------------------------------------------------------
fd status "$SLOT"
# The server runs on UTC without --close-after-minutes: a slot closes at
# the end of its date.
closes_at="$(date -u -d "$DATE + 1 day" +%F)T00:00:00Z"
expected_status="$SUMMARY_PREFIX 3/2 allocated, 2 waitlisted, 0 available — OVERBOOKED by 1, closes at $closes_at
Allocated (service order):
  1. token 5  P5  EMERGENCY  $P5
  2. token 4  P4  PAID  $P4
  3. token 1  P1  ONLINE  $P1
Waitlist (promotion order):
  1. token 2  P2  ONLINE  $P2
  2. token 3  P3  WALK_IN  $P3"
check 'status exits 0' --out "$SUMMARY_PREFIX"
same 'status lists allocated and waitlist in order' "$OUT" "$expected_status"

# --- cancel, no-show, token ---------------------------------------------------
fd cancel "$P1"
check 'cancel P1: the seat absorbs the overbooking, nobody promoted' \
  --out "Token 1 (CANCELLED) for P1 in $SLOT" \
  --out "$SUMMARY_PREFIX 2/2 allocated, 2 waitlisted, 0 available" --no-out 'change:' --no-out 'OVERBOOKED'

fd no-show "$P4"
check 'no-show P4: promotes the bumped P2 ahead of the walk-in' \
  --out "Token 4 (NO_SHOW) for P4 in $SLOT" \
  --out "$SUMMARY_PREFIX 2/2 allocated, 1 waitlisted, 0 available" \
  --out "  change: P2 (token $P2) WAITLISTED → ALLOCATED, reason PROMOTED"

fd token "$P2"
check 'token P2: status and history' \
  --out "Token 2 (ALLOCATED) for P2 in $SLOT — ONLINE, priority 4, doctor $DOCTOR" --out "token id: $P2"
history=$(sed -n 's/^  [^ ]*  //p' <<<"${OUT#*History:}")
expected_history="new → ALLOCATED (ALLOCATED)
ALLOCATED → WAITLISTED (BUMPED)
WAITLISTED → ALLOCATED (PROMOTED)"
same 'token P2: history oldest first' "$history" "$expected_history"

fd token "${P3^^}"
check 'token P3 by its upper-case id: still waitlisted at position 1' \
  --out "Token 3 (WAITLISTED, waitlist position 1) for P3 in $SLOT — WALK_IN, priority 5"

# --- errors: non-zero exit, problem detail on stderr ------------------------
fd cancel "$P1"
check 'cancel P1 again: exit 1, 409 INVALID_TRANSITION on stderr' --rc 1 --err 'HTTP 409 INVALID_TRANSITION: '
fd no-show "$P3"
check 'no-show of a waitlisted token: exit 1, 409 INVALID_TRANSITION' --rc 1 --err 'HTTP 409 INVALID_TRANSITION: '
fd status "NO-SUCH-$RUN"
check 'status of an unknown slot: exit 1, 404 SLOT_NOT_FOUND' --rc 1 --err 'HTTP 404 SLOT_NOT_FOUND: '
fd book P9 "NO-SUCH-$RUN" ONLINE
check 'book into an unknown slot: exit 1, 404 SLOT_NOT_FOUND' --rc 1 --err 'HTTP 404 SLOT_NOT_FOUND: '
fd book P9 "$SLOT" VIP
check 'book with an invalid source: exit 1, 422 VALIDATION_FAILED naming the field' --rc 1 \
  --err 'HTTP 422 VALIDATION_FAILED: ' --err '  source: '
fd book P5 "$SLOT" ONLINE
check 'book P5 again: exit 1, 409 DUPLICATE_BOOKING with the existing token' --rc 1 \
  --err 'HTTP 409 DUPLICATE_BOOKING: ' --err "existing token: $P5"
fd token not-a-uuid
check 'a malformed token id: exit 1, 400 MALFORMED_REQUEST' --rc 1 --err 'HTTP 400 MALFORMED_REQUEST: '
fd token 00000000-0000-4000-8000-000000000000
check 'an unknown token: exit 1, 404 TOKEN_NOT_FOUND' --rc 1 --err 'HTTP 404 TOKEN_NOT_FOUND: '
fd book P9 "$SLOT" ONLINE "$KEY"
check 'the idempotency key reused with another body: exit 1, 422 IDEMPOTENCY_KEY_REUSED' --rc 1 \
  --err 'HTTP 422 IDEMPOTENCY_KEY_REUSED: '
if grep -qE 'HTTP [0-9]{3} [A-Z_]+: .+' <<<"$ERR"; then ok 'the problem detail is printed'; else not_ok 'the problem detail is printed'; fi

OPD_URL=http://127.0.0.1:9 fd status "$SLOT"
check 'an unreachable server: exit 3' --rc 3 --err 'cannot reach'

# The failed requests changed nothing.
fd status "$SLOT"
check 'after the errors the slot is unchanged' \
  --out "$SUMMARY_PREFIX 2/2 allocated, 1 waitlisted, 0 available" \
  --out "  1. token 5  P5  EMERGENCY  $P5" --out "  2. token 2  P2  ONLINE  $P2" --out "  1. token 3  P3  WALK_IN  $P3"

# --- the OPD day: a second slot of the same doctor, today ------------------
DAY_SLOT="FD-$RUN-11"
status=$(curl --silent --show-error --output "$WORK_DIR/slot" --write-out '%{http_code}' \
  "${curl_auth[@]}" --header 'Content-Type: application/json' \
  --data-binary "{\"slotId\":\"$DAY_SLOT\",\"doctorId\":\"$DOCTOR\",\"startTime\":\"11:00\",\"endTime\":\"12:00\",\"capacity\":4}" \
  "$BASE_URL/slots")
[[ $status == 201 ]] || { echo "Bail out! could not create slot $DAY_SLOT: HTTP $status"; exit 1; }
fd book Q1 "$DAY_SLOT" ONLINE
Q1=$(token_id)
fd book Q2 "$DAY_SLOT" ONLINE
Q2=$(token_id)
fd check-in "$Q1"
check 'check-in: CHECKED_IN with a queue position' --out "(CHECKED_IN, queue position 1, expected "
fd check-in "$Q2"
fd queue "$DOCTOR"
check 'queue lists the call queue in call order' --out 'With the doctor: nobody' \
  --out "  1. token 6  Q1  ONLINE  $Q1" --out "  2. token 7  Q2  ONLINE  $Q2"
fd call-next "$DOCTOR"
check 'call-next calls the first in call order' --out "(CALLED) for Q1 in $DAY_SLOT" --out "token id: $Q1"
fd call-next "$DOCTOR"
check 'call-next while the doctor is busy: exit 1, 409 DOCTOR_BUSY' --rc 1 --err 'HTTP 409 DOCTOR_BUSY: '
fd start "$Q1"
check 'start: IN_CONSULTATION' --out "(IN_CONSULTATION) for Q1"
fd complete "$Q1"
check 'complete: COMPLETED' --out "(COMPLETED) for Q1"
fd call-next "$DOCTOR"
fd skip "$Q2"
check 'skip: SKIPPED' --out "(SKIPPED) for Q2"
fd board
check 'board: the doctor by token numbers' --out "  $DOCTOR: now nobody; next: none; waiting 0" --no-out 'Q2'

# follow: a live stream of the doctor's changes, printed as they happen.
"$FRONT_DESK" follow "$DOCTOR" >"$WORK_DIR/follow" 2>&1 &
FOLLOWER=$!
sleep 1
fd check-in "$Q2"
for _ in $(seq 50); do
  grep -q 'RETURNED' "$WORK_DIR/follow" && break
  sleep 0.1
done
pkill -P "$FOLLOWER" 2>/dev/null; kill "$FOLLOWER" 2>/dev/null; wait "$FOLLOWER" 2>/dev/null
OUT=$(<"$WORK_DIR/follow") ERR='' RC=0
check 'follow DOCTOR: prints the return of Q2 as it happens' --out "$DAY_SLOT token" --out 'SKIPPED → CHECKED_IN (RETURNED)' --no-out 'Q2'
fd follow "$DOCTOR" extra
check 'follow with two arguments: exit 2' --rc 2 --err 'follow takes at most one DOCTOR'

# close: the admin closes the day's slot; the patient in the hall stays.
fd close "$DAY_SLOT"
check 'close: the slot is CLOSED' --out "Slot $DAY_SLOT" --out '— CLOSED at '
fd close "$DAY_SLOT"
check 'close a closed slot: exit 1, 409 SLOT_CLOSED' --rc 1 --err 'HTTP 409 SLOT_CLOSED: '

# absent: the doctor's day is closed and everyone still booked is listed to
# be phoned (the patient left in the hall among them); a second run changes
# nothing.
fd absent "$DOCTOR" "$DATE"
check 'absent DOCTOR DATE: the day closes, the patients to phone are listed' \
  --out "Doctor $DOCTOR is absent on $DATE." --out 'Patients to phone (' --out 'was CHECKED_IN' \
  --out '— CLOSED at '
fd absent "$DOCTOR" "$DATE"
check 'absent again: nothing changed, nobody to phone' \
  --out 'already recorded absent' --out 'Patients to phone (0):'
fd absent NO-SUCH-DOCTOR "$DATE"
check 'absent for an unknown doctor: exit 1, 404 DOCTOR_NOT_FOUND' --rc 1 --err 'HTTP 404 DOCTOR_NOT_FOUND: '
fd absent
check 'absent without DOCTOR: exit 2' --rc 2 --err 'absent needs DOCTOR [DATE]'

echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
