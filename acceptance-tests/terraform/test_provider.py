"""terraform-provider-sigil driven by the real Terraform 1.0.3 against a real broker.

Every test gets its own working directory and object names, and shares one
dev-mode broker. Out-of-band changes go through the `sigil` CLI.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest

from tf_harness import Terraform, provider_block

pytestmark = pytest.mark.timeout(300)

EXPIRES = int(time.time()) + 30 * 86400


def stack(n, description="deployers", traits='["platform"]', token_bot=None, outputs=True) -> str:
    """A bot + role + join token + workload identity, the issue's example."""
    role, bot, token, wi = n("deploy"), n("ci"), n("ci-token"), n("web")
    return f'''
resource "sigil_role" "deploy" {{
  name        = "{role}"
  description = "{description}"
  spiffe_ids  = ["/svc/web", "/ci/**"]
  audiences   = ["sts.amazonaws.com"]
  rule {{
    resources = ["bot"]
    verbs     = ["read", "list"]
  }}
}}

resource "sigil_bot" "ci" {{
  name   = "{bot}"
  roles  = [sigil_role.deploy.name]
  traits = {{ team = {traits} }}
}}

resource "sigil_join_token" "ci" {{
  name       = "{token}"
  bot        = {token_bot or "sigil_bot.ci.name"}
  expires_at = {EXPIRES}
}}

resource "sigil_workload_identity" "web" {{
  name      = "{wi}"
  spiffe_id = "/svc/{{{{bot.name}}}}/web"
  dns_sans  = ["web.internal"]
  allow {{
    attribute = "workload.unix.uid"
    values    = ["1000"]
  }}
}}

''' + (OUTPUTS if outputs else "")


OUTPUTS = '''
data "sigil_trust_bundle" "this" {}
data "sigil_oidc_issuer" "this" {}

output "issuer" { value = data.sigil_oidc_issuer.this.issuer_url }
output "ca" { value = data.sigil_trust_bundle.this.x509_authorities_pem }
'''


def test_create_then_second_plan_is_empty(tf, tf_broker, names):
    tf.write(stack(names), tf.provider)
    out = tf.apply().stdout
    assert "Apply complete! Resources: 4 added, 0 changed, 0 destroyed." in out
    for kind, base in [("role", "deploy"), ("bot", "ci"), ("token", "ci-token"), ("workload-identity", "web")]:
        assert tf_broker.exists(kind, names(base)), f"{kind} {names(base)} missing on the broker"
    outputs = json.loads(tf.run("output", "-json").stdout)
    assert outputs["issuer"]["value"].startswith("https://")
    assert "BEGIN CERTIFICATE" in outputs["ca"]["value"]
    code, plan = tf.plan_exit()
    assert code == 0, plan
    assert "No changes." in plan


def test_update_in_place_keeps_the_objects(tf, tf_broker, names):
    tf.write(stack(names), tf.provider)
    tf.apply()
    before = tf.resource("sigil_role.deploy")["values"]
    tf.write(stack(names, description="deployers, v2", traits='["platform", "sre"]'), tf.provider)
    code, plan = tf.plan_exit()
    assert code == 2
    assert "sigil_role.deploy will be updated in-place" in plan
    assert "sigil_bot.ci will be updated in-place" in plan
    assert "must be replaced" not in plan
    assert "Plan: 0 to add, 2 to change, 0 to destroy." in plan
    tf.apply()
    after = tf.resource("sigil_role.deploy")["values"]
    assert after["description"] == "deployers, v2"
    assert after["id"] == before["id"]
    assert after["revision"] > before["revision"]
    assert tf.resource("sigil_bot.ci")["values"]["traits"] == {"team": ["platform", "sre"]}
    assert tf.plan_exit()[0] == 0


