"""The real cloud SDKs consume files that `sigil agent` wrote (outputs
aws-web-identity, aws-roles-anywhere, azure-federated, gcp-external-account),
against the local verifying endpoints of this directory: boto3 + moto's STS
behind a PyJWT check, google-auth's identity_pool against a local token_url,
azure-identity's WorkloadIdentityCredential against a local HTTPS authority, and
a CreateSession endpoint checking the X.509 signature with `cryptography`. The
last test shows the agent renewing these files before the tokens expire."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jwt
import pytest

from cloud_peers import (AZ_AUDIENCE, AZ_CLIENT_ID, AZ_TENANT, GCP_AUDIENCE, GCP_SA, RA_PROFILE, RA_REGION, RA_ROLE, RA_TA,
                         RolesAnywhereEndpoint, require_module)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))
from agent_harness import Agent  # noqa: E402

ROLE_ARN = "arn:aws:iam::123456789012:role/sigil-ci"
AWS_ID = "spiffe://sigil.local/cloud/aws"
AZ_ID = "spiffe://sigil.local/cloud/azure"
GCP_ID = "spiffe://sigil.local/cloud/gcp"
RA_ID = "spiffe://sigil.local/cloud/ra"
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]

RESOURCES = """
kind: role
name: cloud-agent
allow:
  spiffe_ids: ["/cloud/**"]
  audiences: ["*"]
