#!/usr/bin/env bash
# Bound-keypair join against a throwaway dev broker. It registers a key with the token's
# one-time secret, joins again by signing a challenge, then shows a copied key being caught.
# Usage: bash examples/join/bound-keypair-demo.sh   (run from the repository root, after cargo build -p sigil -p sigil-agent)
set -euo pipefail
SIGIL=${SIGIL:-target/debug/sigil}
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$SIGIL" server --dev --data-dir "$work/data" --listen "127.0.0.1:$port" >"$work/broker.log" 2>&1 &
broker=$!
trap 'kill $broker; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -f "$work/data/admin.identity" ] && break; sleep 0.1; done
export SIGIL_ADDR=127.0.0.1:$port SIGIL_IDENTITY=$work/data/admin.identity

cat >"$work/token.yaml" <<YAML
kind: bot
name: edge
---
kind: join_token
name: edge-1
bot: edge
method: bound_keypair
max_uses: 100
expires_at: $(( $(date +%s) + 30*24*3600 ))
YAML
secret=$("$SIGIL" apply -f "$work/token.yaml" | tail -n1)

join() { "$SIGIL" join --method bound_keypair --token-name edge-1 --key-file "$1/bound.key" \
  --ca-file "$work/data/tls-ca.pem" --out "$1/bot.identity" "${@:2}"; }
mkdir -p "$work/agent" "$work/copy"
echo "== first join registers the key with the one-time secret"
join "$work/agent" --token "$secret"
echo "== an attacker copies the key and its state"
cp "$work/agent/bound.key" "$work/agent/bound.key.sequence" "$work/copy/"
echo "== the agent joins again (signed challenge, sequence $(cat "$work/agent/bound.key.sequence"))"
join "$work/agent"
echo "== the copy tries to join"
if join "$work/copy"; then echo "copy joined: unexpected" >&2; exit 1; fi
echo "== audit"
"$SIGIL" audit | grep join || true
