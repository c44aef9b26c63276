#!/usr/bin/env bash
# mTLS between two apps with Sigil certificates, all on this machine
# (docs/access/applications.md): a dev broker; the web host's agent (one-shot)
# writes nginx's certificate and client CA from agent.yaml; nginx runs
# nginx.conf (ssl_verify_client + a CN check); the api host gets its client
# certificate with `sigil app cert`; curl calls nginx as the api, as another
# workload, and without a certificate.
#
# Needs the sigil binary (SIGIL, default target/debug/sigil), nginx
# (apt-get install nginx-light) and curl. Everything lives in a temp directory
# removed at exit.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
HERE="$ROOT/examples/access/applications"
SIGIL="${SIGIL:-$ROOT/target/debug/sigil}"
NGINX="${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}"
[ -x "$SIGIL" ] || { echo "no sigil binary at $SIGIL: cargo build -p sigil" >&2; exit 1; }
[ -x "$NGINX" ] || { echo "no nginx: apt-get install nginx-light" >&2; exit 1; }
command -v curl >/dev/null || { echo "no curl: apt-get install curl" >&2; exit 1; }

WORK="$(mktemp -d /tmp/sigil-app-demo-XXXXXX)"
BROKER_PID="" NGINX_PID=""
cleanup() {
  [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null || true
  [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing listens on $1" >&2; return 1; }

echo "== dev broker, resources, one join token per host"
BPORT="$(port)"
"$SIGIL" server --dev --data-dir "$WORK/broker" --listen "127.0.0.1:$BPORT" >"$WORK/broker.log" 2>&1 &
BROKER_PID=$!
for _ in $(seq 100); do [ -f "$WORK/broker/admin.identity" ] && break; sleep 0.1; done
export SIGIL_ADDR="127.0.0.1:$BPORT" SIGIL_IDENTITY="$WORK/broker/admin.identity"
"$SIGIL" apply -f "$HERE/resources.yaml"
"$SIGIL" token create --bot web-host --name web-demo >"$WORK/web.token"
"$SIGIL" token create --bot api-host --name api-demo >"$WORK/api.token"
chmod 0600 "$WORK"/*.token

echo "== web host: the agent writes nginx's files (agent.yaml, one-shot)"
"$SIGIL" agent --check --config "$HERE/agent.yaml"
sed -e "s|^broker: .*|broker: 127.0.0.1:$BPORT|" -e "s|^ca_file: .*|ca_file: $WORK/broker/tls-ca.pem|" \
    -e "s|^state_dir: .*|state_dir: $WORK/agent|" -e "s|token_file: /etc/sigil/join-token|token_file: $WORK/web.token|" \
    -e "s|/etc/nginx/sigil|$WORK/web|" -e "/group:/d" "$HERE/agent.yaml" >"$WORK/agent.yaml"
"$SIGIL" agent --oneshot --config "$WORK/agent.yaml"
ls "$WORK/web"

echo "== nginx with nginx.conf (ssl_verify_client on, ca.pem, CN=api.internal only)"
NPORT="$(port)"
mkdir -p "$WORK/nginx/logs"
sed -e "s|/etc/nginx/sigil|$WORK/web|g" -e "s|listen 443 ssl;|listen 127.0.0.1:$NPORT ssl;|" \
    -e 's|proxy_pass http://127.0.0.1:8080;|return 200 "hello $ssl_client_s_dn\\n";|' "$HERE/nginx.conf" >"$WORK/nginx/site.conf"
cat >"$WORK/nginx/nginx.conf" <<CONF
daemon off;
master_process off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    include $WORK/nginx/site.conf;
}
CONF
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
NGINX_PID=$!
wait_port "$NPORT"

echo "== api host: sigil app cert, then curl (server verified with ca.pem and DNS:web.internal)"
"$SIGIL" join --token-file "$WORK/api.token" --ca-file "$WORK/broker/tls-ca.pem" --out "$WORK/api.identity"
"$SIGIL" app cert --identity "$WORK/api.identity" --workload-identity api --dir "$WORK/api" --ttl 10m
call() { curl -sS -o "$WORK/body" -w '%{http_code}' --cacert "$WORK/api/ca.pem" --resolve "web.internal:$NPORT:127.0.0.1" "$@" "https://web.internal:$NPORT/"; }
code="$(call --cert "$WORK/api/tls.crt" --key "$WORK/api/tls.key")"
[ "$code" = 200 ] || { echo "UNEXPECTED: api got $code" >&2; exit 1; }
echo "api:          $code $(cat "$WORK/body")"
code="$(call --cert "$WORK/web/tls.crt" --key "$WORK/web/tls.key")"
[ "$code" = 403 ] || { echo "UNEXPECTED: another workload got $code" >&2; exit 1; }
echo "web as client: $code (a valid certificate, but not CN=api.internal)"
code="$(call)"
[ "$code" = 400 ] || { echo "UNEXPECTED: no certificate got $code" >&2; exit 1; }
echo "no cert:      $code"
echo "OK"