---
kind: bot
name: cloud-node
roles: [cloud-agent]
"""


def agent_config(broker, tmp_path: Path, outputs: str, extra: str = "") -> Path:
    res = tmp_path / "resources.yaml"
    res.write_text(RESOURCES)
    broker.sigil("apply", "-f", str(res))
    token = broker.sigil("token", "create", "--bot", "cloud-node", "--name", f"t{time.monotonic_ns()}", "--uses", "5").stdout.strip()
    tok = tmp_path / "join-token"
    tok.write_text(token)
    tok.chmod(0o600)
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        f"broker: {broker.addr}\nca_file: {broker.ca}\nstate_dir: {tmp_path / 'state'}\n"
        f"join: {{method: token, token_file: {tok}}}\nretry: {{initial: 200ms, max: 2s}}\n{extra}outputs:\n{outputs}"
    )
    return cfg


def oneshot(broker, cfg: Path):
    p = broker.sigil("agent", "--oneshot", "--config", str(cfg), check=False)
    assert p.returncode == 0, p.stderr
    return p


def claims(path: Path) -> dict:
    return jwt.decode(path.read_text(), options={"verify_signature": False})


def aws_output(tmp_path, **extra) -> str:
    lines = [
        "  - type: aws-web-identity",
        f"    token_path: {tmp_path / 'out' / 'aws.jwt'}",
        f"    config_file: {tmp_path / 'aws' / 'config'}",
        "    profile: ci",
        f"    role_arn: {ROLE_ARN}",
        "    role_session_name: agent-profile",
        f"    spiffe_id: {AWS_ID}",
    ] + [f"    {k}: {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def azure_output(tmp_path, **extra) -> str:
    lines = ["  - type: azure-federated", f"    token_path: {tmp_path / 'out' / 'azure.jwt'}", f"    spiffe_id: {AZ_ID}"]
    return "\n".join(lines + [f"    {k}: {v}" for k, v in extra.items()]) + "\n"


def gcp_output(tmp_path, token_url, **extra) -> str:
    lines = [
        "  - type: gcp-external-account",
        f"    token_path: {tmp_path / 'out' / 'gcp.jwt'}",
        f"    config_path: {tmp_path / 'out' / 'gcp.json'}",
        f'    audience: "{GCP_AUDIENCE}"',
        f"    token_url: {token_url}",
        f"    spiffe_id: {GCP_ID}",
    ]
    return "\n".join(lines + [f"    {k}: {v}" for k, v in extra.items()]) + "\n"


def test_boto3_uses_the_web_identity_profile_and_token_the_agent_wrote(broker, sts, verifier, clean_aws_env, monkeypatch, tmp_path):
    boto3 = require_module("boto3", "boto3")
    config = tmp_path / "aws" / "config"
    config.parent.mkdir()
    config.write_text("[default]\nregion = eu-west-1\n")
    oneshot(broker, agent_config(broker, tmp_path, aws_output(tmp_path)))
    assert "[default]\nregion = eu-west-1" in config.read_text(), "the user's other profiles are kept"
    token = claims(tmp_path / "out" / "aws.jwt")
    assert token["aud"] in ("sts.amazonaws.com", ["sts.amazonaws.com"]) and token["sub"] == AWS_ID
    assert oct((tmp_path / "out" / "aws.jwt").stat().st_mode & 0o777) == "0o600"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
    ident = boto3.session.Session(profile_name="ci").client("sts").get_caller_identity()
    assert "assumed-role/sigil-ci/agent-profile" in ident["Arn"]
    assert [c["sub"] for c in verifier.accepted] == [AWS_ID], "the verifying STS accepted the agent's token"


def test_agent_assume_role_keeps_a_credentials_file_boto3_uses(broker, sts, moto_sts, verifier, clean_aws_env, monkeypatch, tmp_path):
    boto3 = require_module("boto3", "boto3")
    creds = tmp_path / "aws" / "credentials"
    out = (
        "  - type: aws-web-identity\n    assume_role: true\n"
        f"    credentials_file: {creds}\n    profile: sigil\n    role_arn: {ROLE_ARN}\n"
        f"    sts_endpoint: {sts.url}/\n    duration_seconds: 900\n    spiffe_id: {AWS_ID}\n"
    )
    oneshot(broker, agent_config(broker, tmp_path, out))
    assert oct(creds.stat().st_mode & 0o777) == "0o600"
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    session = boto3.session.Session(profile_name="sigil")
    ident = session.client("sts", endpoint_url=moto_sts).get_caller_identity()
    assert "assumed-role/sigil-ci/sigil.local@cloud.aws" in ident["Arn"], "session name derived from the SPIFFE ID"
    assert [c["sub"] for c in verifier.accepted] == [AWS_ID]


def test_google_auth_reads_the_external_account_file_the_agent_wrote(broker, google_sts, verifier, tmp_path):
    identity_pool = require_module("google.auth.identity_pool", "google-auth")
    transport = require_module("google.auth.transport.requests", "google-auth")
    url = f"{google_sts.server.url}/v1/projects/-/serviceAccounts/{GCP_SA}:generateAccessToken"
    oneshot(broker, agent_config(broker, tmp_path, gcp_output(tmp_path, google_sts.server.url + "/v1/token",
                                                               service_account_impersonation_url=url, token_lifetime_seconds=1800)))
    doc = json.loads((tmp_path / "out" / "gcp.json").read_text())
    assert doc["type"] == "external_account" and doc["credential_source"]["file"] == str(tmp_path / "out" / "gcp.jwt")
    creds = identity_pool.Credentials.from_file(str(tmp_path / "out" / "gcp.json"), scopes=SCOPES)
    creds.refresh(transport.Request())
    assert creds.token.startswith("ya29.impersonated-")
    sub, body = google_sts.impersonated[0]
    assert sub == GCP_ID and body["lifetime"] == "1800s"
    assert [c["sub"] for c in verifier.accepted] == [GCP_ID]


def test_azure_identity_reads_the_token_file_the_agent_wrote(broker, authority, verifier, monkeypatch, tmp_path):
    identity = require_module("azure.identity", "azure-identity")
    oneshot(broker, agent_config(broker, tmp_path, azure_output(tmp_path)))
    token_file = tmp_path / "out" / "azure.jwt"
    assert claims(token_file)["aud"] in (AZ_AUDIENCE, [AZ_AUDIENCE])
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AZURE_CLIENT_ID", AZ_CLIENT_ID)
    monkeypatch.setenv("AZURE_TENANT_ID", AZ_TENANT)
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", authority.server.url)
    tok = identity.WorkloadIdentityCredential().get_token("https://management.azure.com/.default")
    assert authority.issued[tok.token][0] == AZ_ID
    assert [c["sub"] for c in verifier.accepted] == [AZ_ID]


def test_roles_anywhere_output_writes_credentials_boto3_uses(broker, pki, clean_aws_env, monkeypatch, tmp_path):
    boto3 = require_module("boto3", "boto3")
    from cryptography import x509
    bundle = broker.sigil("bundle", "--format", "pem").stdout.encode()
    endpoint = RolesAnywhereEndpoint(bundle, pki.tls)
    try:
        creds = tmp_path / "aws" / "credentials"
        out = (
            f"  - type: aws-roles-anywhere\n    credentials_file: {creds}\n    profile: ra\n    dir: {tmp_path / 'ra'}\n"
            f"    region: {RA_REGION}\n    trust_anchor_arn: {RA_TA}\n    profile_arn: {RA_PROFILE}\n    role_arn: {RA_ROLE}\n"
            f"    endpoint: {endpoint.server.url}\n    ca_file: {pki.ca_file}\n    spiffe_id: {RA_ID}\n"
        )
        oneshot(broker, agent_config(broker, tmp_path, out))
        assert endpoint.refusals == [] and len(endpoint.issued) == 1
        serial, access_key = endpoint.issued[0]
        leaf = x509.load_pem_x509_certificate((tmp_path / "ra" / "svid.pem").read_bytes())
        assert leaf.serial_number == serial, "CreateSession was signed with the SVID the agent wrote"
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
        frozen = boto3.session.Session(profile_name="ra").get_credentials().get_frozen_credentials()
        assert frozen.access_key == access_key and frozen.secret_key and frozen.token
    finally:
        endpoint.server.stop()


def test_agent_renews_cloud_outputs_before_the_tokens_expire(sigil_bin, broker, sts, authority, google_sts, verifier,
                                                            clean_aws_env, monkeypatch, tmp_path):
    boto3 = require_module("boto3", "boto3")
    identity = require_module("azure.identity", "azure-identity")
    identity_pool = require_module("google.auth.identity_pool", "google-auth")
    transport = require_module("google.auth.transport.requests", "google-auth")
    ttl = "ttl: 6s"
    outputs = (aws_output(tmp_path, ttl="6s") + azure_output(tmp_path, ttl="6s")
               + gcp_output(tmp_path, google_sts.server.url + "/v1/token", ttl="6s"))
    a = Agent(sigil_bin, agent_config(broker, tmp_path, outputs), tmp_path / "agent.log").start()
    files = {name: tmp_path / "out" / f"{name}.jwt" for name in ("aws", "azure", "gcp")}
    try:
        a.wait_for(lambda: all(f.exists() for f in files.values()) and (tmp_path / "aws" / "config").exists(), "first cloud outputs")
        first = {name: claims(f) for name, f in files.items()}
        renewed_at = {}

        def all_renewed():
            for name, f in files.items():
                if name not in renewed_at and claims(f)["exp"] != first[name]["exp"]:
                    renewed_at[name] = time.time()
            return len(renewed_at) == len(files)

        a.wait_for(all_renewed, "renewed cloud tokens", timeout=20)
        for name in files:
            assert first[name]["exp"] - first[name]["iat"] <= 7, (ttl, first[name])
            assert renewed_at[name] < first[name]["exp"], f"{name}: renewed {renewed_at[name] - first[name]['exp']:.1f}s after expiry"
        # Wait past the first tokens' expiry: the SDKs still get in with what the agent keeps fresh.
        time.sleep(max(0.0, max(c["exp"] for c in first.values()) - time.time() + 1))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws" / "config"))
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
        assert "assumed-role/sigil-ci/" in boto3.session.Session(profile_name="ci").client("sts").get_caller_identity()["Arn"]
        monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(files["azure"]))
        monkeypatch.setenv("AZURE_CLIENT_ID", AZ_CLIENT_ID)
        monkeypatch.setenv("AZURE_TENANT_ID", AZ_TENANT)
        monkeypatch.setenv("AZURE_AUTHORITY_HOST", authority.server.url)
        assert identity.WorkloadIdentityCredential().get_token("https://management.azure.com/.default").token in authority.issued
        gcreds = identity_pool.Credentials.from_file(str(tmp_path / "out" / "gcp.json"), scopes=SCOPES)
        gcreds.refresh(transport.Request())
        assert google_sts.federated[gcreds.token] == GCP_ID
        assert sorted(c["sub"] for c in verifier.accepted) == sorted([AWS_ID, AZ_ID, GCP_ID])
        assert all(c["exp"] > first_exp for c, first_exp in zip(sorted(verifier.accepted, key=lambda c: c["sub"]),
                                                                [first[n]["exp"] for n in ("aws", "azure", "gcp")]))
        lead = {n: round(first[n]["exp"] - renewed_at[n], 1) for n in files}
        print(f"6s cloud tokens renewed this many seconds before expiry: {lead}")
    finally:
        a.stop()
