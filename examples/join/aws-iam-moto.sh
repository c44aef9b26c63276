#!/usr/bin/env bash
# AWS IAM join against a throwaway dev broker and moto's STS (signatures enforced).
# boto3 creates an IAM user in moto; `sigil join --method iam` signs GetCallerIdentity with
# its key around the broker's challenge; the broker sends it to the allow-listed STS.
# Usage: bash examples/join/aws-iam-moto.sh   (from the repository root, after
# scripts/setup.sh and cargo build -p sigil -p sigil-agent). On real AWS drop --sts-endpoint and
# config.sts_endpoints: the instance's credentials and the regional STS are used.
set -euo pipefail
SIGIL=${SIGIL:-target/debug/sigil}
PY=${PY:-.venv/bin/python}
work=$(mktemp -d)
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free); sts=$(free)
INITIAL_NO_AUTH_ACTION_COUNT=2 .venv/bin/moto_server -H 127.0.0.1 -p "$sts" >"$work/moto.log" 2>&1 &
moto=$!
"$SIGIL" server --dev --data-dir "$work/data" --listen "127.0.0.1:$port" >"$work/broker.log" 2>&1 &
broker=$!
trap 'kill $broker $moto; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -f "$work/data/admin.identity" ] && (echo >/dev/tcp/127.0.0.1/$sts) 2>/dev/null && break; sleep 0.1; done
export SIGIL_ADDR=127.0.0.1:$port SIGIL_IDENTITY=$work/data/admin.identity

echo "== boto3 creates IAM user ci-runner in moto"
eval "$("$PY" - "http://127.0.0.1:$sts" <<'PY'
import boto3, sys
iam = boto3.client("iam", endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
iam.create_user(UserName="ci-runner")
k = iam.create_access_key(UserName="ci-runner")["AccessKey"]
print(f"export AWS_ACCESS_KEY_ID={k['AccessKeyId']} AWS_SECRET_ACCESS_KEY={k['SecretAccessKey']}")
PY
)"

cat >"$work/token.yaml" <<YAML
kind: bot
name: ci
---
kind: join_token
name: aws-ci
bot: ci
method: iam
max_uses: 100
expires_at: $(( $(date +%s) + 3600 ))
allow:
  - aws_account: "123456789012"
    aws_arn: "arn:aws:iam::123456789012:user/ci-*"
config:
  sts_endpoints: http://127.0.0.1:$sts
YAML
"$SIGIL" apply -f "$work/token.yaml"

echo "== join as the IAM user"
"$SIGIL" join --method iam --token-name aws-ci --sts-endpoint "http://127.0.0.1:$sts/" \
  --ca-file "$work/data/tls-ca.pem" --out "$work/bot.identity"
SIGIL_IDENTITY=$work/bot.identity "$SIGIL" whoami

echo "== a wrong secret key is refused by STS"
if AWS_SECRET_ACCESS_KEY=wrong "$SIGIL" join --method iam --token-name aws-ci --sts-endpoint "http://127.0.0.1:$sts/" \
  --ca-file "$work/data/tls-ca.pem" --out "$work/bad.identity"; then echo "unexpected success" >&2; exit 1; fi
echo "== a request aimed at another host is refused before any network call"
if "$SIGIL" join --method iam --token-name aws-ci --sts-endpoint "http://127.0.0.1:9/" \
  --ca-file "$work/data/tls-ca.pem" --out "$work/bad.identity"; then echo "unexpected success" >&2; exit 1; fi
"$SIGIL" audit | grep '"join"' | tail -n 3 || true
