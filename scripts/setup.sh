#!/usr/bin/env bash
# Installs everything Sigil's build and tests need on a fresh Debian machine.
# Idempotent: each step is skipped when already done. Run as root (CI) or with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(openssl ca-certificates pkg-config protobuf-compiler libtss2-dev swtpm swtpm-tools tpm2-tools openssh-server openssh-client python3-venv postgresql-15 softhsm2 opensc nginx-light mariadb-server gnupg unzip binutils systemd man-db dpkg-dev adduser bash-completion zsh fish)

need_apt=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing apt packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Python venv with the independent peers the tests drive.
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
REQ=acceptance-tests/requirements.txt
STAMP=.venv/.requirements.sha
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python test peers from $REQ"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -r "$REQ"
  echo "$want" > "$STAMP"
fi
