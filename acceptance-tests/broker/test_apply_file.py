"""`sigil apply -f FILE` against a real `sigil server` (SQLite): create-or-update for every kind, all or nothing.

A join token that exists is updated and keeps its secret (shown only when created); a file with one bad
document (invalid, or one the caller may not write) changes nothing, not even the documents before it.
"""
import time

import pytest

from sigil_harness import ROOT, Broker


@pytest.fixture(scope="module")
def broker(sigil_bin, tmp_path_factory):
    b = Broker(sigil_bin, tmp_path_factory.mktemp("apply") / "data").start()
    yield b
    b.stop()


def write(tmp_path, name: str, text: str):
    f = tmp_path / name
    f.write_text(text)
    return str(f)


def resources(expires_at: int, max_uses: int, audience: str) -> str:
    return f"""
kind: role
name: deployer
allow:
  spiffe_ids: ["/deploy/{{{{bot.name}}}}"]
  audiences: ["{audience}"]
---
kind: bot
name: deploy-bot
roles: [deployer]
---
kind: workload_identity
name: deploy-web
spiffe_id: /svc/web/{{{{bot.name}}}}
---
kind: join_token
name: deploy-token
bot: deploy-bot
expires_at: {expires_at}
max_uses: {max_uses}
"""


def outcomes(stderr: str) -> dict:
    """`KIND NAME OUTCOME...` lines of `sigil apply` -> {(kind, name): outcome line}."""
    out = {}
    for line in stderr.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] in ("role", "bot", "workload_identity", "join_token"):
            out[(parts[0], parts[1].rstrip(";"))] = " ".join(parts[2:])
    return out


def audit_after(broker, after: int) -> list:
    return [e for e in broker.sigil_json("audit", "--after", str(after), "--limit", "1000")]


def last_audit_id(broker) -> int:
    page, after = [None], 0
    while page:
        page = broker.sigil_json("audit", "--after", str(after), "--limit", "1000")
        if page:
            after = page[-1]["id"]
    return after


def test_applying_a_file_with_a_join_token_twice_succeeds_and_keeps_the_first_secret(broker, tmp_path):
    expires = int(time.time()) + 3600
    f = write(tmp_path, "deploy.yaml", resources(expires, 3, "sts.amazonaws.com"))

    first = broker.sigil("apply", "-f", f)
    secret = first.stdout.strip()
    assert secret.startswith("sigil_") and len(secret.splitlines()) == 1, first.stdout
    got = outcomes(first.stderr)
    assert got[("role", "deployer")] == "created" and got[("bot", "deploy-bot")] == "created", first.stderr
    assert got[("workload_identity", "deploy-web")] == "created", first.stderr
    assert got[("join_token", "deploy-token")].startswith("created"), first.stderr

    mark = last_audit_id(broker)
    second = broker.sigil("apply", "-f", f)
    assert second.stdout == "", "a second apply neither rotates nor reveals the secret"
    assert set(outcomes(second.stderr).values()) == {"unchanged"} and len(outcomes(second.stderr)) == 4, second.stderr
    assert not [e for e in audit_after(broker, mark) if e["outcome"] == "ok"], "an unchanged apply writes no audit event"

    # Changed limits and a changed role: updated in place, the secret still is the first one.
    f2 = write(tmp_path, "deploy2.yaml", resources(expires + 600, 5, "vault"))
    third = broker.sigil("apply", "-f", f2)
    assert third.stdout == "", third.stdout
    got = outcomes(third.stderr)
    assert got[("role", "deployer")] == "updated" and got[("join_token", "deploy-token")].startswith("updated"), third.stderr
    assert got[("bot", "deploy-bot")] == "unchanged", third.stderr
    token = broker.sigil_json("token", "get", "deploy-token")
    assert (token["max_uses"], token["expires_at"], token["uses"]) == (5, expires + 600, 0), token
    assert broker.sigil_json("role", "get", "deployer")["allow"]["audiences"] == ["vault"]
    events = {(e["kind"], e["resource"]) for e in audit_after(broker, mark) if e["outcome"] == "ok"}
    assert events == {("role.update", "deployer"), ("join_token.update", "deploy-token")}, events

    # The first secret still joins (and counts one use of the updated token).
    ident = tmp_path / "deploy.identity"
    broker.sigil("join", "--token", secret, "--ca-file", broker.ca, "--out", str(ident))
    assert ident.exists()
    assert broker.sigil("whoami", identity=str(ident)).returncode == 0
    assert broker.sigil_json("token", "get", "deploy-token")["uses"] == 1
    audit_text = broker.sigil("audit", "--output", "json", "--limit", "100000").stdout
    assert secret not in audit_text


