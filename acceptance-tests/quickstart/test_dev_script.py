"""The README's first command, `bash scripts/dev.sh`, on a fresh machine.

A fresh machine has Rust and openssl but not tpm2-tss (libtss2-dev, which only
scripts/setup.sh installs). dev.sh must still build sigil and issue both SVIDs.

The test runs dev.sh in a clean clone of this repository (its committed HEAD:
commit a change before running this test locally) with tpm2-tss made absent:
- `pkg-config` on PATH knows no package (what dev.sh's check and the
  `pkg-config` crate run);
- TSS2_*_NO_PKG_CONFIG forbid tss-esapi-sys's probe, so an earlier successful
  probe cached by cargo cannot hide the absence.
The clone builds in its own target directory seeded from this checkout's
(dependency artifacts hard-linked, build-script outputs and fingerprints
copied), so only the workspace crates compile and this checkout's binaries are
never replaced by the clone's.
"""
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import jwt
import pytest
import requests

from sigil_harness import ROOT, free_port, require_tool

NO_PACKAGES_PKG_CONFIG = """#!/bin/sh
# pkg-config on a machine without libtss2-dev: no package is installed.
for a in "$@"; do
  case "$a" in -*) ;; *) echo "Package $a was not found in the pkg-config search path." >&2 ;; esac
done
exit 1
"""
# What the pkg-config crate reads (tss-esapi-sys: tss2-sys, tss2-esys, tss2-mu, tss2-tctildr).
NO_TSS2_PROBE = {f"TSS2_{lib}_NO_PKG_CONFIG": "1" for lib in ("SYS", "ESYS", "MU", "TCTILDR")}
DEMO_ID = "spiffe://sigil.local/demo"
BUILD_TIMEOUT = 1500  # s: a clean build of the workspace crates on 2 shared cores; deps come seeded


def clean_clone(dst: Path) -> Path:
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["git", "clone", "--quiet", "--shared", "--no-checkout", str(ROOT), str(dst)], check=True)
    subprocess.run(["git", "-C", str(dst), "checkout", "--quiet", "--detach", head], check=True)
    return dst


def seed_target(dst: Path):
    """Dependency artifacts from this checkout's debug build, if there is one."""
    src = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"
    if not (src / "deps").is_dir():
        return
    (dst / "debug").mkdir(parents=True)
    # rustc writes new files for what it rebuilds: links are safe for deps/.
    subprocess.run(["cp", "-al", str(src / "deps"), str(dst / "debug" / "deps")], check=True)
    # Cargo rewrites these in place when a build script reruns: copies.
    for d in ("build", ".fingerprint"):
        if (src / d).is_dir():
            subprocess.run(["cp", "-a", str(src / d), str(dst / "debug" / d)], check=True)


def stop_group(proc: subprocess.Popen):
    """SIGTERM to dev.sh's session (dev.sh, the broker, a cargo still building), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            time.sleep(0.5)  # the broker exits on dev.sh's trap
        except subprocess.TimeoutExpired:
            pass


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.mark.timeout(BUILD_TIMEOUT + 120)
def test_dev_sh_in_a_clean_clone_without_tpm2_tss_issues_both_svids(tmp_path):
    openssl = require_tool("openssl", "apt-get install openssl")
    cargo = require_tool("cargo", "install Rust with rustup (https://rustup.rs)")
    clone = clean_clone(tmp_path / "clone")
    target = tmp_path / "target"
    seed_target(target)
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "pkg-config").write_text(NO_PACKAGES_PKG_CONFIG)
    (shim / "pkg-config").chmod(0o755)
    env = {**os.environ, **NO_TSS2_PROBE, "CARGO_TARGET_DIR": str(target), "PATH": f"{shim}:{Path(cargo).parent}:{os.environ['PATH']}"}
    port = free_port()
    out, err = tmp_path / "dev.out", tmp_path / "dev.err"
    started = time.monotonic()
    with open(out, "wb") as o, open(err, "wb") as e:
        # Its own session: the broker dev.sh leaves running is stopped with it.
        dev = subprocess.Popen(["bash", "scripts/dev.sh", str(port)], cwd=clone, env=env, stdout=o, stderr=e, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = started + BUILD_TIMEOUT
        while "broker running on" not in read(out):
            assert dev.poll() is None, f"dev.sh exited {dev.returncode}:\n{read(err)[-4000:]}\n{read(out)}"
            assert time.monotonic() < deadline, f"dev.sh did not finish in {BUILD_TIMEOUT} s:\n{read(err)[-4000:]}"
            time.sleep(1)
        print(f"dev.sh in a clean clone: both SVIDs after {time.monotonic() - started:.0f} s")
        assert "building without the `tpm` feature" in read(err), read(err)[-4000:]
        sigil = target / "debug" / "sigil"
        linked = subprocess.run(["ldd", str(sigil)], capture_output=True, text=True).stdout
        assert "libtss2" not in linked, f"the clone's sigil links tpm2-tss:\n{linked}"

        data = clone / ".data" / "sigil"
        # The JWT-SVID dev.sh printed verifies with the broker's published keys.
        lines = read(out).splitlines()
        token = lines[lines.index(f"== JWT-SVID for {DEMO_ID} (audience demo):") + 1].strip()
        ca = str(data / "tls-ca.pem")
        doc = requests.get(f"https://127.0.0.1:{port}/.well-known/openid-configuration", verify=ca, timeout=10).json()
        keys = requests.get(doc["jwks_uri"], verify=ca, timeout=10).json()["keys"]
        kid = jwt.get_unverified_header(token)["kid"]
        key = next(k for k in keys if k["kid"] == kid)
        claims = jwt.decode(token, key=jwt.PyJWK(key), algorithms=[key["alg"]], audience="demo")
        assert claims["sub"] == DEMO_ID

        # The X.509-SVID it wrote chains to the bundle it wrote and names the demo ID.
        svid, bundle = data / "demo-svid" / "svid.pem", data / "demo-svid" / "bundle.pem"
        v = subprocess.run([openssl, "verify", "-CAfile", str(bundle), str(svid)], capture_output=True, text=True)
        assert v.returncode == 0 and ": OK" in v.stdout, v.stdout + v.stderr
        san = subprocess.run([openssl, "x509", "-in", str(svid), "-noout", "-ext", "subjectAltName"], capture_output=True, text=True, check=True).stdout
        assert f"URI:{DEMO_ID}" in san, san
    finally:
        stop_group(dev)
        # The clone's build is a few GB of links and objects: not kept with pytest's last temp dirs.
        shutil.rmtree(target, ignore_errors=True)