def test_changing_a_force_new_attribute_replaces(tf, tf_broker, names):
    tf.write(stack(names), tf.provider)
    tf.apply()
    old_secret = tf.resource("sigil_join_token.ci")["values"]["secret"]
    # A join token cannot move to another bot: the broker refuses, so the provider replaces it.
    body = stack(names, token_bot=f'"{names("other")}"') + f'''
resource "sigil_bot" "other" {{
  name  = "{names("other")}"
  roles = [sigil_role.deploy.name]
}}
'''
    tf.write(body.replace(f'bot        = "{names("other")}"', "bot        = sigil_bot.other.name"), tf.provider)
    code, plan = tf.plan_exit()
    assert code == 2
    assert "sigil_join_token.ci must be replaced" in plan
    assert re.search(r'~ bot\s+= "[^"]+" -> (\(known after apply\)|"[^"]+") # forces replacement', plan), plan
    assert "Plan: 2 to add, 0 to change, 1 to destroy." in plan
    tf.apply()
    token = tf.resource("sigil_join_token.ci")["values"]
    assert token["bot"] == names("other")
    assert token["secret"] and token["secret"] != old_secret
    assert tf.plan_exit()[0] == 0


def test_import_adopts_an_existing_object(tf, tf_broker, names, tmp_path, provider_binary):
    tf.write(stack(names), tf.provider)
    tf.apply()
    # A second working directory with the same configuration and no state.
    other = Terraform(tmp_path / "other", provider_binary.parent)
    # Outputs would be new in a fresh state; leave them out to see only resources.
    other.write(stack(names, outputs=False), tf.provider)
    for address, base in [
        ("sigil_role.deploy", "deploy"),
        ("sigil_bot.ci", "ci"),
        ("sigil_join_token.ci", "ci-token"),
        ("sigil_workload_identity.web", "web"),
    ]:
        out = other.run("import", address, names(base)).stdout
        assert "Import successful!" in out
    code, plan = other.plan_exit()
    assert code == 0, plan
    # The secret cannot be recovered by import: it is null, not invented.
    assert other.resource("sigil_join_token.ci")["values"]["secret"] is None
    missing = other.run("import", "sigil_role.deploy", "no-such-role", check=False)
    assert missing.returncode != 0


def test_import_of_a_missing_object_is_an_error(tf, names):
    tf.write(f'resource "sigil_role" "x" {{\n  name = "{names("ghost")}"\n}}\n', tf.provider)
    p = tf.run("import", "sigil_role.x", names("ghost"), check=False)
    assert p.returncode == 1
    assert "Cannot import non-existent remote object" in p.stderr + p.stdout


def test_out_of_band_deletion_shows_as_drift_and_is_recreated(tf, tf_broker, names):
    tf.write(stack(names), tf.provider)
    tf.apply()
    tf_broker.cli("workload-identity", "delete", names("web"))
    tf_broker.cli("token", "delete", names("ci-token"))
    code, plan = tf.plan_exit()
    assert code == 2
    assert "sigil_workload_identity.web will be created" in plan
    assert "sigil_join_token.ci will be created" in plan
    assert "Plan: 2 to add, 0 to change, 0 to destroy." in plan
    tf.apply()
    assert tf_broker.exists("workload-identity", names("web"))
    assert tf.plan_exit()[0] == 0


def test_destroy_removes_everything(tf, tf_broker, names):
    tf.write(stack(names), tf.provider)
    tf.apply()
    out = tf.destroy().stdout
    assert "Destroy complete! Resources: 4 destroyed." in out
    for kind, base in [("role", "deploy"), ("bot", "ci"), ("token", "ci-token"), ("workload-identity", "web")]:
        assert not tf_broker.exists(kind, names(base)), f"{kind} {names(base)} survived destroy"
    assert tf.state().get("values") is None or not tf.state()["values"]["root_module"].get("resources")


def _diagnostics(tf: Terraform) -> list[dict]:
    p = tf.run("validate", "-json", check=False)
    assert p.returncode == 1, p.stdout
    return json.loads(p.stdout)["diagnostics"]


