"""examples/terraform applied as-is against a real broker."""

from __future__ import annotations

import json
import shutil

from tf_harness import REPO, Terraform


def test_terraform_example_applies_plans_clean_and_destroys(tmp_path, provider_binary, tf_broker):
    tf = Terraform(tmp_path / "example", provider_binary.parent)
    for f in (REPO / "examples" / "terraform").glob("*.tf"):
        shutil.copy(f, tf.dir / f.name)
    args = ["-var", f"sigil_addr={tf_broker.addr}", "-var", f"sigil_identity_file={tf_broker.identity}"]
    tf.run("apply", "-auto-approve", *args)
    outputs = json.loads(tf.run("output", "-json").stdout)
    assert outputs["join_token_secret"]["sensitive"] is True
    assert outputs["trust_domain"]["value"] == "sigil.local"
    assert tf_broker.exists("bot", "ci-runner")
    assert tf.run("plan", "-detailed-exitcode", *args, check=False).returncode == 0
    # The incident switch locks the runner, and lifts the lock when set back.
    assert not tf_broker.exists("lock", "ci-runner-incident")
    tf.run("apply", "-auto-approve", *args, "-var", "lock_ci_runner=true")
    shown = tf_broker.cli("lock", "get", "ci-runner-incident").stdout
    assert "ci-runner" in shown, shown
    tf.run("apply", "-auto-approve", *args)
    assert not tf_broker.exists("lock", "ci-runner-incident")
    tf.run("destroy", "-auto-approve", *args)
    assert not tf_broker.exists("bot", "ci-runner")
