#!/usr/bin/env bash
# Run ETSI NGSI-LD conformance areas (Robot Framework suite) against a freshly built twinlink.
#
# Usage: scripts/conformance.sh [options] [AREA ...] [-- EXTRA_ROBOT_ARGS ...]
#   AREA   a directory of the suite below TP/NGSI-LD/ (the "TP/NGSI-LD/" prefix is optional;
#          IOP_TP/... paths are passed through), e.g. ContextInformation/Consumption/Entity/RetrieveEntity
#          default: the areas in DEFAULT_AREAS below
#   EXTRA_ROBOT_ARGS  handed to robot through the runner, e.g. -- --test '018_01*'
#
# Options:
#   --no-build        don't run `cargo build --release` (use the existing binary)
#   --url URL         don't start a broker; test the one at URL (must end in /ngsi-ld/v1)
#   --out DIR         results directory (default: target/conformance/<timestamp>)
#   --port N          broker port (default 1026, env TWINLINK_PORT)
#   --rewrite P=R     one more --context-rewrite for the broker (repeatable)
#   --keep-data       keep the broker's temporary data directory
#   --strict          exit 1 when any test failed (default: exit 0 once every area ran)
#
# Environment:
#   ETSI_RUN          the shared runner (default ../shared/tools/etsi-run.sh, relative to the repo root)
#   ETSI_SUITE / ETSI_SUITE_GIT   where the runner finds the suite (see the runner's --help);
#                     ETSI_VENV, ETSI_CTX_PORT (default 8090) etc. are passed through as well
#   TWINLINK_BIN      broker binary (default <cargo target dir>/release/twinlink)
#   TWINLINK_DATABASE_URL   when set, handed to the broker as --database-url
#   ETSI_FIWARE_TESTSUITE_GIT / ETSI_FIWARE_DATAMODELS_GIT   bare git dirs of FIWARE/NGSI-LD_TestSuite
#                     and FIWARE/data-models: when both are set, the two documents the jsonldContext
#                     tests name on fiware.github.io (ldContext/testContext.jsonld, context.jsonld)
#                     are served from them on 127.0.0.1:ETSI_FIWARE_PORT (default 8091) and the
#                     broker rewrites https://fiware.github.io/ there
#   ETSI_MAX_TEMPORAL_INSTANCES   the broker's --max-temporal-instances (default 10). The temporal
#                     pagination tests (020_13, 020_14, 021_15, 021_16) post 20 or 59 instances per
#                     attribute and expect a 206 cut; GS CIM 009 6.3.10 leaves the limit to the
#                     implementation's configuration, so the suite runs with one below 20.
#
# Per area, robot's output lands in OUT/<area-slug>/ and a line "area: passed/total" is printed
# and appended to OUT/summary.txt (detail with failures in OUT/<area-slug>/summary.txt).
#
# @context resolution: the suite references its @context as
#   https://raw.githubusercontent.com/marek-mraz/ngsi-ld-test-suite/main/resources/jsonld-contexts/...
# and the runner serves a mirror of those paths on http://127.0.0.1:$ETSI_CTX_PORT/ while robot runs.
# The broker is therefore started with
#   --context-rewrite https://raw.githubusercontent.com/=http://127.0.0.1:$ETSI_CTX_PORT/
# (the broker keeps the original URL in responses; only the fetch goes to the mirror). The
# ETSI core @context URLs (https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.x.jsonld) are
# not served by anyone offline: the broker has to know them built in.
set -u -o pipefail

DEFAULT_AREAS=(
    ContextInformation/Provision/Entities
    ContextInformation/Provision/EntityAttributes
    ContextInformation/Provision/BatchEntities
    ContextInformation/Consumption/Entity
    CommonBehaviours
)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 3

log() { echo "[conformance] $*" >&2; }
die() { log "ERROR: $*"; exit 3; }

BUILD=1; URL=""; OUT=""; KEEP_DATA=0; STRICT=0
PORT="${TWINLINK_PORT:-1026}"
EXTRA_REWRITES=(); AREAS=(); ROBOT_ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) sed -n '2,/^set -u/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
        --no-build) BUILD=0 ;;
        --url) URL="${2:?--url needs a value}"; shift ;;
        --out) OUT="${2:?--out needs a value}"; shift ;;
        --port) PORT="${2:?--port needs a value}"; shift ;;
        --rewrite) EXTRA_REWRITES+=("${2:?--rewrite needs PREFIX=REPLACEMENT}"); shift ;;
        --keep-data) KEEP_DATA=1 ;;
        --strict) STRICT=1 ;;
        --) shift; ROBOT_ARGS=("$@"); break ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) AREAS+=("$1") ;;
    esac
    shift