def test_invalid_config_is_rejected_with_the_attribute_path(tf, names):
    tf.write(f'''
resource "sigil_role" "bad" {{
  name = "{names("bad")}"
  rule {{
    resources = ["bot"]
    verbs     = ["read", "destroy"]
  }}
}}

resource "sigil_join_token" "bad" {{
  name       = "{names("bad")}"
  bot        = "someone"
  expires_at = {EXPIRES}
  max_uses   = 0
}}

resource "sigil_bot" "bad" {{
  name  = "Not A Valid Name"
  roles = []
}}
''', tf.provider)
    diags = {d["summary"]: d for d in _diagnostics(tf)}
    # Terraform turns our attribute paths into source ranges: check each lands on its attribute.
    src = (tf.dir / "main.tf").read_text().splitlines()
    def line_of(d):
        return src[d["range"]["start"]["line"] - 1]
    assert "verbs" in line_of(diags["Invalid verb"])
    assert '"destroy" is not one of' in diags["Invalid verb"]["detail"]
    assert "max_uses" in line_of(diags["Invalid max_uses"])
    assert "name" in line_of(diags["Invalid name"]) and "Not A Valid Name" in line_of(diags["Invalid name"])
    human = tf.run("validate", check=False)
    assert "Error: Invalid verb" in human.stdout + human.stderr
    assert "with sigil_role.bad," in human.stdout + human.stderr


def test_broker_rejection_points_at_the_attribute(tf, names):
    tf.write(f'''
resource "sigil_join_token" "past" {{
  name       = "{names("past")}"
  bot        = "nobody"
  expires_at = 1000
}}
''', tf.provider)
    p = tf.run("apply", "-auto-approve", check=False)
    assert p.returncode == 1
    err = p.stdout + p.stderr
    assert 'Cannot create sigil_join_token "' in err
    assert re.search(r"on main.tf line \d+, in resource \"sigil_join_token\" \"past\":\n\s+\d+:\s+expires_at", err), err


def test_broker_rejection_of_a_setting_or_claim_points_at_its_line(tf, names):
    """The broker names the field in google.rpc.BadRequest details (no text
    parsing): `config.audiance` and `allow[0].repo` land on their own lines."""
    tf.write(f'''
resource "sigil_join_token" "typo" {{
  name       = "{names("typo")}"
  bot        = "nobody"
  method     = "github"
  expires_at = {EXPIRES}
  config = {{
    audience = "sigil"
    audiance = "sigil"
  }}
  allow {{
    claims = {{ repository = "acme/web" }}
  }}
}}

resource "sigil_join_token" "claim" {{
  name       = "{names("claim")}"
  bot        = "nobody"
  method     = "github"
  expires_at = {EXPIRES}
  config     = {{ audience = "sigil" }}
  allow {{
    claims = {{ repository = "acme/web" }}
  }}
  allow {{
    claims = {{
      repo = "acme/web"
    }}
  }}
}}
''', tf.provider)
    p = tf.run("apply", "-auto-approve", check=False)
    assert p.returncode == 1
    err = p.stdout + p.stderr
    assert re.search(r'on main.tf line \d+, in resource "sigil_join_token" "typo":\n\s+\d+:\s+audiance = "sigil"', err), err
    flat = " ".join(err.split())  # Terraform wraps the detail
    assert 'invalid config.audiance: unknown setting for join method "github"' in flat, err
    assert re.search(r'on main.tf line \d+, in resource "sigil_join_token" "claim":\n\s+\d+:\s+repo = "acme/web"', err), err
    assert 'invalid allow[1].repo: not a field of join method "github"' in flat, err


def test_invalid_provider_config_points_at_the_setting(tf, tf_broker):
    tf.write('data "sigil_trust_bundle" "x" {}\n', 'provider "sigil" {\n  addr = "http://plaintext:1"\n}\n')
    p = tf.run("plan", check=False)
    assert p.returncode == 1
    err = p.stdout + p.stderr
    assert "Invalid broker address" in err
    assert 'addr = "http://plaintext:1"' in err


