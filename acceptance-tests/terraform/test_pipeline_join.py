"""The provider in real pipelines (issue 18), driven by the real Terraform 1.0.3
against the session's dev-mode broker:

- one `terraform apply` + `terraform plan` join once (a `max_uses = 1` join
  token survives), through the private join cache;
- HCP Terraform's `TFC_WORKLOAD_IDENTITY_TOKEN` and Spacelift's
  `SPACELIFT_OIDC_TOKEN` alone let the provider join: PyJWT mints them for a
  loopback HTTPS issuer (the OIDC join tests' issuer) configured in the join token;
- `terraform plan` rejects join token typos at their attribute;
- a refused join is worded as a denial, never as "unreachable".

No secret or JWT may appear in Terraform's output.
"""

from __future__ import annotations

import json
import re
import stat
import time

import pytest

from join.test_oidc_join import Issuer
from tf_harness import Terraform

pytestmark = pytest.mark.timeout(300)

EXPIRES = int(time.time()) + 86400


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    i = Issuer(tmp_path_factory.mktemp("issuer"))
    yield i
    i.close()


def _apply_docs(broker, path, docs):
    path.write_text("\n---\n".join(json.dumps(d) for d in docs))
    broker.cli("apply", "-f", str(path))


def _pipeline_bot(broker, tmp_path, names, extra=()):
    """A bot allowed to manage roles: what the pipeline's provider joins as."""
    bot = names("pipeline")
    _apply_docs(broker, tmp_path / "bot.yaml", [
        {"kind": "role", "name": names("role-admin"),
         "allow": {"rules": [{"resources": ["role"], "verbs": ["create", "read", "update", "delete", "list"]}]}},
        {"kind": "bot", "name": bot, "roles": [names("role-admin")]},
        *extra,
    ])
    return bot


def _managed_role(names) -> str:
    return f'''
resource "sigil_role" "managed" {{
  name        = "{names("managed")}"
  description = "managed by a pipeline"
}}
'''


def _joining_provider(broker, method: str, token_name: str = "") -> str:
    name = f'  join_token_name = "{token_name}"\n' if token_name else ""
    return (
        'provider "sigil" {\n'
        f'  addr        = "{broker.addr}"\n'
        f'  ca_file     = "{broker.ca}"\n'
        f'  join_method = "{method}"\n'
        f"{name}"
        "}\n"
    )


def _out(p) -> str:
    return p.stdout + p.stderr


def _instances(broker, bot: str) -> list[dict]:
    """The bot's instances (one per successful join)."""
    out = json.loads(broker.cli("--output", "json", "bot", "instance", "list", "--bot", bot).stdout)
    return out["instances"] if isinstance(out, dict) else out


def test_one_apply_and_a_plan_join_once_with_a_single_use_token(tmp_path, provider_binary, tf_broker, names):
    bot = _pipeline_bot(tf_broker, tmp_path, names)
    secret = tf_broker.cli("token", "create", "--bot", bot, "--uses", "1").stdout.strip()
    cache = tmp_path / "cache"
    t = Terraform(tmp_path / "tf", provider_binary.parent, {"SIGIL_JOIN_TOKEN": secret, "SIGIL_PROVIDER_CACHE": str(cache)})
    t.write(_managed_role(names), _joining_provider(tf_broker, "token"))
    applied = t.apply()
    assert "Apply complete! Resources: 1 added" in applied.stdout
    assert tf_broker.exists("role", names("managed"))
    # A second Terraform command, new provider processes: the single use is gone, the cached identity is not.
    code, plan = t.plan_exit()
    assert code == 0, plan
    assert "No changes." in plan
    assert secret not in _out(applied)
    assert len(_instances(tf_broker, bot)) == 1
    # The cache: a 0700 directory, one 0600 entry named by a hash, nothing of the join secret in it.
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    entries = [f for f in cache.iterdir() if f.name.endswith(".json")]
    assert len(entries) == 1, list(cache.iterdir())
    assert stat.S_IMODE(entries[0].stat().st_mode) == 0o600
    assert re.fullmatch(r"join-[0-9a-f]{64}\.json", entries[0].name)
    for f in cache.iterdir():
        assert secret not in f.name and secret not in f.read_text(errors="replace")
    # A wrong secret misses the cache and is refused: worded as a denial, not as a reachability problem.
    wrong = secret[:-4] + ("aaaa" if not secret.endswith("aaaa") else "bbbb")
    t.env["SIGIL_JOIN_TOKEN"] = wrong
    refused = t.run("plan", check=False)
    assert refused.returncode == 1
    text = " ".join(_out(refused).split())
    assert "refused the join" in text and "denied" in text and "audit log" in text, text
    assert "reachable" not in text, text
    assert wrong not in _out(refused)
    # Without the cache, the plan joins again and the used-up token is refused: the cache is what saved the run.
    t.env.update({"SIGIL_JOIN_TOKEN": secret, "SIGIL_PROVIDER_CACHE": "off"})
    second = t.run("plan", check=False)
    assert second.returncode == 1, _out(second)
    assert "refused the join" in " ".join(_out(second).split())
    assert secret not in _out(second)


