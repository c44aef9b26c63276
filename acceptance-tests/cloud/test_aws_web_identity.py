"""AWS OIDC federation: boto3 (the real SDK) consumes the JWT-SVID file and the
config profile Sigil writes, and Sigil's own AssumeRoleWithWebIdentity call works,
against moto's STS on loopback behind an endpoint that first verifies the token
with PyJWT against the broker's discovery + JWKS (moto itself accepts any token)."""
import os
import urllib.parse

import pytest
import requests

from cloud_peers import require_module

ROLE_ARN = "arn:aws:iam::123456789012:role/sigil-ci"
SPIFFE_ID = "spiffe://sigil.local/ci/deploy"


def issue(broker, path, audience="sts.amazonaws.com") -> str:
    return broker.sigil("svid", "jwt", "--spiffe-id", path, "--audience", audience).stdout.strip()


def test_boto3_assumes_role_with_the_token_file_from_env(broker, sts, verifier, clean_aws_env, monkeypatch, tmp_path):
    boto3 = require_module("boto3", "boto3")
    token_file = tmp_path / "aws.jwt"
    token_file.write_text(issue(broker, SPIFFE_ID))
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AWS_ROLE_ARN", ROLE_ARN)
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "sigil-test")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
    ident = boto3.session.Session().client("sts").get_caller_identity()
    assert ident["Arn"].startswith("arn:aws:sts::123456789012:assumed-role/sigil-ci/")
    assert [c["sub"] for c in verifier.accepted] == [SPIFFE_ID], "the verifying endpoint saw and accepted our token"


def test_boto3_reads_the_web_identity_profile_sigil_writes(broker, sts, verifier, clean_aws_env, monkeypatch, tmp_path):
    boto3 = require_module("boto3", "boto3")
    token_file = tmp_path / "aws.jwt"
    token_file.write_text(issue(broker, SPIFFE_ID))
    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = eu-west-1\n")
    broker.sigil("federation", "aws", "profile", "--config-file", str(config), "--profile", "ci",
                 "--role-arn", ROLE_ARN, "--token-file", str(token_file), "--role-session-name", "from-profile")
    text = config.read_text()
    assert "[default]\nregion = eu-west-1" in text, "other profiles are kept"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
    ident = boto3.session.Session(profile_name="ci").client("sts").get_caller_identity()
    assert "assumed-role/sigil-ci/from-profile" in ident["Arn"]
    assert verifier.accepted and verifier.accepted[0]["sub"] == SPIFFE_ID


def test_sigil_assume_role_writes_a_credentials_file_boto3_uses(broker, sts, moto_sts, verifier, clean_aws_env, monkeypatch, tmp_path):
    boto3 = require_module("boto3", "boto3")
    creds = tmp_path / "credentials"
    broker.sigil("federation", "aws", "assume-role", "--spiffe-id", SPIFFE_ID, "--role-arn", ROLE_ARN,
                 "--endpoint", sts.url + "/", "--credentials-file", str(creds), "--profile", "sigil")
    assert oct(creds.stat().st_mode & 0o777) == "0o600"
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    session = boto3.session.Session(profile_name="sigil")
    frozen = session.get_credentials().get_frozen_credentials()
    assert frozen.access_key and frozen.secret_key and frozen.token
    # The credentials moto issued work against moto, and name the role and our session name.
    ident = session.client("sts", endpoint_url=moto_sts).get_caller_identity()
    assert "assumed-role/sigil-ci/sigil.local@ci.deploy" in ident["Arn"]
    assert verifier.accepted[0]["sub"] == SPIFFE_ID


def test_sigil_assume_role_prints_credential_process_json(broker, sts, verifier, clean_aws_env):
    import json
    out = broker.sigil("federation", "aws", "assume-role", "--spiffe-id", SPIFFE_ID, "--role-arn", ROLE_ARN,
                       "--endpoint", sts.url + "/").stdout
    doc = json.loads(out)
    assert doc["Version"] == 1 and doc["AccessKeyId"] and doc["SessionToken"] and doc["Expiration"]


def test_tampered_token_is_refused_by_the_verifying_endpoint(broker, sts, verifier, clean_aws_env, tmp_path):
    token = issue(broker, SPIFFE_ID)
    head, body, sig = token.split(".")
    forged = tmp_path / "forged.jwt"
    forged.write_text(f"{head}.{body}.{sig[:-4]}AAAA")
    p = broker.sigil("federation", "aws", "assume-role", "--token-file", str(forged), "--role-arn", ROLE_ARN,
                     "--endpoint", sts.url + "/", check=False)
    assert p.returncode != 0
    assert "InvalidIdentityToken" in p.stderr and "sigil federation verify aws" in p.stderr
    assert verifier.refused and not verifier.accepted


def test_token_for_another_audience_is_refused(broker, sts, verifier, clean_aws_env, tmp_path):
    p = broker.sigil("federation", "aws", "assume-role", "--spiffe-id", SPIFFE_ID, "--audience", "someone-else",
                     "--role-arn", ROLE_ARN, "--endpoint", sts.url + "/", check=False)
    assert p.returncode != 0 and "InvalidIdentityToken" in p.stderr
    assert any("audience" in r.lower() for r in verifier.refused)
