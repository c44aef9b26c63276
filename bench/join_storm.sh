#!/usr/bin/env bash
# N concurrent `sigil join` processes from one host against a fresh broker
# (docs/benchmarks.md, "Reconnect storm"). Prints the failures, the retries, the
# kernel's listen overflows and the reasons the broker logged for refusing or
# dropping connections.
# Usage: bench/join_storm.sh [SIGIL_BIN] [N=400] [ATTEMPTS=5]
#   LIMITS='{listen_backlog: 128, max_connections_per_peer: 256}'  broker limits.connections
#   PIN='taskset -c 0'                                             prefix for the broker
set -euo pipefail
BIN=${1:-target/release/sigil}; N=${2:-400}; ATT=${3:-5}
ulimit -n "$(ulimit -Hn)"
D=$(mktemp -d /tmp/sigil-join-storm.XXXX)
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
overflows() { awk '/^TcpExt:/ { if (!h) { for (i=1;i<=NF;i++) n[i]=$i; h=1 } else { for (i=1;i<=NF;i++) if (n[i]=="ListenOverflows") print $i } }' /proc/net/netstat; }
printf '2a%.0s' $(seq 32) > "$D/seal"; chmod 600 "$D/seal"
{
  printf 'trust_domain: sigil.local\nlisten: 127.0.0.1:%s\ndata_dir: %s\nseal_key_file: %s\nadmin_identity_ttl: 86400\n' "$PORT" "$D/data" "$D/seal"
  if [[ -n "${LIMITS:-}" ]]; then printf 'limits:\n  connections: %s\n' "$LIMITS"; fi
} > "$D/broker.yaml"
SIGIL_LOG=warn,sigil_core::listen=debug,sigil_broker::server=debug ${PIN:-} "$BIN" server --config "$D/broker.yaml" > "$D/broker.log" 2>&1 &
BPID=$!
trap 'kill $BPID 2>/dev/null || true' EXIT
for _ in $(seq 300); do [[ -f $D/data/admin.identity ]] && break; sleep 0.1; done
sleep 0.5
export SIGIL_ADDR=127.0.0.1:$PORT SIGIL_IDENTITY=$D/data/admin.identity
printf 'kind: role\nname: r\nallow:\n  spiffe_ids: [/x/*]\n---\nkind: bot\nname: b\nroles: [r]\n' > "$D/b.yaml"
"$BIN" apply -f "$D/b.yaml" > /dev/null
"$BIN" token create --bot b --name t --uses $((N * 2)) > "$D/token" 2>/dev/null
unset SIGIL_IDENTITY
ss -ltn "sport = :$PORT" | tail -1
before=$(overflows)
t0=$(date +%s.%N)
pids=()
for i in $(seq "$N"); do
  ( "$BIN" join --attempts "$ATT" --token-file "$D/token" --ca-file "$D/data/tls-ca.pem" --out "$D/id.$i" > "$D/out.$i" 2>&1; echo $? > "$D/rc.$i" ) &
  pids+=($!)
done
wait "${pids[@]}"
echo "$N joins in $(echo "$(date +%s.%N) - $t0" | bc) s; failed: $(grep -L '^0$' "$D"/rc.* | wc -l); retries: $(cat "$D"/out.* | grep -c retrying || true); listen overflows: $(( $(overflows) - before ))"
echo "client errors:"
cat "$D"/out.* | grep '^error' | sed 's/:[0-9]\{4,5\}/:PORT/g' | sort | uniq -c | sort -rn || true
echo "broker: refused or dropped connections:"
grep -o 'why=.*\|TLS handshake failed.*' "$D/broker.log" | sed 's/127.0.0.1:[0-9]*/ADDR/g' | sort | uniq -c | sort -rn || true
echo "files in $D"
