"""Shared fixtures: the `sigil` binary and a dev-mode broker on a loopback port.

A test whose peer is missing fails with the install step in the message; nothing
is skipped silently. The helpers live in sigil_harness.py.
"""
import pytest

from sigil_harness import Broker, sigil_binary, start_moto


@pytest.fixture(scope="session")
def sigil_bin() -> str:
    return sigil_binary()


@pytest.fixture
def broker(sigil_bin, tmp_path):
    b = Broker(sigil_bin, tmp_path / "data").start()
    yield b
    b.stop()


@pytest.fixture
def moto():
    """URL of a moto server (IAM + STS, signatures enforced) on loopback."""
    url, proc = start_moto()
    yield url
    proc.kill()
    proc.wait()
