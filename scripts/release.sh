#!/usr/bin/env bash
# Builds and packages terraform-provider-sigil for Terraform's installers: the registry's
# files (zip, SHA256SUMS, its detached GPG signature, manifest) and a provider mirror tree
# that works as a network mirror (serve it over HTTPS) and as a filesystem mirror.
# Packaging is scripts/release/package.py; this script builds the binary and signs.
# See docs/guides/provider-distribution.md.
#
# Usage: bash scripts/release.sh [options]
#   --version V           release version (default: the workspace version in Cargo.toml)
#   --out DIR             output directory (default: dist)
#   --binary PATH         package this prebuilt linux amd64 binary instead of running
#                         `cargo build --release --locked -p terraform-provider-sigil`
#   --strip               strip debug info from (a copy of) the binary first
#   --source H/NS/TYPE    provider source address the mirror tree is laid out for
#                         (repeatable; default registry.sigil.dev/sigil/sigil)
#   --gpg-key ID          RSA/DSA key that signs SHA256SUMS (default: $SIGIL_RELEASE_GPG_KEY);
#                         GNUPGHOME selects the keyring as usual
#   --no-sign             write no signature (the registry refuses unsigned releases)
#   --compression-level N zip deflate level 0-9 (default 9)
# SOURCE_DATE_EPOCH sets the zip entry's timestamp (default 1980-01-01), so the same
# binary always gives a byte-identical zip.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "release: $*" >&2; exit 1; }

VERSION="" OUT=dist BINARY="" STRIP=0 SIGN=1 LEVEL=9
GPG_KEY=${SIGIL_RELEASE_GPG_KEY:-}
SOURCES=()
while [ $# -gt 0 ]; do
  case "$1" in
    --version) VERSION=${2:?--version needs a value}; shift 2 ;;
    --out) OUT=${2:?--out needs a directory}; shift 2 ;;
    --binary) BINARY=${2:?--binary needs a path}; shift 2 ;;
    --strip) STRIP=1; shift ;;
    --source) SOURCES+=("${2:?--source needs HOST/NAMESPACE/TYPE}"); shift 2 ;;
    --gpg-key) GPG_KEY=${2:?--gpg-key needs a key id}; shift 2 ;;
    --no-sign) SIGN=0; shift ;;
    --compression-level) LEVEL=${2:?--compression-level needs 0-9}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[ ${#SOURCES[@]} -gt 0 ] || SOURCES=(registry.sigil.dev/sigil/sigil)
command -v python3 >/dev/null || die "python3 not found: apt-get install python3"

if [ "$SIGN" = 1 ]; then
  [ -n "$GPG_KEY" ] || die "no signing key: pass --gpg-key ID (or set SIGIL_RELEASE_GPG_KEY), or --no-sign to write no signature"
  command -v gpg >/dev/null || die "gpg not found: apt-get install gnupg"
  # Fail before building if the key cannot sign.
  gpg --batch --list-secret-keys "$GPG_KEY" >/dev/null 2>&1 \
    || die "--gpg-key $GPG_KEY: no such secret key in ${GNUPGHOME:-~/.gnupg}"
  # Terraform checks the signature with Go's golang.org/x/crypto/openpgp, which reads RSA and
  # DSA keys only (an EdDSA key fails at `terraform init`: "unsupported feature: public key
  # type: 22"). OpenPGP algorithm ids: 1-3 RSA, 17 DSA.
  for algo in $(gpg --batch --with-colons --list-secret-keys "$GPG_KEY" 2>/dev/null \
      | awk -F: '($1 == "sec" || $1 == "ssb") && $12 ~ /s/ && $2 !~ /[erd]/ { print $4 }'); do
    case "$algo" in
      1|2|3|17) ;;
      *) die "--gpg-key $GPG_KEY: a signing key uses OpenPGP algorithm $algo (22 is EdDSA, 19 ECDSA); Terraform can verify only RSA or DSA signatures: use an RSA key" ;;
    esac
  done
fi

if [ -z "$VERSION" ]; then
  VERSION=$(python3 -c 'import tomllib; print(tomllib.load(open("Cargo.toml", "rb"))["workspace"]["package"]["version"])') \
    || die "cannot read [workspace.package] version from Cargo.toml; pass --version"
fi

SRC_ARGS=()
for s in "${SOURCES[@]}"; do SRC_ARGS+=(--source "$s"); done
# Bad --version/--source fail now, not after a release build.
python3 scripts/release/package.py --check --version "$VERSION" --out "$OUT" "${SRC_ARGS[@]}" || exit 1

if [ -z "$BINARY" ]; then
  command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs), or pass --binary"
  cargo build --release --locked -p terraform-provider-sigil
  BINARY=${CARGO_TARGET_DIR:-target}/release/terraform-provider-sigil
fi
[ -f "$BINARY" ] || die "--binary $BINARY: no such file"

EXTRA=("${SRC_ARGS[@]}")
if [ "$STRIP" = 1 ]; then EXTRA+=(--strip); fi
python3 scripts/release/package.py --binary "$BINARY" --version "$VERSION" --out "$OUT" \
  --compression-level "$LEVEL" "${EXTRA[@]}"

SUMS=$OUT/terraform-provider-sigil_${VERSION}_SHA256SUMS
if [ "$SIGN" = 1 ]; then
  # Binary (not armored) detached signature, as the registry and Terraform expect.
  gpg --batch --yes --local-user "$GPG_KEY" --detach-sign --output "$SUMS.sig.tmp" "$SUMS"
  mv "$SUMS.sig.tmp" "$SUMS.sig"
  gpg --batch --verify "$SUMS.sig" "$SUMS" 2>/dev/null || die "$SUMS.sig does not verify with gpg"
  echo "$SUMS.sig"
else
  # A signature left from an earlier run would not match the new checksums.
  rm -f "$SUMS.sig"
  echo "release: --no-sign: SHA256SUMS is NOT signed (no $SUMS.sig); the registry refuses unsigned releases" >&2
fi
