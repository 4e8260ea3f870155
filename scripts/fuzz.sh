#!/usr/bin/env bash
# Fuzzes twinlink's parsers with cargo-fuzz (libFuzzer) on the nightly toolchain (docs/fuzzing.md).
#
#   scripts/fuzz.sh smoke [TARGET...]          each target briefly ($SMOKE_RUNS runs, at most
#                                              $SMOKE_SECONDS s; scripts/test.sh runs it)
#   scripts/fuzz.sh long [RUNS] [TARGET...]    each target for RUNS executions (default 10,000,000)
#   scripts/fuzz.sh build                      only build the targets
#
# Without TARGET, every target of fuzz/Cargo.toml. cargo-fuzz (pinned below) is installed on first
# use with `cargo install --locked` into $TWINLINK_FUZZ_TOOLS; the targets are built into
# $TWINLINK_FUZZ_TARGET_DIR. The targets are built without a sanitizer (`-s none`: the parsers are
# safe Rust, and AddressSanitizer would cost a rebuild of the standard library and a slower run on
# small machines) and with debug assertions and overflow checks (`-a`), so an overflow panics.
# A run fails on a panic, on an input taking longer than $FUZZ_TIMEOUT s (a hang) and when the
# process's RSS exceeds $FUZZ_RSS_MB MB (unbounded allocation); the input is then saved under
# fuzz/artifacts/<target>/ and the exit status is non-zero. The corpus a long run grows is kept in
# $TWINLINK_FUZZ_CORPUS/<target> (the seeds of fuzz/corpus/<target> are read, never written); a
# smoke starts from the seeds alone each time, in $TWINLINK_FUZZ_CORPUS/smoke/<target>, so that
# it takes as long on every machine.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
BASE="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
TOOLS="${TWINLINK_FUZZ_TOOLS:-$BASE/fuzz-tools}"
TARGET_DIR="${TWINLINK_FUZZ_TARGET_DIR:-$BASE/fuzz}"
CORPUS="${TWINLINK_FUZZ_CORPUS:-$BASE/fuzz-corpus}"
CARGO_FUZZ_VERSION=0.13.2
SMOKE_RUNS="${SMOKE_RUNS:-20000}"
SMOKE_SECONDS="${SMOKE_SECONDS:-5}"
FUZZ_TIMEOUT="${FUZZ_TIMEOUT:-10}"
FUZZ_RSS_MB="${FUZZ_RSS_MB:-1024}"
BUILD_FLAGS=(-s none -a --target-dir "$TARGET_DIR")

log() { printf '[fuzz] %s\n' "$*" >&2; }
usage() {
    sed -n '3,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# A one-off build gains nothing from incremental compilation.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

need_tools() {
    if ! rustup toolchain list | grep -q '^nightly'; then
        log "the nightly toolchain is missing (cargo-fuzz needs it): rustup toolchain install nightly"
        exit 1
    fi
    if [[ "$("$TOOLS/bin/cargo-fuzz" --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
        log "installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS"
        cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --force \
            --root "$TOOLS" --target-dir "$TOOLS/build"
        rm -rf "$TOOLS/build"
    fi
    export PATH="$TOOLS/bin:$PATH"
}

all_targets() {
    sed -n 's/^name = "\(.*\)"$/\1/p' "$REPO_ROOT/fuzz/Cargo.toml" | grep -vx 'twinlink-fuzz'
}

build() {
    log "building the fuzz targets (cargo +nightly fuzz build ${BUILD_FLAGS[*]})"
    (cd "$REPO_ROOT" && cargo +nightly fuzz build "${BUILD_FLAGS[@]}")
}

# Runs target $2 on corpus directory $1 (grown in place) and the seeds, with libFuzzer flags
# $3...; prints "<target>: <runs> runs in <s> s".
run() {
    local corpus="$1" target="$2" triple bin out rc
    shift 2
    triple="$(rustc +nightly -vV | sed -n 's/^host: //p')"
    bin="$TARGET_DIR/$triple/release/$target"
    out="$corpus.log"
    mkdir -p "$corpus" "$REPO_ROOT/fuzz/artifacts/$target"
    log "$target: $* (log in $out)"
    set +e
    "$bin" "$corpus" "$REPO_ROOT/fuzz/corpus/$target" \
        -artifact_prefix="$REPO_ROOT/fuzz/artifacts/$target/" \
        -timeout="$FUZZ_TIMEOUT" -rss_limit_mb="$FUZZ_RSS_MB" -max_len=4096 \
        -print_final_stats=1 "$@" >"$out" 2>&1
    rc=$?
    set -e
    if ((rc != 0)); then
        tail -n 60 "$out" >&2
        log "$target: FAILED (exit $rc); the input is under fuzz/artifacts/$target/"
        return 1
    fi
    sed -n "s/^Done \([0-9]*\) runs in \([0-9]*\) second.*/$target: \1 runs in \2 s/p" "$out"
}

mode="${1:-}"
[[ -n "$mode" ]] || usage
shift
case "$mode" in
build)
    need_tools
    build
    ;;
smoke | long)
    runs="$SMOKE_RUNS"
    flags=()
    corpora="$CORPUS"
    if [[ "$mode" == smoke ]]; then
        flags=(-max_total_time="$SMOKE_SECONDS")
        corpora="$CORPUS/smoke"
        rm -rf "$corpora"
    elif [[ "${1:-}" =~ ^[0-9]+$ ]]; then
        runs="$1"
        shift
    else
        runs=10000000
    fi
    targets=("$@")
    ((${#targets[@]})) || mapfile -t targets < <(all_targets)
    need_tools
    build
    failed=()
    for target in "${targets[@]}"; do
        run "$corpora/$target" "$target" -runs="$runs" "${flags[@]}" || failed+=("$target")
    done
    if ((${#failed[@]})); then
        log "failed: ${failed[*]}"
        exit 1
    fi
    ;;
*)
    usage
    ;;
esac
