#!/usr/bin/env bash
# twinlink test entry point (CI runs it through .ci/run).
#
#   scripts/test.sh [ARGS...]    ARGS go to the test runner, e.g.
#   scripts/test.sh -E 'test(foo)'
#
# 1. installs/starts private PostgreSQL 15 + PostGIS and Mosquitto, and installs promtool
#    (Debian prometheus) for the /metrics format check (scripts/services.sh; state, data and logs in $TWINLINK_TEST_STATE,
#    default <repo>/target/test-services) and exports
#    TWINLINK_TEST_DATABASE_URL and TWINLINK_TEST_MQTT_URL (a test that needs a service fails
#    without it, never skips: tests/integration/common/services.rs);
# 2. cargo fmt --check, cargo clippy -D warnings, the README's examples
#    (scripts/readme-examples.sh), the Dockerfile and the Helm chart (scripts/check-deploy.sh),
#    the generated Smart Data Models files regenerated from their pinned wheels and compared,
#    a fuzz smoke of the parsers (scripts/fuzz.sh smoke), doc tests (if there is a lib);
# 3. cargo nextest run (or cargo test if cargo-nextest is missing), last, so
#    the output ends with the runner's summary and the exit code is its own.
#
# The services are stopped on exit unless TWINLINK_KEEP_SERVICES=1.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$REPO_ROOT"

# A one-off build gains nothing from incremental compilation, whose caches take a GB or more of disk
# (set CARGO_INCREMENTAL=1 to keep them for repeated local runs).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# The whole run (build and test databases) took 1.7 GB at most in a fresh clone; say so early when short.
free_kb="$(df -Pk . | awk 'NR == 2 {print $4}')"
echo "==> free disk: $((free_kb / 1024)) MB"
if ((free_kb < 2 * 1024 * 1024)); then
    echo "scripts/test.sh: warning: less than 2 GB free; the build or the test databases may not fit" >&2
fi

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
# Per-test databases (tl_*) of an earlier run are dropped; each test server makes its own.
pg_port="${TWINLINK_TEST_DATABASE_URL##*:}"; pg_port="${pg_port%%/*}"
tl_psql "$pg_port" -d postgres -tA -c "SELECT datname FROM pg_database WHERE datname LIKE 'tl\_%'" |
    while read -r db; do tl_psql "$pg_port" -d postgres -c "DROP DATABASE IF EXISTS \"$db\""; done
echo "==> TWINLINK_TEST_MQTT_URL=$TWINLINK_TEST_MQTT_URL"

echo "==> cargo fmt --all -- --check"
cargo fmt --all -- --check

echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

# The README's examples, exactly as written, against a fresh broker (the MQTT one against the test
# Mosquitto); a failing example fails the run here, before the test runners.
echo "==> scripts/readme-examples.sh"
if ! bash "$REPO_ROOT/scripts/readme-examples.sh"; then
    echo "scripts/test.sh: a README example failed (see FAIL above)" >&2
    exit 1
fi

# The deployment files: the Dockerfile linted, the Helm chart rendered and every manifest
# validated (scripts/check-deploy.sh installs its pinned tools under target/deploy-tools).
echo "==> scripts/check-deploy.sh"
if ! bash "$REPO_ROOT/scripts/check-deploy.sh"; then
    echo "scripts/test.sh: the deployment files failed their checks (see above)" >&2
    exit 1
fi

# The generated Smart Data Models files (contexts, rules, unit codes): regenerated from the pinned
# wheels, which the generators download with pip and check by sha256, they must be byte for byte
# the committed ones (a few seconds, and the two downloads).
echo "==> smart-data-models: regenerate from the pinned wheels and compare"
sdm_out="$(mktemp -d)"
python3 smart-data-models/generate.py --output "$sdm_out/contexts.json" \
    --rules-output "$sdm_out/rules.json.gz" 2>"$sdm_out/log"
python3 smart-data-models/generate_unit_codes.py --output "$sdm_out/unit-codes.txt" 2>>"$sdm_out/log"
for f in contexts.json rules.json.gz unit-codes.txt; do
    if ! cmp -s "$sdm_out/$f" "smart-data-models/$f"; then
        echo "scripts/test.sh: smart-data-models/$f differs from its regeneration (log: $sdm_out/log)" >&2
        exit 1
    fi
done
rm -rf "$sdm_out"

# The parsers' fuzz targets, briefly (scripts/fuzz.sh: cargo-fuzz on the nightly toolchain, each
# target a few seconds; docs/fuzzing.md has the long runs).
echo "==> scripts/fuzz.sh smoke"
if ! bash "$REPO_ROOT/scripts/fuzz.sh" smoke; then
    echo "scripts/test.sh: a fuzz target failed (see above; the input is under fuzz/artifacts/)" >&2
    exit 1
fi

# Doc tests only exist for library targets ('cargo test --doc' fails without one).
# They run before the main runner so that its summary is the last output.
metadata="$(cargo metadata --no-deps --format-version 1)"
if grep -Eq '"kind":\[[^]]*"(lib|rlib|dylib|proc-macro)"' <<<"$metadata"; then
    echo "==> cargo test --workspace --doc"
    cargo test --workspace --doc
fi

# Every black-box test runs against both stores: first the embedded store (with the unit tests),
# then the integration tests again with each test server on a fresh PostgreSQL database
# (TWINLINK_TEST_STORE=postgres; tests/common/mod.rs). The second runner's summary is the last line.
if cargo nextest --version >/dev/null 2>&1; then
    embedded=(cargo nextest run --workspace --all-targets --no-fail-fast "$@")
    postgres=(cargo nextest run --workspace --tests --no-fail-fast -E 'kind(test)' "$@")
else
    embedded=(cargo test --workspace --all-targets --no-fail-fast "$@")
    postgres=(cargo test --workspace --tests --no-fail-fast "$@")
fi
set +e
echo "==> embedded store: ${embedded[*]}"
"${embedded[@]}"
rc_embedded=$?
echo "==> PostgreSQL store: TWINLINK_TEST_STORE=postgres ${postgres[*]}"
TWINLINK_TEST_STORE=postgres "${postgres[@]}"
rc_postgres=$?
set -e
if [ "$rc_embedded" -ne 0 ]; then exit "$rc_embedded"; fi
exit "$rc_postgres"
