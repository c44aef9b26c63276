#!/usr/bin/env bash
# Profiles the broker's X.509-SVID issuance path with a bounded load.
#
# Usage: bench/profile.sh callgrind|perf|perf-g|strace [REQUESTS]
#   callgrind  deterministic instruction counts (valgrind); the broker runs under
#              valgrind, counters are zeroed once the clients joined and dumped
#              after the load, so start-up is not in the profile. Note: under
#              valgrind aws-lc takes its non-AVX2/ADX code paths, so crypto is
#              over-weighted; compare the rest of the profile, not the crypto share.
#   perf       cpu-clock samples of the running broker (perf record -p).
#   perf-g     the same with DWARF call graphs (inclusive 'children' view).
#   strace     syscall counts of the running broker (strace -c -f -p).
# Output goes to target/profile/. Needs the release build (bench/run.sh --release
# builds it) and the tool itself (apt-get install valgrind linux-perf strace).
set -euo pipefail
cd "$(dirname "$0")/.."
tool="${1:?usage: bench/profile.sh callgrind|perf|perf-g|strace [REQUESTS]}"
n="${2:-2000}"
out="$PWD/target/profile"
mkdir -p "$out"
command -v "$(t=${tool%-g}; echo ${t/callgrind/valgrind})" >/dev/null || { echo "FAILURE: ${tool/callgrind/valgrind} not installed"; exit 1; }
cargo build --release --locked -p sigil -p sigil-agent -p sigil-bench
load=(target/release/sigil-load --sigil target/release/sigil --only x509 --clients 4 --batch 0 --max-requests "$n" --duration 300)
case "$tool" in
  callgrind)
    "${load[@]}" --ready-timeout 900 \
      --wrap "valgrind --tool=callgrind --callgrind-out-file=$out/callgrind.%p" \
      --hook-before 'callgrind_control -z $SIGIL_PID' --hook-after 'callgrind_control -d $SIGIL_PID'
    latest=$(ls -t "$out"/callgrind.*.1 | head -1)
    callgrind_annotate --inclusive=yes "$latest" | head -80
    echo "full profile: $latest (kcachegrind or callgrind_annotate)"
    ;;
  perf)
    "${load[@]}" \
      --hook-before "perf record -e cpu-clock -F 2000 -p \$SIGIL_PID -o $out/perf.data >/dev/null 2>&1 & echo \$! > $out/perf.pid; sleep 1" \
      --hook-after "kill -INT \$(cat $out/perf.pid); sleep 3"
    perf report -i "$out/perf.data" --no-children --sort sym 2>/dev/null | grep -v '^#' | head -40
    ;;
  perf-g)
    "${load[@]}" \
      --hook-before "perf record --call-graph dwarf,16384 -F 400 -p \$SIGIL_PID -o $out/perf-g.data >/dev/null 2>&1 & echo \$! > $out/perf.pid; sleep 1" \
      --hook-after "kill -INT \$(cat $out/perf.pid); sleep 5"
    perf report -i "$out/perf-g.data" --children --sort sym 2>/dev/null | grep -E '^ +[0-9]' | head -60
    ;;
  strace)
    "${load[@]}" \
      --hook-before "strace -c -f -p \$SIGIL_PID -o $out/strace.txt & echo \$! > $out/strace.pid; sleep 1" \
      --hook-after "kill -INT \$(cat $out/strace.pid); sleep 2"
    head -20 "$out/strace.txt"
    echo "(per X.509-SVID: divide by 3 x $n: closed-loop and 50%-rate issuance phases, then $n WhoAmI RPCs of the transport-alone row)"
    ;;
  *) echo "unknown tool $tool"; exit 1 ;;
esac
