"""GCP Workload Identity Federation: google-auth's identity_pool / pluggable
credentials read the external_account file Sigil writes (file and executable
sources, with and without service account impersonation) and exchange the
JWT-SVID at a local token_url that verifies it with PyJWT against the broker's
discovery + JWKS before answering."""
import json
import secrets
import urllib.parse

import pytest

from cloud_peers import GCP_AUDIENCE as AUDIENCE, GCP_SA as SA, require_module

SPIFFE_ID = "spiffe://sigil.local/gcp/app"
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


def refresh(creds):
    transport = require_module("google.auth.transport.requests", "google-auth")
    creds.refresh(transport.Request())
    return creds.token


def test_identity_pool_reads_the_file_source_config(broker, google_sts, verifier, tmp_path):
    identity_pool = require_module("google.auth.identity_pool", "google-auth")
    token_file = tmp_path / "gcp.jwt"
    token_file.write_text(broker.sigil("svid", "jwt", "--spiffe-id", SPIFFE_ID, "--audience", AUDIENCE).stdout.strip())
    cfg = tmp_path / "external_account.json"
    broker.sigil("federation", "gcp", "config", "--out", str(cfg), "--project-number", "123456789",
                 "--token-file", str(token_file), "--token-url", google_sts.server.url + "/v1/token")
    doc = json.loads(cfg.read_text())
    assert doc["type"] == "external_account" and doc["audience"] == AUDIENCE
    creds = identity_pool.Credentials.from_file(str(cfg), scopes=SCOPES)
    token = refresh(creds)
    assert google_sts.federated[token] == SPIFFE_ID
    assert [c["sub"] for c in verifier.accepted] == [SPIFFE_ID]


def test_identity_pool_with_service_account_impersonation(broker, google_sts, tmp_path):
    identity_pool = require_module("google.auth.identity_pool", "google-auth")
    token_file = tmp_path / "gcp.jwt"
    token_file.write_text(broker.sigil("svid", "jwt", "--spiffe-id", SPIFFE_ID, "--audience", AUDIENCE).stdout.strip())
    cfg = tmp_path / "external_account.json"
    url = f"{google_sts.server.url}/v1/projects/-/serviceAccounts/{SA}:generateAccessToken"
    broker.sigil("federation", "gcp", "config", "--out", str(cfg), "--audience", AUDIENCE, "--token-file", str(token_file),
                 "--token-url", google_sts.server.url + "/v1/token", "--impersonation-url", url, "--token-lifetime-seconds", "1800")
    token = refresh(identity_pool.Credentials.from_file(str(cfg), scopes=SCOPES))
    assert token.startswith("ya29.impersonated-")
    sub, body = google_sts.impersonated[0]
    assert sub == SPIFFE_ID and body["lifetime"] == "1800s"


def test_pluggable_credentials_run_sigil_as_the_executable_source(broker, google_sts, verifier, tmp_path, monkeypatch):
    pluggable = require_module("google.auth.pluggable", "google-auth")
    cfg = tmp_path / "external_account.json"
    broker.sigil("federation", "gcp", "config", "--out", str(cfg), "--project-number", "123456789",
                 "--executable", f"--spiffe-id {SPIFFE_ID}", "--token-url", google_sts.server.url + "/v1/token")
    doc = json.loads(cfg.read_text())
    assert doc["credential_source"]["executable"]["command"].startswith("/")
    # google-auth runs the command with this process's environment: the broker address and identity.
    for k, v in broker.env().items():
        if k.startswith("SIGIL_"):
            monkeypatch.setenv(k, v)
    monkeypatch.setenv("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES", "1")
    token = refresh(pluggable.Credentials.from_file(str(cfg), scopes=SCOPES))
    assert google_sts.federated[token] == SPIFFE_ID
    assert verifier.accepted[0]["aud"] == AUDIENCE, "the executable issued a fresh token for the audience google-auth asked for"


def test_token_for_the_wrong_audience_is_refused_by_the_token_url(broker, google_sts, verifier, tmp_path):
    identity_pool = require_module("google.auth.identity_pool", "google-auth")
    exceptions = require_module("google.auth.exceptions", "google-auth")
    token_file = tmp_path / "gcp.jwt"
    token_file.write_text(broker.sigil("svid", "jwt", "--spiffe-id", SPIFFE_ID, "--audience", "sts.amazonaws.com").stdout.strip())
    cfg = tmp_path / "external_account.json"
    broker.sigil("federation", "gcp", "config", "--out", str(cfg), "--audience", AUDIENCE, "--token-file", str(token_file),
                 "--token-url", google_sts.server.url + "/v1/token")
    with pytest.raises(exceptions.GoogleAuthError):
        refresh(identity_pool.Credentials.from_file(str(cfg), scopes=SCOPES))
    assert verifier.refused and not verifier.accepted


def test_sigil_exchanges_at_the_token_url_itself(broker, google_sts):
    out = broker.sigil("federation", "gcp", "exchange", "--spiffe-id", SPIFFE_ID, "--audience", AUDIENCE,
                       "--token-url", google_sts.server.url + "/v1/token").stdout
    assert google_sts.federated[json.loads(out)["access_token"]] == SPIFFE_ID