def test_join_token_secret_is_absent_from_plan_and_sensitive_in_state(tf, names):
    tf.write(stack(names), tf.provider)
    plan = tf.run("plan").stdout
    assert re.search(r"\+ secret\s+= \(sensitive value\)", plan), plan
    applied = tf.apply().stdout
    state = tf.state()
    token = tf.resource("sigil_join_token.ci")
    secret = token["values"]["secret"]
    assert isinstance(secret, str) and len(secret) >= 16
    assert secret not in applied
    # Terraform 1.0's JSON state does not echo schema sensitivity; what it
    # enforces: the schema marks it, `show` masks it, and outputs must opt in.
    schema = json.loads(tf.run("providers", "schema", "-json").stdout)
    attr = next(iter(schema["provider_schemas"].values()))["resource_schemas"]["sigil_join_token"]["block"]["attributes"]["secret"]
    assert attr.get("sensitive") and attr.get("computed") and not attr.get("optional") and not attr.get("required")
    shown = tf.run("show").stdout
    assert re.search(r"secret\s+= \(sensitive value\)", shown), shown
    assert secret not in shown
    leak = stack(names) + 'output "leak" {\n  value = sigil_join_token.ci.secret\n}\n'
    tf.write(leak, tf.provider)
    refused = tf.run("plan", check=False)
    assert refused.returncode == 1
    assert "Output refers to sensitive values" in refused.stdout + refused.stderr
    # Later plans (and a forced update) never print it either.
    tf.write(stack(names).replace(f"expires_at = {EXPIRES}", f"expires_at = {EXPIRES + 3600}"), tf.provider)
    later = tf.run("plan").stdout
    assert "sigil_join_token.ci will be updated in-place" in later
    assert secret not in later
    assert secret not in tf.run("show").stdout
    tf.apply()
    assert tf.resource("sigil_join_token.ci")["values"]["secret"] == secret
    assert state["values"]["root_module"]["resources"]


def test_provider_settings_come_from_the_environment(tmp_path, provider_binary, tf_broker):
    env = {"SIGIL_ADDR": tf_broker.addr, "SIGIL_IDENTITY": str(tf_broker.identity)}
    t = Terraform(tmp_path / "env", provider_binary.parent, env)
    t.write('data "sigil_trust_bundle" "x" {}\noutput "td" { value = data.sigil_trust_bundle.x.trust_domain }\n')
    t.apply()
    assert json.loads(t.run("output", "-json").stdout)["td"]["value"] == "sigil.local"
    # Identity content instead of a path works too (as from a CI secret).
    t.env["SIGIL_IDENTITY"] = tf_broker.identity.read_text()
    t.run("plan")


def test_provider_with_a_dead_first_broker_address_uses_the_next_one(tmp_path, provider_binary, tf_broker):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    t = Terraform(tmp_path / "failover", provider_binary.parent)
    t.write(
        'data "sigil_trust_bundle" "x" {}\noutput "td" { value = data.sigil_trust_bundle.x.trust_domain }\n',
        'provider "sigil" {\n'
        f'  addr          = "127.0.0.1:{dead},{tf_broker.addr}"\n'
        f'  identity_file = "{tf_broker.identity}"\n'
        "}\n",
    )
    t.apply()
    assert json.loads(t.run("output", "-json").stdout)["td"]["value"] == "sigil.local"


