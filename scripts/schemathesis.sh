#!/usr/bin/env bash
# schemathesis.sh BASE_URL: property-based tests of a running OPD Token Engine
# against its own OpenAPI document (BASE_URL/openapi.json) with Schemathesis.
#
# Creates a virtual environment under target/schemathesis-venv (python3 -m
# venv), installs a pinned Schemathesis into it, generates requests for every
# documented operation (a bounded number per operation and phase) and checks
# every answer: no 5xx, documented status codes, content types, headers and
# body schemas, invalid input refused and valid input accepted (see
# scripts/schemathesis.toml for the statuses that count as accepted), Allow
# headers, and (when a key is
# given) that authentication is not ignored. Prints how many test cases were
# generated; exits non-zero on any failure.
#
# Environment (all optional):
#   OPD_API_KEY                    sent as `Authorization: Bearer` (use an
#                                  admin key: it may call every route); also
#                                  turns on the ignored_auth check
#   SCHEMATHESIS_MAX_EXAMPLES=50   test cases per operation and phase
#   SCHEMATHESIS_SEED              reproduce an earlier run
#   SCHEMATHESIS_WORKERS=1         more than one races in Python 3.11's
#                                  ast.parse (Hypothesis describes its
#                                  filters from their source) and fails a
#                                  run at random with "AST constructor
#                                  recursion depth mismatch"
#
# Point it only at a server you run yourself, e.g.
#   target/release/opd-token-engine --in-memory --listen 127.0.0.1:8099 \
#     --rate-limit-per-second 0
# (the default rate limit answers part of a fast run with 429).
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5

if [[ $# -ne 1 || $1 == -h || $1 == --help ]]; then
  echo "Usage: ${0##*/} BASE_URL   (e.g. http://127.0.0.1:8099)" >&2
  exit 2
fi
BASE_URL=${1%/}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$ROOT/target/schemathesis-venv
REPORT_DIR=$ROOT/target/schemathesis-report
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-50}
WORKERS=${SCHEMATHESIS_WORKERS:-1}

if [[ ! -x $VENV/bin/schemathesis ]] \
  || [[ $("$VENV/bin/schemathesis" --version 2>/dev/null) != *"$SCHEMATHESIS_VERSION"* ]]; then
  echo "schemathesis.sh: installing schemathesis $SCHEMATHESIS_VERSION into $VENV" >&2
  mkdir -p "$ROOT/target"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

if ! curl -fsS --max-time 10 "$BASE_URL/healthz" >/dev/null; then
  echo "schemathesis.sh: no healthy server at $BASE_URL" >&2
  exit 2
fi

CHECKS=not_a_server_error,status_code_conformance,content_type_conformance
CHECKS+=,response_headers_conformance,response_schema_conformance
CHECKS+=,negative_data_rejection,missing_required_header,unsupported_method
CHECKS+=,allow_header_conformance,use_after_free,ensure_resource_availability
CHECKS+=,positive_data_acceptance
HEADERS=()
if [[ -n ${OPD_API_KEY:-} ]]; then
  CHECKS+=,ignored_auth
  HEADERS=(--header "Authorization: Bearer $OPD_API_KEY")
fi
SEED=()
if [[ -n ${SCHEMATHESIS_SEED:-} ]]; then
  SEED=(--seed "$SCHEMATHESIS_SEED")
fi

rm -rf "$REPORT_DIR"
# GET /events is a stream that never ends: every case would wait out the
# request timeout. tests/api/stream.rs covers it over real HTTP instead.
set +e
# From target/, where Schemathesis keeps its .schemathesis/ cache.
(cd "$ROOT/target" && "$VENV/bin/schemathesis" --config-file "$ROOT/scripts/schemathesis.toml" \
  run "$BASE_URL/openapi.json" --checks "$CHECKS" --max-examples "$MAX_EXAMPLES" \
  --workers "$WORKERS" --request-timeout 30 --max-redirects 0 --exclude-path /events \
  --report "ndjson,junit" --report-dir "$REPORT_DIR" "${HEADERS[@]}" "${SEED[@]}")
STATUS=$?
set -e

# Count the test cases from the event stream: every scenario's cases.
CASES=$("$VENV/bin/python" - "$REPORT_DIR" <<'PY'
import json, pathlib, sys
cases = 0
for path in pathlib.Path(sys.argv[1]).glob("*.ndjson"):
    for line in path.read_text().splitlines():
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if finished:
            cases += len(finished.get("recorder", {}).get("cases", {}))
print(cases)
PY
) || CASES=unknown
echo "schemathesis.sh: $CASES test cases generated against $BASE_URL (max $MAX_EXAMPLES per operation and phase); exit status $STATUS"
exit "$STATUS"
