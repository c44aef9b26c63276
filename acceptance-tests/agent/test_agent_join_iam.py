"""`sigil agent --oneshot` joining with the `iam` method: the agent signs
sts:GetCallerIdentity with AWS credentials that moto's IAM issued (signatures
enforced), the broker sends it to moto's STS, and the SVID the agent then writes
names the AWS account and user id that boto3 reads from moto."""
import json
import os
import socket
import subprocess
import time

import boto3
import jwt

from sigil_harness import free_port, require_tool


def wait_port(port, proc):
    deadline = time.time() + 30
    while time.time() < deadline:
        assert proc.poll() is None, "moto_server exited early"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"moto_server did not listen on {port}")


def test_agent_joins_with_aws_iam_credentials_and_writes_an_svid_naming_the_caller(broker, tmp_path):
    server = require_tool("moto_server", "pip install 'moto[server]'")
    port = free_port()
    moto = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "2"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        kw = dict(endpoint_url=moto, region_name="us-east-1")
        iam = boto3.client("iam", aws_access_key_id="setup", aws_secret_access_key="setup", **kw)
        iam.create_user(UserName="ci-agent")
        key = iam.create_access_key(UserName="ci-agent")["AccessKey"]
        me = boto3.client("sts", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"], **kw).get_caller_identity()
        res = tmp_path / "res.yaml"
        res.write_text(f"""
kind: role
name: aws
allow: {{spiffe_ids: ["/aws/{{{{join.aws_account}}}}/{{{{join.aws_user_id}}}}"], audiences: ["x"]}}
---
kind: bot
name: ci
roles: [aws]
---
kind: join_token
name: aws-ci
bot: ci
method: iam
max_uses: 10
expires_at: {int(time.time()) + 600}
allow: [{{aws_arn: "arn:aws:iam::123456789012:user/ci-*"}}]
config: {{sts_endpoints: "{moto}"}}
""")
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
    finally:
        proc.kill()
        proc.wait()
