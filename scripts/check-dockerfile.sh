#!/usr/bin/env bash
# check-dockerfile.sh [--no-build]: checks the Dockerfile's commands on a
# machine without a Docker engine.
#
# What it does, in order:
#   1. Reads the Dockerfile text (continuation lines joined, comments dropped)
#      and finds the runtime (last) stage, the stage its binary is copied from
#      ("builder"), and in the runtime stage ENV, EXPOSE, VOLUME, USER,
#      HEALTHCHECK and ENTRYPOINT.
#   2. Static checks: base images carry explicit tags, cargo-chef is installed
#      with --locked and a pinned version, the runtime user is not root,
#      EXPOSE matches the port in OPD_LISTEN, VOLUME holds OPD_DATA_DIR, and
#      ENTRYPOINT is the file copied from the builder.
#   3. Runs the builder stage's `RUN cargo build ...` command(s) exactly as
#      written, with sh -c, in the repository root (the builder's WORKDIR
#      after its `COPY . .`), with the builder's ENV and without host
#      variables that would change the build (DATABASE_URL, RUSTFLAGS,
#      CARGO_TARGET_DIR, ...). --no-build skips this and uses the binary
#      already there.
#   4. Checks that no build input (files named in cargo's dep-info files,
#      the workspace's sources and manifests, Cargo.lock) is excluded by
#      .dockerignore, so the same build inside the image sees the same inputs. The .dockerignore
#      matching here is an approximation of Docker's rules (see ignored()).
#   5. Starts the built binary as the ENTRYPOINT says, in an empty environment
#      holding only the runtime stage's ENV, with OPD_LISTEN overridden to
#      127.0.0.1:<free port> and OPD_DATA_DIR to a new temporary directory,
#      as the image's non-root user id when this runs as root (setpriv).
#   6. Runs the HEALTHCHECK command against it (with the host's curl, the
#      same program the image installs) until it passes or the start period
#      and retries run out, checks that it passed, stops the server, and
#      checks that the same command then fails. It also checks that the
#      server exits 0 on SIGTERM (STOPSIGNAL), since as PID 1 in the
#      container an unhandled SIGTERM would be ignored.
#
# What it does NOT check: that the image builds. The FROM images, apt-get,
# the cargo-chef planner/cacher steps, COPY of the build context, file
# ownership inside the image and the image's own libc are not exercised, nor
# is the image's own OPD_LISTEN=0.0.0.0:8080 (the server refuses a public
# address without API keys; the listen address is moved to loopback here).
# It checks the commands, not the image: a `docker build` is still the real
# test where an engine is available.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DOCKERFILE="$ROOT/Dockerfile"
DOCKERIGNORE="$ROOT/.dockerignore"
BUILD=true
case ${1-} in
  --no-build) BUILD=false ;;
  '') ;;
  -h | --help)
    sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
  *) echo "usage: ${0##*/} [--no-build]" >&2; exit 2 ;;
esac

