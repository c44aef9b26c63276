"""Fixtures for the release tests: one signed release of the debug provider binary and
one dev broker per module (CI time), a throwaway GPG keyring, a test CA."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from release_harness import Gpg, LoopbackCA, release
from sigil_harness import Broker, sigil_binary


@pytest.fixture(scope="session")
def gpg():
    # gpg-agent's socket path must stay short: a fresh /tmp directory, not pytest's tmp path.
    home = Path(tempfile.mkdtemp(prefix="sigil-gpg-"))
    g = Gpg(home)
    yield g
    g.stop_agent()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def dist(tmp_path_factory, gpg) -> Path:
    """A release signed with the throwaway key, laid out for the source sigil.test/sigil/sigil."""
    out = tmp_path_factory.mktemp("dist")
    release(out, "--gpg-key", gpg.fingerprint, env={"GNUPGHOME": str(gpg.home)})
    return out


@pytest.fixture(scope="session")
def loopback_ca(tmp_path_factory) -> LoopbackCA:
    return LoopbackCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def release_broker(tmp_path_factory):
    b = Broker(sigil_binary(), tmp_path_factory.mktemp("broker") / "data").start()
    yield b
    b.stop()
