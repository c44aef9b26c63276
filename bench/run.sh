#!/usr/bin/env bash
# Sigil benchmarks: builds the broker and the load generator, runs every
# benchmark against a real `sigil server` on loopback and prints a table of
# figure / reference (same run) / ratio / target / PASS|MISS.
#
# Usage: bench/run.sh [--quick] [--debug|--release] [--shared] [--terraform] [--storm]
#                     [--replicas] [--pgscale] [sigil-load options...]
#   --quick      a few seconds per benchmark, store at 1% scale (CI). Uses the
#                debug build unless --release is given: a release build takes
#                minutes on a small CI machine. Debug figures are not
#                representative; the ratios still compare like with like.
#   --release    build and measure optimized binaries (the figures in docs/).
#   --shared     broker, load generator and references on all CPUs (default:
#                broker pinned to the first half, the rest to the other half).
#   --storm      also run the reconnect storm (2,000 agents renewing at once
#                after a broker restart; `--agents N` to change; about a
#                minute in release). Raises the open-files limit as needed.
#   --replicas   only the PostgreSQL replicas benchmark: 2 broker replicas on
#                PostgreSQL 15 vs 1 broker on SQLite, serving side (brokers and
#                PostgreSQL) pinned to the same CPUs (docs/benchmarks.md).
#   --pgscale    only the PostgreSQL scale benchmark: 1,000,000 bots and
#                10,000,000 audit events vs 1% of that, through the API.
#                Both need PostgreSQL 15 (apt-get install postgresql-15); both
#                are opt-in (not in the default run, not in --quick).
#   --terraform  also run acceptance-tests/terraform/bench_null.py (N=100,
#                terraform-provider-sigil vs the Go null provider; needs .venv).
# Anything else goes to sigil-load (see `sigil-load --help`).
# Exit status: non-zero on a real failure (a broker that does not start, a
# request that errors, a build error), never on a missed target.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0 profile="" terraform=0 shared=0 pass=() only=()
for a in "$@"; do
  case "$a" in
    --quick) quick=1; pass+=(--quick) ;;
    --shared) shared=1 ;;
    --debug) profile=debug ;;
    --release) profile=release ;;
    --terraform) terraform=1 ;;
    --storm) pass+=(--storm); ulimit -n "$(ulimit -Hn)" 2>/dev/null || true ;;
    --replicas) only+=(replicas) ;;
    --pgscale) only+=(pgscale) ;;
    *) pass+=("$a") ;;
  esac
done
if [[ -z "$profile" ]]; then
  if [[ $quick == 1 ]]; then profile=debug; else profile=release; fi
fi
if [[ ${#only[@]} -gt 0 ]]; then
  pass+=(--only "$(IFS=,; echo "${only[*]}")")
fi
export CARGO_TERM_COLOR=never
if [[ $profile == release ]]; then
  cargo build --release --locked -p sigil -p sigil-agent -p sigil-bench
  bin=target/release
else
  cargo build --locked -p sigil -p sigil-agent -p sigil-bench
  bin=target/debug
fi
status=0
# Pinning: the broker gets half of the CPUs, the load generator (clients, raw
# references, the agent) the other half, so the broker's throughput and the
# raw references are measured on equal CPU budgets and the clients' CPU is not
# taken from the broker. --shared runs everything on all CPUs instead.
pin=()
n=$(nproc)
if [[ $shared == 0 && $n -ge 2 ]] && command -v taskset >/dev/null; then
  half=$((n / 2))
  pin=(taskset -c "$half-$((n - 1))")
  pass+=(--broker-cpus "0-$((half - 1))")
fi
"${pin[@]}" "$bin/sigil-load" --sigil "$bin/sigil" "${pass[@]}" || status=$?
if [[ $terraform == 1 ]]; then
  echo "== Terraform: apply + destroy of 100 resources, sigil vs null (target: within 1.5x)"
  [[ -x .venv/bin/python ]] || { echo "FAILURE: .venv missing: run bash scripts/setup.sh"; exit 1; }
  .venv/bin/python acceptance-tests/terraform/bench_null.py -n 100 -r 1 || status=$?
fi
exit $status
