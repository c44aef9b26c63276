"""What the credential-chain tests share: real credentials from moto (an admin
user with an allow-all policy, then one IAM role per credential source, each
assumed through moto's STS), the broker resources of an `iam` join token that
admits any assumed role of the account and names the role in the SPIFFE ID,
and a process environment holding only what an AWS SDK would see."""
import datetime
import json
import os
import subprocess
import sys
import time

import requests

ACCOUNT = "123456789012"
ALLOW_ALL = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
TRUST = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]})


def allow_unsigned(moto: str, calls: int = 1):
    """moto checks signatures after its set-up calls: let `calls` more unsigned ones through."""
    requests.post(f"{moto}/moto-api/reset-auth", data=str(calls), timeout=10).raise_for_status()


class Aws:
    """An admin user in moto and roles it assumes."""

    def __init__(self, moto: str, roles=()):
        import boto3
        self.moto = moto
        self.kw = dict(endpoint_url=moto, region_name="us-east-1")
        allow_unsigned(moto, 3)
        iam = boto3.client("iam", aws_access_key_id="setup", aws_secret_access_key="setup", **self.kw)
        iam.create_user(UserName="chain-admin")
        self.admin = iam.create_access_key(UserName="chain-admin")["AccessKey"]
        iam.put_user_policy(UserName="chain-admin", PolicyName="all", PolicyDocument=ALLOW_ALL)
        self.iam = boto3.client("iam", aws_access_key_id=self.admin["AccessKeyId"], aws_secret_access_key=self.admin["SecretAccessKey"], **self.kw)
        self.sts = boto3.client("sts", aws_access_key_id=self.admin["AccessKeyId"], aws_secret_access_key=self.admin["SecretAccessKey"], **self.kw)
        for r in roles:
            self.role(r)

    def role(self, name: str) -> str:
        self.iam.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST)
        self.iam.put_role_policy(RoleName=name, PolicyName="all", PolicyDocument=ALLOW_ALL)
        return f"arn:aws:iam::{ACCOUNT}:role/{name}"

    def assume(self, role: str, session: str, expires_in: int | None = None) -> dict:
        """Real temporary credentials of `role` in the shape IMDS and container endpoints answer;
        `expires_in` (seconds from now) replaces moto's Expiration."""
        c = self.sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{role}", RoleSessionName=session)["Credentials"]
        exp = c["Expiration"] if expires_in is None else datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=expires_in)
        return {"AccessKeyId": c["AccessKeyId"], "SecretAccessKey": c["SecretAccessKey"], "Token": c["SessionToken"],
                "Expiration": exp.strftime("%Y-%m-%dT%H:%M:%SZ")}


def resources(moto: str) -> str:
    """Role `aws-role` (SPIFFE ID /aws/<account>/<assumed role>), bot `chain`, `iam` token `aws-chain`
    (moto's STS allowed)."""
    return f"""
kind: role
name: aws-role
allow: {{spiffe_ids: ["/aws/{{{{join.aws_account}}}}/{{{{join.aws_role}}}}"], audiences: ["x"]}}
---
kind: bot
name: chain
roles: [aws-role]
---
kind: join_token
name: aws-chain
bot: chain
method: iam
max_uses: 50
expires_at: {int(time.time()) + 3600}
allow: [{{aws_arn: "arn:aws:sts::{ACCOUNT}:assumed-role/*"}}]
config: {{sts_endpoints: "{moto}"}}
"""


def sdk_env(home, **aws) -> dict:
    """The process environment minus every inherited AWS_* variable, HOME a temporary
    directory, plus `aws` (None values dropped)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["HOME"] = str(home)
    env.update({k: str(v) for k, v in aws.items() if v is not None})
    return env


def boto3_caller(env: dict, moto: str) -> dict:
    """boto3, in a process with exactly `env`, resolves credentials its own way and asks moto's
    STS who they belong to; returns the access key it used and the caller ARN."""
    script = ("import boto3, json, sys\n"
              "s = boto3.session.Session(region_name='us-east-1')\n"
              "c = s.get_credentials()\n"
              "assert c is not None, 'boto3 found no credentials'\n"
              "f = c.get_frozen_credentials()\n"
              "me = s.client('sts', endpoint_url=sys.argv[1]).get_caller_identity()\n"
              "print(json.dumps({'method': c.method, 'access_key': f.access_key, 'arn': me['Arn']}))\n")
    p = subprocess.run([sys.executable, "-c", script, moto], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)
