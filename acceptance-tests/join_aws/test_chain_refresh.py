"""A long-running `sigil agent` keeps one AWS credential cache: when it must join
again (here: its bot instance is locked, so the broker refuses every renewal
and the agent joins again once its 20 s identity has expired), credentials that expire within 5 minutes are fetched again
from the container credentials stand-in and the second join is signed with the
new ones; credentials valid for hours are not fetched again.

Which credentials signed each join is read from the broker: every join makes a
bot instance whose `aws_user_id` attribute ends with the STS session name, and
the stand-in names each session after the fetch that produced it."""
import os
import subprocess
import time

import pytest

from chain_peers import Aws, resources, sdk_env
from container_standin import Container


def instances(broker):
    return broker.sigil_json("bot", "instance", "list", "--bot", "chain")


def wait(cond, what, proc, log, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"agent exited ({proc.returncode}): {log.read_text()[-3000:]}")
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; agent log:\n{log.read_text()[-3000:]}")


def attrs_text(instance) -> str:
    return str(instance)  # the instance with its join attributes (aws_user_id = "<role id>:<session>")


@pytest.mark.parametrize("expires_in,refetched", [(240, True), (6 * 3600, False)], ids=["expiring-in-4-minutes", "valid-for-6-hours"])
def test_a_rejoin_uses_refreshed_credentials_only_when_they_expire_within_5_minutes(expires_in, refetched, broker, moto, tmp_path):
    aws = Aws(moto, roles=["task-role"])
    handed = []

    def credentials():
        c = aws.assume("task-role", f"fetch-{len(handed) + 1}", expires_in=expires_in)
        handed.append(c["AccessKeyId"])
        return c

    ecs = Container(credentials, token="task-token")
    proc = None
    try:
        res = tmp_path / "res.yaml"
        res.write_text(resources(moto))
        broker.sigil("apply", "-f", str(res))
        home = tmp_path / "home"
        home.mkdir()
        cfg = tmp_path / "agent.yaml"
        cfg.write_text(
            f"broker: {broker.addr}\nca_file: {broker.ca}\nstate_dir: {tmp_path / 'state'}\n"
            f"join: {{method: iam, token_name: aws-chain, region: us-east-1, sts_endpoint: '{moto}/'}}\n"
            "identity_ttl: 20s\nretry: {initial: 200ms, max: 1s}\n"
            f"outputs:\n  - type: identity\n    path: {tmp_path / 'out' / 'identity'}\n")
        env = sdk_env(home, AWS_CONTAINER_CREDENTIALS_FULL_URI=ecs.url, AWS_CONTAINER_AUTHORIZATION_TOKEN="task-token",
                      AWS_EC2_METADATA_DISABLED="true", SIGIL_LOG="info")
        log = tmp_path / "agent.log"
        with open(log, "ab") as logf:
            proc = subprocess.Popen([broker.bin, "agent", "--config", str(cfg)], env=env, stdout=logf, stderr=logf)
        first = wait(lambda: instances(broker), "the first join", proc, log)
        assert len(first) == 1 and ecs.count(200) == 1
        assert ":fetch-1" in attrs_text(first[0]), first[0]

        broker.sigil("lock", "create", "--instance", first[0]["id"], "--reason", "force a re-join")
        both = wait(lambda: (lambda i: i if len(i) == 2 else None)(instances(broker)), "the re-join after the lock", proc, log, timeout=90)
        second = next(i for i in both if i["id"] != first[0]["id"])
        if refetched:
            assert ecs.count(200) == 2, "credentials inside the 5-minute window were fetched again"
            assert ":fetch-2" in attrs_text(second), second
            assert handed[0] != handed[1], "the stand-in handed out a different access key"
        else:
            assert ecs.count(200) == 1, "credentials valid for hours were not fetched again"
            assert ":fetch-1" in attrs_text(second), second
    finally:
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        ecs.close()
