"""Fixtures for the cloud federation tests: a JWT verifier bound to the broker and
a throwaway TLS PKI for local HTTPS endpoints."""
import os
import urllib.parse

import pytest
import requests

from cloud_peers import EntraAuthority, GoogleSts, JwtVerifier, LocalPki, LocalServer, require_module
from sigil_harness import free_port


@pytest.fixture
def verifier(broker):
    return JwtVerifier(broker.url, broker.ca)


@pytest.fixture
def pki(tmp_path):
    return LocalPki(tmp_path / "pki")


@pytest.fixture
def moto_sts():
    server_mod = require_module("moto.server", "'moto[server]'")
    s = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    s.start()
    yield f"http://127.0.0.1:{s._port}"
    s.stop()


@pytest.fixture
def sts(moto_sts, verifier):
    """The STS endpoint the SDKs talk to: verifies WebIdentityToken, then forwards to moto."""

    def route(method, path, headers, body):
        form = urllib.parse.parse_qs(body.decode())
        if form.get("Action") == ["AssumeRoleWithWebIdentity"]:
            try:
                verifier.verify(form["WebIdentityToken"][0], audience="sts.amazonaws.com")
            except Exception as e:
                xml = f"<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>{e}</Message></Error></ErrorResponse>"
                return 400, "text/xml", xml
        fwd = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length")}
        r = requests.request(method, moto_sts + path, data=body, headers=fwd, timeout=30)
        return r.status_code, r.headers.get("Content-Type", "text/xml"), r.content

    s = LocalServer(route)
    yield s
    s.stop()


@pytest.fixture
def clean_aws_env(monkeypatch, tmp_path):
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def google_sts(verifier):
    s = GoogleSts(verifier)
    yield s
    s.server.stop()


@pytest.fixture
def authority(verifier, pki, monkeypatch):
    a = EntraAuthority(verifier, pki.tls)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    yield a
    a.server.stop()
