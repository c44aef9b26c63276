#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests, then the acceptance tests that
# drive real peers (openssl, pkilint, PyJWT, Terraform, py-spiffe ...).
# Installs what is missing first (scripts/setup.sh). Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup (https://rustup.rs)"; exit 1; }
export CARGO_TERM_COLOR=never
# Disk: a full debug build of the workspace with incremental caches and full debug
# info is ~15 GB, more than a small CI disk holds. Tests need line numbers in
# backtraces, not variable-level debug info or incremental caches (a one-off build).
# Set either variable yourself to override.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
export CARGO_PROFILE_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}
echo "== disk before the build: $(df -h --output=avail . | tail -1 | tr -d ' ') free"
start=$SECONDS
echo "== build"
cargo build --workspace --locked --bins
echo "== crate layering"
bash scripts/check-layers.sh
echo "== cargo test ($((SECONDS - start)) s so far)"
cargo test --workspace --locked
echo "== acceptance tests ($((SECONDS - start)) s so far)"
.venv/bin/pytest -c acceptance-tests/pytest.ini acceptance-tests
echo "== quick benchmarks ($((SECONDS - start)) s so far; debug build: targets reported, not enforced)"
bash bench/run.sh --quick
echo "== done in $((SECONDS - start)) s; target/ is $(du -sh "${CARGO_TARGET_DIR:-target}" | cut -f1), $(df -h --output=avail . | tail -1 | tr -d ' ') free"
