#!/usr/bin/env bash
# Cloud federation, locally: a dev broker, then every file the AWS / Azure / GCP SDKs read,
# the setup each cloud needs (text + Terraform), and `sigil federation verify`.
# No cloud account is touched. Usage: bash examples/cloud/run-local.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
SIGIL=${SIGIL:-target/debug/sigil}
[ -x "$SIGIL" ] || cargo build -p sigil -p sigil-agent
OUT=${1:-$(mktemp -d)}
mkdir -p "$OUT"
PORT=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
"$SIGIL" server --dev --data-dir "$OUT/broker" --listen "127.0.0.1:$PORT" 2>"$OUT/broker.log" &
BROKER=$!
trap 'kill $BROKER 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -f "$OUT/broker/admin.identity" ] && break; sleep 0.1; done
export SIGIL_ADDR=127.0.0.1:$PORT SIGIL_IDENTITY=$OUT/broker/admin.identity
ISSUER=https://127.0.0.1:$PORT
ID=spiffe://sigil.local/example/app
GCP_AUD=//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/sigil/providers/sigil

echo "== AWS OIDC: token file + config profile (AWS_CONFIG_FILE=$OUT/aws-config AWS_PROFILE=app)"
"$SIGIL" svid jwt --spiffe-id "$ID" --audience sts.amazonaws.com > "$OUT/aws.jwt"
"$SIGIL" federation aws profile --config-file "$OUT/aws-config" --profile app \
  --role-arn arn:aws:iam::123456789012:role/app --token-file "$OUT/aws.jwt"
cat "$OUT/aws-config"

echo "== AWS Roles Anywhere: X.509-SVID + the credential_process line"
"$SIGIL" svid x509 --spiffe-id "$ID" --out "$OUT/svid"
echo "credential_process = $(realpath "$SIGIL") aws credential-process --certificate $OUT/svid/svid.pem --private-key $OUT/svid/svid.key --trust-anchor-arn <TA ARN> --profile-arn <PROFILE ARN> --role-arn <ROLE ARN> --region eu-west-1"
"$SIGIL" aws sign-create-session --certificate "$OUT/svid/svid.pem" --private-key "$OUT/svid/svid.key" \
  --trust-anchor-arn arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/ta \
  --profile-arn arn:aws:rolesanywhere:eu-west-1:123456789012:profile/p \
  --role-arn arn:aws:iam::123456789012:role/app --region eu-west-1 --time 20240102T030405Z > "$OUT/create-session-signature.json"
echo "signature steps: $OUT/create-session-signature.json"

echo "== Azure: AZURE_FEDERATED_TOKEN_FILE=$OUT/azure.jwt"
"$SIGIL" federation azure token-file --spiffe-id "$ID" --out "$OUT/azure.jwt"

echo "== GCP: GOOGLE_APPLICATION_CREDENTIALS=$OUT/gcp.json"
"$SIGIL" svid jwt --spiffe-id "$ID" --audience "$GCP_AUD" > "$OUT/gcp.jwt"
"$SIGIL" federation gcp config --out "$OUT/gcp.json" --audience "$GCP_AUD" --token-file "$OUT/gcp.jwt"
cat "$OUT/gcp.json"

echo "== cloud side (Terraform in $OUT/terraform/)"
mkdir -p "$OUT/terraform"
"$SIGIL" bundle --format pem > "$OUT/ca.pem"
"$SIGIL" federation setup aws --issuer "$ISSUER" --subject 'spiffe://sigil.local/example/*' --format terraform > "$OUT/terraform/aws_oidc.tf"
"$SIGIL" federation setup aws-roles-anywhere --bundle "$OUT/ca.pem" --subject "$ID" --format terraform > "$OUT/terraform/aws_roles_anywhere.tf"
"$SIGIL" federation setup azure --issuer "$ISSUER" --subject "$ID" --format terraform > "$OUT/terraform/azure.tf"
"$SIGIL" federation setup gcp --issuer "$ISSUER" --project-number 123456789 --subject-prefix spiffe://sigil.local/ --format terraform > "$OUT/terraform/gcp.tf"
"$SIGIL" federation setup azure --issuer "$ISSUER" --subject "$ID"

echo "== verify (a local dev broker: AWS refuses the port, and no cloud trusts its self-signed TLS)"
for cloud in aws azure gcp; do
  aud=(); [ $cloud = gcp ] && aud=(--audience "$GCP_AUD")
  "$SIGIL" federation verify $cloud --spiffe-id "$ID" "${aud[@]}" --ca-file "$OUT/broker/tls-ca.pem" || true
done
"$SIGIL" federation verify aws-roles-anywhere --certificate "$OUT/svid/svid.pem" --bundle "$OUT/ca.pem"
echo "outputs in $OUT"
