#!/usr/bin/env bash
# One-shot agent for a CI job: join with a token, write an X.509-SVID, a JWT-SVID
# for AWS and the bot identity, then exit. Exits non-zero, naming the cause, if
# anything fails (bad token, unreachable broker, a role that does not allow the ID).
#
# Inputs (environment):
#   SIGIL_BROKER   broker address HOST:PORT                  (required)
#   SIGIL_CA_FILE  the broker's TLS CA (tls-ca.pem)          (required)
#   SIGIL_TOKEN    join token secret                         (required)
#   SIGIL_ID       SPIFFE ID to request   (default spiffe://sigil.local/ci/build)
#   OUT            output directory       (default ./sigil-out)
#   SIGIL          the sigil binary       (default: sigil on PATH)
set -euo pipefail
: "${SIGIL_BROKER:?set SIGIL_BROKER=HOST:PORT}"
: "${SIGIL_CA_FILE:?set SIGIL_CA_FILE to the broker CA (tls-ca.pem)}"
: "${SIGIL_TOKEN:?set SIGIL_TOKEN to a join token secret}"
SIGIL_ID=${SIGIL_ID:-spiffe://sigil.local/ci/build}
OUT=${OUT:-./sigil-out}
SIGIL=${SIGIL:-sigil}

mkdir -p "$OUT"
cfg="$OUT/agent.yaml"
# The token stays in the environment (SIGIL_TOKEN); the config file holds no secret.
cat > "$cfg" <<YAML
broker: ${SIGIL_BROKER}
ca_file: ${SIGIL_CA_FILE}
state_dir: ${OUT}/state
join:
  method: token
identity_ttl: 20m
outputs:
  - type: x509-svid
    dir: ${OUT}/svid
    spiffe_id: ${SIGIL_ID}
    ttl: 20m
  - type: jwt-svid
    path: ${OUT}/aws/token
    audiences: [sts.amazonaws.com]
    spiffe_id: ${SIGIL_ID}
    ttl: 15m
  - type: identity
    path: ${OUT}/identity
YAML

"$SIGIL" agent --oneshot --config "$cfg"

# What a later step would use:
echo "AWS_WEB_IDENTITY_TOKEN_FILE=$OUT/aws/token"
echo "SIGIL_IDENTITY=$OUT/identity"
