#!/usr/bin/env bash
# Fuzz the API from its own OpenAPI document with schemathesis (--checks all).
#
#   make fuzz  or  bench/fuzz.sh [SECONDS]    (default 240; needs root for unshare)
#
# The service and the fuzzer run in a network namespace of their own, with
# only a loopback interface: the jobs schemathesis makes name webhook URLs
# at random, and their ticks must reach nothing but this machine. The
# service runs from $VENV (.venv: make run or make test makes it) on a fresh
# SQLite file, with an API token (every operation is reached) and no rate
# limit; schemathesis gets a virtual environment of its own, .venv-fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-240}
venv=${VENV:-.venv}
if [ "${CRONSVC_FUZZ_IN_NAMESPACE:-}" != 1 ]; then
    [ -x "$venv/bin/cronsvc" ] || { echo "bench/fuzz.sh: run make run or make test first" >&2; exit 2; }
    if [ ! -x .venv-fuzz/bin/schemathesis ]; then
        python3 -m venv .venv-fuzz
        .venv-fuzz/bin/python -m pip install --quiet schemathesis
    fi
    exec unshare --net env CRONSVC_FUZZ_IN_NAMESPACE=1 "$0" "$seconds"
fi
ip link set lo up
work=$(mktemp -d)
token=fuzz-token-0123456789abcdef
port=18555
cat >"$work/config.toml" <<TOML
[server]
host = "127.0.0.1"
port = $port
api_tokens = ["$token"]
[store]
url = "sqlite:///$work/cronsvc.db"
[limits]
rate_limit_per_s = 0
max_jobs = 100000
TOML
"$venv/bin/cronsvc" serve --config "$work/config.toml" 2>"$work/service.log" &
service=$!
trap 'kill "$service" 2>/dev/null; wait "$service" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/healthz', timeout=1)" 2>/dev/null && break
    sleep 0.2
done
status=0
.venv-fuzz/bin/schemathesis run "http://127.0.0.1:$port/openapi.json" --checks all \
    --max-time "$seconds" --workers 2 --suppress-health-check all \
    -H "Authorization: Bearer $token" || status=$?
errors=$(grep -c '"level": "error"' "$work/service.log" || true)
echo "bench/fuzz.sh: service log lines at error level: $errors"
exit "$status"
