#!/usr/bin/env bash
# Builds sigil and runs the broker in dev mode, then issues a JWT-SVID and an
# X.509-SVID against it so you can see it work. The broker keeps running
# (Ctrl-C stops it). Usage: bash scripts/dev.sh [PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${1:-8443}
DATA=.data/sigil
command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup (https://rustup.rs)"; exit 1; }
# The default `tpm` feature (the agent's TPM join) links the system tpm2-tss,
# which only scripts/setup.sh installs. The dev broker needs no TPM: without
# the library, build without the feature instead of failing in tss-esapi-sys.
FEATURES=""
if ! pkg-config --exists tss2-esys tss2-sys tss2-mu tss2-tctildr 2>/dev/null; then
  echo "dev.sh: tpm2-tss not found by pkg-config (tss2-esys): building without the \`tpm\` feature, so TPM joins" >&2
  echo "dev.sh: are off; the dev broker needs none. For them: apt-get install libtss2-dev pkg-config (scripts/setup.sh does)." >&2
  FEATURES="--no-default-features"
fi
cargo build --locked -p sigil $FEATURES
SIGIL=${CARGO_TARGET_DIR:-target}/debug/sigil
$SIGIL server --dev --data-dir "$DATA" --listen "127.0.0.1:$PORT" &
BROKER=$!
trap 'kill $BROKER 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 100); do
  [ -f "$DATA/admin.identity" ] && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
export SIGIL_ADDR="127.0.0.1:$PORT" SIGIL_IDENTITY="$DATA/admin.identity"
echo
echo "== JWT-SVID for spiffe://sigil.local/demo (audience demo):"
$SIGIL svid jwt --spiffe-id spiffe://sigil.local/demo --audience demo
echo
echo "== X.509-SVID for spiffe://sigil.local/demo:"
$SIGIL svid x509 --spiffe-id spiffe://sigil.local/demo --out "$DATA/demo-svid"
openssl x509 -in "$DATA/demo-svid/svid.pem" -noout -subject -ext subjectAltName -dates 2>/dev/null || true
openssl verify -CAfile "$DATA/demo-svid/bundle.pem" "$DATA/demo-svid/svid.pem" 2>/dev/null || true
echo
echo "broker running on 127.0.0.1:$PORT (Ctrl-C to stop); try:"
echo "  export SIGIL_ADDR=$SIGIL_ADDR SIGIL_IDENTITY=$SIGIL_IDENTITY"
echo "  $SIGIL role list"
wait $BROKER