BAD_THIRD = """
kind: role
name: keep
allow:
  spiffe_ids: ["/keep/v2"]
---
kind: bot
name: fresh-bot
roles: [keep]
---
kind: join_token
name: fresh-token
bot: fresh-bot
method: githb
expires_at: {expires}
---
kind: workload_identity
name: fresh-wi
spiffe_id: /svc/fresh
"""


def test_a_file_whose_third_of_four_documents_is_invalid_changes_nothing(broker, tmp_path):
    broker.sigil("apply", "-f", write(tmp_path, "keep.yaml", 'kind: role\nname: keep\nallow:\n  spiffe_ids: ["/keep/v1"]\n'))
    before = broker.sigil_json("role", "get", "keep")
    mark = last_audit_id(broker)

    f = write(tmp_path, "bad.yaml", BAD_THIRD.format(expires=int(time.time()) + 3600))
    for args in (("apply", "-f", f), ("apply", "--dry-run", "-f", f)):
        p = broker.sigil(*args, check=False)
        assert p.returncode != 0, p.stderr
        assert "document 2" in p.stderr and "join_token" in p.stderr and "fresh-token" in p.stderr, p.stderr
        assert "documents[2].method" in p.stderr and "nothing was applied" in p.stderr, p.stderr

    assert broker.sigil_json("role", "get", "keep") == before, "the role before the bad document keeps its old value"
    for kind, name in (("bot", "fresh-bot"), ("token", "fresh-token"), ("workload-identity", "fresh-wi")):
        p = broker.sigil(kind, "get", name, check=False)
        assert p.returncode != 0 and "NotFound" in p.stderr, (kind, p.stderr)
    assert not [e for e in audit_after(broker, mark) if e["outcome"] == "ok"], "no partial audit"

    # A dry run of a good file checks and writes nothing; the real apply then creates all of it.
    good = write(tmp_path, "good.yaml", BAD_THIRD.replace("method: githb\n", "").format(expires=int(time.time()) + 3600))
    dry = broker.sigil("apply", "--dry-run", "-f", good)
    assert dry.stdout == "" and "would be" in dry.stderr, dry.stderr
    assert broker.sigil("bot", "get", "fresh-bot", check=False).returncode != 0
    real = broker.sigil("apply", "-f", good)
    assert real.stdout.strip().startswith("sigil_")
    assert broker.sigil_json("role", "get", "keep")["allow"]["spiffe_ids"] == ["/keep/v2"]
    assert broker.sigil_json("bot", "get", "fresh-bot")["roles"] == ["keep"]


TEAM_WITH_FORBIDDEN_THIRD = """
kind: role
name: team-web-a
allow:
  spiffe_ids: ["/team/web/a"]
  max_x509_ttl_seconds: 3600
  max_jwt_ttl_seconds: 900
---
kind: bot
name: team-web-b
roles: [team-web-a]
---
kind: workload_identity
name: team-web-w
spiffe_id: /team/web/w
---
kind: role
name: team-web-c
allow:
  spiffe_ids: ["/team/web/c"]
  max_x509_ttl_seconds: 3600
  max_jwt_ttl_seconds: 900
"""


def test_a_document_the_caller_may_not_write_refuses_the_whole_file(broker, tmp_path):
    broker.sigil("apply", "-f", str(ROOT / "examples" / "broker" / "team-lead.yaml"))
    secret = broker.sigil("token", "create", "--bot", "team-web-lead", "--ttl", "15m").stdout.strip()
    lead = str(tmp_path / "lead.identity")
    broker.sigil("join", "--token", secret, "--ca-file", broker.ca, "--out", lead)

    p = broker.sigil("apply", "-f", write(tmp_path, "team.yaml", TEAM_WITH_FORBIDDEN_THIRD), identity=lead, check=False)
    assert p.returncode != 0 and "PermissionDenied" in p.stderr and "team-web-w" in p.stderr, p.stderr
    assert "document 2" in p.stderr, p.stderr
    for kind, name in (("role", "team-web-a"), ("bot", "team-web-b"), ("role", "team-web-c")):
        assert broker.sigil(kind, "get", name, check=False).returncode != 0, f"{kind} {name} was written"
    # Without the forbidden document the same file applies.
    rest = TEAM_WITH_FORBIDDEN_THIRD.replace("kind: workload_identity\nname: team-web-w\nspiffe_id: /team/web/w\n---\n", "")
    assert broker.sigil("apply", "-f", write(tmp_path, "team2.yaml", rest), identity=lead).returncode == 0
    assert broker.sigil_json("bot", "get", "team-web-b")["roles"] == ["team-web-a"]
