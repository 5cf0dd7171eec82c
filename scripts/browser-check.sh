#!/usr/bin/env bash
# browser-check.sh: the web pages' browser tests. Installs Debian's Chromium
# if it is missing, installs the tests' npm packages (no browser download),
# builds the release binary, starts it on a free port with the tests' API
# keys and a fresh data directory, runs the Playwright tests (which start
# servers of their own too, to restart one and to take the screenshots),
# and exits non-zero on any failure. Screenshots go to docs/screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# Chromium, a font with Devanagari for the board in Hindi (the
# screenshots would show empty boxes without one), and libfaketime, with
# which the report's tests set their server's wall clock, so that a day's
# waits are minutes and known in advance.
if ! command -v chromium >/dev/null || ! fc-list 2>/dev/null | grep -q Devanagari \
  || ! dpkg -s libfaketime >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-core libfaketime >/dev/null
fi
faketime_lib=$(dpkg -L libfaketime | grep '/libfaketime\.so\.1$')

(cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)

cargo build --release --locked
binary="$root/target/release/opd-token-engine"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
data_dir=$(mktemp -d)
"$binary" --listen "127.0.0.1:$port" --data-dir "$data_dir" \
  --api-keys-file tests/browser/api-keys.test \
  --rate-limit-per-second 0 >"$data_dir/server.log" 2>&1 &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$data_dir"
}
trap cleanup EXIT
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null

cd tests/browser
status=0
OPD_URL="http://127.0.0.1:$port" OPD_BINARY="$binary" CHROMIUM="$(command -v chromium)" FAKETIME_LIB="$faketime_lib" \
  SCREENSHOT_DIR="$root/docs/screenshots" npx playwright test || status=$?
if ((status != 0)); then
  echo "--- server log ---" >&2
  tail -n 50 "$data_dir/server.log" >&2
fi
exit "$status"
