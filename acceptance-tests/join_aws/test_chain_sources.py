"""The real `sigil agent --oneshot` and `sigil join --method iam` join with the
`iam` method through each source of the AWS credential chain, each run with
only the variables an AWS SDK would see on that platform (temporary HOME,
inherited AWS_* removed, IMDS disabled unless it is the source). Every source
hands out real credentials of its own moto IAM role, so the SPIFFE ID the
broker issues (/aws/<account>/<role>) names the source the agent used."""
import json
import subprocess
import sys

import jwt
import pytest

from chain_peers import ACCOUNT, Aws, allow_unsigned, resources, sdk_env
from container_standin import Container
from imds_standin import CREDS_PREFIX, Imds

SOURCES = ["env", "profile-keys", "profile-process", "profile-assume-role", "web-identity", "container", "imds"]


def setup_source(source, aws, moto, home):
    """The role `source` proves, the variables the SDK would see, and a stand-in (or None)."""
    role = f"{source}-role"
    aws.role(role)
    (home / ".aws").mkdir(exist_ok=True)
    off = {"AWS_EC2_METADATA_DISABLED": "true"}
    if source == "env":
        c = aws.assume(role, "env")
        return role, {**off, "AWS_ACCESS_KEY_ID": c["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": c["SecretAccessKey"], "AWS_SESSION_TOKEN": c["Token"]}, None
    if source == "profile-keys":
        c = aws.assume(role, "keys")
        (home / ".aws" / "credentials").write_text(
            f"[default]\naws_access_key_id = {c['AccessKeyId']}\naws_secret_access_key = {c['SecretAccessKey']}\naws_session_token = {c['Token']}\n")
        (home / ".aws" / "credentials").chmod(0o600)
        return role, off, None
    if source == "profile-process":
        c = aws.assume(role, "process")
        helper = home / "creds-helper.py"
        helper.write_text("import json\nprint(json.dumps(" + repr({"Version": 1, "AccessKeyId": c["AccessKeyId"], "SecretAccessKey": c["SecretAccessKey"],
                                                                     "SessionToken": c["Token"], "Expiration": c["Expiration"]}) + "))\n")
        (home / ".aws" / "config").write_text(f"[profile helper]\nregion = us-east-1\ncredential_process = {sys.executable} '{helper}' --quiet\n")
        return role, {**off, "AWS_PROFILE": "helper"}, None
    if source == "profile-assume-role":
        (home / ".aws" / "config").write_text(
            f"[profile deploy]\nrole_arn = arn:aws:iam::{ACCOUNT}:role/{role}\nsource_profile = base\nrole_session_name = assumed\n")
        (home / ".aws" / "credentials").write_text(
            f"[base]\naws_access_key_id = {aws.admin['AccessKeyId']}\naws_secret_access_key = {aws.admin['SecretAccessKey']}\n")
        return role, {**off, "AWS_PROFILE": "deploy", "AWS_ENDPOINT_URL_STS": moto}, None
    if source == "web-identity":
        token = home / "token"
        token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDphZ2VudCJ9.c2ln")
        return role, {**off, "AWS_WEB_IDENTITY_TOKEN_FILE": token, "AWS_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/{role}",
                      "AWS_ENDPOINT_URL_STS": moto}, None
    if source == "container":
        c = aws.assume(role, "task")
        tok = home / "pod-identity-token"
        tok.write_text("pod-identity-token-value")
        ecs = Container(lambda: c, token="pod-identity-token-value")
        return role, {**off, "AWS_CONTAINER_CREDENTIALS_FULL_URI": ecs.url, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": tok}, ecs
    if source == "imds":
        c = aws.assume(role, "i-0abc")
        imds = Imds(credentials=lambda: c)
        return role, {"AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url}, imds
    raise ValueError(source)


@pytest.mark.parametrize("source", SOURCES)
def test_agent_and_cli_join_with_iam_through_each_credential_source(source, broker, moto, tmp_path):
    aws = Aws(moto)
    home = tmp_path / "home"
    home.mkdir()
    role, aws_env, stand_in = setup_source(source, aws, moto, home)
    try:
        res = tmp_path / "res.yaml"
        res.write_text(resources(moto))
        broker.sigil("apply", "-f", str(res))
        td = broker.sigil_json("whoami")["trust_domain"]
        want = f"spiffe://{td}/aws/{ACCOUNT}/{role}"
        cfg = tmp_path / "agent.yaml"
        cfg.write_text(
            f"broker: {broker.addr}\nca_file: {broker.ca}\nstate_dir: {tmp_path / 'state'}\n"
            f"join: {{method: iam, token_name: aws-chain, region: us-east-1, sts_endpoint: '{moto}/'}}\n"
            f"outputs:\n  - type: jwt-svid\n    path: {tmp_path / 'jwt'}\n    audiences: [x]\n    spiffe_id: {want}\n")
        env = sdk_env(home, **aws_env)
        if source == "web-identity":
            allow_unsigned(moto)
        p = subprocess.run([broker.bin, "agent", "--oneshot", "--config", str(cfg)], env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        jwks = json.loads(broker.sigil("bundle", "--format", "jwks").stdout)
        claims = jwt.decode((tmp_path / "jwt").read_text(), key=jwt.PyJWKSet.from_dict(jwks).keys[0], audience="x", algorithms=["ES256", "RS256"])
        assert claims["sub"] == want

        # `sigil join --method iam` finds the same credentials; the identity it writes gets the same SPIFFE ID.
        if source == "web-identity":
            allow_unsigned(moto)
        out = tmp_path / "bot.identity"
        p = subprocess.run([broker.bin, "join", "--method", "iam", "--token-name", "aws-chain", "--addr", broker.addr, "--ca-file", broker.ca,
                            "--aws-region", "us-east-1", "--sts-endpoint", f"{moto}/", "--out", str(out)],
                           env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        svid = broker.sigil("svid", "jwt", "--spiffe-id", want, "--audience", "x", identity=str(out)).stdout.strip()
        assert jwt.decode(svid, key=jwt.PyJWKSet.from_dict(jwks).keys[0], audience="x", algorithms=["ES256", "RS256"])["sub"] == want
        if source == "imds":
            assert stand_in.count("PUT", "/latest/api/token") >= 2 and stand_in.count("GET", CREDS_PREFIX + stand_in.role) >= 2
        if source == "container":
            assert stand_in.count(200) >= 2 and stand_in.count(401) == 0
    finally:
        if stand_in:
            stand_in.close()


def test_a_configured_source_that_fails_is_named_instead_of_falling_through(broker, moto, tmp_path):
    """FULL_URI set but nothing listening: the join fails naming the container source, even though
    a later source (IMDS) would answer, as the SDKs do; the secret never shows."""
    aws = Aws(moto, roles=["ec2-role"])
    c = aws.assume("ec2-role", "i-0abc")
    imds = Imds(credentials=lambda: c)
    try:
        home = tmp_path / "home"
        home.mkdir()
        res = tmp_path / "res.yaml"
        res.write_text(resources(moto))
        broker.sigil("apply", "-f", str(res))
        env = sdk_env(home, AWS_CONTAINER_CREDENTIALS_FULL_URI="http://127.0.0.1:9/creds", AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url,
                      AWS_CONTAINER_AUTHORIZATION_TOKEN="container-auth-secret")
        p = subprocess.run([broker.bin, "join", "--method", "iam", "--token-name", "aws-chain", "--addr", broker.addr, "--ca-file", broker.ca,
                            "--aws-region", "us-east-1", "--sts-endpoint", f"{moto}/", "--out", str(tmp_path / "id")],
                           env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode != 0 and "container credentials" in p.stderr and "AWS_CONTAINER_CREDENTIALS_FULL_URI" in p.stderr, p.stderr
        assert "container-auth-secret" not in p.stderr
        assert imds.count("GET", CREDS_PREFIX) == 0, "the chain stopped at the failing source"
    finally:
        imds.close()
