"""Delegation without escalation, through the real CLI and broker: a team lead bot
(examples/broker/team-lead.yaml) hands out what it holds and nothing more."""
from sigil_harness import ROOT

TEAM = """
kind: role
name: team-web-api
allow:
  spiffe_ids: ["/team/web/api/*"]
  audiences: ["sts.amazonaws.com"]
  max_x509_ttl_seconds: 600
  max_jwt_ttl_seconds: 300
---
kind: bot
name: team-web-api
roles: [team-web-api]
"""

WIDER_ROLE = """
kind: role
name: team-web-root
allow:
  spiffe_ids: ["/**"]
"""

ADMIN_BOT = """
kind: bot
name: team-web-puppet
roles: [admin]
"""


def test_a_team_lead_bot_hands_out_only_what_it_holds(broker, tmp_path):
    broker.sigil("apply", "-f", str(ROOT / "examples" / "broker" / "team-lead.yaml"))
    secret = broker.sigil("token", "create", "--bot", "team-web-lead", "--ttl", "15m").stdout.strip()
    lead = str(tmp_path / "lead.identity")
    broker.sigil("join", "--token", secret, "--ca-file", broker.ca, "--out", lead)

    def as_lead(text: str, name: str):
        f = tmp_path / f"{name}.yaml"
        f.write_text(text)
        return broker.sigil("apply", "-f", str(f), identity=lead, check=False)

    assert as_lead(TEAM, "team").returncode == 0
    api_secret = broker.sigil("token", "create", "--bot", "team-web-api", "--name", "team-web-t1", identity=lead).stdout.strip()
    assert api_secret.startswith("sigil_")

    wider = as_lead(WIDER_ROLE, "wider")
    assert wider.returncode != 0 and "PermissionDenied" in wider.stderr and "escalate" in wider.stderr, wider.stderr
    puppet = as_lead(ADMIN_BOT, "puppet")
    assert puppet.returncode != 0 and "bind" in puppet.stderr, puppet.stderr
    steal = broker.sigil("token", "create", "--bot", "admin", "--name", "team-web-t2", identity=lead, check=False)
    assert steal.returncode != 0 and "bind" in steal.stderr, steal.stderr
    assert secret not in steal.stderr

    roles = [r["name"] for r in broker.sigil_json("role", "list", identity=lead)]
    assert roles == ["team-web-api", "team-web-lead"]
    denied = [e for e in broker.sigil_json("audit") if e["outcome"] == "denied" and e["actor"] == "team-web-lead"]
    assert {e["kind"] for e in denied} == {"role.create", "bot.create", "join_token.create"}, denied
