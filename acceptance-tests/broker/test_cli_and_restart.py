"""The CLI's error behaviour and a restart of the real broker process."""
import json

import requests

from sigil_harness import JOIN_REFUSED, Broker

ROLE = """
kind: role
name: deployer
allow:
  spiffe_ids: ["/deploy/{{bot.name}}"]
  audiences: ["sts.amazonaws.com"]
---
kind: bot
name: ci
roles: [deployer]
---
kind: workload_identity
name: web
spiffe_id: /svc/web/{{bot.name}}
"""


def test_bad_yaml_is_rejected_and_nothing_is_applied(broker, tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(ROLE + "---\nkind: role\nname: typo\nallow:\n  spiffe_idz: [/x]\n")
    p = broker.sigil("apply", "-f", str(f), check=False)
    assert p.returncode != 0
    assert "spiffe_idz" in p.stderr and "document 3" in p.stderr
    roles = [r["name"] for r in broker.sigil_json("role", "list")]
    assert "deployer" not in roles


def test_errors_go_to_stderr_with_nonzero_status(broker):
    p = broker.sigil("role", "get", "nope", check=False)
    assert p.returncode != 0 and p.stdout == ""
    assert "NotFound" in p.stderr and "nope" in p.stderr
    p = broker.sigil("svid", "jwt", "--spiffe-id", "spiffe://sigil.local/a", check=False)
    assert p.returncode != 0 and "--audience" in p.stderr


def test_join_token_secret_is_not_in_the_audit_log(broker, tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text(ROLE)
    broker.sigil("apply", "-f", str(f))
    secret = broker.sigil("token", "create", "--bot", "ci", "--name", "t1").stdout.strip()
    ident = tmp_path / "ci.identity"
    broker.sigil("join", "--token", secret, "--ca-file", broker.ca, "--out", str(ident))
    p = broker.sigil("join", "--token", secret, "--ca-file", broker.ca, "--out", str(tmp_path / "x"), check=False)
    assert p.returncode != 0 and JOIN_REFUSED in p.stderr, p.stderr
    assert "already used" in broker.last_join_denial()
    assert secret not in p.stderr
    audit_file = (broker.data_dir / "audit.jsonl").read_text()
    api_audit = broker.sigil("audit", "--output", "json").stdout
    assert secret not in audit_file and secret not in api_audit
    assert '"join"' in audit_file


def test_restart_keeps_resources_keys_and_audit(sigil_bin, tmp_path):
    b = Broker(sigil_bin, tmp_path / "data").start()
    try:
        f = tmp_path / "r.yaml"
        f.write_text(ROLE)
        b.sigil("apply", "-f", str(f))
        b.sigil("token", "create", "--bot", "ci", "--name", "keep", "--uses", "3")
        kids1 = sorted(k["kid"] for k in requests.get(f"{b.url}/.well-known/jwks.json", verify=b.ca, timeout=10).json()["keys"])
        pem1 = b.sigil("bundle").stdout
        audit1 = b.sigil_json("audit")
    finally:
        b.stop()
    b2 = Broker(sigil_bin, tmp_path / "data", port=b.port).start()
    try:
        kids2 = sorted(k["kid"] for k in requests.get(f"{b2.url}/.well-known/jwks.json", verify=b2.ca, timeout=10).json()["keys"])
        assert kids1 == kids2
        assert b2.sigil("bundle").stdout == pem1
        assert b2.sigil_json("role", "get", "deployer")["allow"]["spiffe_ids"] == ["/deploy/{{bot.name}}"]
        assert b2.sigil_json("bot", "get", "ci")["roles"] == ["deployer"]
        assert b2.sigil_json("workload-identity", "get", "web")["spiffe_id"] == "/svc/web/{{bot.name}}"
        assert b2.sigil_json("token", "get", "keep")["max_uses"] == 3
        audit2 = b2.sigil_json("audit")
        assert audit2[: len(audit1)] == audit1
    finally:
        b2.stop()


def test_readme_example_applies_and_issues(broker, tmp_path):
    from sigil_harness import ROOT
    broker.sigil("apply", "-f", str(ROOT / "examples" / "broker" / "ci-bot.yaml"))
    secret = broker.sigil("token", "create", "--bot", "ci", "--ttl", "15m").stdout.strip()
    ident = tmp_path / "ci.identity"
    broker.sigil("join", "--token", secret, "--ca-file", broker.ca, "--out", str(ident))
    assert oct(ident.stat().st_mode & 0o777) == "0o600"
    tok = broker.sigil("svid", "jwt", "--spiffe-id", "spiffe://sigil.local/ci/ci/deploy", "--audience", "sts.amazonaws.com",
                       identity=str(ident)).stdout.strip()
    assert tok.count(".") == 2
    out = tmp_path / "wi"
    broker.sigil("svid", "x509", "--workload-identity", "web", "--out", str(out), identity=str(ident))
    from cryptography import x509
    cert = x509.load_pem_x509_certificate((out / "svid.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://sigil.local/svc/web/ci"]
    assert san.get_values_for_type(x509.DNSName) == ["web.internal"]
    # The ci bot has no admin verbs.
    p = broker.sigil("role", "list", identity=str(ident), check=False)
    assert p.returncode != 0 and "PermissionDenied" in p.stderr


def test_a_token_value_starting_with_a_dash_is_read_as_the_token(broker, tmp_path):
    # Secrets are base64url and may start with '-'; the CLI must not take them for a flag.
    p = broker.sigil("join", "--token", "-not-a-flag", "--ca-file", broker.ca, "--out", str(tmp_path / "x"), check=False)
    assert p.returncode != 0
    assert JOIN_REFUSED in p.stderr, p.stderr
    assert "unknown token" in broker.last_join_denial()
    secret = broker.sigil("token", "create", "--bot", "admin").stdout.strip()
    assert secret.startswith("sigil_")