def _tfc_claims(issuer, aud="sigil", **over):
    now = int(time.time())
    c = {
        "iss": issuer.base, "aud": aud, "iat": now, "nbf": now, "exp": now + 600, "jti": "run-1-plan",
        "sub": "organization:acme:project:Default Project:workspace:prod:run_phase:plan",
        "terraform_organization_name": "acme", "terraform_organization_id": "org-1",
        "terraform_project_name": "Default Project", "terraform_project_id": "prj-1",
        "terraform_workspace_name": "prod", "terraform_workspace_id": "ws-1",
        "terraform_full_workspace": "organization:acme:project:Default Project:workspace:prod",
        "terraform_run_id": "run-1", "terraform_run_phase": "plan",
    }
    c.update(over)
    return c


def _spacelift_claims(issuer, aud="sigil"):
    now = int(time.time())
    return {
        "iss": issuer.base, "aud": aud, "iat": now, "nbf": now, "exp": now + 600,
        "sub": "space:root:stack:infra:run_type:TRACKED:scope:write",
        "spaceId": "root", "callerType": "stack", "callerId": "infra", "runType": "TRACKED", "runId": "01RUN",
        "scope": "write",
    }


PLATFORMS = {
    # method: (config beyond the issuer, allow rule, claims, the variable the platform sets)
    "terraform_cloud": ({"audience": "sigil"}, {"organization": "acme", "workspace": "prod"}, _tfc_claims, "TFC_WORKLOAD_IDENTITY_TOKEN"),
    "spacelift": ({"hostname": "acme.app.spacelift.io", "audience": "sigil"}, {"space_id": "root", "caller_id": "infra"}, _spacelift_claims, "SPACELIFT_OIDC_TOKEN"),
}


@pytest.mark.parametrize("method", sorted(PLATFORMS))
def test_the_platform_token_alone_lets_the_provider_join(method, tmp_path, provider_binary, tf_broker, names, issuer):
    config, rule, claims, variable = PLATFORMS[method]
    token_name = names(method.replace("_", "-"))
    bot = _pipeline_bot(tf_broker, tmp_path, names, extra=[{
        "kind": "join_token", "name": token_name, "bot": names("pipeline"), "method": method, "expires_at": EXPIRES,
        "max_uses": 10, "allow": [rule],
        "config": {**config, "issuer": issuer.base, "ca_pem": issuer.ca_pem, "allow_private_network": "true"},
    }])
    assert bot
    jwt_token = issuer.mint(claims(issuer))
    # Only the platform's variable carries the credential (plus where the broker is).
    env = {variable: jwt_token, "SIGIL_ADDR": tf_broker.addr, "SIGIL_CA_FILE": str(tf_broker.ca),
           "SIGIL_PROVIDER_CACHE": str(tmp_path / "cache"), "TF_LOG": "trace", "SIGIL_PROVIDER_LOG": "debug"}
    t = Terraform(tmp_path / "tf", provider_binary.parent, env)
    provider = f'provider "sigil" {{\n  join_method     = "{method}"\n  join_token_name = "{token_name}"\n}}\n'
    t.write(_managed_role(names), provider)
    applied = t.apply()
    assert "Apply complete! Resources: 1 added" in applied.stdout
    assert tf_broker.exists("role", names("managed"))
    planned = t.run("plan", "-detailed-exitcode", check=False)
    assert planned.returncode == 0, planned.stdout[-3000:]
    # Nor in Terraform's trace log or the provider's debug log.
    for text in (_out(applied), _out(planned)):
        assert jwt_token not in text and jwt_token.split(".")[1] not in text
    # One join for the whole run (apply's processes and the plan's): one bot instance, of this method.
    instances = _instances(tf_broker, bot)
    assert [i["join_method"] for i in instances] == [method], instances