done
[ ${#AREAS[@]} -eq 0 ] && AREAS=("${DEFAULT_AREAS[@]}")

ETSI_RUN="${ETSI_RUN:-../shared/tools/etsi-run.sh}"
case "$ETSI_RUN" in /*) ;; *) ETSI_RUN="$ROOT/$ETSI_RUN" ;; esac
[ -f "$ETSI_RUN" ] || die "runner not found at $ETSI_RUN (set ETSI_RUN)"
export ETSI_CTX_PORT="${ETSI_CTX_PORT:-8090}"
command -v python3 >/dev/null || die "python3 is needed for scripts/etsi-summary.py"

OUT="${OUT:-target/conformance/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT" || die "cannot create $OUT"
OUT="$(cd "$OUT" && pwd)"
SUMMARY="$OUT/summary.txt"

# ---------------------------------------------------------------- fiware.github.io mirror
FIWARE_PID=""; FIWARE_DIR=""
if [ -n "${ETSI_FIWARE_TESTSUITE_GIT:-}" ] && [ -n "${ETSI_FIWARE_DATAMODELS_GIT:-}" ]; then
    FIWARE_PORT="${ETSI_FIWARE_PORT:-8091}"
    FIWARE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/twinlink-fiware.XXXXXX")" || die "mktemp failed"
    mkdir -p "$FIWARE_DIR/NGSI-LD_TestSuite/ldContext" "$FIWARE_DIR/data-models"
    git --git-dir="$ETSI_FIWARE_TESTSUITE_GIT" show HEAD:ldContext/testContext.jsonld \
        > "$FIWARE_DIR/NGSI-LD_TestSuite/ldContext/testContext.jsonld" \
        || die "ldContext/testContext.jsonld not found in $ETSI_FIWARE_TESTSUITE_GIT"
    git --git-dir="$ETSI_FIWARE_DATAMODELS_GIT" show HEAD:context.jsonld \
        > "$FIWARE_DIR/data-models/context.jsonld" \
        || die "context.jsonld not found in $ETSI_FIWARE_DATAMODELS_GIT"
    python3 -m http.server "$FIWARE_PORT" --bind 127.0.0.1 --directory "$FIWARE_DIR" \
        > "$OUT/fiware-mirror.log" 2>&1 &
    FIWARE_PID=$!
    EXTRA_REWRITES+=("https://fiware.github.io/=http://127.0.0.1:$FIWARE_PORT/")
    log "serving the fiware.github.io documents on 127.0.0.1:$FIWARE_PORT"
fi

# ---------------------------------------------------------------- broker
BROKER_PID=""; DATA_DIR=""
stop_broker() {
    if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
        log "stopping broker (pid $BROKER_PID)"
        kill "$BROKER_PID" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$BROKER_PID" 2>/dev/null && kill -9 "$BROKER_PID" 2>/dev/null
        wait "$BROKER_PID" 2>/dev/null
    fi
    BROKER_PID=""
    if [ -n "$DATA_DIR" ] && [ "$KEEP_DATA" -eq 0 ]; then rm -rf "$DATA_DIR"; DATA_DIR=""; fi
}
stop_all() {
    stop_broker
    if [ -n "$FIWARE_PID" ]; then kill "$FIWARE_PID" 2>/dev/null; wait "$FIWARE_PID" 2>/dev/null; fi
    [ -n "$FIWARE_DIR" ] && rm -rf "$FIWARE_DIR"
}
trap stop_all EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

OWN_BROKER=0
if [ -z "$URL" ]; then
    OWN_BROKER=1
    if [ "$BUILD" -eq 1 ]; then
        log "cargo build --release"
        cargo build --release || die "cargo build failed"
    fi
    BIN="${TWINLINK_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/twinlink}"
    [ -x "$BIN" ] || die "broker binary not found at $BIN"
    URL="http://127.0.0.1:$PORT/ngsi-ld/v1"
else
    URL="${URL%/}"
    log "using the broker at $URL (not started by this script)"
fi

# Each area gets a broker of its own on an empty data dir: the suite does not always clean up, and
# leftovers of one area would change the counts another area expects.
start_broker() {
    port_open "$PORT" && die "port $PORT is already in use; stop that server or use --url/--port"
    DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/twinlink-conformance.XXXXXX")" || die "mktemp failed"
    BROKER_ARGS=(serve --port "$PORT" --bind 127.0.0.1 --data-dir "$DATA_DIR"
                 --context-rewrite "https://raw.githubusercontent.com/=http://127.0.0.1:$ETSI_CTX_PORT/")
    for r in "${EXTRA_REWRITES[@]}"; do BROKER_ARGS+=(--context-rewrite "$r"); done
    BROKER_ARGS+=(--max-temporal-instances "${ETSI_MAX_TEMPORAL_INSTANCES:-10}")
    # Storage backend: with TWINLINK_DATABASE_URL set, the broker gets --database-url.
    if [ -n "${TWINLINK_DATABASE_URL:-}" ]; then
        BROKER_ARGS+=(--database-url "$TWINLINK_DATABASE_URL")
        # The same fresh start as the embedded store's empty data dir: empty every table.
        psql -X -q "$TWINLINK_DATABASE_URL" -c "DO \$\$ DECLARE t text; BEGIN
            FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public'
                       AND tablename NOT IN ('schema_migrations', 'spatial_ref_sys') LOOP
                EXECUTE format('TRUNCATE %I CASCADE', t);
            END LOOP; END \$\$" >/dev/null 2>&1 || true
    fi
    shown=("${BROKER_ARGS[@]}")
    [ -n "${TWINLINK_DATABASE_URL:-}" ] && shown[${#shown[@]}-1]="<TWINLINK_DATABASE_URL>"   # keep secrets out of logs
    log "starting $BIN ${shown[*]} (log: $OUT/broker.log)"
    "$BIN" "${BROKER_ARGS[@]}" >> "$OUT/broker.log" 2>&1 &
    BROKER_PID=$!
    ready=0
    for _ in $(seq 1 300); do   # up to 30 s
        kill -0 "$BROKER_PID" 2>/dev/null || { tail -20 "$OUT/broker.log" >&2; die "broker exited during startup"; }
        if command -v curl >/dev/null; then
            code="$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$URL/types" 2>/dev/null)"
            [ -n "$code" ] && [ "$code" != "000" ] && { ready=1; break; }
        elif port_open "$PORT"; then
            ready=1; break
        fi
        sleep 0.1
    done
    [ "$ready" -eq 1 ] || { tail -20 "$OUT/broker.log" >&2; die "broker not ready on port $PORT after 30 s"; }
    log "broker ready at $URL"
}

# ---------------------------------------------------------------- areas
{
    echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) twinlink $(git rev-parse --short HEAD 2>/dev/null || echo unknown) against $URL"
} >> "$SUMMARY"

HARNESS_ERR=0; ANY_FAIL=0; T_PASS=0; T_ALL=0
for area in "${AREAS[@]}"; do
    area="${area%/}"
    case "$area" in
        TP/*|IOP_TP/*) subset="$area"; label="${area#TP/NGSI-LD/}" ;;
        *) subset="TP/NGSI-LD/$area"; label="$area" ;;
    esac
    slug="$(echo "$label" | tr '/' '_')"
    area_out="$OUT/$slug"
    log "area $label -> $area_out"
    if [ "$OWN_BROKER" -eq 1 ]; then stop_broker; start_broker; fi
    ETSI_OUT="$area_out" ETSI_EXIT_ZERO=1 bash "$ETSI_RUN" "$URL" "$subset" ${ROBOT_ARGS[@]+-- "${ROBOT_ARGS[@]}"} \
        > "$area_out.runner.log" 2>&1
    rc=$?
    if [ ! -f "$area_out/output.xml" ]; then
        log "runner failed for $label (exit $rc), see $area_out.runner.log:"
        tail -5 "$area_out.runner.log" >&2
        echo "$label: runner error (exit $rc)" | tee -a "$SUMMARY"
        HARNESS_ERR=1
        continue
    fi
    [ "$rc" -ne 0 ] && log "runner exit $rc for $label (output.xml present, continuing)"
    line="$(python3 "$ROOT/scripts/etsi-summary.py" "$area_out/output.xml" --label "$label")" || { HARNESS_ERR=1; continue; }
    echo "$line" | tee -a "$SUMMARY"
    python3 "$ROOT/scripts/etsi-summary.py" "$area_out/output.xml" --depth 4 --failures > "$area_out/summary.txt"
    counts="${line##*: }"; p="${counts%/*}"; n="${counts#*/}"
    T_PASS=$((T_PASS + p)); T_ALL=$((T_ALL + n))
    [ "$p" -ne "$n" ] && ANY_FAIL=1
done
echo "total: $T_PASS/$T_ALL" | tee -a "$SUMMARY"
log "results in $OUT (summary.txt; per area: output.xml, log.html, summary.txt)"

stop_broker
[ "$HARNESS_ERR" -ne 0 ] && exit 3
[ "$STRICT" -eq 1 ] && [ "$ANY_FAIL" -ne 0 ] && exit 1
exit 0
