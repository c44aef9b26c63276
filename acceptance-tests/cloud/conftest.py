"""Fixtures for the cloud federation tests: a JWT verifier bound to the broker and
a throwaway TLS PKI for local HTTPS endpoints."""
import pytest

from cloud_peers import JwtVerifier, LocalPki


@pytest.fixture
def verifier(broker):
    return JwtVerifier(broker.url, broker.ca)


@pytest.fixture
def pki(tmp_path):
    return LocalPki(tmp_path / "pki")
