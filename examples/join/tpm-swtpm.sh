#!/usr/bin/env bash
# TPM join against a throwaway dev broker and a software TPM (swtpm) whose EK certificate is
# signed by a local CA (swtpm_localca). The join token trusts that CA (config.ek_ca); the
# broker makes a credential for the TPM's EK + a fresh AK, the TPM activates it.
# Usage: bash examples/join/tpm-swtpm.sh   (from the repository root, after scripts/setup.sh
# and cargo build -p sigil -p sigil-agent). On a real machine: sigil join --method tpm --tcti device:/dev/tpmrm0
set -euo pipefail
SIGIL=${SIGIL:-target/debug/sigil}
work=$(mktemp -d)
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "== manufacture a software TPM with an EK certificate from a local CA"
mkdir -p "$work/ca" "$work/tpm"
printf 'statedir = %s\nsigningkey = %s/signkey.pem\nissuercert = %s/issuercert.pem\ncertserial = %s/certserial\n' \
  "$work/ca" "$work/ca" "$work/ca" "$work/ca" >"$work/localca.conf"
printf -- '--platform-manufacturer Example\n--platform-version 2.1\n--platform-model demo\n' >"$work/localca.options"
printf 'create_certs_tool = %s\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = sha256\n' \
  "$(command -v swtpm_localca)" "$work/localca.conf" "$work/localca.options" >"$work/setup.conf"
swtpm_setup --tpm2 --create-ek-cert --overwrite --tpmstate "$work/tpm" --config "$work/setup.conf" >/dev/null
while :; do tpm=$(free); python3 -c "import socket; socket.socket().bind(('127.0.0.1', $tpm + 1))" 2>/dev/null && break; done
swtpm socket --tpm2 --tpmstate dir="$work/tpm" --server type=tcp,port=$tpm,bindaddr=127.0.0.1 \
  --ctrl type=tcp,port=$((tpm + 1)),bindaddr=127.0.0.1 --flags not-need-init,startup-clear &
swtpm=$!
port=$(free)
"$SIGIL" server --dev --data-dir "$work/data" --listen "127.0.0.1:$port" >"$work/broker.log" 2>&1 &
broker=$!
trap 'kill $broker $swtpm; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -f "$work/data/admin.identity" ] && break; sleep 0.1; done
export SIGIL_ADDR=127.0.0.1:$port SIGIL_IDENTITY=$work/data/admin.identity

{
  echo "kind: bot"; echo "name: edge"; echo "---"
  echo "kind: join_token"; echo "name: edge-tpm"; echo "bot: edge"; echo "method: tpm"
  echo "max_uses: 100"; echo "expires_at: $(( $(date +%s) + 3600 ))"
  echo "allow:"; echo "  - ek_cert_verified: \"true\""
  echo "config:"; echo "  ek_ca: |"
  cat "$work/ca/issuercert.pem" "$work/ca/swtpm-localca-rootca-cert.pem" | sed 's/^/    /'
} >"$work/token.yaml"
"$SIGIL" apply -f "$work/token.yaml"

echo "== join with the TPM"
"$SIGIL" join --method tpm --token-name edge-tpm --tcti "swtpm:host=127.0.0.1,port=$tpm" \
  --ca-file "$work/data/tls-ca.pem" --out "$work/bot.identity"
SIGIL_IDENTITY=$work/bot.identity "$SIGIL" whoami
"$SIGIL" audit | grep '"join"' | tail -n 1
