#!/usr/bin/env bash
# Runs the examples of README.md (the sh block under "## Examples") exactly as written against a
# fresh broker, so that the README cannot drift away from what twinlink does. scripts/test.sh
# calls it; it also runs by hand:
#
#   scripts/readme-examples.sh
#
#   TWINLINK_BIN            broker binary (default: cargo's debug build, built first)
#   TWINLINK_TEST_MQTT_URL  mqtt://host:port of a Mosquitto for the MQTT example (scripts/test.sh
#                           starts one and sets it); without it, or without mosquitto_pub (Debian
#                           package mosquitto-clients), the script fails: no example is skipped
#
# The block is cut into commands as a shell would read it (a command goes on while a line ends
# with a backslash or a quote is open) and each runs through eval, unchanged except that: the
# B= line gets the fresh broker's address; curl is a function adding -sS -o FILE -w '%{http_code}',
# so that the status and the body are kept; mosquitto_pub is a function adding -h/-p of the test
# Mosquitto. A command fails when it exits non-zero or answers with an HTTP status other than 2xx
# (no example of the README shows a refusal).
# One line per command; exits non-zero if any failed.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$REPO_ROOT"

die() {
    echo "readme-examples: $*" >&2
    exit 1
}

block="$(awk '/^## Examples/ { s = 1; next }
              s == 1 && /^```sh$/ { s = 2; next }
              s == 2 && /^```$/ { exit }
              s == 2' README.md)"
[[ -n "$block" ]] || die "no \`\`\`sh block under '## Examples' in README.md"

cmds=()
cur=""
while IFS= read -r line || [[ -n "$line" ]]; do
    if [[ -z "$cur" && -z "${line//[[:space:]]/}" ]]; then continue; fi
    cur="${cur:+$cur$'\n'}$line"
    if [[ "$cur" == *\\ ]] || ! bash -n -c "$cur" 2>/dev/null; then continue; fi
    cmds+=("$cur")
    cur=""
done <<<"$block"
[[ -z "$cur" ]] || die "unterminated command at the end of the block: ${cur%%$'\n'*}"

# ------------------------------------------------------------ the broker

if [[ -n "${TWINLINK_BIN:-}" ]]; then
    bin="$TWINLINK_BIN"
else
    # Always: a no-op when the binary is up to date, and never a stale binary. Where cargo puts it
    # (CARGO_TARGET_DIR, a configured target-dir) is cargo's to say.
    cargo build --bin twinlink
    target_dir="$(cargo metadata --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
    bin="$target_dir/debug/twinlink"
fi
[[ -x "$bin" ]] || die "no broker binary at $bin"

tmp="$(mktemp -d)"
broker_pid=""
cleanup() {
    if [[ -n "$broker_pid" ]] && kill -0 "$broker_pid" 2>/dev/null; then
        kill -TERM "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

[[ -n "${TWINLINK_TEST_MQTT_URL:-}" ]] ||
    die "TWINLINK_TEST_MQTT_URL is not set (scripts/test.sh starts a Mosquitto and sets it)"
command -v mosquitto_pub >/dev/null ||
    die "mosquitto_pub is not installed (Debian package mosquitto-clients)"
# A client id of its own: its MQTT session must not be shared with other brokers or tests.
args=(--bind 127.0.0.1 --port 0 --data-dir "$tmp/data" --log-format json
    --mqtt-url "$TWINLINK_TEST_MQTT_URL" --mqtt-client-id twinlink-readme-examples)
hostport="${TWINLINK_TEST_MQTT_URL#*://}"
hostport="${hostport##*@}"
hostport="${hostport%%/*}"
mqtt_host="${hostport%:*}"
mqtt_port=1883
if [[ "$hostport" == *:* ]]; then mqtt_port="${hostport##*:}"; fi

"$bin" "${args[@]}" >"$tmp/log" 2>&1 &
broker_pid=$!

# The broker binds port 0 and logs the address it got.
addr=""
for _ in $(seq 100); do
    addr="$(grep -o '"addr":"[^"]*"' "$tmp/log" | head -n 1 | cut -d'"' -f4)" || true
    if [[ -n "$addr" ]] && command curl -fsS -m 2 -o /dev/null "http://$addr/health" 2>/dev/null; then
        break
    fi
    addr=""
    kill -0 "$broker_pid" 2>/dev/null || break
    sleep 0.1
done
if [[ -z "$addr" ]]; then
    cat "$tmp/log" >&2
    die "the broker did not answer GET /health (log above)"
fi
echo "==> README examples against a fresh broker at $addr"

# MQTT ingestion subscribes right after it connects; wait for it, so that the message is not lost.
for _ in $(seq 100); do
    if grep -q 'MQTT ingestion connected' "$tmp/log"; then break; fi
    sleep 0.1
done
grep -q 'MQTT ingestion connected' "$tmp/log" || {
    cat "$tmp/log" >&2
    die "the broker did not connect to $TWINLINK_TEST_MQTT_URL (log above)"
}

# ------------------------------------------------------------ the commands

curl() { command curl -sS -m 30 -o "$tmp/body" -w '%{http_code}' "$@" >"$tmp/status"; }
mosquitto_pub() { command mosquitto_pub -h "$mqtt_host" -p "$mqtt_port" "$@"; }

ok=0 failed=0
for cmd in "${cmds[@]}"; do
    first="${cmd%%$'\n'*}"
    case "$cmd" in
        '#'*)
            echo "$first"
            continue
            ;;
        B=*)
            [[ "$cmd" =~ ^B=https?://[^/]+(/[^[:space:]]*)?$ ]] || die "cannot read the B= line: $cmd"
            cmd="B=http://$addr${BASH_REMATCH[1]}"
            ;;
    esac
    # An MQTT message to <prefix>/entities/<id>/attrs has arrived when the entity has changed
    # (local=true: the registered context source is not asked at every look).
    entity="" note=""
    if [[ "$cmd" == mosquitto_pub* && "$cmd" =~ entities/([^/[:space:]]+)/attrs ]]; then
        entity="$B/entities/${BASH_REMATCH[1]}?local=true"
        before="$(command curl -sS -m 10 "$entity")"
    fi
    : >"$tmp/body"
    : >"$tmp/status"
    rc=0
    eval "$cmd" || rc=$?
    status="$(<"$tmp/status")"
    if [[ "$rc" -eq 0 && -n "$entity" ]]; then
        for _ in $(seq 100); do
            [[ "$(command curl -sS -m 10 "$entity")" == "$before" ]] || break
            sleep 0.1
        done
        if [[ "$(command curl -sS -m 10 "$entity" | tee "$tmp/body")" == "$before" ]]; then
            note="published, but $entity did not change within 10 s"
            rc=1
        fi
    fi
    if [[ "$rc" -eq 0 && ("$status" == "" || "$status" == 2??) ]]; then
        echo "ok ${status:--} $first"
        ok=$((ok + 1))
    else
        echo "FAIL ${status:--} (exit $rc) $first${note:+: $note}"
        sed 's/^/    /' "$tmp/body"
        echo
        failed=$((failed + 1))
    fi
done

kill -TERM "$broker_pid" 2>/dev/null || true
wait "$broker_pid" 2>/dev/null || true
broker_pid=""
echo "==> README examples: $ok ok, $failed failed"
if ((failed > 0)); then
    echo "--- broker log (last 40 lines) ---"
    tail -n 40 "$tmp/log"
    exit 1
fi
