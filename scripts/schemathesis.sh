#!/usr/bin/env bash
# Fuzzes the HTTP API against its own OpenAPI document with schemathesis (issue 16): every
# check (status codes and content types documented, response bodies matching their schemas,
# invalid input refused, valid input accepted, auth enforced, 405s). Starts `hashtale serve` on
# a free local port with an embedded SQLite store, the in-process queue and a token; exits
# non-zero on any failure.
#
# Environment: SCHEMATHESIS_MAX_EXAMPLES (default 50), SCHEMATHESIS_TIMEOUT_S (default 600),
# SCHEMATHESIS_VENV (default /var/tmp/hashtale-schemathesis-venv, reused when present),
# HASHTALE_BIN (default: `cargo build -p hashtale`'s binary).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/hashtale-target}"
venv="${SCHEMATHESIS_VENV:-/var/tmp/hashtale-schemathesis-venv}"
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-50}"
time_limit="${SCHEMATHESIS_TIMEOUT_S:-600}"

if [ ! -x "$venv/bin/schemathesis" ]; then
  echo "installing schemathesis into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'schemathesis==4.32.*'
fi

bin="${HASHTALE_BIN:-}"
if [ -z "$bin" ]; then
  cargo build -q -p hashtale
  bin="$CARGO_TARGET_DIR/debug/hashtale"
fi

work="$(mktemp -d)"
server=""
cleanup() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A free port: bind port 0, note what the kernel chose, release it.
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
token="schemathesis-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
base="http://127.0.0.1:$port"

export HASHTALE__DATABASE__URL="sqlite://$work/hashtale.db"
export HASHTALE__QUEUE__KIND=local
export HASHTALE__API__TOKEN="$token"
export HASHTALE__METRICS__LISTEN=off
export RUST_LOG="${RUST_LOG:-warn}"

# A rater, so that the rating pages are reached past the token check (the token goes to
# schemathesis.toml's `path.token`).
invite="$("$bin" raters add schemathesis 2>"$work/raters.log")" || { cat "$work/raters.log"; exit 1; }
export HASHTALE_RATER_TOKEN="${invite##*/}"

"$bin" serve --listen "127.0.0.1:$port" >"$work/serve.log" 2>&1 &
server=$!

for _ in $(seq 1 100); do
  if curl -fsS "$base/readyz" >/dev/null 2>&1; then
    break
  fi
  if ! kill -0 "$server" 2>/dev/null; then
    echo "hashtale serve exited:"; cat "$work/serve.log"; exit 1
  fi
  sleep 0.2
done
curl -fsS "$base/readyz" >/dev/null || { echo "hashtale serve is not ready:"; cat "$work/serve.log"; exit 1; }

# One worker: Python 3.11's parser is not thread-safe in hypothesis' lambda descriptions
# ("AST constructor recursion depth mismatch"), and the run is short anyway.
# scripts/schemathesis.toml holds the per-route exceptions (with the reasons).
status=0
timeout "$time_limit" "$venv/bin/schemathesis" --config-file scripts/schemathesis.toml run \
  "$base/openapi.json" \
  --checks all \
  --max-examples "$max_examples" \
  --seed 1 \
  --workers 1 \
  --request-timeout 10 \
  -H "Authorization: Bearer $token" || status=$?

if [ "$status" != 0 ]; then
  echo "schemathesis failed (exit $status); the server's log:"
  tail -n 50 "$work/serve.log"
fi
exit "$status"
