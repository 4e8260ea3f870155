#!/usr/bin/env bash
# twinlink test entry point (CI runs it through .ci/run).
#
#   scripts/test.sh [ARGS...]    ARGS go to the test runner, e.g.
#   scripts/test.sh -E 'test(foo)'
#
# 1. installs/starts private PostgreSQL 15 + PostGIS and Mosquitto
#    (scripts/services.sh; state, data and logs in $TWINLINK_TEST_STATE,
#    default <repo>/target/test-services) and exports
#    TWINLINK_TEST_DATABASE_URL and TWINLINK_TEST_MQTT_URL;
# 2. cargo fmt --check, cargo clippy -D warnings, doc tests (if there is a lib);
# 3. cargo nextest run (or cargo test if cargo-nextest is missing), last, so
#    the output ends with the runner's summary and the exit code is its own.
#
# The services are stopped on exit unless TWINLINK_KEEP_SERVICES=1.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$REPO_ROOT"

# shellcheck source=scripts/services.sh
source "$REPO_ROOT/scripts/services.sh"

on_exit() {
    if [[ "${TWINLINK_KEEP_SERVICES:-0}" != 1 ]]; then
        # Silent: nothing may follow the test runner's summary.
        tl_services_stop >>"$TL_STATE/stop.log" 2>&1 || true
    fi
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! tl_services_start; then
    echo "scripts/test.sh: could not start the test services (see above; logs in $TL_STATE)" >&2
    exit 1
fi
echo "==> TWINLINK_TEST_DATABASE_URL=$TWINLINK_TEST_DATABASE_URL"
echo "==> TWINLINK_TEST_MQTT_URL=$TWINLINK_TEST_MQTT_URL"

echo "==> cargo fmt --all -- --check"
cargo fmt --all -- --check

echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

# Doc tests only exist for library targets ('cargo test --doc' fails without one).
# They run before the main runner so that its summary is the last output.
metadata="$(cargo metadata --no-deps --format-version 1)"
if grep -Eq '"kind":\[[^]]*"(lib|rlib|dylib|proc-macro)"' <<<"$metadata"; then
    echo "==> cargo test --workspace --doc"
    cargo test --workspace --doc
fi

if cargo nextest --version >/dev/null 2>&1; then
    runner=(cargo nextest run --workspace --all-targets --no-fail-fast "$@")
else
    runner=(cargo test --workspace --all-targets --no-fail-fast "$@")
fi
echo "==> ${runner[*]}"
set +e
"${runner[@]}"
rc=$?
set -e
exit "$rc"
