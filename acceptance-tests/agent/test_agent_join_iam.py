"""`sigil agent --oneshot` joining with the `iam` method: the agent signs
sts:GetCallerIdentity with AWS credentials that moto's IAM issued (signatures
enforced), the broker sends it to moto's STS, and the SVID the agent then writes
names the AWS account and user id that boto3 reads from moto."""
import json
import os
import subprocess

import jwt

from sigil_harness import iam_join_resources, moto_iam_user


def test_agent_joins_with_aws_iam_credentials_and_writes_an_svid_naming_the_caller(broker, moto, tmp_path):
    key, me = moto_iam_user(moto, "ci-agent")
    res = tmp_path / "res.yaml"
    res.write_text(iam_join_resources(moto))
    broker.sigil("apply", "-f", str(res))
    td = broker.sigil_json("whoami")["trust_domain"]
    want = f"spiffe://{td}/aws/{me['Account']}/{me['UserId']}"
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        f"broker: {broker.addr}\nca_file: {broker.ca}\nstate_dir: {tmp_path / 'state'}\n"
        f"join: {{method: iam, token_name: aws-ci, region: us-east-1, sts_endpoint: '{moto}/'}}\n"
        f"outputs:\n  - type: jwt-svid\n    path: {tmp_path / 'jwt'}\n    audiences: [x]\n    spiffe_id: {want}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # Only the environment may hold credentials here: no ~/.aws profile, no instance metadata.
    env.update(HOME=str(tmp_path), AWS_EC2_METADATA_DISABLED="true")
    env.update(AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])
    p = subprocess.run([broker.bin, "agent", "--oneshot", "--config", str(cfg)], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    jwks = json.loads(broker.sigil("bundle", "--format", "jwks").stdout)
    claims = jwt.decode((tmp_path / "jwt").read_text(), key=jwt.PyJWKSet.from_dict(jwks).keys[0], audience="x",
                        algorithms=["ES256", "RS256"])
    assert claims["sub"] == want

    # Without credentials the agent names what is missing; with a wrong secret STS refuses.
    env.pop("AWS_ACCESS_KEY_ID")
    # The stored identity is still valid, so the one-shot reuses it: remove it to force a join.
    (tmp_path / "state" / "identity").unlink()
    p = subprocess.run([broker.bin, "agent", "--oneshot", "--config", str(cfg)], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "join method iam" in p.stderr and "AWS_ACCESS_KEY_ID" in p.stderr, p.stderr
    env.update(AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY="wrong")
    p = subprocess.run([broker.bin, "agent", "--oneshot", "--config", str(cfg)], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "join with method iam rejected" in p.stderr, p.stderr
