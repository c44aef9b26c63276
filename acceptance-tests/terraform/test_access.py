"""`sigil_role` ssh / database / kubernetes blocks with the real Terraform 1.0.3
against a real broker: applied, read back with `sigil role get`, planned clean,
imported; rules written outside Terraform show in the plan instead of being
wiped silently; mistakes are refused at plan time at their line. And the
`sigil_ssh_ca_public_keys` data source, whose keys `ssh-keygen -l` reads."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from sigil_harness import require_tool
from tf_harness import Terraform

pytestmark = pytest.mark.timeout(300)


def role(n, description: str = "access") -> str:
    return f'''
resource "sigil_role" "access" {{
  name        = "{n("access")}"
  description = "{description}"
  spiffe_ids  = ["/svc/web"]

  ssh {{
    principals       = ["deploy", "ci-{{{{bot.name}}}}"]
    host_names       = ["*.internal"]
    extensions       = ["permit-pty", "permit-port-forwarding"]
    critical_options = {{ "source-address" = "10.0.0.0/8", "force-command" = "/usr/bin/true" }}
    max_ttl_seconds  = 3600
  }}

  database {{
    users        = ["app", "report_*"]
    server_names = ["db.internal", "127.0.0.1"]
  }}

  kubernetes {{
    users           = ["ci-{{{{bot.name}}}}"]
    groups          = ["deployers", "viewers"]
    max_ttl_seconds = 900
  }}
}}
'''


WANT_ALLOW = {
    "ssh": {
        "principals": ["deploy", "ci-{{bot.name}}"],
        "host_names": ["*.internal"],
        "extensions": ["permit-pty", "permit-port-forwarding"],
        "critical_options": {"source-address": "10.0.0.0/8", "force-command": "/usr/bin/true"},
        "max_ttl_seconds": 3600,
    },
    "database": {"users": ["app", "report_*"], "server_names": ["db.internal", "127.0.0.1"]},
    "kubernetes": {"users": ["ci-{{bot.name}}"], "groups": ["deployers", "viewers"], "max_ttl_seconds": 900},
}


def broker_allow(tf_broker, name: str) -> dict:
    return json.loads(tf_broker.cli("--output", "json", "role", "get", name).stdout)["allow"]


def subset(want: dict, got: dict) -> bool:
    return all(k in got and (subset(v, got[k]) if isinstance(v, dict) else got[k] == v) for k, v in want.items())


def test_role_access_blocks_apply_read_back_plan_clean_and_import(tf, tf_broker, names, tmp_path, provider_binary):
    tf.write(role(names), tf.provider)
    tf.apply()
    allow = broker_allow(tf_broker, names("access"))
    for block, want in WANT_ALLOW.items():
        assert subset(want, allow.get(block, {})), (block, allow)
    code, plan = tf.plan_exit()
    assert code == 0, plan
    state = tf.resource("sigil_role.access")["values"]
    assert state["ssh"]["critical_options"] == WANT_ALLOW["ssh"]["critical_options"]
    assert state["database"]["max_ttl_seconds"] is None
    # Import into an empty state: the same values, and a clean plan.
    other = Terraform(tmp_path / "other", provider_binary.parent)
    other.write(role(names), tf.provider)
    assert "Import successful!" in other.run("import", "sigil_role.access", names("access")).stdout
    code, plan = other.plan_exit()
    assert code == 0, plan
    imported = other.resource("sigil_role.access")["values"]
    for block in ("ssh", "database", "kubernetes"):
        assert imported[block] == state[block], block
    # An in-place update elsewhere keeps the blocks.
    tf.write(role(names, description="changed"), tf.provider)
    tf.apply()
    allow = broker_allow(tf_broker, names("access"))
    assert subset(WANT_ALLOW["kubernetes"], allow["kubernetes"]) and subset(WANT_ALLOW["ssh"], allow["ssh"]), allow
    tf.destroy()


def test_access_rules_written_outside_terraform_show_in_the_plan_instead_of_being_wiped_silently(tf, tf_broker, names, tmp_path):
    tf.write(f'resource "sigil_role" "r" {{\n  name = "{names("plain")}"\n  description = "one"\n  spiffe_ids = ["/svc/a"]\n}}\n', tf.provider)
    tf.apply()
    doc = tmp_path / "edit.yaml"
    doc.write_text(
        f"kind: role\nname: {names('plain')}\ndescription: one\n"
        "allow:\n  spiffe_ids: [\"/svc/a\"]\n  database: {users: [app]}\n  kubernetes: {groups: [admins]}\n"
    )
    tf_broker.cli("apply", "-f", str(doc))
    code, plan = tf.plan_exit()
    # Before: the provider did not read these rules, planned "no changes", and
    # its next update of the role sent none, deleting them unannounced.
    assert code == 2, plan
    assert "- database {" in plan and "- kubernetes {" in plan and '"app"' in plan and '"admins"' in plan, plan
    tf.destroy()


def test_mistakes_in_the_access_blocks_are_refused_at_plan_time_at_their_line(tf, names):
    tf.write(f'''
resource "sigil_role" "bad" {{
  name = "{names("bad")}"
  ssh {{
    principals       = ["deploy", ""]
    extensions       = ["permit-everything"]
    critical_options = {{ "no-such-option" = "x" }}
    max_ttl_seconds  = -60
  }}
  database {{
    users = ["app"]
    max_ttl_seconds = -1
  }}
  kubernetes {{
    groups = ["  "]
  }}
}}
''', tf.provider)
    p = tf.run("validate", "-json", check=False)
    assert p.returncode == 1, p.stdout
    diags = [d for d in json.loads(p.stdout)["diagnostics"] if d["severity"] == "error"]
    src = (tf.dir / "main.tf").read_text().splitlines()
    lines = sorted(src[d["range"]["start"]["line"] - 1].split("=")[0].strip() for d in diags)
    assert lines == ["critical_options", "extensions", "groups", "max_ttl_seconds", "max_ttl_seconds", "principals"], (lines, diags)
    details = " ".join(d["detail"] for d in diags)
    assert "must not be empty" in details and "permit-everything" in details and "no-such-option" in details and "-60" in details


def test_a_broker_refusal_of_a_critical_option_points_at_its_line(tf, names):
    """What only the broker checks (the shape of a templated source-address)
    comes back as a field path in the status details: Terraform shows the line."""
    tf.write(f'''
resource "sigil_role" "addr" {{
  name = "{names("addr")}"
  ssh {{
    principals = ["deploy"]
    critical_options = {{
      "source-address" = "not-an-address"
    }}
  }}
}}
''', tf.provider)
    p = tf.run("apply", "-auto-approve", check=False)
    assert p.returncode == 1
    err = p.stdout + p.stderr
    assert re.search(r'on main.tf line \d+, in resource "sigil_role" "addr":\n\s+\d+:\s+"source-address" = "not-an-address"', err), err


def test_ssh_ca_public_keys_data_source_gives_lines_ssh_keygen_reads(tf, tmp_path):
    keygen = require_tool("ssh-keygen", "apt-get install openssh-client")
    tf.write('''
data "sigil_ssh_ca_public_keys" "this" {}

output "user" { value = data.sigil_ssh_ca_public_keys.this.user_ca_public_keys }
output "host" { value = data.sigil_ssh_ca_public_keys.this.host_ca_public_keys }
output "trusted_user_ca_keys" { value = data.sigil_ssh_ca_public_keys.this.trusted_user_ca_keys }
''', tf.provider)
    tf.apply()
    out = json.loads(tf.run("output", "-json").stdout)
    user, host, file = out["user"]["value"], out["host"]["value"], out["trusted_user_ca_keys"]["value"]
    assert user and host, out
    assert set(user).isdisjoint(host), "the user and host CAs must be different keys"
    assert file == "".join(f"{k}\n" for k in user)
    for i, line in enumerate(user + host):
        f = tmp_path / f"key{i}.pub"
        f.write_text(line + "\n")
        p = subprocess.run([keygen, "-l", "-f", str(f)], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0 and "SHA256:" in p.stdout, (line, p.stderr)
