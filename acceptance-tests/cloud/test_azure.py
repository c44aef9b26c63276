"""Azure workload identity federation: azure-identity's WorkloadIdentityCredential
(reading the token file Sigil writes, through AZURE_FEDERATED_TOKEN_FILE) and
ClientAssertionCredential exchange the JWT-SVID at a local HTTPS authority
(AZURE_AUTHORITY_HOST, certificate trusted through REQUESTS_CA_BUNDLE) that verifies
it with PyJWT against the broker's discovery + JWKS, and requires RS256 as Entra ID does."""
import json
import secrets
import urllib.parse

import jwt
import pytest

from cloud_peers import LocalServer, require_module

TENANT = "0d5a7c3e-1b2f-4e6a-9c8d-7f1e2d3c4b5a"
CLIENT_ID = "5e1f9a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
SPIFFE_ID = "spiffe://sigil.local/azure/app"
SCOPE = "https://management.azure.com/.default"
AUDIENCE = "api://AzureADTokenExchange"


class EntraAuthority:
    def __init__(self, verifier, tls):
        self.verifier = verifier
        self.issued = {}
        self.server = LocalServer(self.route, tls=tls)

    def route(self, method, path, headers, body):
        base = self.server.url
        if method == "GET" and path == f"/{TENANT}/v2.0/.well-known/openid-configuration":
            return 200, "application/json", {
                "issuer": f"{base}/{TENANT}/v2.0",
                "token_endpoint": f"{base}/{TENANT}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/{TENANT}/oauth2/v2.0/authorize",
                "jwks_uri": f"{base}/{TENANT}/discovery/v2.0/keys",
            }
        if method == "POST" and path == f"/{TENANT}/oauth2/v2.0/token":
            form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
            if form.get("grant_type") != "client_credentials" or form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
                return 400, "application/json", {"error": "unsupported_grant_type"}
            if form.get("client_id") != CLIENT_ID:
                return 400, "application/json", {"error": "unauthorized_client", "error_description": "AADSTS700016: application not found"}
            assertion = form.get("client_assertion", "")
            if jwt.get_unverified_header(assertion).get("alg") != "RS256":
                return 401, "application/json", {"error": "invalid_client", "error_description": "AADSTS5002738: only RS256 is supported"}
            try:
                claims = self.verifier.verify(assertion, audience=AUDIENCE)
            except Exception as e:
                return 401, "application/json", {"error": "invalid_client", "error_description": f"AADSTS700211: {e}"}
            token = "eyJ0eXAi.entra-" + secrets.token_hex(8)
            self.issued[token] = (claims["sub"], form.get("scope"))
            return 200, "application/json", {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}
        return 404, "application/json", {"error": "not_found", "error_description": path}


@pytest.fixture
def authority(verifier, pki, monkeypatch):
    a = EntraAuthority(verifier, pki.tls)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    yield a
    a.server.stop()


def test_workload_identity_credential_reads_the_token_file_sigil_writes(broker, authority, verifier, tmp_path, monkeypatch):
    identity = require_module("azure.identity", "azure-identity")
    token_file = tmp_path / "azure.jwt"
    broker.sigil("federation", "azure", "token-file", "--spiffe-id", SPIFFE_ID, "--out", str(token_file))
    assert jwt.decode(token_file.read_text(), options={"verify_signature": False})["aud"] == AUDIENCE
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AZURE_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("AZURE_TENANT_ID", TENANT)
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", authority.server.url)
    cred = identity.WorkloadIdentityCredential()
    tok = cred.get_token(SCOPE)
    assert authority.issued[tok.token] == (SPIFFE_ID, SCOPE)
    assert [c["sub"] for c in verifier.accepted] == [SPIFFE_ID]


def test_client_assertion_credential_with_a_sigil_jwt(broker, authority, verifier):
    identity = require_module("azure.identity", "azure-identity")
    calls = []

    def assertion():
        calls.append(1)
        return broker.sigil("svid", "jwt", "--spiffe-id", SPIFFE_ID, "--audience", AUDIENCE).stdout.strip()

    cred = identity.ClientAssertionCredential(TENANT, CLIENT_ID, assertion, authority=authority.server.url)
    tok = cred.get_token(SCOPE)
    assert authority.issued[tok.token][0] == SPIFFE_ID and calls == [1]


def test_sigil_exchanges_the_client_assertion_itself(broker, authority, pki):
    out = broker.sigil("federation", "azure", "token", "--spiffe-id", SPIFFE_ID, "--tenant-id", TENANT, "--client-id", CLIENT_ID,
                       "--authority-host", authority.server.url, "--ca-file", str(pki.ca_file)).stdout
    doc = json.loads(out)
    assert authority.issued[doc["access_token"]] == (SPIFFE_ID, SCOPE) and doc["expires_in"] == 3599


def test_wrong_audience_is_refused_with_the_entra_error(broker, authority, verifier, pki, tmp_path):
    token_file = tmp_path / "wrong.jwt"
    token_file.write_text(broker.sigil("svid", "jwt", "--spiffe-id", SPIFFE_ID, "--audience", "sts.amazonaws.com").stdout.strip())
    p = broker.sigil("federation", "azure", "token", "--token-file", str(token_file), "--tenant-id", TENANT, "--client-id", CLIENT_ID,
                     "--authority-host", authority.server.url, "--ca-file", str(pki.ca_file), check=False)
    assert p.returncode != 0 and "AADSTS700211" in p.stderr and "api://AzureADTokenExchange" in p.stderr
    assert verifier.refused and not authority.issued


def test_untrusted_authority_certificate_is_refused(broker, authority):
    p = broker.sigil("federation", "azure", "token", "--spiffe-id", SPIFFE_ID, "--tenant-id", TENANT, "--client-id", CLIENT_ID,
                     "--authority-host", authority.server.url, check=False)
    assert p.returncode != 0 and "TLS handshake" in p.stderr and "--ca-file" in p.stderr
    assert not authority.issued