PASSED=0
FAILED=0
ok() { PASSED=$((PASSED + 1)); printf 'ok - %s\n' "$1"; }
not_ok() { FAILED=$((FAILED + 1)); printf 'not ok - %s\n' "$1"; (($# > 1)) && printf '    %s\n' "${@:2}"; return 0; }
expect() { # NAME CONDITION-COMMAND... : ok when the command succeeds
  local name=$1
  shift
  if "$@"; then ok "$name"; else not_ok "$name"; fi
}
finish() {
  echo "$PASSED passed, $FAILED failed"
  ((FAILED == 0))
  exit
}

WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/check-dockerfile.XXXXXX")
SERVER_PID=''
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
  fi
  rm -rf "$WORK_DIR"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------
# 1. Parse the Dockerfile into instructions.
# ---------------------------------------------------------------------------
[[ -f $DOCKERFILE ]] || { not_ok "Dockerfile exists at $DOCKERFILE"; finish; }

INSTR=()  # "STAGE<TAB>KEYWORD<TAB>ARGUMENTS"
STAGE_NAMES=()  # index → name (or the index itself)
STAGE_BASES=()  # index → image or stage name after FROM
declare -A GLOBAL_ARGS=()

parse_dockerfile() {
  local line joined='' stage=-1 keyword rest name base
  while IFS= read -r line || [[ -n $line ]]; do
    [[ $line =~ ^[[:space:]]*# ]] && continue
    [[ -z ${line//[[:space:]]/} ]] && continue
    if [[ $line =~ \\[[:space:]]*$ ]]; then
      joined+="${line%\\*} "
      continue
    fi
    line="$joined$line"
    joined=''
    line="${line#"${line%%[![:space:]]*}"}"
    keyword=${line%%[[:space:]]*}
    keyword=${keyword^^}
    rest=${line#*[[:space:]]}
    rest="${rest#"${rest%%[![:space:]]*}"}"
    if [[ $keyword == FROM ]]; then
      stage=$((stage + 1))
      read -r base _ name <<<"$rest"
      base=$(expand_args "$base")
      STAGE_BASES[stage]=$base
      STAGE_NAMES[stage]=${name:-$stage}
    elif ((stage < 0)) && [[ $keyword == ARG ]]; then
      GLOBAL_ARGS[${rest%%=*}]=$([[ $rest == *=* ]] && printf '%s' "${rest#*=}")
    fi
    INSTR+=("$stage"$'\t'"$keyword"$'\t'"$rest")
  done <"$DOCKERFILE"
}

# expand_args TEXT: ${NAME} and $NAME from the ARGs declared before the first FROM.
expand_args() {
  local text=$1 name
  for name in "${!GLOBAL_ARGS[@]}"; do
    text=${text//\$\{$name\}/${GLOBAL_ARGS[$name]}}
    text=${text//\$$name/${GLOBAL_ARGS[$name]}}
  done
  printf '%s' "$text"
}

stage_index() { # NAME → index
  local i
  for i in "${!STAGE_NAMES[@]}"; do
    [[ ${STAGE_NAMES[i],,} == "${1,,}" ]] && { echo "$i"; return 0; }
  done
  return 1
}

# instructions STAGE KEYWORD: the arguments of each KEYWORD in STAGE, one a line.
instructions() {
  local entry s k r
  for entry in "${INSTR[@]}"; do
    IFS=$'\t' read -r s k r <<<"$entry"
    [[ $s == "$1" && $k == "$2" ]] && printf '%s\n' "$r"
  done
  return 0
}

# stage_chain STAGE: the stage and the stages it is built FROM, base first.
stage_chain() {
  local i=$1 chain=()
  while :; do
    chain=("$i" "${chain[@]}")
    i=$(stage_index "${STAGE_BASES[i]}") || break
  done
  printf '%s\n' "${chain[@]}"
}

# env_pairs STAGE...: KEY=VALUE lines from ENV instructions of the stages, in order.
env_pairs() {
  local stage rest first
  for stage in "$@"; do
    while IFS= read -r rest; do
      [[ -z $rest ]] && continue
      first=${rest%%[[:space:]]*}
      if [[ $first == *=* ]]; then
        # KEY=VALUE ... with shell-like quoting; xargs does the unquoting.
        xargs -n 1 printf '%s\n' <<<"$rest"
      else
        printf '%s=%s\n' "$first" "${rest#*[[:space:]]}" # legacy "ENV KEY VALUE"
      fi
    done < <(instructions "$stage" ENV)
  done
}

json_strings() { # a JSON array of strings → one element a line
  grep -oE '"([^"\\]|\\.)*"' <<<"$1" | sed 's/^"//; s/"$//; s/\\"/"/g; s/\\\\/\\/g'
}

seconds() { # Docker duration (30s, 1m30s, 500ms) → whole seconds, at least 1
  local d=$1 total=0 n unit
  while [[ $d =~ ^([0-9]+)(ms|s|m|h)(.*)$ ]]; do
    n=${BASH_REMATCH[1]} unit=${BASH_REMATCH[2]} d=${BASH_REMATCH[3]}
    case $unit in ms) ;; s) total=$((total + n)) ;; m) total=$((total + n * 60)) ;; h) total=$((total + n * 3600)) ;; esac
  done
  echo $((total < 1 ? 1 : total))
}

parse_dockerfile
LAST=$((${#STAGE_NAMES[@]} - 1))
((LAST >= 0)) || { not_ok 'the Dockerfile has a FROM'; finish; }
echo "# stages: ${STAGE_NAMES[*]} (runtime: ${STAGE_NAMES[LAST]})"

# ---------------------------------------------------------------------------
# 2. Static checks.
# ---------------------------------------------------------------------------
for i in "${!STAGE_BASES[@]}"; do
  base=${STAGE_BASES[i]}
  stage_index "$base" >/dev/null && continue
  if [[ $base =~ :[A-Za-z0-9_.-]+$|@sha256: ]] && [[ ! $base =~ :latest$ ]]; then
    ok "stage ${STAGE_NAMES[i]}: base image $base has an explicit tag"
  else
    not_ok "stage ${STAGE_NAMES[i]}: base image $base has an explicit tag"
  fi
done
chef_install=$(for i in "${!STAGE_NAMES[@]}"; do instructions "$i" RUN; done | grep -E 'cargo install .*cargo-chef' | head -n 1)
expect 'cargo-chef is installed with --locked' grep -q -- '--locked' <<<"$chef_install"
expect 'cargo-chef is installed at a pinned --version' grep -qE -- '--version[ =]"?[0-9]+\.[0-9]+\.[0-9]+' <<<"$(expand_args "$chef_install")"
for step in 'cargo chef prepare' 'cargo chef cook'; do
  expect "a stage runs \"$step\"" grep -q "$step" < <(for i in "${!STAGE_NAMES[@]}"; do instructions "$i" RUN; done)
done

mapfile -t RUNTIME_CHAIN < <(stage_chain "$LAST")
mapfile -t RUNTIME_ENV < <(env_pairs "${RUNTIME_CHAIN[@]}")
runtime_env() { # KEY → value of the last ENV of KEY in the runtime stage
  local pair value=''
  for pair in "${RUNTIME_ENV[@]}"; do [[ ${pair%%=*} == "$1" ]] && value=${pair#*=}; done
  printf '%s' "$value"
}
echo "# runtime ENV: ${RUNTIME_ENV[*]}"
LISTEN=$(runtime_env OPD_LISTEN)
DATA_DIR=$(runtime_env OPD_DATA_DIR)
expect 'ENV OPD_LISTEN=0.0.0.0:8080' test "$LISTEN" = 0.0.0.0:8080
expect 'ENV OPD_DATA_DIR=/data' test "$DATA_DIR" = /data
EXPOSED=$(instructions "$LAST" EXPOSE | tr ' ' '\n' | sed 's|/tcp$||' | grep -v '^$')
expect "EXPOSE ${EXPOSED//$'\n'/ } includes the OPD_LISTEN port ${LISTEN##*:}" grep -qx "${LISTEN##*:}" <<<"$EXPOSED"
VOLUMES=$(instructions "$LAST" VOLUME)
VOLUMES=$(if [[ $VOLUMES == \[* ]]; then json_strings "$VOLUMES"; else tr ' ' '\n' <<<"$VOLUMES"; fi)
expect "VOLUME includes OPD_DATA_DIR ($DATA_DIR)" grep -qx "$DATA_DIR" <<<"$VOLUMES"
RUNTIME_USER=$(for i in "${RUNTIME_CHAIN[@]}"; do instructions "$i" USER; done | tail -n 1)
if [[ -n $RUNTIME_USER && ! $RUNTIME_USER =~ ^(root|0)(:.*)?$ ]]; then
  ok "the runtime runs as a non-root user ($RUNTIME_USER)"
else
  not_ok "the runtime runs as a non-root user" "USER is '${RUNTIME_USER:-unset}'"
fi
IMAGE_UID=$(sed -n 's/.*useradd.*--uid[ =]\([0-9]*\).*/\1/p' <<<"$(instructions "$LAST" RUN)" | head -n 1)

ENTRYPOINT_RAW=$(instructions "$LAST" ENTRYPOINT | tail -n 1)
if [[ $ENTRYPOINT_RAW != \[* ]]; then
  not_ok 'ENTRYPOINT is in exec form' "ENTRYPOINT $ENTRYPOINT_RAW"
  finish
fi
mapfile -t ENTRYPOINT < <(json_strings "$ENTRYPOINT_RAW")
CMD_RAW=$(instructions "$LAST" CMD | tail -n 1)
CMD_ARGS=()
[[ $CMD_RAW == \[* ]] && mapfile -t CMD_ARGS < <(json_strings "$CMD_RAW")
expect "ENTRYPOINT is ${ENTRYPOINT[0]}" test "${ENTRYPOINT[0]}" = /usr/local/bin/opd-token-engine

# The COPY --from=STAGE SOURCE DESTINATION that puts the ENTRYPOINT binary in place.
BUILDER='' BIN_SOURCE=''
while IFS= read -r copy; do
  [[ $copy =~ --from=([^[:space:]]+)[[:space:]]+([^[:space:]]+)[[:space:]]+([^[:space:]]+)$ ]] || continue
  from=${BASH_REMATCH[1]} src=${BASH_REMATCH[2]} dest=${BASH_REMATCH[3]}
  if [[ $dest == "${ENTRYPOINT[0]}" || ${dest%/}/${src##*/} == "${ENTRYPOINT[0]}" ]]; then
    BUILDER=$from BIN_SOURCE=$src
  fi
done < <(instructions "$LAST" COPY)
if [[ -z $BUILDER ]] || ! BUILDER_INDEX=$(stage_index "$BUILDER"); then
  not_ok 'the runtime stage copies the ENTRYPOINT binary from a build stage'
  finish
fi
ok "the ENTRYPOINT binary is copied from stage $BUILDER ($BIN_SOURCE)"

mapfile -t BUILDER_CHAIN < <(stage_chain "$BUILDER_INDEX")
WORKDIR=$(for i in "${BUILDER_CHAIN[@]}"; do instructions "$i" WORKDIR; done | tail -n 1)
if instructions "$BUILDER_INDEX" COPY | grep -qE '^\.[[:space:]]+\.$'; then
  ok "stage $BUILDER copies the build context into its WORKDIR ($WORKDIR), so the repository root stands for it"
else
  not_ok "stage $BUILDER copies the build context (COPY . .) into its WORKDIR"
fi
if [[ $BIN_SOURCE != "${WORKDIR%/}/"* ]]; then
  not_ok "the copied binary $BIN_SOURCE lies under WORKDIR $WORKDIR"
  finish
fi
HOST_BINARY="$ROOT/${BIN_SOURCE#"${WORKDIR%/}/"}"

# ---------------------------------------------------------------------------
# 3. Run the builder's cargo build command(s) as written.
# ---------------------------------------------------------------------------
mapfile -t BUILD_COMMANDS < <(instructions "$BUILDER_INDEX" RUN | grep -E '^cargo build')
if ((${#BUILD_COMMANDS[@]} == 0)); then
  not_ok "stage $BUILDER has a RUN cargo build command"
  finish
fi
mapfile -t BUILDER_ENV < <(env_pairs "${BUILDER_CHAIN[@]}")
if $BUILD; then
  for command in "${BUILD_COMMANDS[@]}"; do
    echo "# building as stage $BUILDER does: $command"
    if (cd "$ROOT" &&
      env -u DATABASE_URL -u SQLX_OFFLINE -u SQLX_OFFLINE_DIR -u CARGO_TARGET_DIR \
        -u CARGO_BUILD_TARGET_DIR -u CARGO_BUILD_TARGET -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS \
        -u CARGO_BUILD_RUSTFLAGS "${BUILDER_ENV[@]}" sh -c "$command") >"$WORK_DIR/build.log" 2>&1; then
      ok "builder command succeeds: $command"
    else
      not_ok "builder command succeeds: $command" "$(tail -n 20 "$WORK_DIR/build.log")"
      finish
    fi
  done
else
  echo "# --no-build: not running ${BUILD_COMMANDS[*]}"
fi
if [[ -x $HOST_BINARY ]]; then
  ok "the build leaves the binary the runtime stage copies (${HOST_BINARY#"$ROOT/"})"
else
  not_ok "the build leaves the binary the runtime stage copies (${HOST_BINARY#"$ROOT/"})"
  finish
fi

# ---------------------------------------------------------------------------
# 4. .dockerignore keeps every build input in the context.
# ---------------------------------------------------------------------------
# ignored PATH: whether .dockerignore excludes PATH (relative to the context).
# Approximates Docker's rules: last matching pattern wins, "!" re-includes, a
# pattern matches the path itself or any directory above it. Here "*" may also
# match "/", which errs on the side of reporting a file as excluded.
IGNORE_PATTERNS=()
if [[ -f $DOCKERIGNORE ]]; then
  while IFS= read -r pattern || [[ -n $pattern ]]; do
    pattern="${pattern#"${pattern%%[![:space:]]*}"}"
    pattern="${pattern%"${pattern##*[![:space:]]}"}"
    [[ -z $pattern || $pattern == \#* ]] && continue
    IGNORE_PATTERNS+=("$pattern")
  done <"$DOCKERIGNORE"
fi
ignored() {
  local path=$1 pattern negate result=1 prefix part
  for pattern in "${IGNORE_PATTERNS[@]}"; do
    negate=false
    [[ $pattern == !* ]] && { negate=true; pattern=${pattern#!}; }
    pattern=${pattern#/}
    pattern=${pattern#./}
    prefix=''
    # The path or one of its parent directories matches.
    local matched=false
    IFS=/ read -ra parts <<<"$path"
    for part in "${parts[@]}"; do
      prefix=${prefix:+$prefix/}$part
      # shellcheck disable=SC2053 # the pattern is a glob on purpose
      if [[ $prefix == $pattern || ($pattern == '**/'* && ($prefix == ${pattern#'**/'} || $prefix == */${pattern#'**/'})) ]]; then
        matched=true
        break
      fi
    done
    if $matched; then
      if $negate; then result=1; else result=0; fi
    fi
  done
  return $result
}
# The build's inputs: the repository's files named in cargo's dep-info files
# (sources, include_str! files, migrations), every manifest of the workspace,
# Cargo.lock, and every file git sees under the root package's source
# directories and under each other workspace member (in case the dep-info is
# older than the binary, e.g. when tests built it).
INPUTS=()
for dep_info in "${HOST_BINARY}.d" "$(dirname "$HOST_BINARY")"/lib*.d; do
  [[ -f $dep_info ]] || continue
  # "target: dep dep ..." with absolute paths; keep the repository's own files.
  mapfile -t -O "${#INPUTS[@]}" INPUTS < <(sed 's/^[^:]*: //' "$dep_info" | tr ' ' '\n' | grep "^$ROOT/" | sed "s|^$ROOT/||")
done
MEMBER_DIRS=()
while IFS= read -r manifest; do
  INPUTS+=("${manifest#"$ROOT/"}")
  [[ $manifest != "$ROOT/Cargo.toml" ]] && MEMBER_DIRS+=("$(dirname "${manifest#"$ROOT/"}")")
done < <(cd "$ROOT" && cargo metadata --no-deps --format-version 1 --offline 2>/dev/null |
  grep -oE '"manifest_path":"[^"]*"' | sed 's/^"manifest_path":"//; s/"$//')
mapfile -t -O "${#INPUTS[@]}" INPUTS < <(cd "$ROOT" && git ls-files --cached --others --exclude-standard -- \
  src build.rs migrations .sqlx benches examples "${MEMBER_DIRS[@]}" 2>/dev/null)
INPUTS+=(Cargo.lock)
mapfile -t INPUTS < <(printf '%s\n' "${INPUTS[@]}" | grep -v '^$' | sort -u)
excluded=()
for input in "${INPUTS[@]}"; do
  ignored "$input" && excluded+=("$input")
done
if ((${#INPUTS[@]} < 3)); then
  not_ok 'build inputs found (dep-info files, manifests, sources)'
elif ((${#excluded[@]} == 0)); then
  ok ".dockerignore excludes none of the ${#INPUTS[@]} build inputs (sources, manifests, Cargo.lock)"
else
  not_ok '.dockerignore excludes none of the build inputs' "${excluded[@]}"
fi
expect '.dockerignore keeps target/ out of the context' ignored target/release/opd-token-engine
expect '.dockerignore keeps the local data directory out of the context' ignored data/opd.db

# ---------------------------------------------------------------------------
# 5. Start the binary with the runtime ENV (listen address and data overridden).
# ---------------------------------------------------------------------------
free_port() {
  local port
  for _ in $(seq 1 50); do
    port=$((20000 + RANDOM % 40000))
    # Nothing answers on it: connecting fails.
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  return 1
}
PORT=$(free_port) || { not_ok 'found a free port'; finish; }
DATA="$WORK_DIR/data"
mkdir -p "$DATA"
RUN_ENV=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/nonexistent)
for pair in "${RUNTIME_ENV[@]}"; do
  case ${pair%%=*} in OPD_LISTEN | OPD_DATA_DIR) ;; *) RUN_ENV+=("$pair") ;; esac
done
RUN_ENV+=("OPD_LISTEN=127.0.0.1:$PORT" "OPD_DATA_DIR=$DATA")

# As root, drop to the image's user id (the data directory is its own, as
# /data is in the image), so a server that needs root to start fails here too.
AS_USER=()
if [[ $(id -u) == 0 && -n $IMAGE_UID ]] && command -v setpriv >/dev/null; then
  chown "$IMAGE_UID:$IMAGE_UID" "$DATA"
  chmod 755 "$WORK_DIR"
  AS_USER=(setpriv --reuid="$IMAGE_UID" --regid="$IMAGE_UID" --clear-groups)
  echo "# running the server as uid $IMAGE_UID, like the image's USER"
fi
echo "# starting: ${RUN_ENV[*]} ${ENTRYPOINT[*]} ${CMD_ARGS[*]} (as ${HOST_BINARY#"$ROOT/"})"
env -i "${RUN_ENV[@]}" "${AS_USER[@]}" "$HOST_BINARY" "${ENTRYPOINT[@]:1}" "${CMD_ARGS[@]}" \
  >"$WORK_DIR/server.log" 2>&1 &
SERVER_PID=$!

# ---------------------------------------------------------------------------
# 6. The HEALTHCHECK passes against it, and fails once it is gone.
# ---------------------------------------------------------------------------
HEALTHCHECK_RAW=$(instructions "$LAST" HEALTHCHECK | tail -n 1)
if [[ -z $HEALTHCHECK_RAW || ${HEALTHCHECK_RAW^^} == NONE ]]; then
  not_ok 'the runtime stage has a HEALTHCHECK'
  finish
fi
interval=30 timeout=30 start_period=0 retries=3
options=${HEALTHCHECK_RAW%%CMD*}
for option in $options; do
  case $option in
    --interval=*) interval=$(seconds "${option#*=}") ;;
    --timeout=*) timeout=$(seconds "${option#*=}") ;;
    --start-period=*) start_period=$(seconds "${option#*=}") ;;
    --retries=*) retries=${option#*=} ;;
  esac
done
HEALTH_CMD=${HEALTHCHECK_RAW#*CMD}
HEALTH_CMD="${HEALTH_CMD#"${HEALTH_CMD%%[![:space:]]*}"}"
if [[ $HEALTH_CMD == \[* ]]; then
  mapfile -t HEALTH_ARGV < <(json_strings "$HEALTH_CMD")
  [[ ${HEALTH_ARGV[0]} == CMD-SHELL ]] && HEALTH_ARGV=(/bin/sh -c "${HEALTH_ARGV[1]}")
else
  HEALTH_ARGV=(/bin/sh -c "$HEALTH_CMD") # shell form, as Docker runs it
fi
echo "# HEALTHCHECK: ${HEALTH_ARGV[*]} (timeout ${timeout}s, start period ${start_period}s, retries $retries)"
expect 'HEALTHCHECK calls /healthz' grep -q '/healthz' <<<"${HEALTH_ARGV[*]}"

health() { env -i "${RUN_ENV[@]}" timeout "$timeout" "${HEALTH_ARGV[@]}" >"$WORK_DIR/health.log" 2>&1; }

# Docker gives the container the start period, then marks it unhealthy after
# `retries` consecutive failures `interval` apart; polling once a second for
# that long is at least as lenient about start-up and stricter about the answer.
deadline=$((SECONDS + start_period + retries * (interval < 5 ? interval : 5) + 5))
healthy=false
while ((SECONDS < deadline)); do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
  if health; then healthy=true; break; fi
  sleep 1
done
if $healthy; then
  ok "HEALTHCHECK passes against the server on 127.0.0.1:$PORT"
else
  not_ok "HEALTHCHECK passes against the server on 127.0.0.1:$PORT" \
    "last check: $(tr '\n' ' ' <"$WORK_DIR/health.log")" "server log:" "$(tail -n 20 "$WORK_DIR/server.log")"
fi
if kill -0 "$SERVER_PID" 2>/dev/null; then
  ok 'the server is still running after the health check'
  kill "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null
  status=$?
  SERVER_PID=''
  # The exec-form ENTRYPOINT makes the server PID 1 in the container, and the
  # kernel drops signals that PID 1 has no handler for: a server that does not
  # handle SIGTERM (exit 143 here) would ignore `docker stop` until SIGKILL.
  if ((status == 0)); then ok 'the server exits 0 on SIGTERM (STOPSIGNAL)'; else not_ok 'the server exits 0 on SIGTERM (STOPSIGNAL)' "exit status $status"; fi
else
  not_ok 'the server is still running after the health check' "server log:" "$(tail -n 20 "$WORK_DIR/server.log")"
  SERVER_PID=''
fi
if health; then
  not_ok 'HEALTHCHECK fails once the server is stopped'
else
  ok 'HEALTHCHECK fails once the server is stopped'
fi

finish
