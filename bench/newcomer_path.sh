#!/bin/bash
# A newcomer's path from a fresh clone to a caught copy, following the README's
# Quick start, each step timed (wall seconds, printed as STEP lines on stderr).
#   bench/newcomer_path.sh [REPOSITORY] [PORT]
# Clones REPOSITORY (default: this checkout) into /tmp/fresh-newcomer, runs
# `make serve` there on PORT (default 18080) and stops it at the end.
set -u
repo=${1:-$(cd "$(dirname "$0")/.." && pwd)}
port=${2:-18080}
clone=/tmp/fresh-newcomer
rm -rf "$clone"
t() {
    local s e rc
    s=$(date +%s.%N); "$@"; rc=$?; e=$(date +%s.%N)
    printf 'STEP %-50.50s rc=%s %.1f s\n' "$*" "$rc" "$(echo "$e - $s" | bc)" >&2
    return $rc
}
t git clone -q "$repo" "$clone"
cd "$clone" || exit 1
export SHOTSTAMP_PORT=$port SHOTSTAMP_URL=http://127.0.0.1:$port
s=$(date +%s.%N)
set -m  # make serve in a process group of its own, stopped by its id at the end
make serve > "$clone-serve.log" 2>&1 &
serve_group=$!
set +m
until curl -sf "$SHOTSTAMP_URL/healthz" > /dev/null 2>&1; do sleep 1; done
printf 'STEP %-50s %.1f s\n' "make serve (until /healthz answers)" "$(echo "$(date +%s.%N) - $s" | bc)" >&2
s0=$(date +%s.%N)
ACME=$(t .venv/bin/shotstamp-service keys create --seller acme)
COPYCAT=$(t .venv/bin/shotstamp-service keys create --seller copycat)
t .venv/bin/shotstamp register examples/kettle.jpg --api-key "$ACME" --out acme-proofs
t .venv/bin/shotstamp register examples/kettle-copy.jpg --api-key "$COPYCAT" --out copycat-proofs
printf 'STEP %-50s %.1f s\n' "the four commands after make serve" "$(echo "$(date +%s.%N) - $s0" | bc)" >&2
grep -ci deprecat "$clone-serve.log" | sed 's/^/deprecation warnings in make serve: /' >&2
kill -TERM -- -"$serve_group"
