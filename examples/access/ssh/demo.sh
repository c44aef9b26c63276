#!/usr/bin/env bash
# SSH login with Sigil certificates, all on this machine (docs/access/ssh.md): a dev broker,
# a host certificate from `sigil ssh host-cert` for an sshd on loopback configured only by
# the written sshd_config.snippet, then `sigil ssh user-cert` and `ssh -F ssh_config`.
#
# Run as root (it creates the login `sigil-demo` and starts sshd; both removed at exit).
# Needs the sigil binary (SIGIL, default target/debug/sigil) and Debian openssh-server.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
HERE="$ROOT/examples/access/ssh"
SIGIL="${SIGIL:-$ROOT/target/debug/sigil}"
SSHD="${SSHD:-/usr/sbin/sshd}"
[ -x "$SIGIL" ] || { echo "no sigil binary at $SIGIL: cargo build -p sigil" >&2; exit 1; }
[ -x "$SSHD" ] || { echo "no sshd at $SSHD: apt-get install openssh-server" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root: the demo creates a login and starts sshd" >&2; exit 1; }

# Not under /tmp: sshd's StrictModes refuses files below a world-writable directory.
WORK="$(mktemp -d /run/sigil-ssh-demo-XXXXXX)"
chmod 0755 "$WORK"
LOGIN="sigil-demo$$"
BROKER_PID="" SSHD_PID=""
cleanup() {
  [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2>/dev/null || true
  [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null || true
  userdel -r -f "$LOGIN" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

echo "== dev broker"
BPORT="$(port)"
"$SIGIL" server --dev --data-dir "$WORK/broker" --listen "127.0.0.1:$BPORT" >"$WORK/broker.log" 2>&1 &
BROKER_PID=$!
for _ in $(seq 100); do [ -f "$WORK/broker/admin.identity" ] && break; sleep 0.1; done
export SIGIL_ADDR="127.0.0.1:$BPORT" SIGIL_IDENTITY="$WORK/broker/admin.identity"
# The demo logs in as a throwaway user instead of `deploy`.
sed "s/\"deploy\"/\"$LOGIN\"/" "$HERE/resources.yaml" >"$WORK/resources.yaml"
"$SIGIL" apply -f "$WORK/resources.yaml"
for bot in ci-deploy web1; do
  "$SIGIL" token create --bot "$bot" --name "$bot-demo" >"$WORK/$bot.token"
  "$SIGIL" join --token-file "$WORK/$bot.token" --ca-file "$WORK/broker/tls-ca.pem" --out "$WORK/$bot.identity"
done
# Password `*` matches nothing; with UsePAM no, sshd refuses a locked (`!`) account.
useradd -m -s /bin/sh -p '*' "$LOGIN"

echo "== host certificate and an sshd configured by its snippet"
"$SIGIL" ssh host-cert --identity "$WORK/web1.identity" --name 127.0.0.1 --name localhost --dir "$WORK/host"
cat "$WORK/host/sshd_config.snippet"
mkdir -p /run/sshd
SPORT="$(port)"
cat >"$WORK/sshd_config" <<CONF
Include $WORK/host/sshd_config.snippet
Port $SPORT
ListenAddress 127.0.0.1
PidFile $WORK/sshd.pid
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile none
CONF
"$SSHD" -D -e -f "$WORK/sshd_config" 2>"$WORK/sshd.log" &
SSHD_PID=$!
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$SPORT") 2>/dev/null && break; sleep 0.1; done

echo "== user certificate, then ssh -F with the generated ssh_config"
"$SIGIL" ssh user-cert --identity "$WORK/ci-deploy.identity" --principal "$LOGIN" --host 127.0.0.1 --ttl 10m --dir "$WORK/ssh"
ssh-keygen -L -f "$WORK/ssh/id_ed25519-cert.pub" | sed -n '2,12p'
ssh -F "$WORK/ssh/ssh_config" -p "$SPORT" "$LOGIN@127.0.0.1" 'echo "logged in as $(id -un) on $(hostname)"' </dev/null

echo "== the same certificate as root"
if ssh -F "$WORK/ssh/ssh_config" -p "$SPORT" "root@127.0.0.1" true </dev/null 2>"$WORK/err"; then
  echo "UNEXPECTED: logged in as root" >&2; exit 1
fi
echo "refused: $(tail -1 "$WORK/err")"
