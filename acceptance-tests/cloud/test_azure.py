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

from cloud_peers import AZ_AUDIENCE as AUDIENCE, AZ_CLIENT_ID as CLIENT_ID, AZ_TENANT as TENANT, require_module

SPIFFE_ID = "spiffe://sigil.local/azure/app"
SCOPE = "https://management.azure.com/.default"


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