def test_provider_can_join_with_a_join_token(tf, tf_broker, names, tmp_path, provider_binary):
    tf.write(stack(names), tf.provider)
    tf.apply()
    secret = tf.resource("sigil_join_token.ci")["values"]["secret"]
    t = Terraform(tmp_path / "joined", provider_binary.parent)
    t.write(
        'data "sigil_trust_bundle" "x" {}\noutput "td" { value = data.sigil_trust_bundle.x.trust_domain }\n',
        'provider "sigil" {\n'
        f'  addr        = "{tf_broker.addr}"\n'
        f'  ca_file     = "{tf_broker.ca}"\n'
        '  join_method = "token"\n'
        f'  join_token  = "{secret}"\n'
        "}\n",
    )
    p = t.run("apply", "-auto-approve", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert secret not in p.stdout + p.stderr


def test_plugin_refuses_to_run_outside_terraform(provider_binary):
    p = subprocess.run([str(provider_binary)], capture_output=True, text=True, timeout=30,
                       env={k: v for k, v in os.environ.items() if k != "TF_PLUGIN_MAGIC_COOKIE"})
    assert p.returncode == 1
    assert p.stdout == ""
    assert "This binary is a plugin" in p.stderr


def test_out_of_band_change_shows_as_drift_and_is_reverted(tf, tf_broker, names, tmp_path):
    tf.write(stack(names), tf.provider)
    tf.apply()
    doc = tmp_path / "edit.yaml"
    doc.write_text(
        f"kind: role\nname: {names('deploy')}\ndescription: edited by hand\n"
        "allow:\n  spiffe_ids: [\"/svc/web\"]\n"
    )
    tf_broker.cli("apply", "-f", str(doc))
    code, plan = tf.plan_exit()
    assert code == 2
    assert "sigil_role.deploy will be updated in-place" in plan
    assert '~ description = "edited by hand" -> "deployers"' in plan
    assert "Plan: 0 to add, 1 to change, 0 to destroy." in plan
    tf.apply()
    shown = tf_broker.cli("role", "get", names("deploy")).stdout
    assert "edited by hand" not in shown
    assert tf.plan_exit()[0] == 0


def test_full_lifecycle_over_plugin_protocol_5(tmp_path, provider_binary, tf_broker, names):
    """Older hosts speak only protocol 5: offer just 5 and run the lifecycle."""
    tf = Terraform(tmp_path / "v5", provider_binary.parent, {"SIGIL_PROVIDER_PROTOCOLS": "5", "TF_LOG": "trace"})
    tf.write(stack(names), provider_block(tf_broker))
    out = tf.apply()
    assert "Apply complete! Resources: 4 added" in out.stdout
    assert "using plugin: version=5" in out.stderr
    tf.env.pop("TF_LOG")
    assert tf.plan_exit()[0] == 0
    tf.write(stack(names, description="over five"), provider_block(tf_broker))
    assert "1 to change" in tf.plan_exit()[1]
    tf.apply()
    assert "Destroy complete! Resources: 4 destroyed." in tf.destroy().stdout


def test_bot_instances_data_source_lists_each_join_of_a_bot(tf, tf_broker, names, tmp_path):
    bot = names("agents")
    tf_broker.cli("bot", "apply", "-f", str(_write(tmp_path / "bot.yaml", f"name: {bot}\n")))
    secret = tf_broker.cli("token", "create", "--bot", bot, "--uses", "2").stdout.strip()
    for i in range(2):
        tf_broker.cli("join", "--token", secret, "--ca-file", str(tf_broker.ca), "--out", str(tmp_path / f"id{i}"))
    tf.write(
        f'data "sigil_bot_instances" "b" {{\n  bot = "{bot}"\n}}\n'
        'output "instances" { value = data.sigil_bot_instances.b.instances }\n'
        'data "sigil_bot_instances" "none" {\n  bot = "no-such-bot"\n}\n'
        'output "none" { value = data.sigil_bot_instances.none.instances }\n',
        tf.provider,
    )
    tf.apply()
    out = json.loads(tf.run("output", "-json").stdout)
    got = out["instances"]["value"]
    assert len(got) == 2 and got[0]["id"] != got[1]["id"], got
    for i in got:
        assert i["bot"] == bot and i["join_method"] == "token" and i["join_attributes"]["join.method"] == "token", i
        assert i["first_seen"] > 0 and i["expires_at"] > i["last_seen"] and i["host_name"] == "", i
    assert out["none"]["value"] == []


def _write(path, text):
    path.write_text(text)
    return path


def lock_stack(n, reason="INC-1: leaked runner credentials", expires_at=None, target=None) -> str:
    """A bot with a join token, and a lock on the bot (or on `target`)."""
    expiry = f"\n  expires_at = {expires_at}" if expires_at else ""
    target = target or "bot = sigil_bot.locked.name"
    return f'''
resource "sigil_bot" "locked" {{
  name  = "{n("locked")}"
  roles = []
}}

# Who may manage locks: rule kind `lock`.
resource "sigil_role" "lock_admin" {{
  name = "{n("lock-admin")}"
  rule {{
    resources = ["lock"]
    verbs     = ["create", "read", "list", "delete"]
  }}
}}

resource "sigil_lock" "incident" {{
  name   = "{n("incident")}"
  reason = "{reason}"{expiry}
  target {{
    {target}
  }}
}}
'''


def _lock_names(tf_broker) -> str:
    return tf_broker.cli("lock", "list").stdout


def test_lock_is_created_plans_clean_is_replaced_on_change_and_destroyed(tf, tf_broker, names, tmp_path):
    tf.write(lock_stack(names), tf.provider)
    plan = tf.run("plan").stdout
    # A lock holds no secret: what it does is shown in full, nothing is masked.
    assert "(sensitive value)" not in plan
    assert re.search(r'\+ reason\s+= "INC-1: leaked runner credentials"', plan), plan
    assert re.search(r'\+ bot\s+= "%s"' % names("locked"), plan), plan
    applied = tf.apply().stdout
    assert "Apply complete! Resources: 3 added" in applied
    # Nothing of the provider's own credential shows either.
    key_lines = [l for l in tf_broker.identity.read_text().splitlines() if l and not l.startswith("-----")]
    assert not [l for l in key_lines if l in plan or l in applied]
    lock = tf.resource("sigil_lock.incident")["values"]
    assert lock["id"] == names("incident"), lock
    assert lock["target"] == {"bot": names("locked"), "bot_instance": None, "join_token": None, "spiffe_id": None}, lock
    assert lock["created_at"] > 0 and lock["created_by"], lock
    assert lock["expires_at"] is None
    assert names("incident") in _lock_names(tf_broker)
    assert tf.plan_exit()[0] == 0
    # The lock is enforced: the locked bot cannot join; once destroyed, it can.
    secret = tf_broker.cli("token", "create", "--bot", names("locked"), "--uses", "2").stdout.strip()
    join = ["join", "--token", secret, "--ca-file", str(tf_broker.ca), "--out", str(tmp_path / "id")]
    refused = tf_broker.cli(*join, check=False)
    assert refused.returncode != 0, refused.stdout
    # No update in place: a new reason replaces the lock.
    tf.write(lock_stack(names, reason="INC-1: confirmed"), tf.provider)
    code, plan = tf.plan_exit()
    assert code == 2
    assert "sigil_lock.incident must be replaced" in plan
    assert re.search(r'~ reason\s+= "INC-1: leaked runner credentials" -> "INC-1: confirmed" # forces replacement', plan), plan
    assert "Plan: 1 to add, 0 to change, 1 to destroy." in plan
    tf.apply()
    assert tf.resource("sigil_lock.incident")["values"]["reason"] == "INC-1: confirmed"
    assert tf.plan_exit()[0] == 0
    # Destroy the lock only (the bot stays): the bot can join again.
    tf.write(lock_stack(names, reason="INC-1: confirmed").split('resource "sigil_lock"')[0], tf.provider)
    assert "Destroy complete" not in tf.apply().stdout
    assert names("incident") not in _lock_names(tf_broker)
    assert tf_broker.cli(*join, check=False).returncode == 0
    out = tf.destroy().stdout
    assert "Destroy complete! Resources: 2 destroyed." in out


def test_lock_import_adopts_it_with_a_clean_plan(tf, tf_broker, names, tmp_path, provider_binary):
    body = lock_stack(names, target=f'spiffe_id = "/svc/{names("web")}/*"', expires_at=EXPIRES)
    tf.write(body, tf.provider)
    tf.apply()
    other = Terraform(tmp_path / "other", provider_binary.parent)
    other.write(body, tf.provider)
    assert "Import successful!" in other.run("import", "sigil_bot.locked", names("locked")).stdout
    assert "Import successful!" in other.run("import", "sigil_role.lock_admin", names("lock-admin")).stdout
    assert "Import successful!" in other.run("import", "sigil_lock.incident", names("incident")).stdout
    code, plan = other.plan_exit()
    assert code == 0, plan
    imported = other.resource("sigil_lock.incident")["values"]
    assert imported["expires_at"] == EXPIRES and imported["reason"] == "INC-1: leaked runner credentials", imported
    missing = other.run("import", "sigil_lock.incident", names("no-such-lock"), check=False)
    assert missing.returncode != 0


def test_lock_deleted_out_of_band_or_expired_leaves_the_state(tf, tf_broker, names):
    tf.write(lock_stack(names), tf.provider)
    tf.apply()
    tf_broker.cli("lock", "delete", names("incident"))
    code, plan = tf.plan_exit()
    assert code == 2
    assert "sigil_lock.incident will be created" in plan
    assert "Plan: 1 to add, 0 to change, 0 to destroy." in plan
    tf.apply()
    assert tf.plan_exit()[0] == 0
    # A lock that expires is gone from state at the next refresh (whether or
    # not the broker still lists it): it no longer refuses anything.
    soon = int(time.time()) + 4
    tf.write(lock_stack(names, expires_at=soon), tf.provider)
    tf.apply()
    assert tf.resource("sigil_lock.incident")["values"]["expires_at"] == soon
    time.sleep(max(0.0, soon + 1.5 - time.time()))
    tf.run("refresh")
    with pytest.raises(KeyError):
        tf.resource("sigil_lock.incident")
    # Planning it again warns that the expiry has passed, instead of failing later.
    p = tf.run("plan", check=False)
    assert "Lock expiry in the past" in p.stdout + p.stderr, p.stdout + p.stderr


def test_lock_target_must_name_exactly_one_thing(tf, names):
    tf.write(f'''
resource "sigil_lock" "two" {{
  name = "{names("two")}"
  target {{
    bot        = "ci"
    join_token = "ci-token"
  }}
}}

resource "sigil_lock" "none" {{
  name = "{names("none")}"
}}

resource "sigil_lock" "pattern" {{
  name = "{names("pattern")}"
  target {{
    spiffe_id = "svc/web"
  }}
}}
''', tf.provider)
    diags = {d["summary"]: d for d in _diagnostics(tf)}
    src = (tf.dir / "main.tf").read_text().splitlines()
    assert "bot and join_token" in diags["Invalid target"]["detail"], diags
    assert 'join_token = "ci-token"' in src[diags["Invalid target"]["range"]["start"]["line"] - 1]
    assert "Missing target" in diags, diags
    assert 'spiffe_id = "svc/web"' in src[diags["Invalid SPIFFE ID pattern"]["range"]["start"]["line"] - 1]


def test_lock_on_one_bot_instance_from_the_data_source_stops_only_that_agent(tf, tf_broker, names, tmp_path):
    """Two joins of one bot; Terraform locks the first instance it lists by id:
    that identity is refused, the other keeps working; destroying the lock lifts it."""
    bot = names("pair")
    tf_broker.cli("bot", "apply", "-f", str(_write(tmp_path / "bot.yaml", f"name: {bot}\n")))
    secret = tf_broker.cli("token", "create", "--bot", bot, "--uses", "2").stdout.strip()
    ids = [tmp_path / f"id{i}" for i in range(2)]
    for path in ids:
        tf_broker.cli("join", "--token", secret, "--ca-file", str(tf_broker.ca), "--out", str(path))
    whoami = lambda path: subprocess.run(  # noqa: E731
        [str(tf_broker.sigil), "--addr", tf_broker.addr, "--identity", str(path), "whoami"],
        capture_output=True, text=True, timeout=60)
    assert all(whoami(p).returncode == 0 for p in ids)
    tf.write(f'''
data "sigil_bot_instances" "pair" {{
  bot = "{bot}"
}}

resource "sigil_lock" "one" {{
  name   = "{names("one")}"
  reason = "this host was reimaged"
  target {{
    bot_instance = data.sigil_bot_instances.pair.instances[0].id
  }}
}}
''', tf.provider)
    tf.apply()
    locked_id = tf.resource("sigil_lock.one")["values"]["target"]["bot_instance"]
    results = [whoami(p) for p in ids]
    assert sorted(r.returncode == 0 for r in results) == [False, True], [r.stderr for r in results]
    refused = next(r for r in results if r.returncode != 0)
    assert "this host was reimaged" not in refused.stderr, "the reason is for operators, not the locked caller"
    assert locked_id and tf.plan_exit()[0] == 0
    tf.destroy()
    assert all(whoami(p).returncode == 0 for p in ids)