def test_plan_rejects_join_token_typos_at_their_attribute(tf, names):
    tf.write(f'''
resource "sigil_join_token" "method" {{
  name       = "{names("method")}"
  bot        = "ci"
  method     = "githb"
  expires_at = {EXPIRES}
}}

resource "sigil_join_token" "claim" {{
  name       = "{names("claim")}"
  bot        = "ci"
  method     = "github"
  expires_at = {EXPIRES}
  config     = {{ audience = "sigil" }}
  allow {{
    claims = {{
      repo = "acme/web"
    }}
  }}
}}

resource "sigil_join_token" "audience" {{
  name       = "{names("audience")}"
  bot        = "ci"
  method     = "github"
  expires_at = {EXPIRES}
  config = {{
    enterprise_host = "ghe.example.com"
  }}
  allow {{
    claims = {{ repository = "acme/web" }}
  }}
}}
''', tf.provider)
    p = tf.run("plan", check=False)
    assert p.returncode == 1
    err = _out(p)
    flat = " ".join(err.split())

    def at(resource: str, line: str):
        return re.search(rf'on main.tf line \d+, in resource "sigil_join_token" "{resource}":\n\s+\d+:\s+{re.escape(line)}', err)

    assert at("method", 'method     = "githb"'), err
    assert 'invalid method: unknown join method "githb" (known: token, ' in flat and "github" in flat, err
    assert at("claim", 'repo = "acme/web"'), err
    assert 'invalid allow[0].repo: not a field of join method "github"' in flat, err
    assert at("audience", "config = {"), err
    assert 'invalid config.audience: join method "github" requires config.audience' in flat, err
    # The plan stopped before any broker change.
    assert "Plan:" not in err


def test_plan_rejects_a_malformed_timeout_at_its_setting(tf):
    tf.write('data "sigil_trust_bundle" "x" {}\n', tf.provider.replace("}\n", '  connect_timeout = "5 parsecs"\n}\n', 1))
    p = tf.run("plan", check=False)
    assert p.returncode == 1
    err = _out(p)
    assert re.search(r'on main.tf line \d+, in provider "sigil":\n\s+\d+:\s+connect_timeout = "5 parsecs"', err), err
    assert 'invalid duration "5 parsecs"' in " ".join(err.split()), err


def test_a_cached_identity_the_broker_revoked_is_dropped_and_the_provider_joins_again(tmp_path, provider_binary, tf_broker, names):
    bot = _pipeline_bot(tf_broker, tmp_path, names)
    secret = tf_broker.cli("token", "create", "--bot", bot, "--uses", "2").stdout.strip()
    cache = tmp_path / "cache"
    # Provider debug logs and Terraform's trace log go to stderr: the secret must not be in them either.
    env = {"SIGIL_JOIN_TOKEN": secret, "SIGIL_PROVIDER_CACHE": str(cache), "TF_LOG": "trace", "SIGIL_PROVIDER_LOG": "debug"}
    t = Terraform(tmp_path / "tf", provider_binary.parent, env)
    t.write(_managed_role(names), _joining_provider(tf_broker, "token"))
    applied = t.apply()
    [first] = _instances(tf_broker, bot)
    before = {f.name: f.read_bytes() for f in cache.glob("*.json")}
    tf_broker.cli("svid", "revoke", "--instance", first["id"])
    planned = t.run("plan", "-detailed-exitcode", check=False)
    assert planned.returncode == 0, planned.stdout[-3000:]
    assert len(_instances(tf_broker, bot)) == 2, "joined again once"
    after = {f.name: f.read_bytes() for f in cache.glob("*.json")}
    assert after.keys() == before.keys() and after != before, "the same entry now holds the new identity"
    logs = _out(applied) + _out(planned)
    assert "refused the cached identity" in logs and "joining again" in logs
    assert secret not in logs
